// Command bench runs the repository's benchmarks in one run on one machine
// and writes docs/benchmarks.md from their output: the machine, the date,
// the commands, every benchmark's metrics, and the targets of issues 7 and 15 with
// pass or fail. `make bench` runs it; the document is generated, not
// edited by hand.
//
//	go run ./hack/bench                      # everything, writes docs/benchmarks.md
//	go run ./hack/bench -only fluxbridge     # suites whose name contains "fluxbridge"
//	go run ./hack/bench -out /tmp/b.md -strict
//
// The controller benchmarks need the envtest binaries in
// $KUBEBUILDER_ASSETS (make bench sets it to bin/k8s); without them that
// suite is reported as skipped. The real-broker suite runs only when a
// `flux` command is on PATH.
package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// errTargetsMissed is returned under -strict when a target is not met.
var errTargetsMissed = errors.New("targets missed")

func run() error {
	out := flag.String("out", "docs/benchmarks.md", "the Markdown file to write")
	only := flag.String("only", "", "run only the suites whose name contains this")
	strict := flag.Bool("strict", false, "exit non-zero when a target is missed (a suite that fails to run always does)")
	timeout := flag.Duration("timeout", 90*time.Minute, "bound for the whole run")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()

	root, err := repoRoot(ctx)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(root, "bin", "bench"), 0o755); err != nil {
		return fmt.Errorf("profile directory: %w", err)
	}
	rep := &report{Started: time.Now().UTC(), Machine: describeMachine(ctx, root), LoadStart: loadAverage()}
	for _, s := range suites(root) {
		if *only != "" && !strings.Contains(s.Name, *only) {
			continue
		}
		fmt.Fprintf(os.Stderr, "==> %s: %s\n", s.Name, s.commandLine())
		res := s.run(ctx, root)
		fmt.Fprintf(os.Stderr, "==> %s: %s (%s)\n", s.Name, res.Status, res.Elapsed.Round(time.Second))
		rep.Results = append(rep.Results, res)
	}
	rep.Finished = time.Now().UTC()
	rep.LoadEnd = loadAverage()
	rep.Targets = evaluate(targets, rep.Results)

	notes, err := os.ReadFile(filepath.Join(root, notesPath))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("reading %s: %w", notesPath, err)
	}
	rep.Notes = string(notes)
	md := rep.markdown()
	path := *out
	if !filepath.IsAbs(path) {
		path = filepath.Join(root, path)
	}
	if err := os.WriteFile(path, []byte(md), 0o644); err != nil {
		return fmt.Errorf("writing the report: %w", err)
	}
	fmt.Fprintf(os.Stderr, "wrote %s\n", path)
	for _, t := range rep.Targets {
		fmt.Fprintf(os.Stderr, "  %-4s %s: %s\n", t.Verdict, t.Target.Name, t.Measured)
	}
	var failed []string
	for _, r := range rep.Results {
		if r.Status == statusFailed {
			failed = append(failed, r.Suite.Name)
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("suites failed: %s", strings.Join(failed, ", "))
	}
	if *strict {
		for _, t := range rep.Targets {
			if t.Verdict == verdictFail {
				return errTargetsMissed
			}
		}
	}
	return nil
}

// repoRoot is the module root (where go.mod is).
func repoRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("not inside the fluxjob-operator module (go env GOMOD is empty)")
	}
	return filepath.Dir(mod), nil
}

// suite is one `go test` (or other) invocation.
type suite struct {
	// Name names the suite in the report.
	Name string
	// About says what it measures.
	About string
	// Args is the command; Args[0] is looked up on PATH.
	Args []string
	// Env is added to the environment.
	Env []string
	// Skip, if it returns a reason, skips the suite with that message.
	Skip func() string

	root string // the repository, to show paths in Env relative to it
}

func (s suite) commandLine() string {
	var parts []string
	for _, e := range s.Env {
		if k, v, ok := strings.Cut(e, "="); ok && s.root != "" {
			if rel, err := filepath.Rel(s.root, v); err == nil && !strings.HasPrefix(rel, "..") {
				e = k + "=" + rel
			}
		}
		parts = append(parts, shellQuote(e))
	}
	for _, a := range s.Args {
		if filepath.IsAbs(a) && s.root != "" {
			if rel, err := filepath.Rel(s.root, a); err == nil && !strings.HasPrefix(rel, "..") {
				a = rel
			}
		}
		parts = append(parts, shellQuote(a))
	}
	return strings.Join(parts, " ")
}

