package flux

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux/fluxtest"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/wire"
)

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// testDialOpts are the options through which the tests dial: none for
// the unix socket, or the stream fluxtest.EnvTransport selects (the same
// tests then run over an in-memory pipe or a relay process).
func testDialOpts(opts ...Option) []Option {
	if d := fluxtest.SelectedDialer(); d != nil {
		return append([]Option{WithDialer(d)}, opts...)
	}
	return opts
}

func dial(t *testing.T, srv *fakeServer, opts ...Option) *Conn {
	t.Helper()
	c, err := Dial(testCtx(t), srv.uri, testDialOpts(opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func TestDialURIs(t *testing.T) {
	srv := newFakeServer(t, echoHandler)
	dir := filepath.Dir(srv.path)
	tests := []struct {
		name    string
		uri     string
		env     string
		wantErr error  // nil: must connect
		msg     string // substring of the error
	}{
		{name: "socket path", uri: srv.uri},
		{name: "directory means dir/local", uri: "local://" + dir},
		{name: "empty uses FLUX_URI", uri: "", env: srv.uri},
		{name: "empty without FLUX_URI uses default", uri: "", env: "", msg: "/run/flux/local"},
		{name: "ssh without path", uri: "ssh://host", msg: "names no socket path"},
		{name: "tcp unsupported", uri: "tcp://1.2.3.4:1", wantErr: ErrUnsupportedScheme, msg: `"tcp://"`},
		{name: "no scheme", uri: "/run/flux/local", wantErr: ErrUnsupportedScheme, msg: "no scheme"},
		{name: "no path", uri: "local://", msg: "no socket path"},
		{name: "missing socket", uri: "local://" + filepath.Join(dir, "nope"), wantErr: syscall.ENOENT},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(EnvURI, tt.env)
			c, err := Dial(testCtx(t), tt.uri)
			if tt.wantErr == nil && tt.msg == "" {
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				var out map[string]int
				if err := c.RPC(testCtx(t), "echo", map[string]int{"x": 1}, &out); err != nil || out["x"] != 1 {
					t.Fatalf("RPC = %v, %v", out, err)
				}
				return
			}
			if err == nil {
				c.Close()
				if tt.name == "empty without FLUX_URI uses default" {
					t.Skip("a broker is listening on /run/flux/local")
				}
				t.Fatal("Dial succeeded")
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("err = %v, want %v", err, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("err %q does not mention %q", err, tt.msg)
			}
		})
	}
}

func TestAcceptByte(t *testing.T) {
	tests := []struct {
		name   string
		accept []byte
		want   syscall.Errno
	}{
		{"EPERM", []byte{byte(syscall.EPERM)}, syscall.EPERM},
		{"EACCES", []byte{byte(syscall.EACCES)}, syscall.EACCES},
		{"closed before the byte", nil, syscall.ECONNRESET},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newFakeServerAccept(t, tt.accept, func(sc *serverConn) { _ = sc.nc.Close() })
			_, err := Dial(testCtx(t), srv.uri, testDialOpts()...)
			var ce *ConnectError
			if !errors.As(err, &ce) || ce.Errno != tt.want || !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want *ConnectError %v", err, tt.want)
			}
			if ce.URI != srv.uri || !strings.Contains(err.Error(), tt.want.Error()) {
				t.Errorf("Error() = %q", err)
			}
		})
	}
	t.Run("no byte until the context ends", func(t *testing.T) {
		release := make(chan struct{})
		srv := newFakeServerAccept(t, nil, func(sc *serverConn) { <-release })
		defer close(release)
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		if _, err := Dial(ctx, srv.uri, testDialOpts()...); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v, want DeadlineExceeded", err)
		}
	})
}

