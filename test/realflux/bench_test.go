package realflux

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fluxjob/fluxjob-operator/fluxbridge"
)

// BenchmarkRealFlux runs the same number of jobs (2,000; $REALFLUX_JOBS
// overrides it) of `true` in flux-core's test execution mode
// (attributes.system.exec.test.run_duration = "0.001s", see flux-core
// src/modules/job-exec/testexec.c: an FSD string) through each client on
// one `flux start --test-size=1` instance, one client after the other,
// each in its own process so that its CPU time and peak RSS are its own:
//
//   - executor/workers=N: our fluxbridge.Executor (event source eventlog,
//     and journal for 4 workers), in a child copy of this test binary;
//     executor-gomaxprocs=1 runs that child with GOMAXPROCS=1;
//   - python-executor: flux-core's Python flux.job.FluxExecutor (one
//     worker thread, its default), through `flux python`;
//   - flux-submit-cc: `flux submit --cc=1-N --urgency=0`, submission only
//     (the jobs are held, then cancelled).
//
// Metrics: jobs/s end to end (first submit to last result), submit-jobs/s
// (first submit until every job ID is known), cpu-ms and cpu-µs/job (the
// client process's user+system time), rss-MB (its peak RSS). One op is the
// whole run; use -benchtime 1x:
//
//	go test -run '^$' -bench RealFlux -benchmem -count 1 -benchtime 1x -timeout 60m ./test/realflux/
//
// After the benchmarks TestMain prints the rows as one table.
func BenchmarkRealFlux(b *testing.B) {
	inst := useInstance(b)
	n := benchJobs(b)
	version, _ := inst.Flux(context.Background(), "version")
	// the first line is "commands:    0.88.0"
	if line, _, _ := strings.Cut(version, "\n"); len(strings.Fields(line)) > 0 {
		f := strings.Fields(line)
		version = "flux-core " + f[len(f)-1]
	}
	rows := []struct {
		name string
		run  func(ctx context.Context, inst *instance, n int) (benchRow, error)
	}{
		{"executor/workers=1", ourExecutor(1, fluxbridge.EventSourceEventlog)},
		{"executor/workers=2", ourExecutor(2, fluxbridge.EventSourceEventlog)},
		{"executor/workers=4", ourExecutor(4, fluxbridge.EventSourceEventlog, cpuProfileEnv("executor-workers4")...)},
		{"executor-journal/workers=4", ourExecutor(4, fluxbridge.EventSourceJournal)},
		// The same client on one P: at the broker's pace the client is
		// woken for a message or two at a time, and a second P mostly
		// adds thread wake-ups (see docs/benchmarks.md).
		{"executor-gomaxprocs=1/workers=4", ourExecutor(4, fluxbridge.EventSourceEventlog, "GOMAXPROCS=1")},
		// The same client through the real `flux relay` over ssh:// and
		// pod exec (transport_test.go).
		{"executor-ssh/workers=4", ourExecutorVia("ssh")},
		{"executor-pod-exec/workers=4", ourExecutorVia("pod-exec")},
		{"python-executor", pythonExecutor},
		{"flux-submit-cc", fluxSubmitCC},
	}
	for _, r := range rows {
		b.Run(r.name, func(b *testing.B) {
			for range b.N {
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
				// every row starts on an idle instance
				if _, err := inst.Flux(ctx, "queue", "drain"); err != nil {
					cancel()
					b.Fatal(err)
				}
				load := loadAverage()
				row, err := r.run(ctx, inst, n)
				cancel()
				row.Load = load
				if err != nil {
					b.Fatal(err)
				}
				row.Name, row.Jobs, row.Broker = r.name, n, version
				row.report(b)
				recordRow(row)
			}
		})
	}
}

// benchRow is one client's measurement.
type benchRow struct {
	Name     string
	Broker   string
	Jobs     int
	SubmitS  float64 // seconds until every job ID was known
	TotalS   float64 // seconds until every result was known (0: submission only)
	CPU      time.Duration
	MaxRSSKB int64
	Load     string // 1-minute load average when the row started
}

