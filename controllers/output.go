package controllers

import (
	"context"
	"time"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
	"github.com/fluxjob/fluxjob-operator/internal/broker"
)

// The output tail (status.output) is written with the final status, once:
// the write of a job that started waits until broker.Tracker.ReadOutput has
// read the job's output eventlog, bounded by Options.OutputTimeout. No
// status write is added and none is made while the output is read.

// outputTailBytes is the tail size the FluxJob asks for.
func outputTailBytes(obj *fluxjobv1.FluxJob) int {
	n := fluxjobv1.DefaultOutputTailBytes
	if o := obj.Spec.Output; o != nil && o.TailBytes != nil {
		n = *o.TailBytes
	}
	return int(min(max(n, 0), fluxjobv1.MaxOutputTailBytes))
}

// gateOutput decides whether the status write may go ahead. For a job that
// started and has ended, with a tail wanted, the write waits (hold, and
// requeue after the returned delay) until its output eventlog has been
// read; then in.Output carries the tails. Anything else passes at once.
func (r *FluxJobReconciler) gateOutput(ctx context.Context, obj *fluxjobv1.FluxJob, rt broker.Route, in *statusInput) (hold bool, after time.Duration) {
	v := in.Obs
	tailBytes := outputTailBytes(obj)
	if v == nil || in.Failure != nil || tailBytes == 0 || !v.HasJobID || !v.Summary().Started() ||
		!deriveJobState(obj, *in).phase.IsTerminal() || willRetry(obj, *in) {
		return false, 0
	}
	out, wait := r.Tracker.ReadOutput(ctx, rt, obj.UID, key(obj), v, tailBytes, r.Options.OutputTimeout, r.now())
	if out == nil && wait > 0 {
		return true, wait
	}
	in.Output = out
	return false, 0
}
