package flux

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"syscall"
	"testing"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/wire"
)

// response is one Handler call.
type response struct {
	payload string
	err     error
}

// collect returns a Handler that sends its calls on a channel, and the
// channel.
func collect() (Handler, chan response) {
	ch := make(chan response, 100)
	return func(p []byte, err error) { ch <- response{string(p), err} }, ch
}

func TestStartRPC(t *testing.T) {
	tests := []struct {
		name, topic string
		req         any
		want        string
		wantErrno   syscall.Errno
	}{
		{"response", "echo", map[string]int{"a": 1}, `{"a":1}`, 0},
		{"raw payload", "echo", []byte(`{"b":2}`), `{"b":2}`, 0},
		{"no payload", "echo", nil, "", 0},
		{"error response", "fail", nil, "", syscall.ENOENT},
	}
	c := dial(t, newFakeServer(t, echoHandler))
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, ch := collect()
			if err := c.StartRPC(testCtx(t), tt.topic, tt.req, h); err != nil {
				t.Fatal(err)
			}
			r := recvTimeout(t, ch)
			if tt.wantErrno != 0 {
				var fe *Error
				if !errors.As(r.err, &fe) || !errors.Is(r.err, tt.wantErrno) || fe.Message != "no such thing" || fe.Topic != tt.topic {
					t.Fatalf("err = %v, want *Error %v", r.err, tt.wantErrno)
				}
			} else if r.err != nil || r.payload != tt.want {
				t.Fatalf("got %q, %v; want %q", r.payload, r.err, tt.want)
			}
			select {
			case extra := <-ch:
				t.Fatalf("handler called again: %+v", extra)
			default:
			}
		})
	}
}

// TestStartRPCManyInOrder: requests queued faster than they are written
// all arrive, in order, each answered to its own handler. Queueing while
// the reader runs handlers mixes the reader's own flushes with the
// writer's; a slice shared by the writer and the queue once lost
// requests here (one run in two), so it runs a few rounds.
func TestStartRPCManyInOrder(t *testing.T) {
	for round := range 5 {
		t.Run(fmt.Sprint("round ", round), testStartRPCManyInOrder)
	}
}