func shellQuote(s string) string {
	if s != "" && !strings.ContainsAny(s, " '\"$*?[]()|&;<>\\`^") {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// goBench is `go test -run '^$' -bench <bench> -benchmem <extra...> <pkg>`.
func goBench(pkg, bench string, extra ...string) []string {
	args := []string{"go", "test", "-run", "^$", "-bench", bench, "-benchmem", "-count", "1"}
	args = append(args, extra...)
	return append(args, pkg)
}

const realAbout = "A real flux-core broker (`flux start --test-size=1`, flux on PATH), jobs in its test execution mode: " +
	"our executor (test/realflux/execclient, a program of its own) side by side with flux-core's Python FluxExecutor and `flux submit --cc`, each client in its own process; " +
	"the CPU profile of our workers=4 row in bin/bench/execclient-executor-workers4.cpu.pprof"

// suites lists what `make bench` runs, in order.
func suites(root string) []suite {
	assets := os.Getenv("KUBEBUILDER_ASSETS")
	if assets == "" {
		if _, err := os.Stat(filepath.Join(root, "bin", "k8s", "kube-apiserver")); err == nil {
			assets = filepath.Join(root, "bin", "k8s")
		}
	}
	profDir := filepath.Join(root, "bin", "bench")
	needAssets := func() string {
		if assets == "" {
			return "skipped: KUBEBUILDER_ASSETS is not set and bin/k8s/kube-apiserver does not exist (run `make envtest`)"
		}
		return ""
	}
	noFlux := func() string {
		if _, err := exec.LookPath("flux"); err != nil {
			return "skipped: flux-core not installed (flux not on PATH)"
		}
		return ""
	}
	list := []suite{
		{Name: "fluxbridge/wire", About: "frame encode/decode", Args: goBench("./fluxbridge/wire", ".")},
		{Name: "fluxbridge/flux", About: "RPC and stream round trips over a unix socket", Args: goBench("./fluxbridge/flux", ".")},
		{Name: "fluxbridge/job", About: "job IDs, events, jobspecs", Args: goBench("./fluxbridge/job", ".")},
		{Name: "fluxbridge/testbroker", About: "the test broker's RPC and submit rates through the production client", Args: goBench("./fluxbridge/testbroker", ".")},
		{Name: "fluxbridge executor", About: "Submit -> Result with the test broker (in process: allocations and CPU include the broker's), 10,000 jobs per row",
			Args: goBench("./fluxbridge", "^BenchmarkExecutor$", "-benchtime", "10000x", "-timeout", "30m")},
		{Name: "fluxbridge in-flight futures", About: "10,000 in-flight futures (held jobs) per event source: heap and goroutines per future (broker in process)",
			Args: goBench("./fluxbridge", "^BenchmarkInFlightFuture$", "-benchtime", "10000x", "-timeout", "30m")},
		{Name: "hostile broker", About: "the client alone (a 4-worker executor with keepalive 1s/10s and the manager's GOGC=50, GOMEMLIMIT=256MiB; the test broker in a child process) holding 1,000 running jobs while the broker turns hostile (issue 19: oversized frame, garbage, slow drip, endless eventlog stream, huge event contexts) and 50 more jobs run: peak heap in use and peak RSS (VmHWM, reset per mode) against the manager's 256 MiB limit, how the executor ended",
			Args: goBench("./fluxbridge", "^BenchmarkHostileBroker$", "-benchtime", "1x", "-timeout", "30m")},
		{Name: "hostile broker: manager", About: "the manager binary as the Deployment runs it (GOMEMLIMIT from its 256 MiB limit, GOGC=50; envtest API server) with 1,000 FluxJobs Running on a FluxEndpoint whose test broker (hack/testbroker -hostile MODE, its own process) then turns hostile on SIGUSR1 in each mode of the client-only row above, and 50 more FluxJobs are created: " +
			"the manager's peak RSS (VmHWM, reset at the switch, sampled every 100ms) over 45s, whether it was still alive, and the FluxEndpoint's Ready reasons and FluxJobs' FluxReachable reasons (logs); then a restarted manager against the still-hostile broker (it re-attaches to the 1,050 jobs) over 45s: its peak RSS and whether it stayed alive (the crash-loop check)",
			Args: goBench("./controllers", "^BenchmarkManagerHostileBroker$", "-benchtime", "1x", "-timeout", "60m"),
			Env:  []string{"KUBEBUILDER_ASSETS=" + assets},
			Skip: needAssets},
		{Name: "transports", About: "the executor (4 workers) through local://, ssh:// (in-process SSH server relaying to the socket) and pod exec (the kubelet exec server, ServeExec over TLS, a relay process per connection) against the test broker; the client in its own process, so cpu-µs/job is the client's alone; 10,000 jobs per row",
			Args: goBench("./podexec", "^BenchmarkTransport$", "-benchtime", "10000x", "-timeout", "30m")},
		{Name: "scale: eventlog vs journal", About: "10,000 in-flight jobs with the test broker in its own process behind a counting proxy: client heap, goroutines, and the streams open at the broker",
			Args: goBench("./hack/bench", "^BenchmarkScale$", "-benchtime", "1x", "-timeout", "30m")},
		{Name: "controllers", About: "the manager end to end (main.go's defaults: 2 executor workers, 4 concurrent reconciles unless the row says otherwise): " +
			"envtest API server, the test broker in its own process; the 10,000-FluxJob memory row runs the manager binary in its own process as the Deployment does (GOMEMLIMIT from its memory limit) and reads its RSS from /proc, its heap and goroutines from its metrics; " +
			"the API-server-cost rows are what kube-apiserver and etcd spend in CPU per request of each kind a FluxJob costs them; " +
			"the status-lever rows take a status write's cost apart (patch type, content, validation, size; issue 15 part 4); " +
			"the side-by-side rows run N FluxJobs through the manager binary and then `flux submit --cc=1-N --wait` on the same broker (flux-core when on PATH, else the test broker), fresh and with 20,000 inactive jobs, with each process's CPU per job (issue 15 part 1); " +
			"the array rows run one FluxJob of 1,000 and of 10,000 indexes through the manager binary and then `flux submit --cc=1-N --wait` on the same broker, and hold 100,000 indexes of one FluxJob for the manager's RSS per index (issue 21); " +
			"CPU profile and binary in bin/bench/controllers.{cpu.pprof,test}, kube-apiserver and etcd CPU profiles in bin/bench/{apiserver,etcd}-*.cpu.pprof, the manager's heap profile at 10,000 FluxJobs in bin/bench/controller-10000.heap.pprof",
			Args: goBench("./controllers", "^BenchmarkController", "-benchtime", "1x", "-timeout", "90m",
				"-cpuprofile", filepath.Join(profDir, "controllers.cpu.pprof"), "-o", filepath.Join(profDir, "controllers.test")),
			Env:  []string{"KUBEBUILDER_ASSETS=" + assets, "BENCH_PROFILE_DIR=" + profDir},
			Skip: needAssets},
	}
	// The real-broker harness: a Go benchmark package, else a command.
	switch {
	case exists(filepath.Join(root, "test", "realflux")):
		list = append(list, suite{Name: "real broker", About: realAbout,
			Args: goBench("./test/realflux/", ".", "-benchtime", "1x", "-timeout", "60m"), Skip: noFlux,
			Env: []string{"BENCH_PROFILE_DIR=" + filepath.Join(root, "bin", "bench")}},
			suite{Name: "real broker: job-list lookup", About: "What the controller's job-list lookup of a FluxJob with a submit marker costs a real broker with 20,000 inactive jobs: unbounded (what every submission used to ask) and bounded as controllers/submit.go asks it now (issue 15 part 2); the broker's CPU per lookup from /proc",
				Args: goBench("./test/realflux/", "^BenchmarkRealFluxLookup$", "-benchtime", "200x", "-timeout", "30m"),
				Env:  []string{"REALFLUX_LOOKUP_HISTORY=20000"}, Skip: noFlux})
	case exists(filepath.Join(root, "hack", "realfluxbench")):
		list = append(list, suite{Name: "real broker", About: realAbout,
			Args: []string{"go", "run", "./hack/realfluxbench"}, Skip: noFlux})
	default:
		list = append(list, suite{Name: "real broker", About: realAbout,
			Skip: func() string {
				if s := noFlux(); s != "" {
					return s
				}
				return "skipped: no real-broker harness in the repository yet (test/realflux or hack/realfluxbench)"
			}})
	}
	for i := range list {
		list[i].root = root
	}
	return list
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// Suite outcomes.
const (
	statusOK      = "ok"
	statusFailed  = "FAILED"
	statusSkipped = "skipped"
)

// result is a suite's outcome and parsed output.
type result struct {
	Suite   suite
	Status  string
	Message string // why skipped or failed
	Elapsed time.Duration
	Benches []benchmark
	Other   []string // output lines that are neither benchmarks nor test noise (a command's own report)
	Tail    string   // the end of the output, for a failure
}

// run runs the suite, copying its output to stderr as it goes.
func (s suite) run(ctx context.Context, root string) result {
	res := result{Suite: s}
	if s.Skip != nil {
		if msg := s.Skip(); msg != "" {
			res.Status, res.Message = statusSkipped, msg
			fmt.Fprintln(os.Stderr, msg)
			return res
		}
	}
	start := time.Now()
	cmd := exec.CommandContext(ctx, s.Args[0], s.Args[1:]...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), s.Env...)
	cmd.WaitDelay = 10 * time.Second
	var buf bytes.Buffer
	w := io.MultiWriter(&buf, os.Stderr)
	cmd.Stdout, cmd.Stderr = w, w
	err := cmd.Run()
	res.Elapsed = time.Since(start)
	// The whole output (the benchmarks' logs too) stays beside the profiles.
	logPath := filepath.Join(root, "bin", "bench", logName(s.Name))
	if werr := os.WriteFile(logPath, buf.Bytes(), 0o644); werr != nil {
		fmt.Fprintln(os.Stderr, "bench: keeping the output:", werr)
	}
	res.Benches, res.Other = parse(buf.String())
	switch {
	case err != nil:
		res.Status, res.Message = statusFailed, err.Error()
		res.Tail = tail(buf.String(), 40)
	case len(res.Benches) == 0 && strings.Contains(buf.String(), "--- SKIP"):
		res.Status, res.Message = statusSkipped, skipMessage(buf.String())
	default:
		res.Status = statusOK
	}
	return res
}

// logName is the file name of a suite's output in bin/bench.
func logName(suite string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '.':
			return r
		}
		return '_'
	}, suite) + ".log"
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// skipMessage finds the message of a benchmark's b.Skip.
func skipMessage(out string) string {
	lines := strings.Split(out, "\n")
	for i, l := range lines {
		if strings.Contains(l, "--- SKIP") && i+1 < len(lines) {
			return "skipped: " + strings.TrimSpace(lines[i+1])
		}
	}
	return "skipped"
}