// TestRPC covers payload encoding of requests and decoding of responses.
func TestRPC(t *testing.T) {
	got := make(chan *wire.Message, 10)
	srv := newFakeServer(t, func(sc *serverConn) {
		sc.serveLoop(func(m *wire.Message) {
			got <- m
			switch m.Topic {
			case "empty":
				_ = sc.send(wire.NewResponse(m, nil))
			case "enoent":
				_ = sc.send(wire.NewErrorResponse(m, uint32(syscall.ENOENT), "invalid job id"))
			case "einval-silent":
				_ = sc.send(wire.NewErrorResponse(m, uint32(syscall.EINVAL), ""))
			case "badjson":
				_ = sc.send(wire.NewResponse(m, []byte("{\x00")))
			default:
				_ = sc.send(wire.NewResponse(m, m.Payload))
			}
		})
	})
	c := dial(t, srv)
	ctx := testCtx(t)

	type idResp struct {
		ID int64 `json:"id"`
	}
	tests := []struct {
		name        string
		topic       string
		req         any
		wantPayload string // request payload frame; "-" = none
		check       func(t *testing.T, err error)
	}{
		{"struct", "echo", idResp{ID: 42}, "{\"id\":42}\x00", func(t *testing.T, err error) {
			if err != nil {
				t.Fatal(err)
			}
		}},
		{"nil request", "echo", nil, "-", nil},
		{"raw without NUL", "echo", json.RawMessage(`{"a":1}`), "{\"a\":1}\x00", nil},
		{"bytes with NUL", "echo", []byte("{\"a\":2}\x00"), "{\"a\":2}\x00", nil},
		{"empty success", "empty", map[string]int{}, "{}\x00", nil},
		{"ENOENT with message", "enoent", map[string]int{"id": 1}, "{\"id\":1}\x00", func(t *testing.T, err error) {
			var fe *Error
			if !errors.As(err, &fe) || !errors.Is(err, syscall.ENOENT) {
				t.Fatalf("err = %v", err)
			}
			if fe.Message != "invalid job id" || fe.Topic != "enoent" {
				t.Errorf("%+v", fe)
			}
			for _, s := range []string{"enoent", "invalid job id", "no such file or directory", "errno 2"} {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("Error() %q lacks %q", err, s)
				}
			}
		}},
		{"EINVAL without message", "einval-silent", nil, "-", func(t *testing.T, err error) {
			if !errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.ENOENT) || !strings.Contains(err.Error(), "invalid argument") {
				t.Fatalf("err = %v", err)
			}
		}},
		{"undecodable response", "badjson", nil, "-", func(t *testing.T, err error) {
			if err != nil {
				t.Fatal(err) // json.RawMessage receives the bytes as they are
			}
			var v map[string]any
			err = c.RPC(ctx, "badjson", nil, &v)
			<-got
			var se *json.SyntaxError
			if !errors.As(err, &se) || !strings.Contains(err.Error(), "badjson") {
				t.Fatalf("err = %v", err)
			}
		}},
		{"unmarshalable request", "echo", func() {}, "", func(t *testing.T, err error) {
			if err == nil {
				t.Fatal("RPC succeeded")
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var resp json.RawMessage = json.RawMessage("untouched")
			err := c.RPC(ctx, tt.topic, tt.req, &resp)
			if tt.check != nil {
				tt.check(t, err)
			} else if err != nil {
				t.Fatal(err)
			}
			if tt.wantPayload == "" {
				return
			}
			m := recvTimeout(t, got)
			if m.Type != wire.TypeRequest || m.Flags&^wire.FlagPayload != wire.FlagTopic|wire.FlagRoute ||
				m.UserID != wire.UserIDUnknown || m.Rolemask != 0 || m.NodeID() != wire.NodeIDAny || m.Matchtag() == 0 {
				t.Errorf("request header: %v", m)
			}
			if tt.wantPayload == "-" {
				if m.Flags&wire.FlagPayload != 0 {
					t.Errorf("payload %q sent, want none", m.Payload)
				}
			} else if string(m.Payload) != tt.wantPayload {
				t.Errorf("payload %q, want %q", m.Payload, tt.wantPayload)
			}
			switch tt.topic {
			case "echo":
				if err == nil && tt.wantPayload != "-" && string(resp)+"\x00" != tt.wantPayload {
					t.Errorf("resp %q", resp)
				}
			case "empty":
				if string(resp) != "untouched" {
					t.Errorf("empty response changed resp to %q", resp)
				}
			}
		})
	}
	t.Run("nil resp and byte slice resp", func(t *testing.T) {
		if err := c.RPC(ctx, "echo", map[string]int{"a": 1}, nil); err != nil {
			t.Fatal(err)
		}
		var b []byte
		if err := c.RPC(ctx, "echo", map[string]int{"a": 2}, &b); err != nil || string(b) != `{"a":2}` {
			t.Fatalf("%q %v", b, err)
		}
		var v struct{ A int }
		if err := c.RPC(ctx, "echo", map[string]int{"a": 3}, &v, NodeID(3)); err != nil || v.A != 3 {
			t.Fatalf("%v %v", v, err)
		}
		recvTimeout(t, got)
		recvTimeout(t, got)
		if m := recvTimeout(t, got); m.NodeID() != 3 {
			t.Errorf("NodeID option: nodeid %d", m.NodeID())
		}
	})
}

