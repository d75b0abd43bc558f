package controllers

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
	"github.com/fluxjob/fluxjob-operator/internal/written"
)

// writer is the one way this controller writes a FluxJob: an
// optimistic-locked merge patch of the object (finalizer, submission
// marker) or of its status subresource, recorded in the written set so
// that a cached read from before the write reconciles the written object
// (package written), and the Kubernetes events about it. A stale cache
// fails the locked write with a conflict, which is requeued.
type writer struct {
	client.Client
	recorder events.EventRecorder
	written  *written.Set
	now      func() time.Time
}

// patch writes obj, changed from base, with an optimistic lock: its status
// subresource when status is true, else the object. On failure obj is
// reset to base; a FluxJob that is gone is not an error for a status write.
func (w *writer) patch(ctx context.Context, obj, base *fluxjobv1.FluxJob, status bool) error {
	p := client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{})
	w.written.Begin(obj.UID)
	var err error
	if status {
		err = w.Status().Patch(ctx, obj, p)
	} else {
		err = w.Patch(ctx, obj, p)
	}
	if err != nil {
		w.written.End(obj.UID)
		*obj = *base
		if status {
			statusPatchesTotal.WithLabelValues(patchResult(err)).Inc()
			if apierrors.IsNotFound(err) {
				return nil
			}
		}
		return err
	}
	if status {
		statusPatchesTotal.WithLabelValues("success").Inc()
	}
	w.written.Add(base.ResourceVersion, obj, w.now())
	return nil
}

// writeStatus writes st as obj's status if it changed significantly, and
// emits the event of a phase change. obj is updated in place.
func (w *writer) writeStatus(ctx context.Context, obj *fluxjobv1.FluxJob, st fluxjobv1.FluxJobStatus) error {
	if !significantChange(obj.Status, st) {
		return nil
	}
	oldPhase := obj.Status.Phase
	base := obj.DeepCopy()
	obj.Status = st
	if err := w.patch(ctx, obj, base, true); err != nil {
		return fmt.Errorf("patching FluxJob status: %w", err)
	}
	if st.Phase != oldPhase {
		phaseTransitionsTotal.WithLabelValues(string(st.Phase)).Inc()
		w.phaseEvent(ctx, obj, oldPhase)
	}
	return nil
}

// pace returns how long writing st as obj's status must wait (0: write
// now): the rest of written.Pace after this controller's last write of obj
// when st is a change that is not final. A job that ends within the pace
// of its submission so gets one status write in all, the final one,
// instead of one for its job ID, one for Running and one for the end.
func (w *writer) pace(obj *fluxjobv1.FluxJob, st fluxjobv1.FluxJobStatus) time.Duration {
	ago, ok := w.written.Since(obj.UID, w.now())
	if !ok || ago >= written.Pace {
		return 0
	}
	if st.Phase.IsTerminal() || !significantChange(obj.Status, st) {
		return 0
	}
	return written.Pace - ago
}

// significantChange reports whether the new status is worth a write:
// anything but the event list and the event times changed. Eventlog
// events that do not change the phase (validate, depend, priority, alloc,
// non-fatal exceptions...) ride along with the next write that matters
// (the phase change to Running, or to the final phase).
func significantChange(old, updated fluxjobv1.FluxJobStatus) bool {
	return !equality.Semantic.DeepEqual(withoutEvents(old), withoutEvents(updated))
}

// withoutEvents is s without its event list and event times.
func withoutEvents(s fluxjobv1.FluxJobStatus) fluxjobv1.FluxJobStatus {
	s.Events, s.SubmitTime, s.StartTime, s.CompletionTime, s.Duration = nil, nil, nil, nil, nil
	return s
}

// phaseEvent emits the Kubernetes event for a phase change just written:
// one per FluxJob lifetime, for its end (Succeeded, or a Warning with the
// failure's reason), and one when it is suspended. The phases in between
// (Submitted, Running) are in the status and the log, not in events: an
// event is a create in the API server.
func (w *writer) phaseEvent(ctx context.Context, obj *fluxjobv1.FluxJob, old fluxjobv1.FluxJobPhase) {
	st := &obj.Status
	logf.FromContext(ctx).Info("phase changed", "from", old, "to", st.Phase, "jobid", st.JobIDF58, "message", st.Message)
	typ, reason := corev1.EventTypeNormal, string(st.Phase)
	switch st.Phase {
	case fluxjobv1.PhasePending, fluxjobv1.PhaseSubmitted, fluxjobv1.PhaseRunning:
		return
	case fluxjobv1.PhaseFailed, fluxjobv1.PhaseCancelled:
		typ = corev1.EventTypeWarning
		for _, c := range st.Conditions {
			if c.Type == fluxjobv1.ConditionFailed {
				reason = c.Reason
			}
		}
	}
	w.event(obj, typ, reason, "Reconcile", st.Message)
}

// event emits a Kubernetes event if a recorder is set.
func (w *writer) event(obj *fluxjobv1.FluxJob, typ, reason, action, note string) {
	if w.recorder == nil {
		return
	}
	w.recorder.Eventf(obj, nil, typ, reason, action, "%s", fluxjobv1.Clip(note, 1024))
}

// patchResult is the metrics label for a failed patch.
func patchResult(err error) string {
	if apierrors.IsConflict(err) {
		return "conflict"
	}
	return "error"
}
