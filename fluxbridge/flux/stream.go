package flux

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"
)

// A Dialer opens a byte stream to a broker's local:// connector: the bytes
// `flux relay PATH` reads and writes on its standard input and output
// (flux-core src/cmd/builtin/relay.c): the accept byte first, then framed
// messages both ways. uri is the URI given to Dial, which names the Conn.
//
// The stream's Close must interrupt a Read or Write blocked on it. If the
// stream also has the deadline methods of net.Conn, the Conn uses them to
// interrupt a write when its context ends; otherwise the call (RPC, Stream,
// Send) returns the context's error while its request is still written in
// the background: the request may reach the broker, so an RPC's matchtag
// stays reserved until its response, which is dropped, and a stream is
// cancelled right after it. A stream that captures its remote end's
// standard error can say so with StderrStream.
type Dialer func(ctx context.Context, uri string) (io.ReadWriteCloser, error)

// WithDialer makes Dial open the Conn's stream with d instead of by the
// URI's scheme; the URI (any string, e.g. "pod://NAMESPACE/POD") then only
// names the Conn (URI, errors, logs) and is passed to d.
func WithDialer(d Dialer) Option { return func(o *options) { o.dialer = d } }

// DialStream makes a Conn over rwc, an open stream to a broker's local://
// connector (see Dialer): it reads the accept byte, and takes rwc over
// (closing it if the broker refused or ctx ended first). uri names the
// Conn.
func DialStream(ctx context.Context, uri string, rwc io.ReadWriteCloser, opts ...Option) (*Conn, error) {
	return newConn(ctx, uri, rwc, newOptions(opts))
}

// StderrStream is a stream that keeps what the remote end of the stream
// (the relay command) writes to its standard error. When the stream ends
// before the broker's accept byte, Dial returns a *RelayError carrying it.
type StderrStream interface {
	io.ReadWriteCloser
	// Stderr waits until the remote end's standard error is closed (the
	// remote command exited) or ctx ends, and returns what it wrote (the
	// last few KiB).
	Stderr(ctx context.Context) string
}

// RelayError reports a stream that ended, or sent something other than
// the accept byte, before a broker accepted the connection: typically the
// relay command failed on the remote side (no such command, no broker
// listening on the socket, no permission). Stderr is what the remote
// command wrote to its standard error, if the stream captured it.
type RelayError struct {
	URI    string
	Stderr string
	Err    error // the handshake's error, e.g. a *ConnectError
}

// relayHint is flux-core's own hint (src/connectors/ssh/ssh.c) for a relay
// that failed without a word on standard error: something else, usually a
// shell init file, wrote to its standard output first.
const relayHint = "hint: check that shell init files do not write to stdout when non-interactive"

// Error describes the failure with the remote standard error, or, when
// there was none and the stream ended or carried something else than the
// accept byte, with flux-core's hint.
func (e *RelayError) Error() string {
	var ce *ConnectError
	switch {
	case e.Stderr != "":
		return fmt.Sprintf("flux: %s: the relay failed: %s (%v)", e.URI, e.Stderr, e.Err)
	case errors.As(e.Err, &ce):
		return fmt.Sprintf("flux: %s: the relay did not establish a clean connection (%v); %s", e.URI, e.Err, relayHint)
	}
	return e.Err.Error()
}

// Unwrap returns the handshake's error.
func (e *RelayError) Unwrap() error { return e.Err }

// stderrWait bounds how long a failed handshake waits for the remote
// command to finish writing its standard error (it has usually exited
// already: that is why the stream ended).
const stderrWait = 3 * time.Second

// withStderr wraps a handshake error as a *RelayError if rwc captures its
// remote end's standard error. wait is how long to wait for the remote
// command to exit.
func withStderr(ctx context.Context, rwc io.ReadWriteCloser, uri string, err error, wait time.Duration) error {
	ss, ok := rwc.(StderrStream)
	if !ok {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	return &RelayError{URI: uri, Stderr: ss.Stderr(ctx), Err: err}
}

// deadliner is the deadline half of net.Conn.
type deadliner interface {
	SetReadDeadline(t time.Time) error
	SetWriteDeadline(t time.Time) error
}

// inFlightError is what write returns when the caller's context ended
// while a request was being written to a stream without deadlines: the
// write goes on (writes cannot be interrupted there without closing the
// stream) and the request will reach the broker unless the Conn ends. It
// unwraps to the context's error.
type inFlightError struct{ err error }

func (e *inFlightError) Error() string { return e.err.Error() }
func (e *inFlightError) Unwrap() error { return e.err }

func isInFlight(err error) bool {
	var e *inFlightError
	return errors.As(err, &e)
}

// writeStream writes buf to a stream that has no deadlines, with wsem
// held, from a goroutine that releases wsem once the write is done (so
// the next write still comes after it). If ctx ends first, it returns an
// *inFlightError and leaves the write to that goroutine; Close waits for
// it (closing the stream ends a blocked write).
func (c *Conn) writeStream(ctx context.Context, buf []byte) error {
	done := make(chan error, 1)
	c.inflight.Add(1)
	go func() {
		defer c.inflight.Done()
		n, err := c.nc.Write(buf)
		if err != nil {
			err = c.writeFailed(context.Background(), n, len(buf), err)
		}
		<-c.wsem
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return &inFlightError{err: ctx.Err()}
	}
}