func TestSend(t *testing.T) {
	got := make(chan []byte, 1)
	srv := newFakeServer(t, func(sc *serverConn) {
		sc.serveLoop(func(m *wire.Message) {
			b, _ := wire.AppendFramed(nil, m)
			got <- b
		})
	})
	c := dial(t, srv)
	if err := c.Send(testCtx(t), "job-info.eventlog-watch-cancel", map[string]int{"matchtag": 1}); err != nil {
		t.Fatal(err)
	}
	// The cancel flux job wait-event sent (flux-wire/eventlog-watch.jsonl).
	want := "1200eeff00000045001e6a6f622d696e666f2e6576656e746c6f672d77617463682d63616e63656c0f7b226d61746368746167223a317d00148e01010fffffffff00000000ffffffff00000000"
	if b := recvTimeout(t, got); fmt.Sprintf("%x", b) != want {
		t.Errorf("got  %x\nwant %s", b, want)
	}
}

// TestConcurrentRPCs runs many RPCs at once, answered out of order.
func TestConcurrentRPCs(t *testing.T) {
	srv := newFakeServer(t, func(sc *serverConn) {
		in := make(chan *wire.Message, 1024)
		done := make(chan struct{})
		go func() {
			defer close(done)
			for m := range in {
				batch := []*wire.Message{m}
			drain:
				for {
					select {
					case m, ok := <-in:
						if !ok {
							break drain
						}
						batch = append(batch, m)
					default:
						break drain
					}
				}
				for i := len(batch) - 1; i >= 0; i-- { // newest first
					_ = sc.send(wire.NewResponse(batch[i], batch[i].Payload))
				}
			}
		}()
		sc.serveLoop(func(m *wire.Message) { in <- m })
		close(in)
		<-done
	})
	c := dial(t, srv)
	ctx := testCtx(t)
	const workers, per = 16, 50
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range per {
				var out struct{ W, I int }
				if err := c.RPC(ctx, "echo", map[string]int{"w": w, "i": i}, &out); err != nil {
					errs <- err
					return
				}
				if out.W != w || out.I != i {
					errs <- fmt.Errorf("worker %d call %d got %+v", w, i, out)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.pending) != 0 {
		t.Errorf("%d matchtags still pending", len(c.pending))
	}
}

// streamServer answers "watch" with n responses and then, unless told to
// wait for a cancel, ENODATA. A cancel request ends the stream with
// ENODATA, as job-info does.
type streamServer struct {
	srv      *fakeServer
	cancels  chan *wire.Message
	requests chan *wire.Message
}

func newStreamServer(t *testing.T, n int, finish bool) *streamServer {
	ss := &streamServer{cancels: make(chan *wire.Message, 10), requests: make(chan *wire.Message, 10)}
	ss.srv = newFakeServer(t, func(sc *serverConn) {
		open := map[uint32]*wire.Message{}
		sc.serveLoop(func(m *wire.Message) {
			if strings.HasSuffix(m.Topic, "-cancel") || m.Topic == "custom.stop" {
				ss.cancels <- m
				var p struct{ Matchtag uint32 }
				_ = m.DecodeJSON(&p)
				if req := open[p.Matchtag]; req != nil {
					delete(open, p.Matchtag)
					_ = sc.send(wire.NewErrorResponse(req, uint32(syscall.ENODATA), ""))
				}
				return
			}
			ss.requests <- m
			switch m.Topic {
			case "never":
				return
			case "bad":
				_ = sc.send(wire.NewErrorResponse(m, uint32(syscall.EPROTO), "bad stream"))
				return
			}
			for i := range n {
				p, _ := wire.JSONPayload(map[string]int{"seq": i})
				_ = sc.send(wire.NewResponse(m, p))
			}
			if finish {
				_ = sc.send(wire.NewErrorResponse(m, uint32(syscall.ENODATA), ""))
			} else {
				open[m.Matchtag()] = m
			}
		})
	})
	return ss
}

func TestStreamEnd(t *testing.T) {
	ss := newStreamServer(t, 3, true)
	c := dial(t, ss.srv)
	s, err := c.Stream(testCtx(t), "job-info.eventlog-watch", map[string]any{"id": 1})
	if err != nil {
		t.Fatal(err)
	}
	req := recvTimeout(t, ss.requests)
	if req.Flags != wire.FlagTopic|wire.FlagPayload|wire.FlagRoute|wire.FlagStreaming || req.Matchtag() != s.Matchtag() {
		t.Errorf("request %v", req)
	}
	for i := range 3 {
		var v struct{ Seq int }
		if err := s.Recv(&v); err != nil || v.Seq != i {
			t.Fatalf("Recv %d: %v %v", i, v, err)
		}
	}
	for range 2 {
		if err := s.Recv(nil); err != io.EOF {
			t.Fatalf("Recv at end = %v, want io.EOF", err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// No cancel after the stream ended by itself; probe with an RPC so the
	// server has read everything we sent.
	if _, err := c.Stream(testCtx(t), "probe", nil); err != nil {
		t.Fatal(err)
	}
	recvTimeout(t, ss.requests)
	select {
	case m := <-ss.cancels:
		t.Errorf("cancel sent for a finished stream: %v", m)
	default:
	}
	if err := s.Recv(nil); !errors.Is(err, ErrStreamClosed) {
		t.Errorf("Recv after Close = %v", err)
	}
}

func TestStreamError(t *testing.T) {
	ss := newStreamServer(t, 0, true)
	c := dial(t, ss.srv)
	s, err := c.Stream(testCtx(t), "bad", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for range 2 {
		var fe *Error
		if err := s.Recv(nil); !errors.As(err, &fe) || !errors.Is(err, syscall.EPROTO) || fe.Message != "bad stream" {
			t.Fatalf("Recv = %v", err)
		}
	}
}

func TestStreamCancel(t *testing.T) {
	tests := []struct {
		name       string
		opts       []RPCOption
		wantTopic  string
		viaContext bool
	}{
		{"close", nil, "job-info.eventlog-watch-cancel", false},
		{"context", nil, "job-info.eventlog-watch-cancel", true},
		{"custom cancel topic", []RPCOption{CancelTopic("custom.stop")}, "custom.stop", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ss := newStreamServer(t, 2, false)
			c := dial(t, ss.srv)
			ctx, cancel := context.WithCancel(testCtx(t))
			defer cancel()
			// Another RPC first, so the stream's matchtag is not 1.
			if err := c.RPC(ctx, "x", nil, nil); err != nil {
				t.Fatal(err)
			}
			_ = recvTimeout(t, ss.requests)
			s, err := c.Stream(ctx, "job-info.eventlog-watch", map[string]int{"id": 7}, tt.opts...)
			if err != nil {
				t.Fatal(err)
			}
			recvTimeout(t, ss.requests)
			if err := s.Recv(nil); err != nil {
				t.Fatal(err)
			}
			if tt.viaContext {
				cancel()
				if err := s.Recv(nil); !errors.Is(err, context.Canceled) {
					t.Fatalf("Recv after cancel = %v", err)
				}
			} else if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			m := recvTimeout(t, ss.cancels)
			wantPayload := fmt.Sprintf("{\"matchtag\":%d}\x00", s.Matchtag())
			if m.Topic != tt.wantTopic || string(m.Payload) != wantPayload ||
				m.Flags != wire.FlagTopic|wire.FlagPayload|wire.FlagRoute|wire.FlagNoResponse || m.Matchtag() != 0 {
				t.Errorf("cancel message %v", m)
			}
			// The matchtag is freed once the final response arrived.
			waitFor(t, func() bool {
				c.mu.Lock()
				defer c.mu.Unlock()
				_, used := c.pending[s.Matchtag()]
				return !used
			})
		})
	}
}

// TestRPCCancelKeepsMatchtag: an RPC abandoned by its caller keeps its
// matchtag until the late response arrives, so the tag cannot be reused
// for another call and the late response is not misdelivered.
func TestRPCCancelKeepsMatchtag(t *testing.T) {
	held := make(chan *wire.Message, 1)
	var scm sync.Mutex
	var server *serverConn
	srv := newFakeServer(t, func(sc *serverConn) {
		scm.Lock()
		server = sc
		scm.Unlock()
		sc.serveLoop(func(m *wire.Message) {
			if m.Topic == "slow" {
				held <- m
				return
			}
			_ = sc.send(wire.NewResponse(m, m.Payload))
		})
	})
	c := dial(t, srv)
	ctx, cancel := context.WithCancel(testCtx(t))
	errc := make(chan error, 1)
	go func() { errc <- c.RPC(ctx, "slow", map[string]string{"v": "slow"}, nil) }()
	slow := recvTimeout(t, held)
	cancel()
	if err := recvTimeout(t, errc); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
	// Force the allocator to wrap onto the abandoned tag: it must skip it.
	c.mu.Lock()
	c.next = slow.Matchtag() - 1
	c.mu.Unlock()
	var out map[string]string
	if err := c.RPC(testCtx(t), "echo", map[string]string{"v": "fast"}, &out); err != nil || out["v"] != "fast" {
		t.Fatalf("%v %v", out, err)
	}
	c.mu.Lock()
	_, stillReserved := c.pending[slow.Matchtag()]
	c.mu.Unlock()
	if !stillReserved {
		t.Fatal("abandoned matchtag was freed before its response")
	}
	scm.Lock()
	_ = server.send(wire.NewResponse(slow, slow.Payload))
	scm.Unlock()
	waitFor(t, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		_, used := c.pending[slow.Matchtag()]
		return !used
	})
}

func TestMatchtagWrap(t *testing.T) {
	c := &Conn{pending: map[uint32]*call{}, next: 0xfffffffe}
	c.pending[1] = &call{}
	var got []uint32
	for range 3 {
		_, tag, err := c.register(false)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, tag)
	}
	if fmt.Sprint(got) != "[4294967295 2 3]" {
		t.Errorf("tags %v: want 0 and in-use 1 skipped", got)
	}
}

func TestClosePending(t *testing.T) {
	ss := newStreamServer(t, 1, false)
	c, err := Dial(testCtx(t), ss.srv.uri, testDialOpts()...)
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t)
	errc := make(chan error, 1)
	go func() { errc <- c.RPC(ctx, "never", nil, nil) }()
	recvTimeout(t, ss.requests)
	s, err := c.Stream(ctx, "watch", nil)
	if err != nil {
		t.Fatal(err)
	}
	recvTimeout(t, ss.requests)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := recvTimeout(t, errc); !errors.Is(err, ErrClosed) || errors.Is(err, ErrDisconnected) {
		t.Errorf("pending RPC: %v", err)
	}
	// A response received before Close is still delivered, then ErrClosed.
	_ = s.Recv(nil)
	if err := s.Recv(nil); !errors.Is(err, ErrClosed) {
		t.Errorf("stream: %v", err)
	}
	select {
	case <-c.Done():
	default:
		t.Error("Done not closed")
	}
	if c.Err() != ErrClosed {
		t.Errorf("Err = %v", c.Err())
	}
	if err := c.RPC(ctx, "x", nil, nil); !errors.Is(err, ErrClosed) {
		t.Errorf("RPC after Close: %v", err)
	}
	if _, err := c.Stream(ctx, "x", nil); !errors.Is(err, ErrClosed) {
		t.Errorf("Stream after Close: %v", err)
	}
	if err := c.Send(ctx, "x", nil); !errors.Is(err, ErrClosed) {
		t.Errorf("Send after Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("Stream.Close after Conn.Close: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestBrokerGone(t *testing.T) {
	tests := []struct {
		name  string
		gone  func(sc *serverConn)
		opts  []Option
		cause error
		// alt is another cause the kernel may report for the same event.
		alt error
	}{
		// A peer that closes with our request unread in its socket buffer
		// makes the kernel answer with a reset instead of end of file.
		{"connection dropped", func(sc *serverConn) { _ = sc.nc.Close() }, nil, io.EOF, syscall.ECONNRESET},
		{"bad magic", func(sc *serverConn) { _ = sc.writeRaw([]byte("HTTP/1.1 400 Bad\r\n\r\n")) }, nil, wire.ErrBadMagic, nil},
		{"message too large", func(sc *serverConn) {
			p := bytes.Repeat([]byte("x"), 2000)
			_ = sc.send(&wire.Message{Type: wire.TypeEvent, Flags: wire.FlagPayload, Payload: p})
		}, []Option{WithMaxMessageSize(1000)}, wire.ErrTooLarge, nil},
		{"cut mid-message", func(sc *serverConn) {
			b, _ := wire.AppendFramed(nil, wire.NewRequest("x", nil, 1))
			_ = sc.writeRaw(b[:len(b)-4])
			_ = sc.nc.Close()
		}, nil, wire.ErrTruncated, syscall.ECONNRESET},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			trigger := make(chan struct{})
			srv := newFakeServer(t, func(sc *serverConn) {
				go sc.serveLoop(func(*wire.Message) {})
				<-trigger
				tt.gone(sc)
			})
			c := dial(t, srv, tt.opts...)
			ctx := testCtx(t)
			errc := make(chan error, 1)
			go func() { errc <- c.RPC(ctx, "pending", nil, nil) }()
			waitFor(t, func() bool {
				c.mu.Lock()
				defer c.mu.Unlock()
				return len(c.pending) == 1
			})
			close(trigger)
			err := recvTimeout(t, errc)
			causeOK := errors.Is(err, tt.cause) || (tt.alt != nil && errors.Is(err, tt.alt))
			if !errors.Is(err, ErrDisconnected) || errors.Is(err, ErrClosed) || !causeOK {
				t.Errorf("pending RPC: %v", err)
			}
			<-c.Done()
			if !errors.Is(c.Err(), ErrDisconnected) {
				t.Errorf("Err = %v", c.Err())
			}
			if err := c.RPC(ctx, "x", nil, nil); !errors.Is(err, ErrDisconnected) {
				t.Errorf("RPC after disconnect: %v", err)
			}
			srv.dropAll()
		})
	}
}

func TestUnexpectedMessagesIgnored(t *testing.T) {
	srv := newFakeServer(t, func(sc *serverConn) {
		sc.serveLoop(func(m *wire.Message) {
			_ = sc.send(&wire.Message{Type: wire.TypeEvent, Flags: wire.FlagTopic, Topic: "heartbeat.pulse"})
			stray := wire.NewResponse(m, nil)
			stray.Aux2 = 9999
			_ = sc.send(stray)
			_ = sc.send(wire.NewResponse(m, m.Payload))
		})
	})
	c := dial(t, srv)
	var out map[string]int
	if err := c.RPC(testCtx(t), "echo", map[string]int{"a": 5}, &out); err != nil || out["a"] != 5 {
		t.Fatalf("%v %v", out, err)
	}
}

// TestWriteBlockedByContext: a write stuck on a full socket (the server
// never reads) is interrupted by the context; the Conn then reports the
// broken stream rather than hanging.
func TestWriteBlockedByContext(t *testing.T) {
	release := make(chan struct{})
	srv := newFakeServer(t, func(sc *serverConn) { <-release })
	defer close(release)
	c := dial(t, srv)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	big := json.RawMessage(`"` + strings.Repeat("x", 8<<20) + `"`)
	err := c.Send(ctx, "big", big)
	if err == nil {
		t.Fatal("Send of 8 MiB to a server that never reads succeeded")
	}
	if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, ErrDisconnected) {
		t.Fatalf("err = %v", err)
	}
}

func TestErrorStrings(t *testing.T) {
	e := &Error{Errno: syscall.EINVAL, Message: "urgency cannot be changed once resources are allocated", Topic: "job-manager.urgency"}
	want := "flux: job-manager.urgency: urgency cannot be changed once resources are allocated (errno 22: invalid argument)"
	if e.Error() != want {
		t.Errorf("%q", e.Error())
	}
	var err error = fmt.Errorf("wrapped: %w", e)
	if !errors.Is(err, syscall.EINVAL) {
		t.Error("errors.Is EINVAL failed")
	}
	ce := &ConnectError{URI: "local:///x", Errno: syscall.EPERM}
	if !errors.Is(ce, syscall.EPERM) || !strings.Contains(ce.Error(), "operation not permitted") {
		t.Errorf("%v", ce)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met")
		}
		time.Sleep(time.Millisecond)
	}
}