// loadAverage returns the 1-minute load average: the machine is shared,
// and a busy machine slows the broker, so each row says how busy it was.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return "?"
	}
	return f[0]
}

func (r benchRow) report(b *testing.B) {
	if r.TotalS > 0 {
		b.ReportMetric(float64(r.Jobs)/r.TotalS, "jobs/s")
	}
	b.ReportMetric(float64(r.Jobs)/r.SubmitS, "submit-jobs/s")
	b.ReportMetric(float64(r.CPU.Milliseconds()), "cpu-ms")
	b.ReportMetric(float64(r.CPU.Microseconds())/float64(r.Jobs), "cpu-µs/job")
	b.ReportMetric(float64(r.MaxRSSKB)/1024, "rss-MB")
}

var (
	rowsMu sync.Mutex
	rows   []benchRow
)

func recordRow(r benchRow) {
	rowsMu.Lock()
	defer rowsMu.Unlock()
	rows = append(rows, r)
}

// printRows prints the recorded rows as a Markdown table (TestMain calls
// it after the benchmarks).
func printRows() {
	rowsMu.Lock()
	defer rowsMu.Unlock()
	if len(rows) == 0 {
		return
	}
	fmt.Printf("\nReal flux-core broker (%s, flux start --test-size=1, test execution mode run_duration=0.001s), %d jobs per client:\n\n", rows[0].Broker, rows[0].Jobs)
	fmt.Println("| client | jobs/s end to end | submit jobs/s | client CPU (user+sys) | CPU per job | max RSS | load avg at start |")
	fmt.Println("|---|---:|---:|---:|---:|---:|---:|")
	for _, r := range rows {
		e2e := "n/a (submit only)"
		if r.TotalS > 0 {
			e2e = fmt.Sprintf("%.0f", float64(r.Jobs)/r.TotalS)
		}
		fmt.Printf("| %s | %s | %.0f | %.2f s | %.0f µs | %.1f MB | %s |\n", r.Name, e2e, float64(r.Jobs)/r.SubmitS,
			r.CPU.Seconds(), float64(r.CPU.Microseconds())/float64(r.Jobs), float64(r.MaxRSSKB)/1024, r.Load)
	}
	fmt.Println()
}

func benchJobs(b *testing.B) int {
	if s := os.Getenv("REALFLUX_JOBS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			b.Fatalf("REALFLUX_JOBS=%q: want a positive integer", s)
		}
		return n
	}
	return 2000
}

// childResult is what a client process prints on a line starting with
// resultPrefix.
type childResult struct {
	SubmitS float64 `json:"submit_s"`
	TotalS  float64 `json:"total_s"`
}

// resultPrefix starts a client's result line (./execclient's ResultPrefix).
const resultPrefix = "REALFLUX_RESULT "

// runChild runs a client process against inst and returns its row: its
// own timings (from its result line) and its CPU time and peak RSS.
// A process that prints no result line is timed from here (wall time of
// the whole process) when wallIsSubmit is set.
func runChild(ctx context.Context, inst *instance, cmd *exec.Cmd, wallIsSubmit bool, env ...string) (benchRow, error) {
	cmd.Env = append(append(os.Environ(), "FLUX_URI="+inst.URI), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 10 * time.Second
	start := time.Now()
	err := cmd.Run()
	wall := time.Since(start)
	if err != nil {
		return benchRow{}, fmt.Errorf("%s: %w\nstdout: %s\nstderr: %s", strings.Join(cmd.Args, " "), err, stdout.String(), stderr.String())
	}
	var res childResult
	found := false
	sc := bufio.NewScanner(&stdout)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), resultPrefix); ok {
			if err := json.Unmarshal([]byte(rest), &res); err != nil {
				return benchRow{}, fmt.Errorf("%s: result line: %w", cmd.Args[0], err)
			}
			found = true
		}
	}
	if !found && wallIsSubmit {
		res.SubmitS, found = wall.Seconds(), true
	}
	if !found {
		return benchRow{}, fmt.Errorf("%s printed no result line\nstdout: %s\nstderr: %s", strings.Join(cmd.Args, " "), stdout.String(), stderr.String())
	}
	ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	if !ok {
		return benchRow{}, errors.New("no rusage for the client process")
	}
	return benchRow{
		SubmitS:  res.SubmitS,
		TotalS:   res.TotalS,
		CPU:      time.Duration(syscall.TimevalToNsec(ru.Utime) + syscall.TimevalToNsec(ru.Stime)),
		MaxRSSKB: ru.Maxrss,
	}, nil
}

