package controllers

import (
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
	"github.com/fluxjob/fluxjob-operator/internal/broker"
	"github.com/fluxjob/fluxjob-operator/internal/jobspec"
)

// Retries
//
// A FluxJob with spec.backoffLimit or spec.failurePolicy runs attempts,
// each a new Flux job named jobspec.IndexName(obj, -1, k) (fluxjob-<uid>
// then fluxjob-<uid>.1, .2, ...). When the current attempt's job ended in
// failure, decide (failurepolicy.go) says what follows; a retry is one
// locked status write (computeStatus, through nextAttempt) that records
// the ended attempt in status.retry.history, counts it, moves
// status.retry.attempt on and clears the job's fields. Only then is the
// next attempt submitted, by the usual exactly-once path (submit.go): its
// own marker (carrying the attempt number, so an earlier attempt's marker
// says nothing about it), its own name for the lookup after a crash. So:
//   - the decision is made once: the write is optimistic-locked, and a
//     manager whose cache is stale is refused by the API server;
//   - a crash between the decision and the next submission leaves a status
//     at attempt k with no marker of attempt k: nothing of it was
//     submitted, and it is submitted once;
//   - a crash after the marker of attempt k is the first submission's case:
//     the job is looked up by its attempt's name, adopted, never doubled.
// The tracker holds one view per FluxJob: the ended attempt's view is
// forgotten once the status moved on (dropEndedAttempt), so that it is
// never read as the current attempt's.

// attemptOf is obj's current attempt (0: the first Flux job).
func attemptOf(obj *fluxjobv1.FluxJob) int32 {
	if obj.Status.Retry == nil {
		return 0
	}
	return obj.Status.Retry.Attempt
}

// attemptName is the Flux job name of obj's current attempt.
func attemptName(obj *fluxjobv1.FluxJob) string {
	return jobspec.IndexName(obj, -1, int(attemptOf(obj)))
}

// dropEndedAttempt forgets the tracked view of an attempt the status
// already recorded as ended (its job ID is in the history): the retry's
// write succeeded but the reconcile that made it did not get to forget it.
func dropEndedAttempt(t *broker.Tracker, obj *fluxjobv1.FluxJob) {
	rs := obj.Status.Retry
	if rs == nil || len(rs.History) == 0 {
		return
	}
	v, ok := t.Get(obj.UID)
	if !ok || !v.HasJobID {
		return
	}
	f58 := job.ID(v.JobID).F58()
	for i := range rs.History {
		if rs.History[i].JobID == f58 {
			t.Forget(obj.UID)
			return
		}
	}
}

// policyVerdict is the failure policy's verdict on the current attempt,
// and false when there is none to give: no policy, or the attempt has
// not ended in a failure Flux reported (failures the controller decides,
// such as a refused jobspec, are not retried).
func policyVerdict(obj *fluxjobv1.FluxJob, in statusInput, js jobState) (verdict, ending, bool) {
	if !hasPolicy(&obj.Spec) || in.Failure != nil || in.Obs == nil ||
		(js.phase != fluxjobv1.PhaseFailed && js.phase != fluxjobv1.PhaseCancelled) {
		return verdict{}, ending{}, false
	}
	sum := in.Obs.Summary()
	if !sum.Ended() {
		return verdict{}, ending{}, false
	}
	var failed int32
	if rs := obj.Status.Retry; rs != nil {
		failed = rs.Failed
	}
	var limit int32
	if obj.Spec.BackoffLimit != nil {
		limit = *obj.Spec.BackoffLimit
	}
	e := endingOf(sum)
	return decide(obj.Spec.FailurePolicy, limit, failed, e), e, true
}

// willRetry reports whether the status about to be computed starts a new
// attempt (no final write: nothing to wait for, such as the output).
func willRetry(obj *fluxjobv1.FluxJob, in statusInput) bool {
	v, _, ok := policyVerdict(obj, in, deriveJobState(obj, in))
	return ok && v.Retry
}

