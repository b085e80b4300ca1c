package config

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"sort"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// Load reads, decodes, defaults and validates the config file at path. The returned
// Problems hold every error and warning found; the Config is usable only when
// Problems.Errors() is empty.
func Load(path string) (*Config, Problems) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, Problems{{File: path, Msg: err.Error()}}
	}
	return Parse(path, data)
}

// Parse is Load for text already in memory; file names the text in problems.
func Parse(file string, data []byte) (*Config, Problems) {
	text := string(data)
	var raw map[string]any
	if _, err := toml.Decode(text, &raw); err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return nil, Problems{{File: file, Line: pe.Position.Line, Key: pe.LastKey, Msg: "syntax: " + pe.Message}}
		}
		return nil, Problems{{File: file, Msg: err.Error()}}
	}
	c := &Config{File: file, positions: keyPositions(text)}
	d := decoder{}
	d.decode(raw, reflect.ValueOf(c).Elem(), "")
	ps := d.problems
	c.applyDefaults()
	ps = append(ps, c.validate()...)
	ps = c.Locate(ps)
	ps.Sort()
	return c, ps
}

// decoder fills Go values from the toml library's generic tree, collecting a problem
// for every key it cannot use rather than stopping at the first.
type decoder struct {
	problems Problems
}

func (d *decoder) addf(key, format string, args ...any) {
	d.problems = append(d.problems, Problemf(key, format, args...))
}

var (
	durationType = reflect.TypeOf(Duration(0))
	qosType      = reflect.TypeOf(QoS(0))
)

func (d *decoder) decode(v any, rv reflect.Value, key string) {
	switch rv.Type() {
	case durationType:
		s, ok := v.(string)
		if !ok {
			d.addf(key, "want a duration like \"30s\", got %s", describe(v))
			return
		}
		dur, err := time.ParseDuration(s)
		if err != nil || dur < 0 {
			d.addf(key, "bad duration %q: want a positive Go duration like \"500ms\", \"30s\" or \"1m30s\"", s)
			return
		}
		rv.SetInt(int64(dur))
		return
	case qosType:
		n, ok := v.(int64)
		if !ok || n < 0 || n > 2 {
			d.addf(key, "qos must be 0, 1 or 2, got %s", describe(v))
			return
		}
		rv.SetUint(uint64(n))
		return
	}
	switch rv.Kind() {
	case reflect.Struct:
		m, ok := v.(map[string]any)
		if !ok {
			d.addf(key, "want a table, got %s", describe(v))
			return
		}
		d.decodeStruct(m, rv, key)
	case reflect.Pointer:
		p := reflect.New(rv.Type().Elem())
		d.decode(v, p.Elem(), key)
		rv.Set(p)
	case reflect.String:
		s, ok := v.(string)
		if !ok {
			d.addf(key, "want a string, got %s", describe(v))
			return
		}
		rv.SetString(s)
	case reflect.Bool:
		b, ok := v.(bool)
		if !ok {
			d.addf(key, "want true or false, got %s", describe(v))
			return
		}
		rv.SetBool(b)
	case reflect.Int:
		n, ok := v.(int64)
		if !ok {
			d.addf(key, "want an integer, got %s", describe(v))
			return
		}
		rv.SetInt(n)
	case reflect.Float64:
		switch n := v.(type) {
		case float64:
			rv.SetFloat(n)
		case int64:
			rv.SetFloat(float64(n))
		default:
			d.addf(key, "want a number, got %s", describe(v))
		}
	case reflect.Slice:
		var items []any
		switch s := v.(type) {
		case []any:
			items = s
		case []map[string]any:
			for _, m := range s {
				items = append(items, m)
			}
		default:
			d.addf(key, "want an array, got %s", describe(v))
			return
		}
		out := reflect.MakeSlice(rv.Type(), len(items), len(items))
		for i, it := range items {
			d.decode(it, out.Index(i), fmt.Sprintf("%s[%d]", key, i))
		}
		rv.Set(out)
	case reflect.Map:
		m, ok := v.(map[string]any)
		if !ok {
			d.addf(key, "want a table, got %s", describe(v))
			return
		}
		out := reflect.MakeMapWithSize(rv.Type(), len(m))
		for _, k := range sortedKeys(m) {
			ev := reflect.New(rv.Type().Elem()).Elem()
			d.decode(m[k], ev, join(key, k))
			out.SetMapIndex(reflect.ValueOf(k), ev)
		}
		rv.Set(out)
	default:
		panic("config: no decoder for " + rv.Type().String())
	}
}

func (d *decoder) decodeStruct(m map[string]any, rv reflect.Value, key string) {
	fields := map[string]int{}
	var names []string
	for i := 0; i < rv.NumField(); i++ {
		tag := rv.Type().Field(i).Tag.Get("toml")
		if tag == "" || tag == "-" {
			continue
		}
		fields[tag] = i
		names = append(names, tag)
	}
	for _, k := range sortedKeys(m) {
		i, ok := fields[k]
		if !ok {
			msg := fmt.Sprintf("unknown key %q", k)
			if s := closest(k, names); s != "" {
				msg += fmt.Sprintf(" (did you mean %q?)", s)
			}
			d.problems = append(d.problems, Problem{Key: join(key, k), Msg: msg})
			continue
		}
		d.decode(m[k], rv.Field(i), join(key, k))
	}
}

func sortedKeys(m map[string]any) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func describe(v any) string {
	switch x := v.(type) {
	case string:
		return fmt.Sprintf("string %q", x)
	case int64:
		return fmt.Sprintf("integer %d", x)
	case float64:
		return fmt.Sprintf("number %v", x)
	case bool:
		return fmt.Sprintf("boolean %v", x)
	case map[string]any:
		return "a table"
	case []any, []map[string]any:
		return "an array"
	case time.Time:
		return "a datetime"
	}
	return fmt.Sprintf("%T", v)
}

// closest returns the candidate within edit distance 2 of k, for "did you mean".
func closest(k string, candidates []string) string {
	best, bestD := "", 3
	for _, c := range candidates {
		if d := editDistance(strings.ToLower(k), c); d < bestD {
			best, bestD = c, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
