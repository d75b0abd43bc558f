package fluxbridge

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/testbroker"
)

// The benchmarks run the test broker in the same process, so allocations
// and bytes per job include the broker's share (decoding the request,
// simulating the lifecycle, encoding events) as well as the client's.
//
//	go test -run '^$' -bench 'Executor' -benchtime 20000x ./fluxbridge/
//	go test -run '^$' -bench 'InFlight' -benchtime 10000x ./fluxbridge/
//
// To measure the client alone, run the test broker in its own process and
// name it in FLUXBRIDGE_BENCH_URI; BenchmarkExecutor then uses it:
//
//	go run ./hack/testbroker -realistic=false -cores 1000000 -uri-file /tmp/tb.uri &
//	FLUXBRIDGE_BENCH_URI=$(cat /tmp/tb.uri) go test -run '^$' -bench Executor ./fluxbridge/

// BenchmarkExecutor measures Submit -> Result throughput: b.N jobs of
// `true` with zero run time are submitted at once and every result is
// awaited, after an untimed warm-up round of up to 5,000 jobs. One op is
// one job.
func BenchmarkExecutor(b *testing.B) {
	for _, src := range sources {
		for _, workers := range []int{1, 2, 4, 8} {
			b.Run(fmt.Sprintf("source=%v/workers=%d", src, workers), func(b *testing.B) {
				uri := os.Getenv("FLUXBRIDGE_BENCH_URI")
				if uri == "" {
					uri = startBroker(b, testbroker.Options{Cores: 1 << 20}).URI()
				}
				e := newTestExecutorURI(b, uri, execConfig{workers: workers, src: src})
				js := spec(b, "true")
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
				defer cancel()
				// Steady state: a warm-up round grows the heap first (a
				// fresh process pays page faults for every new span, which
				// made rows of one run differ by 2x on these VMs).
				warm := make([]*Future, min(b.N, 5000))
				for i := range warm {
					f, err := e.Submit(ctx, js, job.SubmitOptions{})
					if err != nil {
						b.Fatal(err)
					}
					warm[i] = f
				}
				for _, f := range warm {
					if r, err := f.Result(ctx); r != 0 || err != nil {
						b.Fatalf("warm-up Result = %d, %v", r, err)
					}
				}
				warm = nil
				futures := make([]*Future, b.N)
				b.ReportAllocs()
				b.ResetTimer()
				cpu0 := cpuTime()
				start := time.Now()
				for i := range futures {
					f, err := e.Submit(ctx, js, job.SubmitOptions{})
					if err != nil {
						b.Fatal(err)
					}
					futures[i] = f
				}
				for _, f := range futures {
					if r, err := f.Result(ctx); r != 0 || err != nil {
						b.Fatalf("Result = %d, %v", r, err)
					}
				}
				elapsed := time.Since(start)
				b.StopTimer()
				b.ReportMetric(float64(b.N)/elapsed.Seconds(), "jobs/s")
				b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(b.N), "cpu-µs/job")
			})
		}
	}
}

// BenchmarkInFlightFuture measures what an in-flight future holds: b.N
// held jobs (urgency 0, they never run) are submitted with a plain
// connection, then attached to, and once every future has seen its job's
// "priority" event the heap and goroutines are compared with before the
// attach. bytes/future includes the test broker's state for the future's
// stream (its eventlog watch, or nothing for the journal);
// client-goroutines/future counts the executor's goroutines only (by
// their pprof label), total-goroutines/future the broker's too.
// Run it with -benchtime=10000x for 10,000 in-flight futures.
func BenchmarkInFlightFuture(b *testing.B) {
	for _, src := range sources {
		b.Run("source="+src.String(), func(b *testing.B) {
			srv := startBroker(b, testbroker.Options{})
			c, err := flux.Dial(context.Background(), srv.URI())
			if err != nil {
				b.Fatal(err)
			}
			defer func() { c.Close() }()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			defer cancel()
			js := spec(b, "true")
			ids := make([]job.ID, b.N)
			for i := range ids {
				id, err := job.SubmitJobspec(ctx, c, js, job.SubmitOptions{Urgency: job.Urgency(job.UrgencyHold)})
				if err != nil {
					b.Fatal(err)
				}
				ids[i] = id
			}
			// the submitting connection's buffers, at both ends, are not
			// the futures' cost: close it and cancel with another later
			c.Close()
			if c, err = flux.Dial(context.Background(), srv.URI()); err != nil {
				b.Fatal(err)
			}
			e := newTestExecutor(b, srv, execConfig{src: src})
			if js, ok := e.workers[0].src.(*journalSource); ok {
				// the journal opens with a backlog of every active job:
				// let it drain (b.N entries and the sentinel) first
				for {
					js.mu.Lock()
					seq := js.seq
					js.mu.Unlock()
					if seq > uint64(b.N) {
						break
					}
					time.Sleep(time.Millisecond)
				}
			}
			heap0, g0, cg0 := memSnapshot()
			b.ResetTimer()
			var wg sync.WaitGroup
			wg.Add(len(ids))
			futures := make([]*Future, len(ids))
			for i, id := range ids {
				f, err := e.Attach(ctx, id)
				if err != nil {
					b.Fatal(err)
				}
				var once sync.Once
				if err := f.AddEventCallback("priority", func(*Future, job.Event) { once.Do(wg.Done) }); err != nil {
					b.Fatal(err)
				}
				futures[i] = f
			}
			wg.Wait()
			b.StopTimer()
			heap1, g1, cg1 := memSnapshot()
			n := float64(b.N)
			b.ReportMetric(float64(int64(heap1)-int64(heap0))/n, "bytes/future")
			b.ReportMetric(float64(cg1-cg0)/n, "client-goroutines/future")
			b.ReportMetric(float64(g1-g0)/n, "total-goroutines/future")
			for _, f := range futures {
				if f.Done() {
					b.Fatal("a held job's future completed")
				}
			}
			// let the jobs end so that shutdown is quick
			for _, id := range ids {
				if err := job.Cancel(ctx, c, id, ""); err != nil {
					b.Fatal(err)
				}
			}
			for _, f := range futures {
				if _, err := f.Result(ctx); err == nil {
					b.Fatal("cancelled job has a result")
				}
			}
			runtime.KeepAlive(futures)
		})
	}
}

// cpuTime returns the user plus system CPU time of the process so far
// (client and in-process broker), a measure that a loaded machine
// disturbs less than wall-clock rates.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// memSnapshot returns the live heap after a GC, the number of goroutines
// and the number of goroutines labelled as the executor's.
func memSnapshot() (heap uint64, goroutines, client int) {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	var buf bytes.Buffer
	if err := pprof.Lookup("goroutine").WriteTo(&buf, 1); err == nil {
		// debug=1 lists "N @ ..." records with "# labels: {...}" lines
		text := buf.String()
		if strings.HasPrefix(text, "goroutine profile:") {
			_, text, _ = strings.Cut(text, "\n")
		}
		for _, rec := range strings.Split(text, "\n\n") {
			if !strings.Contains(rec, `"fluxbridge.executor":`) {
				continue
			}
			var count int
			if _, err := fmt.Sscanf(rec, "%d @", &count); err == nil {
				client += count
			}
		}
	}
	return ms.HeapAlloc, runtime.NumGoroutine(), client
}
