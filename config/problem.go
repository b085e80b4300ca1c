package config

import (
	"fmt"
	"sort"
	"strings"
)

// Problem is one thing wrong (or suspicious, when Warning) in a config file.
type Problem struct {
	File    string
	Line    int    // 1-based; 0 when unknown
	Key     string // key path, e.g. "rule[0].publish[1].topic"
	Msg     string
	Warning bool
}

// Error formats the problem as FILE:LINE: key.path: what is wrong.
func (p Problem) Error() string {
	var b strings.Builder
	if p.File != "" {
		b.WriteString(p.File)
		b.WriteByte(':')
	}
	if p.Line > 0 {
		fmt.Fprintf(&b, "%d:", p.Line)
	}
	if b.Len() > 0 {
		b.WriteByte(' ')
	}
	if p.Warning {
		b.WriteString("warning: ")
	}
	if p.Key != "" {
		b.WriteString(p.Key)
		b.WriteString(": ")
	}
	b.WriteString(p.Msg)
	return b.String()
}

// Problems is a list of problems; as an error it prints one per line.
type Problems []Problem

func (ps Problems) Error() string {
	lines := make([]string, len(ps))
	for i, p := range ps {
		lines[i] = p.Error()
	}
	return strings.Join(lines, "\n")
}

// Errors returns the problems that are not warnings.
func (ps Problems) Errors() Problems {
	var out Problems
	for _, p := range ps {
		if !p.Warning {
			out = append(out, p)
		}
	}
	return out
}

// Sort orders problems by line, then key, keeping the order of equal ones.
func (ps Problems) Sort() {
	sort.SliceStable(ps, func(i, j int) bool {
		if ps[i].Line != ps[j].Line {
			return ps[i].Line < ps[j].Line
		}
		return ps[i].Key < ps[j].Key
	})
}

// Problemf builds a problem for a key path; Locate fills in file and line.
func Problemf(key, format string, args ...any) Problem {
	return Problem{Key: key, Msg: fmt.Sprintf(format, args...)}
}

// Locate fills File and Line of problems found by other packages from their key paths.
// A key with no line of its own takes the line of its nearest parent.
func (c *Config) Locate(ps Problems) Problems {
	for i := range ps {
		if ps[i].File == "" {
			ps[i].File = c.File
		}
		if ps[i].Line == 0 {
			ps[i].Line = c.Pos(ps[i].Key)
		}
	}
	return ps
}

// Pos returns the line where key path was written, or the line of its nearest
// parent; 0 when unknown.
func (c *Config) Pos(key string) int {
	for key != "" {
		if l, ok := c.positions[key]; ok {
			return l
		}
		i := strings.LastIndexAny(key, ".[")
		if i < 0 {
			break
		}
		key = key[:i]
	}
	return 0
}
