package main

import (
	"flag"
	"fmt"
	"io"
	"strings"
)

// `mqttgw completion bash|zsh` prints a completion script made from the
// command table: the commands, each command's flags, and file names after a
// flag whose value is a FILE and for commands that take file arguments.

func cmdCompletion(c *command, args []string, stdout, stderr io.Writer) int {
	fs := c.flags()
	if code, done := c.parse(fs, args, stdout, stderr); done {
		return code
	}
	if fs.NArg() != 1 {
		return c.usageError(stderr, "want bash or zsh")
	}
	switch fs.Arg(0) {
	case "bash":
		io.WriteString(stdout, bashCompletion())
	case "zsh":
		io.WriteString(stdout, zshCompletion())
	default:
		return c.usageError(stderr, "%q: want bash or zsh", fs.Arg(0))
	}
	return 0
}

// completionFlag is one flag as a completion script offers it.
type completionFlag struct {
	name  string // as typed: -t, --psk-key
	desc  string // its usage, shortened
	value string // its value's name ("" for a boolean flag)
	file  bool   // the value is a file name
}

// completionFlags lists a command's flags, --help last.
func completionFlags(c *command) []completionFlag {
	var out []completionFlag
	if c.flags == nil {
		for _, n := range c.flagNames {
			out = append(out, completionFlag{name: n})
		}
	} else {
		c.flags().VisitAll(func(f *flag.Flag) {
			metavar, usage := flag.UnquoteUsage(f)
			cf := completionFlag{name: dashed(f.Name), desc: usage}
			if _, isBool := f.Value.(interface{ IsBoolFlag() bool }); !isBool {
				cf.value = strings.ToUpper(metavar)
				cf.file = cf.value == "FILE" || cf.value == "F"
			}
			out = append(out, cf)
		})
	}
	return append(out, completionFlag{name: "--help", desc: "print the help"})
}

// firstWord is the word that names a command ("rules" for "rules test").
func firstWord(c *command) string { return strings.Fields(c.name)[0] }

func bashCompletion() string {
	var b strings.Builder
	var names []string
	for _, c := range commands {
		names = append(names, firstWord(c))
	}
	b.WriteString(`# bash completion for mqttgw, printed by 'mqttgw completion bash'.
# Load it with: source <(mqttgw completion bash)
_mqttgw() {
	local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}
	local skip=2 words="" files="" fileargs=""
	if ((COMP_CWORD == 1)); then
		COMPREPLY=($(compgen -W "` + strings.Join(names, " ") + ` --help --version" -- "$cur"))
		return
	fi
	case ${COMP_WORDS[1]} in
`)
	for _, c := range commands {
		var words, files []string
		for _, f := range completionFlags(c) {
			words = append(words, f.name)
			if f.file {
				files = append(files, f.name)
			}
		}
		fmt.Fprintf(&b, "\t%s)\n", firstWord(c))
		if len(c.args) > 0 {
			// a word after the command: "rules test", "completion bash", "help pub"
			fmt.Fprintf(&b, "\t\tif ((COMP_CWORD == 2)); then\n\t\t\tCOMPREPLY=($(compgen -W \"%s\" -- \"$cur\"))\n\t\t\treturn\n\t\tfi\n", strings.Join(c.args, " "))
			if !strings.Contains(c.name, " ") {
				b.WriteString("\t\treturn\n\t\t;;\n")
				continue
			}
			b.WriteString("\t\tskip=3\n")
		}
		fmt.Fprintf(&b, "\t\twords=\"%s\"\n", strings.Join(words, " "))
		if len(files) > 0 {
			fmt.Fprintf(&b, "\t\tfiles=\"%s\"\n", strings.Join(files, " "))
		}
		if c.files {
			b.WriteString("\t\tfileargs=1\n")
		}
		b.WriteString("\t\t;;\n")
	}
	b.WriteString(`	*)
		return
		;;
	esac
	((COMP_CWORD >= skip)) || return
	if [[ -n $files && " $files " == *" $prev "* ]]; then
		COMPREPLY=($(compgen -f -- "$cur"))
	elif [[ $cur == -* ]]; then
		COMPREPLY=($(compgen -W "$words" -- "$cur"))
	elif [[ -n $fileargs ]]; then
		COMPREPLY=($(compgen -f -- "$cur"))
	fi
}
complete -o filenames -F _mqttgw mqttgw
`)
	return b.String()
}

func zshCompletion() string {
	var b strings.Builder
	b.WriteString(`#compdef mqttgw
# zsh completion for mqttgw, printed by 'mqttgw completion zsh'. Install it as
# _mqttgw in a directory of $fpath, or load it with: source <(mqttgw completion zsh)

_mqttgw() {
	local -a commands
	commands=(
`)
	seen := map[string]bool{}
	for _, c := range commands {
		if w := firstWord(c); !seen[w] {
			seen[w] = true
			fmt.Fprintf(&b, "\t\t%s\n", zshQuote(w+":"+zshEscape(c.summary)))
		}
	}
	b.WriteString(`	)
	if ((CURRENT == 2)); then
		_describe -t commands 'mqttgw command' commands
		return
	fi
	local cmd=${words[2]}
	shift words
	((CURRENT--))
	case $cmd in
`)
	for _, c := range commands {
		fmt.Fprintf(&b, "\t%s)\n", firstWord(c))
		if strings.Contains(c.name, " ") {
			fmt.Fprintf(&b, "\t\tif ((CURRENT == 2)); then\n\t\t\t_values %s %s\n\t\t\treturn\n\t\tfi\n\t\tshift words\n\t\t((CURRENT--))\n",
				zshQuote("subcommand"), strings.Join(c.args, " "))
		} else if len(c.args) > 0 {
			fmt.Fprintf(&b, "\t\t((CURRENT == 2)) && _values %s %s\n\t\t;;\n", zshQuote("argument"), strings.Join(c.args, " "))
			continue
		}
		b.WriteString("\t\t_arguments -s")
		for _, f := range completionFlags(c) {
			spec := f.name + "[" + zshEscape(shortDesc(f.desc)) + "]"
			switch {
			case f.file:
				spec += ":" + f.value + ":_files"
			case f.value != "":
				spec += ":" + f.value + ": "
			}
			b.WriteString(" \\\n\t\t\t" + zshQuote(spec))
		}
		if c.files {
			b.WriteString(" \\\n\t\t\t" + zshQuote("*:file:_files"))
		}
		b.WriteString("\n\t\t;;\n")
	}
	b.WriteString(`	esac
}

if [[ ${zsh_eval_context[-1]} == loadautofunc ]]; then
	_mqttgw "$@"
else
	compdef _mqttgw mqttgw
fi
`)
	return b.String()
}

// shortDesc is a flag's usage up to its first clause.
func shortDesc(s string) string {
	if i := strings.IndexAny(s, ";:("); i > 0 {
		s = s[:i]
	}
	return strings.TrimSpace(s)
}

// zshEscape escapes what _arguments and _describe read as syntax.
func zshEscape(s string) string {
	return strings.NewReplacer(`\`, `\\`, `[`, `\[`, `]`, `\]`, `:`, `\:`).Replace(s)
}

// zshQuote quotes a word for the shell.
func zshQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
