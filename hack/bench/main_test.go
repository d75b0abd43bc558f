package main

import (
	"context"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/testbroker"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const sampleOutput = `goos: linux
goarch: amd64
pkg: github.com/fluxjob/fluxjob-operator/fluxbridge
cpu: Intel(R) Xeon(R) CPU @ 2.20GHz
BenchmarkExecutor/source=eventlog/workers=4-2         	   20000	     41234 ns/op	     24251 jobs/s	    5120 B/op	      61 allocs/op
BenchmarkExecutor/source=journal/workers=4-2          	   20000	     60000 ns/op	     16666 jobs/s	    4000 B/op	      50 allocs/op
--- BENCH: BenchmarkExecutor/source=journal/workers=4-2
    bench_test.go:77: a log line
PASS
ok  	github.com/fluxjob/fluxjob-operator/fluxbridge	12.3s
`

func TestParse(t *testing.T) {
	benches, other := parse(sampleOutput)
	if len(other) != 0 {
		t.Fatalf("unexpected other lines %q", other)
	}
	if len(benches) != 2 {
		t.Fatalf("got %d benchmarks, want 2: %+v", len(benches), benches)
	}
	b := benches[1]
	if b.Name != "Executor/source=journal/workers=4" || b.Iterations != 20000 || b.Pkg != "github.com/fluxjob/fluxjob-operator/fluxbridge" {
		t.Fatalf("parsed %+v", b)
	}
	tests := []struct {
		unit string
		want float64
	}{{"ns/op", 60000}, {"jobs/s", 16666}, {"B/op", 4000}, {"allocs/op", 50}}
	for _, tc := range tests {
		if v, ok := b.value(tc.unit); !ok || v != tc.want {
			t.Errorf("%s = %v, %v; want %v", tc.unit, v, ok, tc.want)
		}
	}
	if len(b.Logs) != 1 || b.Logs[0] != "a log line" {
		t.Fatalf("logs %q", b.Logs)
	}
	if len(benches[0].Logs) != 0 {
		t.Fatalf("first benchmark got logs %q", benches[0].Logs)
	}
}

func TestParseKeepsForeignOutput(t *testing.T) {
	_, other := parse("real broker: 130 jobs/s\nPASS\n")
	if len(other) != 1 || other[0] != "real broker: 130 jobs/s" {
		t.Fatalf("other = %q", other)
	}
}

func TestEvaluate(t *testing.T) {
	benches, _ := parse(sampleOutput)
	results := []result{
		{Suite: suite{Name: "fluxbridge executor"}, Status: statusOK, Benches: benches},
		{Suite: suite{Name: "controllers"}, Status: statusSkipped, Message: "skipped: no envtest"},
	}
	ts := []target{
		{Name: "rate", Bench: regexp.MustCompile(`^fluxbridge executor: Executor/.*workers=4$`), Unit: "jobs/s", Limit: 20000},
		{Name: "allocs", Bench: regexp.MustCompile(`^fluxbridge executor: Executor/source=journal`), Unit: "allocs/op", Max: true, Limit: 50},
		{Name: "ctl", Bench: regexp.MustCompile(`^controllers: X$`), Unit: "fluxjobs/s", Limit: 200},
	}
	got := evaluate(ts, results)
	want := []struct{ verdict, measured string }{
		{verdictPass, "24251 jobs/s"},
		{verdictFail, "16666 jobs/s"},
		{verdictPass, "50 allocs/op"},
		{verdictNone, "not measured (skipped: no envtest)"},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d results %+v, want %d", len(got), got, len(want))
	}
	for i, w := range want {
		if got[i].Verdict != w.verdict || got[i].Measured != w.measured {
			t.Errorf("result %d = %s %q, want %s %q", i, got[i].Verdict, got[i].Measured, w.verdict, w.measured)
		}
	}
}

func TestMarkdown(t *testing.T) {
	benches, _ := parse(sampleOutput)
	r := &report{
		Started: time.Date(2026, 11, 25, 20, 0, 0, 0, time.UTC), Finished: time.Date(2026, 11, 25, 20, 5, 0, 0, time.UTC),
		Machine: machine{CPUs: "2", CPUModel: "cpu", Memory: "1 GiB", GoVersion: "go1.26.8", Kernel: "linux", Commit: "abc"},
		Results: []result{
			{Suite: suite{Name: "fluxbridge executor", About: "about", Args: []string{"go", "test", "-run", "^$"}}, Status: statusOK, Benches: benches},
			{Suite: suite{Name: "real broker", About: "real"}, Status: statusSkipped, Message: "skipped: flux-core not installed (flux not on PATH)"},
		},
	}
	r.Targets = evaluate(targets, r.Results)
	md := r.markdown()
	for _, want := range []string{
		"| date | 2026-11-25 20:00 UTC (took 5m0s) |",
		"| benchmark | runs | jobs/s | ns/op | B/op | allocs/op |",
		"| Executor/source=eventlog/workers=4 | 20000 | 24251 | 41234 | 5120 | 61 |",
		"| executor, test broker, 4 workers: Submit->Result | ≥ 20000 jobs/s | fluxbridge executor: Executor/source=eventlog/workers=4 | 24251 jobs/s | pass |",
		"skipped: flux-core not installed (flux not on PATH)",
		"`go test -run '^$'`",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
}

func TestShellQuote(t *testing.T) {
	for in, want := range map[string]string{"go": "go", "^$": "'^$'", "it's": `'it'\''s'`, "": "''"} {
		if got := shellQuote(in); got != want {
			t.Errorf("shellQuote(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestStreamProxyCountsStreams runs the production client through the
// proxy: an eventlog watch is one open stream until the job ends.
func TestStreamProxyCountsStreams(t *testing.T) {
	srv := testbroker.New(testbroker.Options{})
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	srv.PauseScheduling(true)
	p, err := newStreamProxy(filepath.Join(t.TempDir(), "proxy"), srv.SocketPath())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := flux.Dial(ctx, p.URI())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	js, err := job.FromCommand([]string{"true"}, job.CommandOptions{})
	if err != nil {
		t.Fatal(err)
	}
	id, err := job.SubmitJobspec(ctx, c, js, job.SubmitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	w, err := job.WatchEvents(ctx, c, id, job.WatchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	waitStreams(t, p, 1)
	if got := p.OpenStreams()["job-info.eventlog-watch"]; got != 1 {
		t.Fatalf("open streams %v, want one eventlog watch", p.OpenStreams())
	}
	if p.Conns() != 1 {
		t.Fatalf("%d connections, want 1", p.Conns())
	}
	srv.PauseScheduling(false) // the job runs, ends, the watch ends (ENODATA)
	waitStreams(t, p, 0)
}

func waitStreams(t *testing.T, p *streamProxy, want int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for sumStreams(p.OpenStreams()) != want {
		if time.Now().After(deadline) {
			t.Fatalf("open streams %v, want %d", p.OpenStreams(), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestEvaluateRelative(t *testing.T) {
	out := `BenchmarkRealFlux/executor/workers=4-2   1   100 jobs/s   50 cpu-µs/job   20 rss-MB
BenchmarkRealFlux/python-executor-2      1   130 jobs/s  400 cpu-µs/job  100 rss-MB
`
	benches, _ := parse(out)
	results := []result{{Suite: suite{Name: "real broker"}, Status: statusOK, Benches: benches}}
	ts := []target{
		{Name: "rate", Bench: realExecutor, Unit: "jobs/s", Limit: 1, Ref: realPython, RefName: "python-executor"},
		{Name: "cpu", Bench: realExecutor, Unit: "cpu-µs/job", Max: true, Limit: 0.2, Ref: realPython, RefName: "python-executor"},
		{Name: "rss", Bench: realExecutor, Unit: "rss-MB", Max: true, Limit: 0.25, Ref: realPython, RefName: "python-executor"},
		{Name: "cc", Bench: realExecutor, Unit: "jobs/s", Limit: 1, Ref: realSubmitCC, RefName: "flux-submit-cc"},
	}
	got := evaluate(ts, results)
	want := []struct{ verdict, goal string }{
		{verdictFail, "≥ 1× python-executor's 130 = 130 jobs/s"},
		{verdictPass, "≤ 0.20× python-executor's 400 = 80 cpu-µs/job"},
		{verdictPass, "≤ 0.25× python-executor's 100 = 25 rss-MB"},
		{verdictNone, "≥ 1× flux-submit-cc's"},
	}
	if len(got) != len(want) {
		t.Fatalf("got %+v", got)
	}
	for i, w := range want {
		if got[i].Verdict != w.verdict || got[i].Goal != w.goal {
			t.Errorf("target %d: %s %q, want %s %q", i, got[i].Verdict, got[i].Goal, w.verdict, w.goal)
		}
	}
}
