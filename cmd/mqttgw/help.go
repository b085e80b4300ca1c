package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
)

// A command is one subcommand as `mqttgw COMMAND --help`, `mqttgw help
// COMMAND`, the usage list, the man page and the completion scripts show it.
// Its flags come from the function the command itself parses with, so the
// help cannot leave one out or misstate a default.
type command struct {
	name     string   // as typed: "pub", "rules test"
	line     string   // its line in the usage list, after "mqttgw "
	summary  string   // what it does, for the usage list
	synopsis []string // usage lines after "mqttgw ", for its own help
	about    string   // what it does, in full: paragraphs wrapped by hand
	// flags returns the command's flag set as it parses with, or nil when it
	// takes none.
	flags func() *flag.FlagSet
	// groups lists the flags in the order the help shows them, under
	// titles; nil: one "Flags:" group, in name order. A flag in no group is
	// shown at the end of the last one.
	groups   []flagGroup
	examples []string // command lines, with a # comment where it helps
	// help replaces the generated text (passwd keeps its own, which names its
	// flags); flagNames then lists its flags for completion.
	help      string
	flagNames []string
	// args are words completion offers for the first argument ("test" after
	// "rules", shells after "completion"); files: it takes file names.
	args  []string
	files bool
	run   func(c *command, args []string, stdout, stderr io.Writer) int
}

type flagGroup struct {
	title string
	names []string // flag names without dashes
}

// lookupCommand finds a command by the words that name it ("rules", "test").
func lookupCommand(words ...string) *command {
	name := strings.Join(words, " ")
	for _, c := range commands {
		if c.name == name {
			return c
		}
	}
	return nil
}

// parse parses args with fs: --help (or -help; -h too where it is not a flag)
// prints the command's help to standard output (done, exit 0); a bad flag
// prints the error and which help to read to standard error (done, exit 2).
func (c *command) parse(fs *flag.FlagSet, args []string, stdout, stderr io.Writer) (code int, done bool) {
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	err := fs.Parse(args)
	switch {
	case err == nil:
		return 0, false
	case errors.Is(err, flag.ErrHelp):
		io.WriteString(stdout, c.helpText())
		return 0, true
	}
	msg := err.Error()
	if name, ok := strings.CutPrefix(msg, "flag provided but not defined: "); ok {
		msg = "unknown flag " + dashed(strings.TrimLeft(name, "-"))
	}
	return c.usageError(stderr, "%s", msg), true
}

// usageError prints what is wrong and which help to read; it returns 2, the
// exit status of bad usage.
func (c *command) usageError(stderr io.Writer, format string, a ...any) int {
	fmt.Fprintf(stderr, "mqttgw %s: %s\nRun 'mqttgw %s --help' for its flags and examples.\n", c.name, fmt.Sprintf(format, a...), c.name)
	return 2
}

// helpText is the command's --help.
func (c *command) helpText() string {
	if c.help != "" {
		return c.help
	}
	var b strings.Builder
	for i, s := range c.synopsis {
		switch {
		case i == 0:
			b.WriteString("usage: mqttgw " + s + "\n")
		case strings.HasPrefix(s, " "): // the line before, continued
			b.WriteString("              " + s + "\n")
		default:
			b.WriteString("       mqttgw " + s + "\n")
		}
	}
	if c.about != "" {
		b.WriteString("\n" + strings.TrimRight(c.about, "\n") + "\n")
	}
	if c.flags != nil {
		for _, g := range c.flagGroups() {
			if len(g.flags) == 0 {
				continue
			}
			b.WriteString("\n" + g.title + "\n")
			for _, f := range g.flags {
				writeFlag(&b, f)
			}
		}
	}
	if len(c.examples) > 0 {
		b.WriteString("\nExamples:\n")
		for _, e := range c.examples {
			b.WriteString("  " + e + "\n")
		}
	}
	return b.String()
}

// shownGroup is a help section: its title and its flags, each with the
// other names that set the same value (-c for --config).
type shownGroup struct {
	title string
	flags []shownFlag
}

type shownFlag struct {
	names []string // as typed: "-c", "--config"
	f     *flag.Flag
}