// benchmark is one parsed result line and its log lines.
type benchmark struct {
	Pkg        string
	Name       string // without the "Benchmark" prefix and the -GOMAXPROCS suffix
	Iterations int64
	Metrics    []metric
	Logs       []string
}

type metric struct {
	Value float64
	Unit  string
}

// value returns the metric with the unit.
func (b benchmark) value(unit string) (float64, bool) {
	for _, m := range b.Metrics {
		if m.Unit == unit {
			return m.Value, true
		}
	}
	return 0, false
}

var (
	benchLine = regexp.MustCompile(`^Benchmark(\S+?)(?:-\d+)?\s+(\d+)\s+(.+)$`)
	logLine   = regexp.MustCompile(`^\s+\S+\.go:\d+: (.*)$`)
)

// parse reads `go test -bench` output: "BenchmarkName-N  iters  v unit
// v unit...", the log lines under a benchmark ("    file.go:N: text"),
// and "pkg:" lines. Other lines that are not go test's own are returned
// as they are.
func parse(out string) ([]benchmark, []string) {
	var benches []benchmark
	var other []string
	var pkg string
	var pendingLogs []string
	for _, line := range strings.Split(out, "\n") {
		switch {
		case strings.HasPrefix(line, "pkg: "):
			pkg = strings.TrimPrefix(line, "pkg: ")
		case benchLine.MatchString(line):
			m := benchLine.FindStringSubmatch(line)
			iters, _ := strconv.ParseInt(m[2], 10, 64)
			b := benchmark{Pkg: pkg, Name: m[1], Iterations: iters, Logs: pendingLogs}
			pendingLogs = nil
			f := strings.Fields(m[3])
			for i := 0; i+1 < len(f); i += 2 {
				v, err := strconv.ParseFloat(f[i], 64)
				if err != nil {
					break
				}
				b.Metrics = append(b.Metrics, metric{Value: v, Unit: f[i+1]})
			}
			benches = append(benches, b)
		case logLine.MatchString(line):
			// go test prints a benchmark's logs after its result line.
			text := logLine.FindStringSubmatch(line)[1]
			if len(benches) > 0 {
				benches[len(benches)-1].Logs = append(benches[len(benches)-1].Logs, text)
			} else {
				pendingLogs = append(pendingLogs, text)
			}
		case isGoTestNoise(line):
		default:
			other = append(other, line)
		}
	}
	return benches, other
}

