package flux

import (
	"errors"
	"fmt"
	"syscall"
)

var (
	// ErrClosed is returned by calls on, and pending calls of, a Conn that
	// was closed with Close.
	ErrClosed = errors.New("flux: connection closed")
	// ErrDisconnected is returned by calls on, and pending calls of, a Conn
	// whose broker went away (or sent bytes we could not decode).
	ErrDisconnected = errors.New("flux: disconnected from broker")
	// ErrUnsupportedScheme is returned by Dial for a URI whose scheme this
	// client does not speak; the message names the supported ones.
	ErrUnsupportedScheme = errors.New("flux: unsupported URI scheme (supported: local://, ssh://)")
	// ErrStreamClosed is returned by Recv on a Stream after Close.
	ErrStreamClosed = errors.New("flux: stream closed")
)

// Error is an error response from a Flux service: the errno in the
// response header and the error string in its payload (empty when the
// service sent none). It unwraps to Errno, so errors.Is(err,
// syscall.ENOENT) works.
type Error struct {
	Errno   syscall.Errno
	Message string
	Topic   string
}

// Error returns "flux: TOPIC: MESSAGE (errno N: TEXT)", or without the
// message when the service sent none.
func (e *Error) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("flux: %s: %s (errno %d)", e.Topic, e.Errno.Error(), int(e.Errno))
	}
	return fmt.Sprintf("flux: %s: %s (errno %d: %s)", e.Topic, e.Message, int(e.Errno), e.Errno.Error())
}

// Unwrap returns the errno.
func (e *Error) Unwrap() error { return e.Errno }

// ConnectError reports a broker refusing a connection: the non-zero byte it
// writes on accept is an errno (flux-core src/common/librouter/usock.c,
// usock_conn_reject and usock_client_read_zero). A broker that closes the
// connection before writing that byte is reported as ECONNRESET, as
// flux-core does.
type ConnectError struct {
	URI   string
	Errno syscall.Errno
}

// Error describes the refusal.
func (e *ConnectError) Error() string {
	return fmt.Sprintf("flux: broker at %s refused the connection: %s (errno %d)", e.URI, e.Errno.Error(), int(e.Errno))
}

// Unwrap returns the errno.
func (e *ConnectError) Unwrap() error { return e.Errno }
