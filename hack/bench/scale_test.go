package main

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fluxjob/fluxjob-operator/fluxbridge"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/wire"
)

// scaleJobs is how many jobs BenchmarkScale keeps in flight.
const scaleJobs = 10000

// BenchmarkScale keeps 10,000 jobs in flight (`sleep inf`, running) through
// one fluxbridge.Executor (2 workers, as the manager's default) with each
// event source, against the test broker running in its own process
// (hack/testbroker) behind a proxy that reads the wire protocol and counts
// the streams open at the broker. Heap and goroutines are measured after a
// GC, as the difference from just before the first Submit, so they are the
// executor's own (the proxy's goroutines, two per connection, are in both).
// started-jobs/s is 10,000 over the time from the first Submit until every
// job's "start" event reached its future. One iteration is the whole
// scenario: run it with -benchtime=1x.
func BenchmarkScale(b *testing.B) {
	bin := buildTestBroker(b)
	for _, src := range []fluxbridge.EventSource{fluxbridge.EventSourceEventlog, fluxbridge.EventSourceJournal} {
		b.Run("source="+src.String(), func(b *testing.B) {
			for range b.N {
				runScale(b, bin, src, scaleJobs)
			}
		})
	}
}

func runScale(b *testing.B, bin string, src fluxbridge.EventSource, n int) {
	brokerURI := startTestBroker(b, bin)
	proxy, err := newStreamProxy(filepath.Join(b.TempDir(), "proxy"), strings.TrimPrefix(brokerURI, "local://"))
	if err != nil {
		b.Fatal(err)
	}
	defer proxy.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	e, err := fluxbridge.NewExecutor(ctx, fluxbridge.ExecutorOptions{Workers: 2, URI: proxy.URI(), EventSource: src})
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	js, err := job.FromCommand([]string{"sleep", "inf"}, job.CommandOptions{})
	if err != nil {
		b.Fatal(err)
	}
	heap0, g0 := heapAndGoroutines()
	var started sync.WaitGroup
	started.Add(n)
	futures := make([]*fluxbridge.Future, n)
	b.ResetTimer()
	start := time.Now()
	for i := range futures {
		f, err := e.Submit(ctx, js, job.SubmitOptions{})
		if err != nil {
			b.Fatal(err)
		}
		var once sync.Once
		if err := f.AddEventCallback("start", func(*fluxbridge.Future, job.Event) { once.Do(started.Done) }); err != nil {
			b.Fatal(err)
		}
		futures[i] = f
	}
	waited := make(chan struct{})
	go func() { started.Wait(); close(waited) }()
	select {
	case <-waited:
	case <-ctx.Done():
		b.Fatalf("not every job started: %v", ctx.Err())
	}
	elapsed := time.Since(start)
	b.StopTimer()
	heap1, g1 := heapAndGoroutines()
	for _, f := range futures {
		if f.Done() {
			b.Fatal("a running job's future completed")
		}
	}
	streams := proxy.OpenStreams()
	b.ReportMetric(float64(int64(heap1)-int64(heap0))/(1<<20), "heap-MiB")
	b.ReportMetric(float64(int64(heap1)-int64(heap0))/float64(n), "bytes/future")
	b.ReportMetric(float64(g1-g0), "goroutines")
	b.ReportMetric(float64(g1-g0)/float64(n), "goroutines/future")
	b.ReportMetric(float64(n)/elapsed.Seconds(), "started-jobs/s")
	b.ReportMetric(float64(sumStreams(streams)), "broker-streams")
	b.ReportMetric(float64(proxy.Conns()), "broker-conns")
	b.Logf("%s: %d jobs in flight; streams open at the broker by topic: %v", src, n, streams)
	runtime.KeepAlive(futures)
}

func sumStreams(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// heapAndGoroutines returns the live heap after a GC and the number of
// goroutines.
func heapAndGoroutines() (uint64, int) {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc, runtime.NumGoroutine()
}

// buildTestBroker builds hack/testbroker into a temporary directory.
func buildTestBroker(b *testing.B) string {
	b.Helper()
	bin := filepath.Join(b.TempDir(), "testbroker")
	out, err := exec.Command("go", "build", "-o", bin, "../testbroker").CombinedOutput()
	if err != nil {
		b.Fatalf("building hack/testbroker: %v\n%s", err, out)
	}
	return bin
}

// startTestBroker runs the test broker with no phase delays and a core per
// job, stopped when the benchmark ends; it returns the broker's URI.
func startTestBroker(b *testing.B, bin string) string {
	b.Helper()
	dir := b.TempDir()
	uriFile := filepath.Join(dir, "uri")
	cmd := exec.Command(bin, "-dir", filepath.Join(dir, "sock"), "-realistic=false",
		"-cores", strconv.Itoa(2*scaleJobs), "-uri-file", uriFile)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatalf("starting the test broker: %v", err)
	}
	b.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if data, err := os.ReadFile(uriFile); err == nil && len(data) > 0 {
			return strings.TrimSpace(string(data))
		}
	}
	b.Fatal("the test broker did not write its URI within 30s")
	return ""
}