func isGoTestNoise(line string) bool {
	t := strings.TrimSpace(line)
	for _, p := range []string{"goos:", "goarch:", "pkg:", "cpu:", "PASS", "ok ", "ok\t", "FAIL", "--- ", "=== ", "?   ", "testing:"} {
		if strings.HasPrefix(t, p) {
			return true
		}
	}
	return t == "" || strings.HasPrefix(t, "Benchmark") // a benchmark name printed before its sub-benchmarks
}

// target is a goal (issues 7 and 15) on one metric of matching benchmarks.
type target struct {
	Name  string
	Bench *regexp.Regexp // matched against "<suite>: <benchmark name>"
	Unit  string
	Max   bool // the value must be <= Limit (else >= Limit)
	Limit float64
	// Ref, if set, makes the target relative: the limit is Limit times
	// the same metric of the first benchmark Ref matches (in the same run).
	Ref     *regexp.Regexp
	RefName string // names the reference in the report
}

var targets = []target{
	{Name: "executor, test broker, 4 workers: Submit->Result", Bench: regexp.MustCompile(`^fluxbridge executor: Executor/.*workers=4$`), Unit: "jobs/s", Limit: 20000},
	{Name: "controller end to end, 1,000 FluxJobs (default 4 reconciles)", Bench: regexp.MustCompile(`^controllers: ControllerEndToEnd1000(/reconciles=4)?$`), Unit: "fluxjobs/s", Limit: 200},
	{Name: "controller status writes per job", Bench: regexp.MustCompile(`^controllers: ControllerEndToEnd1000(/reconciles=4)?$`), Unit: "status-writes/job", Max: true, Limit: 4},
	{Name: "client peak RSS under a hostile broker, each mode (issue 19)", Bench: regexp.MustCompile(`^hostile broker: HostileBroker/`), Unit: "peak-RSS-MiB", Max: true, Limit: 96},
	{Name: "manager peak RSS under a hostile broker, each mode (issue 19)", Bench: hostileManager, Unit: "peak-rss-MiB", Max: true, Limit: 256},
	{Name: "manager alive after each hostile mode (issue 19)", Bench: hostileManager, Unit: "alive", Limit: 1},
	{Name: "restarted manager's peak RSS against the still-hostile broker (issue 19)", Bench: hostileManager, Unit: "restart-peak-rss-MiB", Max: true, Limit: 256},
	{Name: "restarted manager alive: no crash loop (issue 19)", Bench: hostileManager, Unit: "restart-alive", Limit: 1},
	{Name: "controller RSS with 10,000 FluxJobs tracked", Bench: regexp.MustCompile(`^controllers: ControllerMemory10000$`), Unit: "rss-MiB", Max: true, Limit: 150},
	{Name: "controller RSS, 4 FluxEndpoints x 2,500 FluxJobs tracked", Bench: regexp.MustCompile(`^controllers: ControllerMemory4x2500$`), Unit: "rss-MiB", Max: true, Limit: 150},
	// Against a real broker (test execution mode), relative to flux-core's
	// own clients in the same run.
	{Name: "real broker: end-to-end jobs/s vs the Python FluxExecutor", Bench: realExecutor, Unit: "jobs/s", Limit: 1, Ref: realPython, RefName: "python-executor"},
	{Name: "real broker: submit rate vs the Python FluxExecutor", Bench: realExecutor, Unit: "submit-jobs/s", Limit: 1, Ref: realPython, RefName: "python-executor"},
	{Name: "real broker: submit rate vs flux submit --cc", Bench: realExecutor, Unit: "submit-jobs/s", Limit: 1, Ref: realSubmitCC, RefName: "flux-submit-cc"},
	{Name: "real broker: client CPU per job vs the Python FluxExecutor (issue 15)", Bench: realExecutor, Unit: "cpu-µs/job", Max: true, Limit: 0.15, Ref: realPython, RefName: "python-executor"},
	{Name: "real broker: client RSS vs the Python FluxExecutor", Bench: realExecutor, Unit: "rss-MB", Max: true, Limit: 0.25, Ref: realPython, RefName: "python-executor"},
	// Issue 15: the Kubernetes path side by side with flux submit on
	// one real instance (controllers' BenchmarkControllerSideBySide).
	{Name: "Kubernetes path vs native flux submit --cc (throughput ratio)", Bench: sideBySideReal, Unit: "k8s/native", Limit: 0.8},
	{Name: "broker CPU per FluxJob vs per native job", Bench: sideBySideReal, Unit: "broker-cpu-ratio", Max: true, Limit: 1.1},
	{Name: "apiserver+etcd CPU per FluxJob", Bench: sideBySideAny, Unit: "apiserver+etcd-cpu-ms/job", Max: true, Limit: 15},
	// Issue 21: one array FluxJob side by side with flux submit --cc
	// (controllers' BenchmarkControllerArray, BenchmarkControllerArrayMemory).
	{Name: "one array FluxJob vs flux submit --cc=1-N --wait (throughput ratio)", Bench: arrayReal, Unit: "k8s/native", Limit: 0.9},
	{Name: "manager API requests per array (constant, not per index)", Bench: arrayAny, Unit: "api-requests/array", Max: true, Limit: 40},
	{Name: "manager RSS per index at 100,000 indexes", Bench: regexp.MustCompile(`^controllers: ControllerArrayMemory$`), Unit: "rss-bytes/index", Max: true, Limit: 1024},
}

