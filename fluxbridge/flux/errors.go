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

// ErrProtocol is matched (errors.Is) by every *ProtocolError.
var ErrProtocol = errors.New("flux: broker broke the protocol")

// Reasons a *ProtocolError gives. They are CamelCase so that an owner can
// use them as they are as the reason of a Kubernetes condition.
const (
	// ReasonMessageTooLarge: the broker sent a message larger than the
	// Conn accepts (WithMaxMessageSize). Its length prefix is checked
	// before anything is allocated for it.
	ReasonMessageTooLarge = "MessageTooLarge"
	// ReasonMalformedMessage: the broker sent bytes that are not a flux
	// message (a bad stream prefix, frames or header that do not decode):
	// garbage on the relay's standard output, say.
	ReasonMalformedMessage = "MalformedMessage"
	// ReasonBrokerUnresponsive: the broker did not answer the Conn's
	// keepalive request in time (WithKeepalive): a stopped relay process,
	// a stalled pipe, a hung broker.
	ReasonBrokerUnresponsive = "BrokerUnresponsive"
	// ReasonStreamOverflow: a Stream's responses came faster than its
	// reader took them and more than its queue holds were waiting (see
	// WithStreamQueue). Only that Stream ends.
	ReasonStreamOverflow = "StreamOverflow"
)

// ProtocolError is why a Conn (or, for ReasonStreamOverflow, one Stream)
// ended because the broker broke a rule this client enforces to stay
// within its memory and to notice a broker that stopped: a limit, the
// framing, or liveness. A Conn that ends with one reports it wrapped in
// ErrDisconnected (errors.Is(err, ErrDisconnected) still holds), so that
// errors.As(err, &pe) or ProtocolReason(err) tells it apart from a broker
// that merely went away; the owner should redial, and may show Reason.
type ProtocolError struct {
	// URI names the Conn.
	URI string
	// Reason is one of the Reason constants.
	Reason string
	// Err is the cause, e.g. an error matching wire.ErrTooLarge.
	Err error
}

// Error describes the violation: "flux: URI: MessageTooLarge: CAUSE".
func (e *ProtocolError) Error() string {
	return fmt.Sprintf("flux: %s: %s: %v", e.URI, e.Reason, e.Err)
}

// Unwrap returns the cause.
func (e *ProtocolError) Unwrap() error { return e.Err }

// Is reports whether target is ErrProtocol.
func (e *ProtocolError) Is(target error) bool { return target == ErrProtocol }

// ProtocolReason returns the Reason of the *ProtocolError in err's chain,
// or "" if there is none.
func ProtocolReason(err error) string {
	var pe *ProtocolError
	if errors.As(err, &pe) {
		return pe.Reason
	}
	return ""
}
