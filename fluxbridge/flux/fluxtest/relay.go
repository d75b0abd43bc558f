// Package fluxtest supplies byte streams to a broker for tests of
// fluxbridge/flux's stream transports, and of everything built on it: an
// in-memory pipe and a child process, each relaying to a local:// socket
// as `flux relay` does, and an in-process SSH server that runs the relay
// command. FLUXBRIDGE_TEST_TRANSPORT selects the stream the tests of
// fluxbridge/flux, fluxbridge/job and fluxbridge dial through (Dialer).
//
// It does not import fluxbridge/flux, whose own tests use it: a Dialer
// here is a plain func(ctx, uri) (io.ReadWriteCloser, error), which
// flux.WithDialer takes as a flux.Dialer.
package fluxtest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
)

// EnvTransport selects the stream of Dialer: "" or "local" (none: the
// unix socket itself), "pipe" (an in-memory pipe relayed in-process) or
// "process" (a child process relaying, see RunRelayIfChild).
const EnvTransport = "FLUXBRIDGE_TEST_TRANSPORT"

// Transports are the values EnvTransport takes.
const (
	TransportLocal   = "local"
	TransportPipe    = "pipe"
	TransportProcess = "process"
)

// A Dialer opens a stream to the broker of a local:// URI (the shape of
// flux.Dialer).
type Dialer = func(ctx context.Context, uri string) (io.ReadWriteCloser, error)

// Transport returns the transport EnvTransport selects ("local" when
// unset). An unknown value panics, so that a typo cannot silently test
// the unix socket instead.
func Transport() string {
	switch t := os.Getenv(EnvTransport); t {
	case "", TransportLocal:
		return TransportLocal
	case TransportPipe, TransportProcess:
		return t
	default:
		panic(fmt.Sprintf("fluxtest: %s=%q: want local, pipe or process", EnvTransport, t))
	}
}

// SelectedDialer returns the Dialer of Transport, nil for local (dial the
// socket directly).
func SelectedDialer() Dialer {
	switch Transport() {
	case TransportPipe:
		return DialPipe
	case TransportProcess:
		return DialProcess
	}
	return nil
}

// SocketPath returns the socket of a local:// URI (a directory means its
// "local" socket, as flux.Dial has it).
func SocketPath(uri string) (string, error) {
	p, ok := strings.CutPrefix(uri, "local://")
	if !ok || p == "" {
		return "", fmt.Errorf("fluxtest: %q is not local://PATH", uri)
	}
	if fi, err := os.Stat(p); err == nil && fi.IsDir() {
		p = filepath.Join(p, "local")
	}
	return p, nil
}

// Relay connects to the broker's unix socket and copies bytes both ways
// between it and in/out, as `flux relay` does on its standard input and
// output (byte for byte: the broker's own accept byte goes through). It
// returns once either direction ends, with the socket closed. The copy
// from in may still wait in in.Read: it ends without writing anything
// more once in is closed or at its end, and then done is closed.
func Relay(ctx context.Context, socket string, in io.Reader, out io.Writer) (done <-chan struct{}, err error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		return nil, err
	}
	return relayConn(nc, in, out), nil
}

// relayConn is Relay on a connected socket.
func relayConn(nc net.Conn, in io.Reader, out io.Writer) (done <-chan struct{}) {
	stdinDone := make(chan struct{})
	go func() {
		defer close(stdinDone)
		_, _ = io.Copy(nc, in)
		// the client went away: so does the relay (relay.c stops its
		// reactor when the client disconnects)
		_ = nc.Close()
	}()
	_, _ = io.Copy(out, nc)
	_ = nc.Close()
	return stdinDone
}

// pipeStream is the client end of an in-memory relay: two io.Pipes, which
// have no deadlines (like an SSH channel or an exec stream).
type pipeStream struct {
	r      *io.PipeReader // broker -> client
	w      *io.PipeWriter // client -> broker
	nc     net.Conn       // the broker's socket
	closed sync.Once
	done   chan struct{} // closed when the relay goroutines ended
}

func (p *pipeStream) Read(b []byte) (int, error)  { return p.r.Read(b) }
func (p *pipeStream) Write(b []byte) (int, error) { return p.w.Write(b) }

// Close closes both pipes and the socket (a relay goroutine may be
// blocked writing to a broker that does not read) and waits for the relay
// to end.
func (p *pipeStream) Close() error {
	p.closed.Do(func() {
		_ = p.w.Close()
		_ = p.r.Close()
		_ = p.nc.Close()
	})
	<-p.done
	return nil
}

// DialPipe is a Dialer: the stream is a pair of in-memory pipes that
// goroutines relay to the URI's socket.
func DialPipe(ctx context.Context, uri string) (io.ReadWriteCloser, error) {
	sock, err := SocketPath(uri)
	if err != nil {
		return nil, err
	}
	var d net.Dialer
	nc, err := d.DialContext(ctx, "unix", sock)
	if err != nil {
		return nil, fmt.Errorf("fluxtest: %w", err)
	}
	cr, bw := io.Pipe() // broker -> client
	br, cw := io.Pipe() // client -> broker
	p := &pipeStream{r: cr, w: cw, nc: nc, done: make(chan struct{})}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { // broker -> client
		defer wg.Done()
		_, err := io.Copy(bw, nc)
		if err == nil {
			err = io.EOF
		}
		bw.CloseWithError(err)
		_ = nc.Close()
	}()
	go func() { // client -> broker
		defer wg.Done()
		_, err := io.Copy(nc, br)
		br.CloseWithError(errors.Join(err, io.ErrClosedPipe))
		_ = nc.Close()
	}()
	go func() {
		wg.Wait()
		close(p.done)
	}()
	return p, nil
}