// The rows of controllers' BenchmarkControllerArray: with flux-core, and
// with either broker.
var (
	arrayReal = regexp.MustCompile(`^controllers: ControllerArray/broker=flux-core/indexes=\d+$`)
	arrayAny  = regexp.MustCompile(`^controllers: ControllerArray/broker=[^/]+/indexes=\d+$`)
)

// The rows of controllers' BenchmarkManagerHostileBroker (256 MiB: the
// manager container's memory limit in config/manager/manager.yaml).
var hostileManager = regexp.MustCompile(`^hostile broker: manager: ManagerHostileBroker/`)

// The rows of controllers' BenchmarkControllerSideBySide: with flux-core,
// and with either broker.
var (
	sideBySideReal = regexp.MustCompile(`^controllers: ControllerSideBySide/broker=flux-core/history=\d+$`)
	sideBySideAny  = regexp.MustCompile(`^controllers: ControllerSideBySide/broker=[^/]+/history=\d+$`)
)

// The rows of test/realflux's BenchmarkRealFlux.
var (
	realExecutor = regexp.MustCompile(`^real broker: RealFlux/executor.*/workers=4$`)
	realPython   = regexp.MustCompile(`^real broker: RealFlux/python-executor$`)
	realSubmitCC = regexp.MustCompile(`^real broker: RealFlux/flux-submit-cc$`)
)

