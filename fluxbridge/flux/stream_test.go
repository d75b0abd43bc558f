package flux

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux/fluxtest"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/wire"
)

// streamDialers are the streams every run of the tests below uses,
// whatever fluxtest.EnvTransport selects for the rest.
var streamDialers = []struct {
	name string
	d    Dialer
}{
	{"pipe", fluxtest.DialPipe},
	{"process", fluxtest.DialProcess},
}

// TestStreamTransports: over an in-memory pipe and through a relay
// process, a Conn does what it does over the socket: RPCs and their
// errors, streams to their end, handler RPCs, and a broker going away
// ends pending calls with ErrDisconnected.
func TestStreamTransports(t *testing.T) {
	for _, sd := range streamDialers {
		t.Run(sd.name, func(t *testing.T) {
			srv := newFakeServer(t, transportHandler)
			c, err := Dial(testCtx(t), srv.uri, WithDialer(sd.d))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if c.URI() != srv.uri {
				t.Errorf("URI = %q", c.URI())
			}
			ctx := testCtx(t)
			var out map[string]int
			if err := c.RPC(ctx, "echo", map[string]int{"x": 7}, &out); err != nil || out["x"] != 7 {
				t.Fatalf("RPC = %v, %v", out, err)
			}
			if err := c.RPC(ctx, "fail", nil, nil); !errors.Is(err, syscall.ENOENT) {
				t.Fatalf("RPC fail = %v, want ENOENT", err)
			}
			st, err := c.Stream(ctx, "watch", nil)
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			for {
				var v map[string]int
				err := st.Recv(&v)
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					t.Fatalf("Recv: %v", err)
				}
				n++
			}
			if n != 3 {
				t.Errorf("stream gave %d responses, want 3", n)
			}
			got := make(chan error, 1)
			if err := c.StartRPC(ctx, "echo", nil, func(_ []byte, err error) { got <- err }); err != nil {
				t.Fatal(err)
			}
			if err := recvTimeout(t, got); err != nil {
				t.Fatalf("StartRPC: %v", err)
			}
			pending := make(chan error, 1)
			go func() { pending <- c.RPC(ctx, "hang", nil, nil) }()
			waitFor(t, func() bool {
				c.mu.Lock()
				defer c.mu.Unlock()
				return len(c.pending) == 1
			})
			srv.dropAll()
			if err := recvTimeout(t, pending); !errors.Is(err, ErrDisconnected) {
				t.Fatalf("pending RPC after the broker went away: %v", err)
			}
			<-c.Done()
			if !errors.Is(c.Err(), ErrDisconnected) {
				t.Errorf("Err = %v", c.Err())
			}
		})
	}
}

// transportHandler answers "watch" with 3 responses and ENODATA, "fail"
// with ENOENT, "hang" never, and echoes anything else.
func transportHandler(sc *serverConn) {
	sc.serveLoop(func(m *wire.Message) {
		switch m.Topic {
		case "hang":
		case "fail":
			_ = sc.send(wire.NewErrorResponse(m, uint32(syscall.ENOENT), "no such thing"))
		case "watch":
			for i := range 3 {
				p, _ := wire.JSONPayload(map[string]int{"seq": i})
				_ = sc.send(wire.NewResponse(m, p))
			}
			_ = sc.send(wire.NewErrorResponse(m, uint32(syscall.ENODATA), ""))
		default:
			_ = sc.send(wire.NewResponse(m, m.Payload))
		}
	})
}

// TestStreamHandshake: the accept byte and a relay that fails before it,
// through each stream.
func TestStreamHandshake(t *testing.T) {
	for _, sd := range streamDialers {
		t.Run(sd.name, func(t *testing.T) {
			tests := []struct {
				name   string
				accept []byte
				errno  syscall.Errno // 0: must connect
			}{
				{"accepted", []byte{0}, 0},
				{"EPERM", []byte{byte(syscall.EPERM)}, syscall.EPERM},
				{"closed before the byte", nil, syscall.ECONNRESET},
			}
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					srv := newFakeServerAccept(t, tt.accept, func(sc *serverConn) {
						if tt.errno != 0 {
							_ = sc.nc.Close()
							return
						}
						echoHandler(sc)
					})
					c, err := Dial(testCtx(t), srv.uri, WithDialer(sd.d))
					if tt.errno == 0 {
						if err != nil {
							t.Fatal(err)
						}
						_ = c.Close()
						return
					}
					var ce *ConnectError
					if !errors.As(err, &ce) || ce.Errno != tt.errno || ce.URI != srv.uri {
						t.Fatalf("err = %v, want *ConnectError %v", err, tt.errno)
					}
				})
			}
		})
	}
	t.Run("relay process cannot reach the socket", func(t *testing.T) {
		uri := "local://" + t.TempDir() + "/nope"
		_, err := Dial(testCtx(t), uri, WithDialer(fluxtest.DialProcess))
		var re *RelayError
		if !errors.As(err, &re) {
			t.Fatalf("err = %v, want a *RelayError", err)
		}
		if !strings.Contains(re.Stderr, "no such file") || !strings.Contains(err.Error(), re.Stderr) {
			t.Errorf("error %q does not carry the relay's stderr %q", err, re.Stderr)
		}
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("err = %v, want it to wrap ECONNRESET (stream closed before the accept byte)", err)
		}
	})
}