// streamProxy forwards unix-socket connections to a broker byte for byte
// and reads the messages as they pass to count the streams open at the
// broker: a request with FlagStreaming opens one (per connection and
// matchtag); an error response to it (ENODATA at the end, or any errno)
// closes it. A connection's streams close with it.
type streamProxy struct {
	ln     *net.UnixListener
	target string
	wg     sync.WaitGroup

	mu      sync.Mutex
	conns   map[*proxyConn]struct{}
	streams map[streamKey]string // -> topic
	closed  bool
}

type streamKey struct {
	c   *proxyConn
	tag uint32
}

type proxyConn struct{ client, broker net.Conn }

func newStreamProxy(path, target string) (*streamProxy, error) {
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, err
	}
	p := &streamProxy{ln: ln, target: target, conns: map[*proxyConn]struct{}{}, streams: map[streamKey]string{}}
	p.wg.Go(p.accept)
	return p, nil
}

// URI is the proxy's local:// URI.
func (p *streamProxy) URI() string { return "local://" + p.ln.Addr().String() }

func (p *streamProxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		bc, err := net.Dial("unix", p.target)
		if err != nil {
			_ = c.Close()
			continue
		}
		pc := &proxyConn{client: c, broker: bc}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			_ = c.Close()
			_ = bc.Close()
			return
		}
		p.conns[pc] = struct{}{}
		p.mu.Unlock()
		p.wg.Go(func() { p.serve(pc) })
	}
}

func (p *streamProxy) serve(pc *proxyConn) {
	defer func() {
		_ = pc.client.Close()
		_ = pc.broker.Close()
		p.mu.Lock()
		delete(p.conns, pc)
		for k := range p.streams {
			if k.c == pc {
				delete(p.streams, k)
			}
		}
		p.mu.Unlock()
	}()
	// The broker's one accept byte comes first, outside the framing.
	var accept [1]byte
	if _, err := io.ReadFull(pc.broker, accept[:]); err != nil {
		return
	}
	if _, err := pc.client.Write(accept[:]); err != nil {
		return
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		p.pipe(pc, pc.client, pc.broker, true)
		_ = pc.broker.Close()
	})
	p.pipe(pc, pc.broker, pc.client, false)
	_ = pc.client.Close()
	wg.Wait()
}

// pipe copies src to dst as it reads it, and decodes the same bytes.
func (p *streamProxy) pipe(pc *proxyConn, src, dst net.Conn, fromClient bool) {
	r := wire.NewReader(bufio.NewReaderSize(io.TeeReader(src, dst), 64<<10), 0)
	for {
		m, err := r.ReadMessage()
		if err != nil {
			return
		}
		k := streamKey{pc, m.Matchtag()}
		switch {
		case fromClient && m.Type == wire.TypeRequest && m.Flags&wire.FlagStreaming != 0:
			p.mu.Lock()
			p.streams[k] = m.Topic
			p.mu.Unlock()
		case !fromClient && m.Type == wire.TypeResponse && m.Errnum() != 0:
			p.mu.Lock()
			delete(p.streams, k)
			p.mu.Unlock()
		}
	}
}

// OpenStreams counts the open streams by topic.
func (p *streamProxy) OpenStreams() map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := map[string]int{}
	for _, topic := range p.streams {
		out[topic]++
	}
	return out
}

// Conns is the number of connections to the broker.
func (p *streamProxy) Conns() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

// Close stops accepting, closes every connection and waits.
func (p *streamProxy) Close() error {
	p.mu.Lock()
	p.closed = true
	for pc := range p.conns {
		_ = pc.client.Close()
		_ = pc.broker.Close()
	}
	p.mu.Unlock()
	err := p.ln.Close()
	p.wg.Wait()
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}
