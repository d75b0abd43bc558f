package fluxbridge

import (
	"errors"
	"fmt"
	"syscall"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
)

// ErrShutdown is returned by Submit and Attach once Shutdown or Close has
// been called.
var ErrShutdown = errors.New("fluxbridge: cannot schedule new futures after shutdown")

// ErrBroken is returned (wrapped together with the cause) by Submit and
// Attach once a worker's connection to the broker has been lost; the
// executor cannot be used again. Executor.Err reports the same error.
var ErrBroken = errors.New("fluxbridge: executor is broken, new futures cannot be scheduled")

// ErrCancelled is the analogue of concurrent.futures.CancelledError: the
// future was cancelled with Future.Cancel (or by Shutdown with cancelFutures)
// before it started running.
var ErrCancelled = errors.New("fluxbridge: future was cancelled")

// ErrCallbackDeadlock is returned by Future.Result, Future.Exception and
// Future.JobID when they are called, for a future that is not yet complete,
// from inside one of that future's own callbacks. Waiting there would wait
// for work the calling goroutine itself is meant to do.
var ErrCallbackDeadlock = errors.New("fluxbridge: cannot wait for a future from inside its own callback")

// ErrNoSuchJob is set on a future whose job ID matches no job (the broker
// answered the eventlog watch with ENOENT). It wraps syscall.ENOENT.
var ErrNoSuchJob = fmt.Errorf("job ID does not match any job: %w", syscall.ENOENT)

// ErrUnknownEvent is returned by Future.AddEventCallback for a name that is
// not in Events.
var ErrUnknownEvent = errors.New("fluxbridge: unknown event name")

// ErrIncomplete is set on a future whose eventlog ended without a finish
// event or a fatal exception, which a well-behaved broker never does.
var ErrIncomplete = errors.New("fluxbridge: job eventlog ended before the job completed")

// SubmitError is returned by Future.JobID when the job could not be
// submitted, so no job ID exists. It wraps the error the future completed
// with, so errors.As finds e.g. an *InvalidJobspecError through it.
type SubmitError struct {
	Err error
}

// Error implements error.
func (e *SubmitError) Error() string { return "job could not be submitted: " + e.Err.Error() }

// Unwrap returns the submission error.
func (e *SubmitError) Unwrap() error { return e.Err }

// InvalidJobspecError is set on a future when the broker rejected its
// jobspec (the analogue of the OSError the Python executor sets). Message
// is the broker's text; Err is the underlying error, which unwraps to the
// errno the broker answered with (errors.Is(err, syscall.EPERM) for
// flux-core 0.88's "Missing key (tasks)", for example).
type InvalidJobspecError struct {
	Message string
	Err     error
}

// Error implements error.
func (e *InvalidJobspecError) Error() string {
	if e.Message == "" {
		return "invalid jobspec: " + e.Err.Error()
	}
	return "invalid jobspec: " + e.Message
}

// Unwrap returns the underlying error.
func (e *InvalidJobspecError) Unwrap() error { return e.Err }

// JobException is set on a future when its job raised an exception of
// severity 0 (fatal) before finishing, for instance because it was
// cancelled or killed through Flux, or its command could not be started.
type JobException struct {
	// ID is the job the exception was raised on.
	ID job.ID
	// Type is the exception type, e.g. "cancel" or "exec".
	Type string
	// Severity is 0 for the fatal exceptions that complete a future.
	Severity int
	// Note is the human-readable text that came with the exception.
	Note string
	// Event is the eventlog event that carried the exception.
	Event job.Event
}

// Error implements error.
func (e *JobException) Error() string {
	s := fmt.Sprintf("job %s: exception type=%s severity=%d", e.ID, e.Type, e.Severity)
	if e.Note != "" {
		s += ": " + e.Note
	}
	return s
}
