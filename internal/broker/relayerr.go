package broker

import (
	"errors"
	"fmt"
	"strings"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux"
)

// relayStderrError is a connection error whose relay wrote to its
// standard error, without what it wrote: the connector's errors end up in
// FluxEndpoint and FluxJob status, which their viewers read, and the
// relay runs a command in a container (a pod connection) or on a remote
// host (ssh://) whose standard error may carry anything, e.g. a token a
// hostile command printed. The whole error, standard error included, is
// in the manager's log ("cannot connect to the Flux broker").
type relayStderrError struct {
	msg string // the error's message, the relay's part replaced by a summary
	err error  // the handshake's error (without the standard error)
}

func (e *relayStderrError) Error() string { return e.msg }

func (e *relayStderrError) Unwrap() error { return e.err }

// withoutRelayStderr returns err with the relay's standard error taken
// out (a bounded summary instead: its size; see relayStderrError), or err
// itself when it carries none.
func withoutRelayStderr(err error) error {
	var re *flux.RelayError
	if err == nil || !errors.As(err, &re) || re.Stderr == "" {
		return err
	}
	summary := fmt.Sprintf("flux: %s: the relay failed before the broker accepted the connection (%v); "+
		"it wrote %d bytes to its standard error, which are in the manager's log only", re.URI, re.Err, len(re.Stderr))
	msg := strings.Replace(err.Error(), re.Error(), summary, 1)
	if strings.Contains(msg, re.Stderr) { // re was not quoted verbatim by the wrappers
		msg = summary
	}
	return &relayStderrError{msg: msg, err: re.Err}
}
