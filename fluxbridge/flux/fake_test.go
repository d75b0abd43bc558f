package flux

import (
	"bytes"
	"errors"
	"io"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/wire"
)

// fakeServer is a minimal broker double on a real unix socket, built on the
// wire package: it writes an accept byte and hands each connection to a
// handler. It is independent of fluxbridge/testbroker on purpose.
type fakeServer struct {
	t      testing.TB
	path   string
	uri    string
	ln     net.Listener
	accept []byte // written on accept; nil: write nothing
	handle func(sc *serverConn)

	mu    sync.Mutex
	conns []*serverConn
	wg    sync.WaitGroup
}

// serverConn is the server side of one client connection.
type serverConn struct {
	nc  net.Conn
	rec *recorder
	r   *wire.Reader
	wmu sync.Mutex
}

// recorder keeps every byte read, so tests can compare what the client
// sent with captured bytes.
type recorder struct {
	r   io.Reader
	mu  sync.Mutex
	buf bytes.Buffer
}

func (r *recorder) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	r.mu.Lock()
	r.buf.Write(p[:n])
	r.mu.Unlock()
	return n, err
}

func (r *recorder) bytes() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]byte(nil), r.buf.Bytes()...)
}

func newFakeServer(t testing.TB, handle func(sc *serverConn)) *fakeServer {
	t.Helper()
	return newFakeServerAccept(t, []byte{0}, handle)
}

// newFakeServerAccept is newFakeServer writing accept (nil: nothing) on
// every new connection.
func newFakeServerAccept(t testing.TB, accept []byte, handle func(sc *serverConn)) *fakeServer {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "local")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	s := &fakeServer{t: t, path: path, uri: "local://" + path, ln: ln, accept: accept, handle: handle}
	s.wg.Add(1)
	go s.serve()
	t.Cleanup(s.Close)
	return s
}

func (s *fakeServer) serve() {
	defer s.wg.Done()
	for {
		nc, err := s.ln.Accept()
		if err != nil {
			return
		}
		rec := &recorder{r: nc}
		sc := &serverConn{nc: nc, rec: rec, r: wire.NewReader(rec, 0)}
		s.mu.Lock()
		s.conns = append(s.conns, sc)
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if s.accept != nil {
				if _, err := nc.Write(s.accept); err != nil {
					return
				}
			}
			if s.handle != nil {
				s.handle(sc)
			}
		}()
	}
}

// Close stops the server, closes every connection and waits for handlers.
func (s *fakeServer) Close() {
	_ = s.ln.Close()
	s.mu.Lock()
	for _, sc := range s.conns {
		_ = sc.nc.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// dropAll closes every server-side connection (the broker going away).
func (s *fakeServer) dropAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, sc := range s.conns {
		_ = sc.nc.Close()
	}
}

func (sc *serverConn) send(m *wire.Message) error {
	sc.wmu.Lock()
	defer sc.wmu.Unlock()
	_ = sc.nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
	return wire.WriteMessage(sc.nc, m)
}

func (sc *serverConn) writeRaw(b []byte) error {
	sc.wmu.Lock()
	defer sc.wmu.Unlock()
	_, err := sc.nc.Write(b)
	return err
}

// serveLoop reads requests and calls fn for each until the connection ends.
func (sc *serverConn) serveLoop(fn func(m *wire.Message)) {
	for {
		m, err := sc.r.ReadMessage()
		if err != nil {
			return
		}
		fn(m)
	}
}

// echoHandler answers every request that expects a response with its own
// payload; topic "fail" gets ENOENT "no such thing".
func echoHandler(sc *serverConn) {
	sc.serveLoop(func(m *wire.Message) {
		if m.Flags&wire.FlagNoResponse != 0 {
			return
		}
		if m.Topic == "fail" {
			_ = sc.send(wire.NewErrorResponse(m, 2, "no such thing"))
			return
		}
		var p []byte
		if m.Flags&wire.FlagPayload != 0 {
			p = m.Payload
		}
		_ = sc.send(wire.NewResponse(m, p))
	})
}

var errTimeout = errors.New("timed out")

// recvTimeout waits for a value on ch.
func recvTimeout[T any](t testing.TB, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatal(errTimeout)
		panic("unreachable")
	}
}
