package realflux

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
)

// BenchmarkRealFluxLookup measures, on a real flux-core broker with
// REALFLUX_LOOKUP_HISTORY inactive jobs (default 20,000, made first in
// test execution mode), what the controller's job-list lookup of a FluxJob
// with a submit marker costs the broker (its CPU time, from
// /proc/<broker.pid>/stat), unbounded (what every submission used to ask)
// and bounded as controllers/submit.go lookupJob asks it now: "since" a
// time after the history ended, at most 8 results. A fresh submission
// asks nothing at all.
//
// Making the history takes minutes (a busy 2-core machine ran test-mode
// jobs at 4 per second), so it runs only when REALFLUX_LOOKUP_HISTORY is
// set, not in every `make bench`:
//
//	PATH=/opt/flux-core/bin:$PATH REALFLUX_LOOKUP_HISTORY=20000 \
//	  go test -run '^$' -bench RealFluxLookup -benchtime 100x ./test/realflux/
func BenchmarkRealFluxLookup(b *testing.B) {
	history, err := strconv.Atoi(os.Getenv("REALFLUX_LOOKUP_HISTORY"))
	if err != nil || history <= 0 {
		b.Skip("set REALFLUX_LOOKUP_HISTORY (e.g. 20000) to make that many jobs of history and measure the lookup")
	}
	inst := useInstance(b)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	if _, err := inst.Flux(ctx, "submit", "--quiet", "--cc=1-"+strconv.Itoa(history),
		"--setattr=system.exec.test.run_duration=0.001s", "true"); err != nil {
		b.Fatal(err)
	}
	if _, err := inst.Flux(ctx, "queue", "drain"); err != nil {
		b.Fatal(err)
	}
	pidText, err := inst.Flux(ctx, "getattr", "broker.pid")
	if err != nil {
		b.Fatal(err)
	}
	pid, err := strconv.Atoi(pidText)
	if err != nil {
		b.Fatal(err)
	}
	c, err := flux.Dial(ctx, inst.URI)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	time.Sleep(10 * time.Millisecond) // the last job's t_inactive is before since
	since := float64(time.Now().UnixNano()) / 1e9
	b.Logf("history %d inactive jobs; load %s", history, loadAverage())
	for _, tc := range []struct {
		name  string
		since float64
		max   int
	}{{"unbounded", 0, 0}, {"bounded", since, 8}} {
		b.Run(fmt.Sprintf("%s/history=%d", tc.name, history), func(b *testing.B) {
			before := procCPU(b, pid)
			for b.Loop() {
				jobs, err := job.List(ctx, c, job.ListOptions{Attrs: []string{"name"}, Constraint: job.Name("fluxjob-not-there"),
					Since: tc.since, MaxEntries: tc.max})
				if err != nil || len(jobs) != 0 {
					b.Fatal(jobs, err)
				}
			}
			b.ReportMetric(float64((procCPU(b, pid)-before).Microseconds())/float64(b.N)/1000, "broker-cpu-ms/op")
		})
	}
}

// procCPU is a process's user+system CPU time from /proc/<pid>/stat.
func procCPU(b *testing.B, pid int) time.Duration {
	b.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// Fields after the command (which may hold spaces) close with ')'.
	f := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+2:]))
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		b.Fatalf("parsing /proc/%d/stat: %v %v", pid, err1, err2)
	}
	const hz = 100 // USER_HZ
	return time.Duration(utime+stime) * time.Second / hz
}
