package broker

import (
	"context"
	"errors"
	"time"

	"k8s.io/apimachinery/pkg/types"

	"github.com/fluxjob/fluxjob-operator/fluxbridge"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
)

// Bind registers callbacks on f that record its job ID, every
// eventlog event and its outcome in the tracker under (uid, token), and
// the submission metrics under instance. The
// callbacks never block: they only take the tracker's lock and poke the
// reconciler without waiting.
func Bind(t *Tracker, instance string, uid types.UID, token uint64, f *fluxbridge.Future, submittedAt time.Time) {
	f.AddJobIDCallback(func(f *fluxbridge.Future) {
		// The ID is set when this runs, so JobID does not wait.
		id, err := f.JobID(context.Background())
		if !submittedAt.IsZero() {
			submitDuration.WithLabelValues(instance).Observe(time.Since(submittedAt).Seconds())
			switch {
			case err == nil:
				submissionsTotal.WithLabelValues(instance, "success").Inc()
			case errors.As(err, new(*fluxbridge.InvalidJobspecError)):
				submissionsTotal.WithLabelValues(instance, "rejected").Inc()
			default:
				submissionsTotal.WithLabelValues(instance, "error").Inc()
			}
		}
		if err == nil {
			t.SetJobID(uid, token, uint64(id))
		}
	})
	// One registration for every event name (a registration per name
	// cost each in-flight future 13 entries for the same function).
	f.AddAllEventsCallback(func(_ *fluxbridge.Future, ev job.Event) {
		t.AddEvent(uid, token, job.Event{Name: ev.Name, Timestamp: ev.Timestamp, Context: ev.Context})
	})
	f.AddDoneCallback(func(f *fluxbridge.Future) {
		res, err := f.Result(context.Background())
		t.Finish(uid, token, Classify(res, err))
	})
}

// Classify turns a future's result into an outcome.
func Classify(res int, err error) Outcome {
	if err == nil {
		return Outcome{Kind: OutcomeExited, ExitCode: res}
	}
	var exc *fluxbridge.JobException
	var inv *fluxbridge.InvalidJobspecError
	switch {
	case errors.As(err, &exc):
		return Outcome{Kind: OutcomeException, ExcType: exc.Type, ExcSeverity: exc.Severity, ExcNote: exc.Note, Message: err.Error()}
	case errors.As(err, &inv):
		return Outcome{Kind: OutcomeInvalidJobspec, Message: inv.Message}
	case errors.Is(err, fluxbridge.ErrNoSuchJob):
		return Outcome{Kind: OutcomeNoSuchJob, Message: err.Error()}
	case errors.Is(err, fluxbridge.ErrCancelled), errors.Is(err, fluxbridge.ErrShutdown):
		return Outcome{Kind: OutcomeAborted, Message: err.Error()}
	case IsConnectionError(err):
		return Outcome{Kind: OutcomeLost, Message: err.Error()}
	}
	return Outcome{Kind: OutcomeError, Message: err.Error()}
}

// IsConnectionError reports whether err means the broker connection (not
// the job) failed.
func IsConnectionError(err error) bool {
	return errors.Is(err, flux.ErrDisconnected) || errors.Is(err, flux.ErrClosed) || errors.Is(err, fluxbridge.ErrBroken) ||
		errors.Is(err, ErrUnreachable)
}
