package testbroker

import (
	"path"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// KnownPrograms are the commands (by base name) DefaultOutcome runs and that
// exit 0 at once, besides the ones with their own rules (true, false, sleep,
// exit, sh, bash, kill-self, kill-shell). Any other program is "not found".
var KnownPrograms = map[string]bool{
	"echo": true, "hostname": true, "env": true, "printenv": true, "date": true,
	"uname": true, "pwd": true, "id": true, "whoami": true, "cat": true,
	"ls": true, "flux": true, "python3": true, "python": true, "hello": true,
}

// DefaultOutcome is the documented command -> outcome rule (see the package
// doc). It looks at the first task's command only.
func DefaultOutcome(command []string) Outcome {
	if len(command) == 0 {
		return Outcome{NotFound: true}
	}
	prog := path.Base(command[0])
	args := command[1:]
	switch prog {
	case "true":
		return Outcome{}
	case "false":
		return Outcome{Status: 1 << 8}
	case "sleep":
		return Outcome{Run: sleepArg(args)}
	case "exit":
		return Outcome{Status: exitArg(args, 0) << 8}
	case "kill-self":
		if sig, ok := signalArg(args); ok {
			return Outcome{Status: (128 + sig) << 8}
		}
		return Outcome{Status: 1 << 8}
	case "kill-shell":
		if sig, ok := signalArg(args); ok {
			return Outcome{Status: sig}
		}
		return Outcome{Status: 1 << 8}
	case "sh", "bash", "dash":
		if len(args) >= 2 && args[0] == "-c" {
			return shellOutcome(args[1])
		}
		return Outcome{}
	case "echo", "printf":
		if stream, data := printOutput(prog, args); len(data) > 0 {
			return Outcome{Output: []OutputChunk{{Stream: stream, Data: data}}}
		}
		return Outcome{}
	}
	if KnownPrograms[prog] {
		return Outcome{}
	}
	return Outcome{NotFound: true}
}

// shellOutcome evaluates a tiny subset of sh: commands separated by ';' or
// '&&' (both run in sequence), each one of true, false, sleep N, exit [N],
// kill -SIG $$ (the shell kills itself), echo and printf (see printOutput;
// ">&2" sends their output to stderr), a known program (exits 0) or
// anything else ("not found": exit code 127, as sh reports it). Words may
// be quoted with single or double quotes.
func shellOutcome(script string) Outcome {
	var run time.Duration
	var output []OutputChunk
	last := 0
	for _, f := range shellCommands(script) {
		switch path.Base(f[0]) {
		case "echo", "printf":
			if stream, data := printOutput(path.Base(f[0]), f[1:]); len(data) > 0 {
				output = append(output, OutputChunk{At: run, Stream: stream, Data: data})
			}
			last = 0
		case "true", ":":
			last = 0
		case "false":
			last = 1
		case "sleep":
			run += sleepArg(f[1:])
			last = 0
		case "exit":
			return Outcome{Run: run, Status: exitArg(f[1:], last) << 8, Output: output}
		case "kill":
			if len(f) >= 3 && f[len(f)-1] == "$$" {
				a := f[1 : len(f)-1]
				name := ""
				switch {
				case len(a) == 2 && a[0] == "-s":
					name = a[1]
				case len(a) == 1 && strings.HasPrefix(a[0], "-"):
					name = strings.TrimPrefix(a[0], "-")
				}
				if sig, ok := parseSignal(name); ok && name != "" {
					return Outcome{Run: run, Status: (128 + sig) << 8, Output: output}
				}
			}
			last = 1
		default:
			if KnownPrograms[path.Base(f[0])] {
				last = 0
			} else {
				last = 127
			}
		}
	}
	return Outcome{Run: run, Status: last << 8, Output: output}
}

// forever is how long "sleep inf" runs: until cancelled, in practice.
const forever = 100 * 365 * 24 * time.Hour

func sleepArg(args []string) time.Duration {
	if len(args) == 0 {
		return 0
	}
	if a := strings.ToLower(args[0]); a == "inf" || a == "infinity" {
		return forever
	}
	d, err := parseFSD(args[0])
	if err != nil {
		return 0
	}
	return d
}

func exitArg(args []string, def int) int {
	if len(args) == 0 {
		return def
	}
	n, err := strconv.Atoi(args[0])
	if err != nil {
		return 2
	}
	return n & 0xff
}

func signalArg(args []string) (int, bool) {
	if len(args) == 0 {
		return 0, false
	}
	return parseSignal(args[0])
}

var signalNames = map[string]syscall.Signal{
	"HUP": syscall.SIGHUP, "INT": syscall.SIGINT, "QUIT": syscall.SIGQUIT,
	"ILL": syscall.SIGILL, "TRAP": syscall.SIGTRAP, "ABRT": syscall.SIGABRT,
	"BUS": syscall.SIGBUS, "FPE": syscall.SIGFPE, "KILL": syscall.SIGKILL,
	"USR1": syscall.SIGUSR1, "SEGV": syscall.SIGSEGV, "USR2": syscall.SIGUSR2,
	"PIPE": syscall.SIGPIPE, "ALRM": syscall.SIGALRM, "TERM": syscall.SIGTERM,
	"CHLD": syscall.SIGCHLD, "CONT": syscall.SIGCONT, "STOP": syscall.SIGSTOP,
	"TSTP": syscall.SIGTSTP, "TTIN": syscall.SIGTTIN, "TTOU": syscall.SIGTTOU,
	"URG": syscall.SIGURG, "XCPU": syscall.SIGXCPU, "XFSZ": syscall.SIGXFSZ,
	"VTALRM": syscall.SIGVTALRM, "PROF": syscall.SIGPROF, "WINCH": syscall.SIGWINCH,
	"SYS": syscall.SIGSYS,
}

// parseSignal reads a signal as a number, NAME or SIGNAME.
func parseSignal(s string) (int, bool) {
	if n, err := strconv.Atoi(s); err == nil {
		return n, n > 0 && n < 65
	}
	sig, ok := signalNames[strings.TrimPrefix(strings.ToUpper(s), "SIG")]
	return int(sig), ok
}

// terminates reports whether a signal's default action ends a process
// (signal(7)); the others (CHLD, CONT, URG, WINCH; STOP and friends) leave
// a task running as far as the simulation is concerned.
func terminates(sig int) bool {
	switch syscall.Signal(sig) {
	case syscall.SIGCHLD, syscall.SIGCONT, syscall.SIGURG, syscall.SIGWINCH,
		syscall.SIGSTOP, syscall.SIGTSTP, syscall.SIGTTIN, syscall.SIGTTOU:
		return false
	}
	return true
}

// parseFSD parses Flux Standard Duration (RFC 23): a non-negative number
// with an optional unit s, m, h or d; "inf"/"infinity" is not supported.
// flux-core: src/common/libutil/fsd.c.
func parseFSD(s string) (time.Duration, error) {
	unit := time.Second
	switch {
	case strings.HasSuffix(s, "ms"):
		unit, s = time.Millisecond, strings.TrimSuffix(s, "ms")
	case strings.HasSuffix(s, "s"):
		s = strings.TrimSuffix(s, "s")
	case strings.HasSuffix(s, "m"):
		unit, s = time.Minute, strings.TrimSuffix(s, "m")
	case strings.HasSuffix(s, "h"):
		unit, s = time.Hour, strings.TrimSuffix(s, "h")
	case strings.HasSuffix(s, "d"):
		unit, s = 24*time.Hour, strings.TrimSuffix(s, "d")
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f < 0 {
		return 0, errorf(syscall.EINVAL, "invalid duration %q", s)
	}
	return time.Duration(f * float64(unit)), nil
}

// shellCommands splits a script into commands (at unquoted ';' and '&&')
// of words, with '...' and "..." quoting (a backslash escapes the next
// character outside single quotes).
func shellCommands(script string) [][]string {
	var cmds [][]string
	var words []string
	var word strings.Builder
	inWord := false
	endWord := func() {
		if inWord {
			words = append(words, word.String())
			word.Reset()
			inWord = false
		}
	}
	endCmd := func() {
		endWord()
		if len(words) > 0 {
			cmds = append(cmds, words)
			words = nil
		}
	}
	for i := 0; i < len(script); i++ {
		c := script[i]
		switch {
		case c == '\'':
			inWord = true
			for i++; i < len(script) && script[i] != '\''; i++ {
				word.WriteByte(script[i])
			}
		case c == '"':
			inWord = true
			for i++; i < len(script) && script[i] != '"'; i++ {
				if script[i] == '\\' && i+1 < len(script) && strings.IndexByte("\"\\$`", script[i+1]) >= 0 {
					i++
				}
				word.WriteByte(script[i])
			}
		case c == '\\' && i+1 < len(script):
			inWord = true
			i++
			word.WriteByte(script[i])
		case c == ';' || c == '\n':
			endCmd()
		case c == '&' && i+1 < len(script) && script[i+1] == '&':
			i++
			endCmd()
		case c == ' ' || c == '\t':
			endWord()
		default:
			inWord = true
			word.WriteByte(c)
		}
	}
	endCmd()
	return cmds
}

// printOutput is what echo or printf writes, and to which stream: echo
// joins its arguments with spaces and ends the line (-n: no newline);
// printf writes its format with the escapes \n \t \r \\ \xHH \NNN
// (octal) and %s (the next argument) and %% replaced. A ">&2" or "1>&2"
// word sends the output to stderr.
func printOutput(prog string, args []string) (stream string, data []byte) {
	stream = "stdout"
	var words []string
	for _, a := range args {
		switch a {
		case ">&2", "1>&2", ">/dev/stderr":
			stream = "stderr"
		default:
			words = append(words, a)
		}
	}
	if prog == "echo" {
		newline := true
		if len(words) > 0 && words[0] == "-n" {
			newline, words = false, words[1:]
		}
		out := strings.Join(words, " ")
		if newline {
			out += "\n"
		}
		return stream, []byte(out)
	}
	if len(words) == 0 {
		return stream, nil
	}
	format, rest := words[0], words[1:]
	var b []byte
	for i := 0; i < len(format); i++ {
		c := format[i]
		switch {
		case c == '%' && i+1 < len(format) && format[i+1] == '%':
			b = append(b, '%')
			i++
		case c == '%' && i+1 < len(format) && format[i+1] == 's':
			if len(rest) > 0 {
				b = append(b, rest[0]...)
				rest = rest[1:]
			}
			i++
		case c == '\\' && i+1 < len(format):
			i++
			switch e := format[i]; {
			case e == 'n':
				b = append(b, '\n')
			case e == 't':
				b = append(b, '\t')
			case e == 'r':
				b = append(b, '\r')
			case e == 'x':
				n, k := 0, 0
				for ; k < 2 && i+1 < len(format); k++ {
					v, ok := hexDigit(format[i+1])
					if !ok {
						break
					}
					n = n*16 + v
					i++
				}
				if k == 0 {
					b = append(b, '\\', 'x')
				} else {
					b = append(b, byte(n))
				}
			case e >= '0' && e <= '7':
				n := int(e - '0')
				for k := 0; k < 2 && i+1 < len(format) && format[i+1] >= '0' && format[i+1] <= '7'; k++ {
					n = n*8 + int(format[i+1]-'0')
					i++
				}
				b = append(b, byte(n))
			default:
				b = append(b, e)
			}
		default:
			b = append(b, c)
		}
	}
	return stream, b
}

func hexDigit(c byte) (int, bool) {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0'), true
	case c >= 'a' && c <= 'f':
		return int(c-'a') + 10, true
	case c >= 'A' && c <= 'F':
		return int(c-'A') + 10, true
	}
	return 0, false
}