// applyFailurePolicy runs the failure policy on a failed attempt: st
// records it (status.retry) and either ends the FluxJob (js keeps the
// failed phase, with the policy's reason) or becomes the next attempt's
// status, which it reports (the caller returns st as it is then).
func applyFailurePolicy(st *fluxjobv1.FluxJobStatus, js *jobState, obj *fluxjobv1.FluxJob, in statusInput, now time.Time) bool {
	v, e, ok := policyVerdict(obj, in, *js)
	if !ok {
		if hasPolicy(&obj.Spec) && st.Retry == nil {
			st.Retry = &fluxjobv1.FluxJobRetryStatus{}
		}
		return false
	}
	rs := st.Retry.DeepCopy()
	if rs == nil {
		rs = &fluxjobv1.FluxJobRetryStatus{}
	}
	a := fluxjobv1.FluxJobAttempt{Attempt: rs.Attempt, Result: fluxResult(e), Reason: js.reason, Action: v.Action,
		CompletionTime: js.completed}
	if in.Obs.HasJobID {
		a.JobID = job.ID(in.Obs.JobID).F58()
	}
	if e.ExitCode != nil {
		c := *e.ExitCode
		a.ExitCode = &c
	}
	if x := v.Exception; x != nil {
		a.Exception = &fluxjobv1.FluxJobException{Type: fluxjobv1.Clip(x.Type, 64), Severity: int32(min(max(x.Severity, 0), 7)),
			Note: fluxjobv1.Clip(x.Note, fluxjobv1.MaxAttemptNoteLength)}
	}
	if v.Rule >= 0 {
		i := int32(v.Rule)
		a.Rule = &i
	}
	rs.History = append(rs.History, a)
	if n := len(rs.History) - fluxjobv1.MaxAttemptHistory; n > 0 {
		rs.History = append([]fluxjobv1.FluxJobAttempt(nil), rs.History[n:]...)
	}
	switch {
	case v.Counted:
		rs.Failed++
	case v.Retry:
		rs.Ignored++
	}
	st.Retry = rs
	what := fmt.Sprintf("attempt %d: %s", a.Attempt, js.message)
	if !v.Retry {
		if v.Reason != "" {
			js.phase, js.reason = fluxjobv1.PhaseFailed, v.Reason
		}
		js.message = what + "; " + v.Message
		return false
	}
	rs.Attempt++
	// The next attempt starts from nothing: the ended job's fields are in
	// the history now.
	st.JobID, st.JobIDF58, st.ExitStatus, st.Exception = 0, "", nil, nil
	st.Events, st.SubmitAttemptTime, st.SubmitTime, st.StartTime = nil, nil, nil, nil
	st.CompletionTime, st.Duration, st.Output, st.Urgency = nil, nil, nil, nil
	next := jobState{phase: fluxjobv1.PhasePending, reason: fluxjobv1.ReasonRetrying,
		message: fmt.Sprintf("Retrying as attempt %d: %s; %s", rs.Attempt, what, v.Message)}
	st.Phase = next.phase
	st.Message = fluxjobv1.Clip(next.message, fluxjobv1.MaxMessageLength)
	st.ObservedGeneration = obj.Generation
	setConditions(st, obj, next, in, obj.Generation, metav1.NewTime(now.Truncate(time.Second)))
	return true
}

// startedAttempt reports whether the status just written moved obj to a
// new attempt while the tracker still holds the ended one's view.
func startedAttempt(obj *fluxjobv1.FluxJob, in statusInput) bool {
	return obj.Status.Retry != nil && obj.Status.JobID == 0 && in.Obs != nil && in.Obs.HasJobID &&
		obj.Status.Phase == fluxjobv1.PhasePending
}

// retriesUnsettled reports whether a dependant must wait for dep to end
// before it names dep's Flux job: dep may still retry (a policy, not
// final), so its current job ID is not necessarily the one whose end the
// condition is about. afterstart is met by the first attempt's start.
func retriesUnsettled(dep *fluxjobv1.FluxJob, cond fluxjobv1.DependencyCondition) bool {
	return hasPolicy(&dep.Spec) && !dep.Status.Phase.IsTerminal() &&
		jobspec.Scheme(cond) != string(fluxjobv1.DependAfterStart)
}

// countVerdict counts, once its status is written, the attempt whose end
// the policy just recorded (the history's last entry is new).
func countVerdict(before, after *fluxjobv1.FluxJobRetryStatus) {
	if after == nil || len(after.History) == 0 {
		return
	}
	last := after.History[len(after.History)-1]
	if before != nil && len(before.History) > 0 && before.History[len(before.History)-1].Attempt == last.Attempt {
		return
	}
	action := string(last.Action)
	if action == "" {
		action = "None"
	}
	failedAttemptsTotal.WithLabelValues(action).Inc()
}