func testStartRPCManyInOrder(t *testing.T) {
	var mu sync.Mutex
	var topics []string
	srv := newFakeServer(t, func(sc *serverConn) {
		sc.serveLoop(func(m *wire.Message) {
			mu.Lock()
			topics = append(topics, m.Topic)
			mu.Unlock()
			_ = sc.send(wire.NewResponse(m, m.Payload))
		})
	})
	c := dial(t, srv)
	const n = 2000
	var wg sync.WaitGroup
	wg.Add(n)
	errs := make(chan error, n)
	for i := range n {
		want := fmt.Sprintf(`{"i":%d}`, i)
		err := c.StartRPC(testCtx(t), fmt.Sprintf("t%d", i), map[string]int{"i": i}, func(p []byte, err error) {
			defer wg.Done()
			if err != nil || string(p) != want {
				errs <- fmt.Errorf("response %d: %q, %v", i, p, err)
			}
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	mu.Lock()
	defer mu.Unlock()
	for i, topic := range topics {
		if topic != fmt.Sprintf("t%d", i) {
			t.Fatalf("request %d has topic %s: out of order", i, topic)
		}
	}
	if len(topics) != n {
		t.Fatalf("server got %d requests, want %d", len(topics), n)
	}
}

func TestStartStream(t *testing.T) {
	t.Run("ends by itself", func(t *testing.T) {
		ss := newStreamServer(t, 3, true)
		c := dial(t, ss.srv)
		h, ch := collect()
		if _, err := c.StartStream(testCtx(t), "watch", nil, h); err != nil {
			t.Fatal(err)
		}
		req := recvTimeout(t, ss.requests)
		if req.Flags&wire.FlagStreaming == 0 {
			t.Errorf("request not streaming: %v", req)
		}
		for i := range 3 {
			if r := recvTimeout(t, ch); r.err != nil || r.payload != fmt.Sprintf(`{"seq":%d}`, i) {
				t.Fatalf("response %d: %+v", i, r)
			}
		}
		if r := recvTimeout(t, ch); r.err != io.EOF { //nolint:errorlint // the end is io.EOF itself
			t.Fatalf("end = %+v, want io.EOF", r)
		}
	})
	t.Run("service error", func(t *testing.T) {
		ss := newStreamServer(t, 0, true)
		c := dial(t, ss.srv)
		h, ch := collect()
		if _, err := c.StartStream(testCtx(t), "bad", nil, h); err != nil {
			t.Fatal(err)
		}
		if r := recvTimeout(t, ch); !errors.Is(r.err, syscall.EPROTO) {
			t.Fatalf("end = %+v, want EPROTO", r)
		}
	})
	for _, via := range []string{"cancel func", "context"} {
		t.Run("cancelled by "+via, func(t *testing.T) {
			ss := newStreamServer(t, 1, false)
			c := dial(t, ss.srv)
			ctx, stop := context.WithCancel(testCtx(t))
			defer stop()
			h, ch := collect()
			cancel, err := c.StartStream(ctx, "job-info.eventlog-watch", nil, h, CancelTopic("custom.stop"))
			if err != nil {
				t.Fatal(err)
			}
			req := recvTimeout(t, ss.requests)
			if r := recvTimeout(t, ch); r.err != nil {
				t.Fatal(r.err)
			}
			if via == "context" {
				stop()
			} else {
				cancel()
			}
			cancel() // a second cancel sends nothing
			m := recvTimeout(t, ss.cancels)
			if m.Topic != "custom.stop" || string(m.Payload) != fmt.Sprintf("{\"matchtag\":%d}\x00", req.Matchtag()) ||
				m.Flags&wire.FlagNoResponse == 0 {
				t.Errorf("cancel message %v", m)
			}
			// the service's ENODATA reaches the handler as the end
			if r := recvTimeout(t, ch); r.err != io.EOF { //nolint:errorlint // the end is io.EOF itself
				t.Fatalf("end = %+v", r)
			}
			// probe: the server read everything; no second cancel
			if err := c.RPC(testCtx(t), "probe", nil, nil); err != nil {
				t.Fatal(err)
			}
			select {
			case m := <-ss.cancels:
				t.Errorf("second cancel sent: %v", m)
			default:
			}
		})
	}
}

// TestStartConnEnds: handlers pending when the Conn ends are told once,
// with ErrClosed (Close, before it returns) or ErrDisconnected (broker
// gone); after that StartRPC and StartStream fail without calling them.
func TestStartConnEnds(t *testing.T) {
	tests := []struct {
		name string
		end  func(c *Conn, srv *fakeServer)
		want error
	}{
		{"close", func(c *Conn, _ *fakeServer) { c.Close() }, ErrClosed},
		{"broker gone", func(_ *Conn, srv *fakeServer) { srv.dropAll() }, ErrDisconnected},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := make(chan *wire.Message, 10)
			srv := newFakeServer(t, func(sc *serverConn) { sc.serveLoop(func(m *wire.Message) { got <- m }) })
			c := dial(t, srv)
			var mu sync.Mutex
			var calls []error
			h := func(_ []byte, err error) {
				mu.Lock()
				calls = append(calls, err)
				mu.Unlock()
			}
			if err := c.StartRPC(testCtx(t), "never", nil, h); err != nil {
				t.Fatal(err)
			}
			if _, err := c.StartStream(testCtx(t), "never", nil, h); err != nil {
				t.Fatal(err)
			}
			recvTimeout(t, got)
			recvTimeout(t, got)
			tt.end(c, srv)
			<-c.Done()
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			if len(calls) != 2 || !errors.Is(calls[0], tt.want) || !errors.Is(calls[1], tt.want) {
				t.Errorf("handler calls = %v, want two matching %v", calls, tt.want)
			}
			mu.Unlock()
			if err := c.StartRPC(testCtx(t), "x", nil, h); !errors.Is(err, tt.want) {
				t.Errorf("StartRPC after the end = %v", err)
			}
			if _, err := c.StartStream(testCtx(t), "x", nil, h); !errors.Is(err, tt.want) {
				t.Errorf("StartStream after the end = %v", err)
			}
			mu.Lock()
			defer mu.Unlock()
			if len(calls) != 2 {
				t.Errorf("handler called for a failed start: %v", calls)
			}
		})
	}
}

// TestStartFromHandler: a Handler may start further requests (they are
// queued), as the executor does to watch a job once its submission is
// answered.
func TestStartFromHandler(t *testing.T) {
	c := dial(t, newFakeServer(t, echoHandler))
	done := make(chan response, 1)
	err := c.StartRPC(testCtx(t), "first", "1", func(_ []byte, err error) {
		if err != nil {
			done <- response{err: err}
			return
		}
		if err := c.StartRPC(context.Background(), "second", "2", func(p []byte, err error) {
			done <- response{string(p), err}
		}); err != nil {
			done <- response{err: err}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if r := recvTimeout(t, done); r.err != nil || r.payload != `"2"` {
		t.Fatalf("got %+v", r)
	}
}

func TestStartBadInput(t *testing.T) {
	c := dial(t, newFakeServer(t, echoHandler))
	h, ch := collect()
	if err := c.StartRPC(testCtx(t), "x", nil, nil); err == nil {
		t.Error("nil handler accepted")
	}
	if err := c.StartRPC(testCtx(t), "x", func() {}, h); err == nil {
		t.Error("unencodable request accepted")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.StartStream(ctx, "x", nil, h); !errors.Is(err, context.Canceled) {
		t.Errorf("StartStream with a done context = %v", err)
	}
	select {
	case r := <-ch:
		t.Errorf("handler called for a failed start: %+v", r)
	default:
	}
}

func BenchmarkStartRPC(b *testing.B) {
	c, err := Dial(context.Background(), newFakeServer(b, echoHandler).uri)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	var wg sync.WaitGroup
	h := func([]byte, error) { wg.Done() }
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		wg.Add(1)
		if err := c.StartRPC(context.Background(), "x", nil, h); err != nil {
			b.Fatal(err)
		}
	}
	wg.Wait()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "rpc/s")
}
