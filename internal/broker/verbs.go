package broker

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"time"

	"k8s.io/apimachinery/pkg/types"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
)

// The verbs: what the controller asks of a FluxJob's Flux job, each on a
// resolved Route. Those that follow a job (Submit, Attach) start a future
// whose callbacks record into the Tracker under the FluxJob's uid; the
// others are one bounded RPC on the instance's control connection.

// Submit submits jobspec to rt's instance and follows the job under uid
// (key is what the tracker pokes). instanceID is the identity recorded
// with the submission marker. An error means the executor could not take
// the job (connection lost, or refused before reaching Flux: then the
// View's outcome is final); the job was not submitted.
func (t *Tracker) Submit(ctx context.Context, rt Route, uid types.UID, key types.NamespacedName, jobspec []byte, opts job.SubmitOptions, instanceID string) error {
	exec, _, err := rt.Get()
	if err != nil {
		return err
	}
	token := t.BeginOn(rt.Name, uid, key, true)
	t.SetInstance(uid, token, instanceID)
	start := t.now()
	f, err := exec.Submit(ctx, jobspec, opts)
	if err != nil {
		out := Classify(0, err)
		if out.Kind == OutcomeError {
			// Refused before reaching Flux (bad urgency, say): final.
			submissionsTotal.WithLabelValues(rt.Name, "error").Inc()
		} else {
			out.Kind = OutcomeLost // executor broken or shut down: retry after reconnect
		}
		t.Finish(uid, token, out)
		return fmt.Errorf("submitting to Flux instance %s: %w", rt.Name, err)
	}
	Bind(t, rt.Name, uid, token, f, start)
	return nil
}

// Attach follows the existing job id on rt's instance under uid. The
// caller must have proved the job is the FluxJob's (VerifyJob, Lookup):
// a bare ID may name another instance's job. adopted counts it as the
// job of an earlier submission found by name (metrics).
func (t *Tracker) Attach(ctx context.Context, rt Route, uid types.UID, key types.NamespacedName, id job.ID, adopted bool) error {
	exec, _, err := rt.Get()
	if err != nil {
		return err
	}
	if adopted {
		submissionsTotal.WithLabelValues(rt.Name, "adopted").Inc()
	}
	token := t.BeginOn(rt.Name, uid, key, false)
	f, err := exec.Attach(ctx, id)
	if err != nil {
		t.Finish(uid, token, Outcome{Kind: OutcomeLost, Message: err.Error()})
		return fmt.Errorf("attaching to Flux job %s: %w", id.F58(), err)
	}
	// The job ID is known: record it at once (the callback does too).
	t.SetJobID(uid, token, uint64(id))
	t.SetInstance(uid, token, rt.InstanceID())
	Bind(t, rt.Name, uid, token, f, time.Time{})
	return nil
}

// Cancel asks Flux to cancel job id (job-manager.raise, type cancel) with
// reason, within timeout, and records the request under uid. It returns
// the broker's error as is: ENOENT means the job is inactive or unknown,
// another *flux.Error a refusal, anything else a connection problem.
func (t *Tracker) Cancel(ctx context.Context, rt Route, uid types.UID, key types.NamespacedName, id job.ID, reason string, timeout time.Duration) error {
	_, ctl, err := rt.Get()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := job.Cancel(ctx, ctl, id, reason); err != nil {
		return err
	}
	t.MarkCancelRequested(uid, key)
	return nil
}

// SetUrgency sets job id's urgency (job-manager.urgency) within timeout
// and records the outcome under uid: accepted, or refused with the
// broker's message (which is then not retried until the wanted urgency
// changes). It reports refused for a broker's refusal, and returns an
// error only for a connection problem.
func (t *Tracker) SetUrgency(ctx context.Context, rt Route, uid types.UID, id job.ID, urgency int, timeout time.Duration) (refused string, err error) {
	_, ctl, err := rt.Get()
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	_, err = job.SetUrgency(ctx, ctl, id, urgency)
	var fe *flux.Error
	switch {
	case err == nil:
		t.SetUrgencyResult(uid, urgency, "")
		return "", nil
	case errors.As(err, &fe) || !IsConnectionError(err):
		msg := err.Error()
		if fe != nil && fe.Message != "" {
			msg = fe.Message
		}
		t.SetUrgencyResult(uid, urgency, msg)
		return msg, nil
	}
	return "", err
}

// WaitResult is what Wait found.
type WaitResult int

const (
	// Waited: job-manager.wait collected the job.
	Waited WaitResult = iota
	// NothingToWait: the job is unknown, not waitable, or already
	// collected: nothing is left in the broker.
	NothingToWait
	// WaitFailed: the broker refused; waiting again will not help.
	WaitFailed
)

// Wait collects the waitable job id (job-manager.wait) within timeout. It
// returns an error only for a connection problem or a timeout (worth
// trying again); msg describes the result.
func Wait(ctx context.Context, rt Route, id job.ID, timeout time.Duration) (res WaitResult, msg string, err error) {
	_, ctl, err := rt.Get()
	if err != nil {
		return 0, "", err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	// The job is inactive once its clean event is posted, soon after the
	// finish event that made the status final; wait answers then.
	wr, err := job.Wait(ctx, ctl, id)
	var fe *flux.Error
	switch {
	case err == nil:
		return Waited, fmt.Sprintf("job-manager.wait collected Flux job %s (success=%t)", id.F58(), wr.Success), nil
	case errors.As(err, &fe) && (errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.ECHILD)):
		return NothingToWait, fmt.Sprintf("Flux job %s has nothing to wait for: %s", id.F58(), fe.Message), nil
	case errors.As(err, &fe):
		return WaitFailed, fmt.Sprintf("job-manager.wait on Flux job %s failed: %s", id.F58(), fe.Message), nil
	}
	return 0, "", err
}

// Verify is VerifyJob on rt's control connection.
func Verify(ctx context.Context, rt Route, id job.ID, name string, timeout time.Duration) (JobCheck, string, error) {
	_, ctl, err := rt.Get()
	if err != nil {
		return 0, "", err
	}
	return VerifyJob(ctx, ctl, id, name, timeout)
}

// LookupOn is Lookup on rt's control connection.
func LookupOn(ctx context.Context, rt Route, name string, anchor job.ID, timeout time.Duration) ([]job.ID, error) {
	_, ctl, err := rt.Get()
	if err != nil {
		return nil, err
	}
	return Lookup(ctx, ctl, name, anchor, timeout)
}

// CatchUpOn is CatchUp on rt's control connection.
func CatchUpOn(ctx context.Context, rt Route, timeout time.Duration) error {
	_, ctl, err := rt.Get()
	if err != nil {
		return err
	}
	return CatchUp(ctx, ctl, timeout)
}