// Target verdicts.
const (
	verdictPass = "pass"
	verdictFail = "FAIL"
	verdictNone = "n/a"
)

type targetResult struct {
	Target   target
	Bench    string
	Goal     string
	Measured string
	Verdict  string
}

// find returns the first benchmark whose "<suite>: <name>" re matches and
// that has unit.
func find(results []result, re *regexp.Regexp, unit string) (string, float64, bool) {
	for _, r := range results {
		for _, b := range r.Benches {
			id := r.Suite.Name + ": " + b.Name
			if re.MatchString(id) {
				if v, ok := b.value(unit); ok {
					return id, v, true
				}
			}
		}
	}
	return "", 0, false
}

// evaluate checks each target against every benchmark it matches; a target
// no benchmark measured is "n/a" with the suite's status.
func evaluate(ts []target, results []result) []targetResult {
	var out []targetResult
	for _, t := range ts {
		op := "≥"
		if t.Max {
			op = "≤"
		}
		limit := t.Limit
		goal := op + " " + formatValue(t.Limit) + " " + t.Unit
		if t.Ref != nil {
			_, ref, ok := find(results, t.Ref, t.Unit)
			if !ok {
				out = append(out, targetResult{Target: t, Goal: fmt.Sprintf("%s %s× %s's", op, formatValue(t.Limit), t.RefName),
					Measured: "not measured (no " + t.RefName + " row)", Verdict: verdictNone})
				continue
			}
			limit = t.Limit * ref
			goal = fmt.Sprintf("%s %s× %s's %s = %s %s", op, formatValue(t.Limit), t.RefName, formatValue(ref), formatValue(limit), t.Unit)
		}
		found := false
		for _, r := range results {
			for _, b := range r.Benches {
				id := r.Suite.Name + ": " + b.Name
				if !t.Bench.MatchString(id) {
					continue
				}
				v, ok := b.value(t.Unit)
				if !ok {
					continue
				}
				found = true
				pass := v >= limit
				if t.Max {
					pass = v <= limit
				}
				verdict := verdictFail
				if pass {
					verdict = verdictPass
				}
				out = append(out, targetResult{Target: t, Bench: id, Goal: goal, Measured: formatValue(v) + " " + t.Unit, Verdict: verdict})
			}
		}
		if !found {
			why := "not measured"
			for _, r := range results {
				if strings.HasPrefix(t.Bench.String(), "^"+regexp.QuoteMeta(r.Suite.Name)) && r.Message != "" {
					why = "not measured (" + r.Message + ")"
				}
			}
			out = append(out, targetResult{Target: t, Goal: goal, Measured: why, Verdict: verdictNone})
		}
	}
	return out
}

