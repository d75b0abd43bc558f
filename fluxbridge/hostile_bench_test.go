package fluxbridge

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/testbroker"
)

// envBenchBroker makes the test binary act as a test broker in its own
// process (runBenchBrokerIfChild), so that BenchmarkHostileBroker
// measures the client alone.
const envBenchBroker = "FLUXBRIDGE_BENCH_BROKER"

// runBenchBrokerIfChild runs a test broker when the benchmark started
// this process as one: it prints the broker's URI, then reads commands on
// standard input ("hostile MODE", "sent"), and exits when it closes.
func runBenchBrokerIfChild() {
	if os.Getenv(envBenchBroker) == "" {
		return
	}
	srv := testbroker.New(testbroker.Options{Cores: 1 << 20, TimeScale: 0.001})
	if err := srv.Start(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(srv.URI())
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		switch f := strings.Fields(in.Text()); {
		case len(f) == 2 && f[0] == "hostile":
			for _, h := range append(testbroker.HostileModes, testbroker.HostileNone) {
				if h.String() == f[1] {
					srv.SetHostile(h)
				}
			}
			fmt.Println("ok")
		case len(f) == 1 && f[0] == "sent":
			fmt.Println(srv.HostileSent())
		}
	}
	srv.SetHostile(testbroker.HostileNone)
	_ = srv.Close()
	os.Exit(0)
}

// benchBroker is a test broker in a child process.
type benchBroker struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Scanner
	uri string
}

func startBenchBroker(b *testing.B) *benchBroker {
	b.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$", "-test.bench=^$")
	cmd.Env = append(os.Environ(), envBenchBroker+"=1")
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	bb := &benchBroker{cmd: cmd, in: in, out: bufio.NewScanner(out)}
	b.Cleanup(func() { _ = bb.in.Close(); _ = bb.cmd.Wait() })
	bb.uri = bb.ask(b, "")
	return bb
}

// ask sends a command (none: just read) and returns the answer line.
func (bb *benchBroker) ask(b *testing.B, cmd string) string {
	b.Helper()
	if cmd != "" {
		if _, err := fmt.Fprintln(bb.in, cmd); err != nil {
			b.Fatal(err)
		}
	}
	if !bb.out.Scan() {
		b.Fatalf("bench broker: %v", bb.out.Err())
	}
	return bb.out.Text()
}

// procStatusMiB returns a /proc/self/status field (VmRSS, VmHWM) in MiB.
func procStatusMiB(field string) float64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			kb, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")))
			return float64(kb) / 1024
		}
	}
	return 0
}

// BenchmarkHostileBroker measures the client (an executor, as the manager
// runs one per Flux instance: 4 workers, keepalive every 1s with the
// default 10s timeout) while its
// broker, a test broker in a child process, turns hostile: 1,000 jobs are
// held running, then the broker switches to the mode and 50 more jobs are
// submitted (`sleep 5`, so that their eventlog streams live 5s) and
// awaited (they end, with a result or the connection's error) within 60s. Metrics: the
// client's peak heap in use (sampled every 5ms) and peak RSS (VmHWM, reset
// with /proc/self/clear_refs before the run), against the manager's 256
// MiB container limit; how the executor ended; the most events a future
// kept. The GC runs with the manager's settings (GOGC=50, GOMEMLIMIT 256
// MiB). Run one mode per process for clean RSS peaks:
//
//	for m in none oversized-frame garbage slow-drip endless-stream huge-contexts; do
//	  go test -run '^$' -bench "HostileBroker/mode=$m\$" -benchtime 1x ./fluxbridge/
//	done
func BenchmarkHostileBroker(b *testing.B) {
	modes := append([]testbroker.Hostile{testbroker.HostileNone}, testbroker.HostileModes...)
	for _, mode := range modes {
		b.Run("mode="+mode.String(), func(b *testing.B) {
			for range b.N {
				benchHostile(b, mode)
			}
		})
	}
}

func benchHostile(b *testing.B, mode testbroker.Hostile) {
	bb := startBenchBroker(b)
	// the manager's GC settings (config/manager/manager.yaml: GOGC=50,
	// GOMEMLIMIT = its 256 MiB limit)
	defer debug.SetGCPercent(debug.SetGCPercent(50))
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(256 << 20))
	debug.FreeOSMemory()                                      // what earlier modes left
	_ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) // reset VmHWM
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	e, err := NewExecutor(ctx, ExecutorOptions{
		Workers: 4, URI: bb.uri, NamePrefix: "bench",
		DialOptions: append(testDialOptions(), flux.WithKeepalive(time.Second, flux.DefaultKeepaliveTimeout)),
	})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = e.Close() }()

	var peakHeap atomic.Uint64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peakHeap.Load() {
				peakHeap.Store(ms.HeapInuse)
			}
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	}()

	held := make([]*Future, 1000)
	for i := range held {
		f, err := e.Submit(ctx, spec(b, "sleep", "100000000"), job.SubmitOptions{})
		if err != nil {
			b.Fatal(err)
		}
		held[i] = f
	}
	for _, f := range held {
		if _, err := f.JobID(ctx); err != nil {
			b.Fatal(err)
		}
	}
	bb.ask(b, "hostile "+mode.String())
	b.ResetTimer()
	wait, cancelWait := context.WithTimeout(ctx, 60*time.Second)
	defer cancelWait()
	var fresh []*Future
	for range 50 {
		f, err := e.Submit(wait, spec(b, "sleep", "5000"), job.SubmitOptions{})
		if err != nil {
			break // the executor broke
		}
		fresh = append(fresh, f)
	}
	ended := 0
	for _, f := range fresh {
		if f.Wait(wait) == nil {
			ended++
		}
	}
	b.StopTimer()
	close(stop)
	wg.Wait()
	maxEvents := 0
	for _, f := range append(held, fresh...) {
		f.mu.Lock()
		maxEvents = max(maxEvents, len(f.events))
		f.mu.Unlock()
	}
	outcome := "working"
	if err := e.Err(); err != nil {
		outcome = flux.ProtocolReason(err)
		if outcome == "" {
			outcome = "broken: " + err.Error()
		}
	}
	sent, _ := strconv.Atoi(bb.ask(b, "sent"))
	b.ReportMetric(float64(peakHeap.Load())/(1<<20), "peak-heap-MiB")
	b.ReportMetric(procStatusMiB("VmHWM"), "peak-RSS-MiB")
	b.ReportMetric(float64(maxEvents), "max-events/future")
	b.ReportMetric(float64(sent), "hostile-msgs")
	b.ReportMetric(float64(ended), "fresh-futures-ended")
	b.Logf("mode %s: executor %s; peak heap %.1f MiB, peak RSS %.1f MiB (limit 256 MiB)", mode, outcome,
		float64(peakHeap.Load())/(1<<20), procStatusMiB("VmHWM"))
}