// TestCloseWakesRecv: a Recv waiting for a response is woken by
// Stream.Close from another goroutine (ErrStreamClosed) and by Conn.Close
// (ErrClosed), whether or not the stream's call is still registered.
func TestCloseWakesRecv(t *testing.T) {
	tests := []struct {
		name    string
		topic   string // "watch": cancel ends it with ENODATA; "never": no response ever
		closeFn func(c *Conn, s *Stream) error
		want    error
	}{
		{"stream close, service ends stream", "watch", func(_ *Conn, s *Stream) error { return s.Close() }, ErrStreamClosed},
		{"stream close, service silent", "never", func(_ *Conn, s *Stream) error { return s.Close() }, ErrStreamClosed},
		{"conn close", "watch", func(c *Conn, _ *Stream) error { return c.Close() }, ErrClosed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ss := newStreamServer(t, 0, false)
			c := dial(t, ss.srv)
			s, err := c.Stream(testCtx(t), tt.topic, nil)
			if err != nil {
				t.Fatal(err)
			}
			recvTimeout(t, ss.requests)
			errc := make(chan error, 1)
			go func() { errc <- s.Recv(nil) }()
			time.Sleep(10 * time.Millisecond) // let Recv block in wait

			if err := tt.closeFn(c, s); err != nil {
				t.Fatal(err)
			}
			if err := recvTimeout(t, errc); !errors.Is(err, tt.want) {
				t.Errorf("Recv = %v, want %v", err, tt.want)
			}
			if err := s.Recv(nil); err == nil {
				t.Error("second Recv succeeded")
			}
			// a later Conn.Close still leaves nothing blocked (goleak)
			_ = c.Close()
		})
	}
}

// TestConnCloseWakesUnregisteredWaiter: a goroutine waiting on a call that
// is no longer in the pending table (its final response was dropped after
// abandon, say) is woken by Conn.Close.
func TestConnCloseWakesUnregisteredWaiter(t *testing.T) {
	ss := newStreamServer(t, 0, false)
	c := dial(t, ss.srv)
	cl, tag, err := c.register(true)
	if err != nil {
		t.Fatal(err)
	}
	c.unregister(tag, cl)
	errc := make(chan error, 1)
	go func() {
		_, err := c.wait(context.Background(), cl)
		errc <- err
	}()
	time.Sleep(10 * time.Millisecond)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := recvTimeout(t, errc); !errors.Is(err, ErrClosed) {
		t.Errorf("wait = %v, want ErrClosed", err)
	}
}