// formatValue prints a metric with sensible precision.
func formatValue(v float64) string {
	switch a := abs(v); {
	case a == 0:
		return "0"
	case a >= 1000 || (a == math.Trunc(a) && a < 1e15):
		return strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	case a >= 0.01:
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
	return strconv.FormatFloat(v, 'g', 3, 64)
}

func abs(v float64) float64 {
	if v < 0 {
		return -v
	}
	return v
}

// machine describes where the benchmarks ran.
type machine struct {
	CPUs, CPUModel, Memory, GoVersion, Kernel, Commit string
}

func describeMachine(ctx context.Context, root string) machine {
	m := machine{CPUs: strconv.Itoa(runtime.NumCPU()), CPUModel: "unknown", Memory: "unknown", Kernel: "unknown", Commit: "unknown"}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
		_ = f.Close()
	}
	if data, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, l := range strings.Split(string(data), "\n") {
			if v, ok := strings.CutPrefix(l, "MemTotal:"); ok {
				kib, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
				m.Memory = fmt.Sprintf("%.1f GiB", kib/(1<<20))
			}
		}
	}
	if data, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = runtime.GOOS + " " + strings.TrimSpace(string(data))
	}
	if out, err := exec.CommandContext(ctx, "go", "version").Output(); err == nil {
		m.GoVersion = strings.TrimSpace(string(out))
	}
	git := func(args ...string) string {
		cmd := exec.CommandContext(ctx, "git", args...)
		cmd.Dir = root
		out, err := cmd.Output()
		if err != nil {
			return ""
		}
		return strings.TrimSpace(string(out))
	}
	if c := git("rev-parse", "--short=12", "HEAD"); c != "" {
		m.Commit = c
		if git("status", "--porcelain", "--untracked-files=no") != "" {
			m.Commit += " (with uncommitted changes)"
		}
	}
	return m
}

// report is everything the Markdown file shows.
type report struct {
	Started, Finished time.Time
	Machine           machine
	Results           []result
	Targets           []targetResult
	// LoadStart and LoadEnd are /proc/loadavg's 1, 5 and 15 minute load
	// averages: wall-clock rates mean little on a loaded machine.
	LoadStart, LoadEnd string
	// Notes is the hand-written analysis (notesPath), if any.
	Notes string
}

// busy reports whether the 1-minute load average exceeds the CPUs.
func busy(load, cpus string) bool {
	f := strings.Fields(load)
	if len(f) == 0 {
		return false
	}
	l, err1 := strconv.ParseFloat(f[0], 64)
	n, err2 := strconv.ParseFloat(cpus, 64)
	return err1 == nil && err2 == nil && l > n
}

// loadAverage returns the first three fields of /proc/loadavg.
func loadAverage() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(data))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