// scriptedStream is a stream whose far end is a script: it yields out,
// then blocks reads until Close (or, with eof, ends after out), and its
// writes block until Close when blockWrites is set.
type scriptedStream struct {
	out         []byte
	eof         bool
	blockWrites bool
	stderr      string

	mu     sync.Mutex
	closed chan struct{}
	once   sync.Once
}

func newScripted(out []byte) *scriptedStream {
	return &scriptedStream{out: out, closed: make(chan struct{})}
}

func (s *scriptedStream) Read(p []byte) (int, error) {
	s.mu.Lock()
	if len(s.out) > 0 {
		n := copy(p, s.out)
		s.out = s.out[n:]
		s.mu.Unlock()
		return n, nil
	}
	s.mu.Unlock()
	if s.eof {
		return 0, io.EOF
	}
	<-s.closed
	return 0, io.ErrClosedPipe
}

func (s *scriptedStream) Write(p []byte) (int, error) {
	if s.blockWrites {
		<-s.closed
		return 0, io.ErrClosedPipe
	}
	select {
	case <-s.closed:
		return 0, io.ErrClosedPipe
	default:
		return len(p), nil
	}
}

func (s *scriptedStream) Close() error {
	s.once.Do(func() { close(s.closed) })
	return nil
}

func (s *scriptedStream) isClosed() bool {
	select {
	case <-s.closed:
		return true
	default:
		return false
	}
}

// stderrStream adds StderrStream to a scriptedStream.
type stderrStream struct{ *scriptedStream }

func (s stderrStream) Stderr(context.Context) string { return s.stderr }

// TestStreamWithoutDeadlines covers what a stream without deadlines
// changes: the accept byte waits on the context by closing the stream,
// a write blocked when its context ends ends the Conn, and a handshake
// that fails carries the remote stderr or flux-core's hint.
func TestStreamWithoutDeadlines(t *testing.T) {
	t.Run("no accept byte until the context ends", func(t *testing.T) {
		s := newScripted(nil)
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		_, err := DialStream(ctx, "test://silent", s)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v, want DeadlineExceeded", err)
		}
		if !s.isClosed() {
			t.Error("the stream was not closed")
		}
	})
	t.Run("write blocked when its context ends", func(t *testing.T) {
		s := newScripted([]byte{0})
		s.blockWrites = true
		c, err := DialStream(testCtx(t), "test://stuck", s)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		if err := c.RPC(ctx, "x", nil, nil); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("RPC = %v, want DeadlineExceeded", err)
		}
		// the request is still being written: the Conn stays, and so does
		// the matchtag, until a response or the end of the Conn
		if err := c.Err(); err != nil {
			t.Errorf("Err = %v, want the Conn open", err)
		}
		c.mu.Lock()
		n := len(c.pending)
		c.mu.Unlock()
		if n != 1 {
			t.Errorf("%d matchtags reserved, want the in-flight request's", n)
		}
		sctx, scancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer scancel()
		if _, err := c.Stream(sctx, "y", nil); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Stream behind the blocked write = %v, want DeadlineExceeded", err)
		}
		// Close ends the blocked write (closing the stream) and waits for it
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
	})
	tests := []struct {
		name   string
		out    []byte
		stderr string
		want   []string // substrings of the error
		errno  syscall.Errno
	}{
		{"stderr of a failed relay", nil, "flux-relay: local:///run/flux/local: No such file or directory", []string{"relay failed", "No such file"}, syscall.ECONNRESET},
		{"output of a shell init file", []byte("Welcome to the cluster\n"), "", []string{"shell init files", "stdout"}, syscall.Errno('W')},
		{"silent relay", nil, "", []string{"did not establish a clean connection", "shell init files"}, syscall.ECONNRESET},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newScripted(tt.out)
			s.eof, s.stderr = true, tt.stderr
			_, err := DialStream(testCtx(t), "test://relay", stderrStream{s})
			var re *RelayError
			if !errors.As(err, &re) || re.Stderr != tt.stderr || !errors.Is(err, tt.errno) {
				t.Fatalf("err = %v, want a *RelayError wrapping %v with stderr %q", err, tt.errno, tt.stderr)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			if !s.isClosed() {
				t.Error("the stream was not closed")
			}
		})
	}
}

// TestDialStreamNetPipe: DialStream over a net.Conn that is not a socket
// (net.Pipe, which has deadlines but no file descriptor).
func TestDialStreamNetPipe(t *testing.T) {
	cl, sv := net.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer sv.Close()
		if _, err := sv.Write([]byte{0}); err != nil {
			return
		}
		r := wire.NewReader(sv, 0)
		for {
			m, err := r.ReadMessage()
			if err != nil {
				return
			}
			if err := wire.WriteMessage(sv, wire.NewResponse(m, m.Payload)); err != nil {
				return
			}
		}
	}()
	c, err := DialStream(testCtx(t), "test://netpipe", cl)
	if err != nil {
		t.Fatal(err)
	}
	var out map[string]string
	if err := c.RPC(testCtx(t), "echo", map[string]string{"a": "b"}, &out); err != nil || out["a"] != "b" {
		t.Fatalf("RPC = %v, %v", out, err)
	}
	_ = c.Close()
	<-done
}