// ourExecutor runs the executor client (./execclient) in a child process.
// env is added to the child's environment.
func ourExecutor(workers int, src fluxbridge.EventSource, env ...string) func(context.Context, *instance, int) (benchRow, error) {
	return func(ctx context.Context, inst *instance, n int) (benchRow, error) {
		exe, err := executorClient(ctx)
		if err != nil {
			return benchRow{}, err
		}
		return runChild(ctx, inst, exec.CommandContext(ctx, exe), false, append([]string{"REALFLUX_JOBS=" + strconv.Itoa(n),
			"REALFLUX_WORKERS=" + strconv.Itoa(workers), "REALFLUX_SOURCE=" + strconv.Itoa(int(src))}, env...)...)
	}
}

// cpuProfileEnv asks the executor client for a CPU profile in
// $BENCH_PROFILE_DIR (as execclient-<name>.cpu.pprof), if that is set.
func cpuProfileEnv(name string) []string {
	dir := os.Getenv("BENCH_PROFILE_DIR")
	if dir == "" {
		return nil
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil
	}
	return []string{"REALFLUX_CPUPROFILE=" + filepath.Join(abs, "execclient-"+name+".cpu.pprof")}
}

var (
	clientOnce sync.Once
	clientDir  string // removed by TestMain
	clientPath string
	clientErr  error
)

// executorClient builds ./execclient once, into a temporary directory.
func executorClient(ctx context.Context) (string, error) {
	clientOnce.Do(func() {
		if clientDir, clientErr = os.MkdirTemp("", "realflux-execclient-"); clientErr != nil {
			return
		}
		clientPath = filepath.Join(clientDir, "execclient")
		out, err := exec.CommandContext(ctx, "go", "build", "-o", clientPath, "./execclient").CombinedOutput()
		if err != nil {
			clientErr = fmt.Errorf("go build ./execclient: %w: %s", err, out)
		}
	})
	return clientPath, clientErr
}

// pythonScript is the Python side: flux-core's FluxExecutor running the
// same jobs, timed the same way.
const pythonScript = `
import json, sys, time
import flux.job
n = int(sys.argv[1])
js = flux.job.JobspecV1.from_command(["true"], environment={}, cwd="/")
js.setattr("system.exec.test.run_duration", "0.001s")
start = time.time()
with flux.job.FluxExecutor() as ex:
    fs = [ex.submit(js) for _ in range(n)]
    for f in fs:
        f.jobid()
    submitted = time.time() - start
    for f in fs:
        r = f.result()
        if r != 0:
            sys.exit("result %d" % r)
    total = time.time() - start
print("` + resultPrefix + `" + json.dumps({"submit_s": submitted, "total_s": total}))
`

func pythonExecutor(ctx context.Context, inst *instance, n int) (benchRow, error) {
	return runChild(ctx, inst, exec.CommandContext(ctx, "flux", "python", "-c", pythonScript, strconv.Itoa(n)), false)
}

// fluxSubmitCC times `flux submit --cc=1-N --urgency=0` (the whole
// command, its start-up included), then cancels the held jobs.
func fluxSubmitCC(ctx context.Context, inst *instance, n int) (benchRow, error) {
	cmd := exec.CommandContext(ctx, "flux", "submit", "--quiet", "--cc=1-"+strconv.Itoa(n), "--urgency=0",
		"--setattr=system.exec.test.run_duration=0.001s", "true")
	row, err := runChild(ctx, inst, cmd, true)
	if err != nil {
		return row, err
	}
	if _, err := inst.Flux(ctx, "cancel", "--all"); err != nil {
		return row, err
	}
	_, err = inst.Flux(ctx, "queue", "drain")
	return row, err
}
