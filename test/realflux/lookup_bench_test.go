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
// REALFLUX_LOOKUP_HISTORY inactive jobs (20,000 in `make bench`; held
// submissions cancelled at once), what the controller's job-list lookup of a FluxJob
// with a submit marker costs the broker (its CPU time, from
// /proc/<broker.pid>/stat), unbounded (what every submission used to ask)
// and bounded as controllers/submit.go lookupJob asks it now: "since" a
// time after the history ended, at most 8 results. A fresh submission
// asks nothing at all.
//
// Making the history takes a minute, so it runs only when
// REALFLUX_LOOKUP_HISTORY is set (`make bench` sets it in a suite of its
// own; the general real-broker suite skips it):
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
	// Held submissions cancelled at once: inactive jobs that cost job-list
	// what finished ones do, made in seconds rather than minutes.
	start := time.Now()
	if _, err := inst.Flux(ctx, "submit", "--quiet", "--cc=1-"+strconv.Itoa(history), "--urgency=0", "true"); err != nil {
		b.Fatal(err)
	}
	if _, err := inst.Flux(ctx, "cancel", "--all", "--quiet"); err != nil {
		b.Fatal(err)
	}
	if _, err := inst.Flux(ctx, "queue", "drain"); err != nil {
		b.Fatal(err)
	}
	b.Logf("made %d inactive jobs in %s", history, time.Since(start).Round(time.Second))
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