func (r *report) markdown() string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	p("# Benchmarks\n\n")
	p("<!-- Generated by `go run ./hack/bench` (`make bench`). Do not edit by hand: run it again. -->\n\n")
	p("Generated by `make bench` (`go run ./hack/bench`), which runs every suite below in one run on one machine ")
	p("and writes this file from their output.\n\n")
	p("| | |\n|---|---|\n")
	p("| date | %s (took %s) |\n", r.Started.Format("2006-01-02 15:04 MST"), r.Finished.Sub(r.Started).Round(time.Second))
	p("| machine | %s CPUs, %s, %s memory, %s |\n", r.Machine.CPUs, r.Machine.CPUModel, r.Machine.Memory, r.Machine.Kernel)
	p("| Go | %s |\n", r.Machine.GoVersion)
	p("| load average (1, 5, 15 min) | %s at the start, %s at the end |\n", r.LoadStart, r.LoadEnd)
	p("| commit | %s |\n", r.Machine.Commit)
	p("| command | `make bench` = `go run ./hack/bench` |\n\n")
	if busy(r.LoadStart, r.Machine.CPUs) || busy(r.LoadEnd, r.Machine.CPUs) {
		p("**The machine was busy** (load average above its %s CPUs): other processes shared the CPUs, so the ", r.Machine.CPUs)
		p("rates below (jobs/s, fluxjobs/s) are lower bounds; CPU time, allocations, memory and request counts are not affected as much.\n\n")
	}

	p("## Targets (issues 7 and 15)\n\n")
	p("| target | goal | benchmark | measured | result |\n|---|---|---|---|---|\n")
	for _, t := range r.Targets {
		bench := t.Bench
		if bench == "" {
			bench = "—"
		}
		p("| %s | %s | %s | %s | %s |\n", t.Target.Name, t.Goal, bench, t.Measured, t.Verdict)
	}
	p("\n")

	p("## Suites\n\n")
	p("| suite | what | command | result |\n|---|---|---|---|\n")
	for _, res := range r.Results {
		cmd := "—"
		if len(res.Suite.Args) > 0 {
			cmd = "`" + strings.ReplaceAll(res.Suite.commandLine(), "|", `\|`) + "`"
		}
		status := res.Status
		if res.Message != "" && !strings.HasPrefix(res.Message, res.Status) {
			status += ": " + res.Message
		} else if res.Message != "" {
			status = res.Message
		}
		if res.Elapsed > 0 {
			status += fmt.Sprintf(" (%s)", res.Elapsed.Round(time.Second))
		}
		p("| %s | %s | %s | %s |\n", res.Suite.Name, res.Suite.About, cmd, strings.ReplaceAll(status, "|", `\|`))
	}
	p("\n")
	for _, res := range r.Results {
		p("## %s\n\n", res.Suite.Name)
		p("%s.\n\n", sentence(res.Suite.About))
		switch res.Status {
		case statusSkipped:
			p("%s\n\n", res.Message)
			continue
		case statusFailed:
			p("**FAILED**: %s\n\n```\n%s\n```\n\n", res.Message, res.Tail)
		}
		if len(res.Benches) > 0 {
			writeTable(&b, res.Benches)
		}
		var logs []string
		for _, bm := range res.Benches {
			for _, l := range bm.Logs {
				logs = append(logs, bm.Name+": "+l)
			}
		}
		if len(logs) > 0 {
			p("Benchmark logs:\n\n```\n%s\n```\n\n", strings.Join(logs, "\n"))
		}
		if len(res.Other) > 0 {
			p("Output:\n\n```\n%s\n```\n\n", strings.Join(res.Other, "\n"))
		}
	}
	if r.Notes != "" {
		p("## Analysis (hand-written: %s)\n\n", notesPath)
		p("%s\n", strings.TrimSpace(r.Notes))
	}
	return b.String()
}

// notesPath is the hand-written part of the report, relative to the
// repository root: the analysis of the numbers (what limits them, the
// profiles that show it), copied at the end of docs/benchmarks.md.
const notesPath = "docs/benchmarks-analysis.md"

// sentence capitalizes the first letter.
func sentence(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// writeTable writes one table for a suite's benchmarks, one column per
// unit, in the order the units first appear.
func writeTable(b *strings.Builder, benches []benchmark) {
	var units []string
	seen := map[string]bool{}
	for _, bm := range benches {
		for _, m := range bm.Metrics {
			if !seen[m.Unit] {
				seen[m.Unit] = true
				units = append(units, m.Unit)
			}
		}
	}
	sort.SliceStable(units, func(i, j int) bool { return unitRank(units[i]) < unitRank(units[j]) })
	fmt.Fprintf(b, "| benchmark | runs |")
	for _, u := range units {
		fmt.Fprintf(b, " %s |", u)
	}
	fmt.Fprintf(b, "\n|---|--:|")
	for range units {
		fmt.Fprintf(b, "--:|")
	}
	fmt.Fprintln(b)
	for _, bm := range benches {
		fmt.Fprintf(b, "| %s | %d |", bm.Name, bm.Iterations)
		for _, u := range units {
			if v, ok := bm.value(u); ok {
				fmt.Fprintf(b, " %s |", formatValue(v))
			} else {
				fmt.Fprintf(b, " |")
			}
		}
		fmt.Fprintln(b)
	}
	fmt.Fprintln(b)
}

// unitRank puts the custom metrics first and go test's own last.
func unitRank(u string) int {
	switch u {
	case "ns/op":
		return 1
	case "MB/s":
		return 2
	case "B/op":
		return 3
	case "allocs/op":
		return 4
	}
	return 0
}