// flagGroups sorts the command's flags into its groups.
func (c *command) flagGroups() []shownGroup {
	fs := c.flags()
	var all []*flag.Flag
	fs.VisitAll(func(f *flag.Flag) { all = append(all, f) })
	// Flags that set one value are one entry: the shorter name first.
	aliases := map[string][]string{}
	primary := map[string]string{}
	for _, f := range all {
		for _, g := range all {
			if g.Value == f.Value {
				aliases[f.Name] = append(aliases[f.Name], g.Name)
			}
		}
		names := aliases[f.Name]
		slices.SortFunc(names, func(a, b string) int { return len(a) - len(b) })
		primary[f.Name] = names[len(names)-1]
	}
	shown := map[string]bool{}
	entry := func(name string) (shownFlag, bool) {
		f := fs.Lookup(name)
		if f == nil || shown[primary[name]] {
			return shownFlag{}, false
		}
		shown[primary[name]] = true
		s := shownFlag{f: fs.Lookup(primary[name])}
		for _, n := range aliases[name] {
			s.names = append(s.names, dashed(n))
		}
		return s, true
	}
	groups := c.groups
	if groups == nil {
		var names []string
		for _, f := range all {
			names = append(names, f.Name)
		}
		groups = []flagGroup{{title: "Flags:", names: names}}
	}
	var out []shownGroup
	for _, g := range groups {
		sg := shownGroup{title: g.title}
		for _, n := range g.names {
			if s, ok := entry(n); ok {
				sg.flags = append(sg.flags, s)
			}
		}
		out = append(out, sg)
	}
	for _, f := range all {
		if s, ok := entry(f.Name); ok {
			out[len(out)-1].flags = append(out[len(out)-1].flags, s)
		}
	}
	return out
}

// dashed is a flag name as typed: -x for one letter, --name otherwise (Go's
// flag package takes either).
func dashed(name string) string {
	if len(name) == 1 {
		return "-" + name
	}
	return "--" + name
}

// writeFlag writes one flag: its names and value, then its usage, wrapped,
// and its default when it has one worth saying.
func writeFlag(b *strings.Builder, s shownFlag) {
	metavar, usage := flag.UnquoteUsage(s.f)
	head := "  " + strings.Join(s.names, ", ")
	if _, isBool := s.f.Value.(interface{ IsBoolFlag() bool }); !isBool {
		if _, optional := s.f.Value.(optionalValue); optional {
			head += " [" + strings.ToUpper(metavar) + "]"
		} else {
			head += " " + strings.ToUpper(metavar)
		}
	}
	if d := s.f.DefValue; d != "" && d != "0" && d != "false" && d != "0s" {
		usage += " (default " + d + ")"
	}
	const col = 24
	if len(head) < col-1 {
		b.WriteString(head + strings.Repeat(" ", col-len(head)))
	} else {
		b.WriteString(head + "\n" + strings.Repeat(" ", col))
	}
	b.WriteString(wrap(usage, col, 80) + "\n")
}

// wrap breaks text into lines of at most width columns, the first starting at
// column indent (already written) and the others indented to it.
func wrap(text string, indent, width int) string {
	var b strings.Builder
	col := indent
	for i, w := range strings.Fields(text) {
		if i > 0 {
			if col+1+len(w) > width {
				b.WriteString("\n" + strings.Repeat(" ", indent))
				col = indent
			} else {
				b.WriteByte(' ')
				col++
			}
		}
		b.WriteString(w)
		col += len(w)
	}
	return b.String()
}

// optionalValue marks a flag whose value may be left out (--mqttsn, --coap):
// withOptionalValues makes "--mqttsn" alone read as "--mqttsn=".
type optionalValue interface {
	flag.Value
	optional()
}

// optString is a string flag whose value may be left out.
type optString struct{ s *string }

func (o optString) String() string {
	if o.s == nil {
		return ""
	}
	return *o.s
}
func (o optString) Set(v string) error { *o.s = v; return nil }
func (optString) optional()            {}

// withOptionalValues rewrites args so that a flag of fs with an optional value
// given without one ("--coap -t x", or last) reads "--coap=": Go's flag package
// would otherwise take the next argument as its value. Values of other flags
// are skipped, so "-m --coap" stays a message.
func withOptionalValues(fs *flag.FlagSet, args []string) []string {
	out := slices.Clone(args)
	for i := 0; i < len(out); i++ {
		a := out[i]
		if a == "--" || !strings.HasPrefix(a, "-") || a == "-" {
			return out
		}
		name, _, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		f := fs.Lookup(name)
		if f == nil || hasValue {
			continue
		}
		if _, ok := f.Value.(optionalValue); ok {
			if i+1 == len(out) || strings.HasPrefix(out[i+1], "-") {
				out[i] = "--" + name + "="
			}
			continue
		}
		if _, isBool := f.Value.(interface{ IsBoolFlag() bool }); !isBool {
			i++ // its value
		}
	}
	return out
}

// visited returns the names of the flags args set.
func visited(fs *flag.FlagSet) map[string]bool {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	return set
}

// cmdHelp is `mqttgw help [COMMAND]`.
func cmdHelp(c *command, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		io.WriteString(stdout, usage())
		return 0
	}
	if args[0] == "--help" || args[0] == "-h" || args[0] == "-help" {
		io.WriteString(stdout, c.helpText())
		return 0
	}
	if args[0] == "rules" && len(args) == 1 {
		args = []string{"rules", "test"}
	}
	target := lookupCommand(args...)
	if target == nil {
		fmt.Fprintf(stderr, "mqttgw help: no command %q\n\n%s", strings.Join(args, " "), usage())
		return 2
	}
	io.WriteString(stdout, target.helpText())
	return 0
}
