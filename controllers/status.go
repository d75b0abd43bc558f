package controllers

import (
	"encoding/json"
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
	"github.com/fluxjob/fluxjob-operator/internal/broker"
)

// failure is a reason the controller itself decided a FluxJob fails,
// before or instead of anything Flux reported (namespace not allowed, a
// jobspec too large or invalid locally).
type failure struct {
	Reason  string
	Message string
}

// statusInput is everything computeStatus looks at besides the object.
type statusInput struct {
	// Marker is the FluxJob's submission marker (readMarker).
	Marker marker
	// Obs is the Flux job's view (what the tracker knows); nil if the
	// FluxJob is not tracked (yet, or any more after a restart).
	Obs *broker.View
	// Unreachable is non-empty while the broker cannot be reached: the
	// reason, shown in the FluxReachable condition.
	Unreachable string
	// Reachable is true when the executor is known to be connected.
	Reachable bool
	// Failure is a failure the controller decided on its own.
	Failure *failure
	// UrgencyRejected is the broker's message when it refused the
	// urgency in spec.urgency; empty otherwise.
	UrgencyRejected string
	// Admission, if set, is the outcome of routing the FluxJob to its
	// Flux instance (see route.go): condition InstanceAdmitted, and
	// status.instance once admitted.
	Admission *admission
	// Output is the output tail to write with a terminal status (see
	// gateOutput); nil for none.
	Output *fluxjobv1.FluxJobOutput
	// Hold is why the FluxJob is not submitted yet (suspended, waiting
	// for a dependency); nil when it is not held (see batch.go).
	Hold *hold
	// Array is an array's progress (array.go); nil for a single job.
	Array *arrayInput
	// Waiting is the instance's latest read of its queues and the
	// scheduler's annotations, read only for a job waiting in SCHED
	// (pending.go); zero otherwise.
	Waiting broker.Waiting
}

// reachability sets Unreachable or Reachable from the route's connection
// state and the view's outcome.
func (in *statusInput) reachability(rt broker.Route) {
	connected, unreachable := rt.State()
	switch {
	case unreachable != "":
		in.Unreachable = unreachable
	case in.Obs != nil && in.Obs.Outcome.Kind == broker.OutcomeLost:
		in.Unreachable = in.Obs.Outcome.Message
	case connected:
		in.Reachable = true
	}
}

// jobState is the Flux job's state read from its eventlog and future.
type jobState struct {
	phase      fluxjobv1.FluxJobPhase
	reason     string // condition reason for the phase
	message    string
	exitStatus *int32
	exception  *fluxjobv1.FluxJobException
	submitted  *metav1.Time
	started    *metav1.Time
	completed  *metav1.Time
	urgency    *int32
}

// computeStatus returns the status obj should have, given what was
// observed. It is a pure function of its arguments: calling it again with
// the same input returns an equal status, so that the reconciler patches
// only on change. A terminal status (Succeeded, Failed, Cancelled) is
// final: it is returned unchanged but for observedGeneration.
func computeStatus(obj *fluxjobv1.FluxJob, in statusInput, now time.Time) fluxjobv1.FluxJobStatus {
	st := *obj.Status.DeepCopy()
	in.Marker.applyTo(&st)
	gen := obj.Generation
	nowT := metav1.NewTime(now.Truncate(time.Second))
	if st.Phase.IsTerminal() {
		st.ObservedGeneration = gen
		for i := range st.Conditions {
			st.Conditions[i].ObservedGeneration = gen
		}
		finishedCondition(&st, gen, now)
		return st
	}
	js := deriveJobState(obj, in)
	if in.Array != nil && in.Failure == nil {
		js, st.Array = arrayState(obj, in.Array), in.Array.status
	} else if applyFailurePolicy(&st, &js, obj, in, now) {
		return st // the next attempt's (retry.go)
	}
	applySuspend(&js, obj, in.Marker)
	if in.Hold != nil && js.phase == fluxjobv1.PhasePending {
		js.message = in.Hold.Message
	}
	if in.Obs != nil && in.Obs.HasJobID {
		id := job.ID(in.Obs.JobID)
		st.JobID = int64(in.Obs.JobID)
		st.JobIDF58 = id.F58()
		if in.Obs.Instance != "" {
			st.InstanceID = in.Obs.Instance
		}
	}
	// After a re-attach the eventlog replays from the start: a partial
	// replay must not shorten the list already in the status.
	if in.Obs != nil && len(in.Obs.Events) > 0 &&
		(min(len(in.Obs.Events), fluxjobv1.MaxStatusEvents) >= len(st.Events) || js.phase.IsTerminal()) {
		st.Events = statusEvents(in.Obs.Events)
	}
	st.Phase = js.phase
	st.Message = fluxjobv1.Clip(js.message, fluxjobv1.MaxMessageLength)
	if js.exitStatus != nil {
		st.ExitStatus = js.exitStatus
	}
	if js.exception != nil {
		st.Exception = js.exception
	}
	if js.submitted != nil {
		st.SubmitTime = js.submitted
	}
	if js.started != nil {
		st.StartTime = js.started
	}
	if js.completed != nil {
		st.CompletionTime = js.completed
	}
	if js.urgency != nil {
		st.Urgency = js.urgency
	}
	st.Duration = nil
	if st.StartTime != nil && st.CompletionTime != nil && js.phase.IsTerminal() {
		st.Duration = &metav1.Duration{Duration: jobDuration(in.Obs.Summary())}
	}
	if js.phase.IsTerminal() && in.Output != nil {
		st.Output = in.Output
	}
	st.Pending = pendingOf(obj, js.phase, in, now)
	st.ObservedGeneration = gen
	setConditions(&st, obj, js, in, gen, nowT)
	setAdmission(&st, in.Admission, gen, nowT)
	if in.Array != nil {
		setArrayConditions(&st, obj.Status.Conditions, in.Array, gen, nowT)
	}
	return st
}

// setAdmission records the FluxJob's instance once it is admitted, and
// the InstanceAdmitted condition; a FluxJob waiting for admission says
// why in its message.
func setAdmission(st *fluxjobv1.FluxJobStatus, adm *admission, gen int64, now metav1.Time) {
	if adm == nil {
		return
	}
	c := metav1.Condition{Type: fluxjobv1.ConditionInstanceAdmitted, ObservedGeneration: gen, LastTransitionTime: now}
	if adm.OK {
		if st.Instance == "" {
			st.Instance = adm.Instance
		}
		c.Status, c.Reason, c.Message = metav1.ConditionTrue, fluxjobv1.ReasonAdmitted, "Runs on FluxEndpoint "+adm.Instance
	} else {
		c.Status, c.Reason, c.Message = metav1.ConditionFalse, adm.Reason, fluxjobv1.Clip(adm.Message, 32768)
		if st.Phase == fluxjobv1.PhasePending {
			st.Message = fluxjobv1.Clip(adm.Message, fluxjobv1.MaxMessageLength)
		}
	}
	meta.SetStatusCondition(&st.Conditions, c)
}

// deriveJobState decides the phase from, in order: the controller's own
// failure, the job's eventlog (finish, clean, fatal exceptions, start),
// the future's non-eventlog outcome (invalid jobspec, job not found), and
// what the status already says.
func deriveJobState(obj *fluxjobv1.FluxJob, in statusInput) jobState {
	js := deriveFromObservation(obj, in)
	// Phases only move forward. After a restart the eventlog replays
	// from the beginning; until the replay catches up, keep the phase
	// the status already has.
	if !js.phase.IsTerminal() && phaseRank(js.phase) < phaseRank(obj.Status.Phase) {
		js.phase = obj.Status.Phase
		js.reason = phaseReason(js.phase)
		js.message = obj.Status.Message
		if js.message == "" {
			js.message = defaultMessage(obj, in.Marker, js.phase)
		}
	}
	return js
}

// phaseRank orders the non-terminal phases.
func phaseRank(p fluxjobv1.FluxJobPhase) int {
	switch p {
	case fluxjobv1.PhaseSubmitted:
		return 1
	case fluxjobv1.PhaseRunning:
		return 2
	}
	return 0
}

func deriveFromObservation(obj *fluxjobv1.FluxJob, in statusInput) jobState {
	var js jobState
	if in.Failure != nil {
		js.phase, js.reason, js.message = fluxjobv1.PhaseFailed, in.Failure.Reason, in.Failure.Message
		return js
	}
	obs := in.Obs
	if obs == nil {
		// Not tracked: keep what the status says until re-attached.
		js.phase = obj.Status.Phase
		if js.phase == "" {
			js.phase = fluxjobv1.PhasePending
		}
		js.reason, js.message = phaseReason(js.phase), obj.Status.Message
		if js.message == "" {
			js.message = defaultMessage(obj, in.Marker, js.phase)
		}
		return js
	}
	sum := obs.Summary()
	if sum.SubmitTime != 0 {
		js.submitted = eventTime(sum.SubmitTime)
	}
	if sum.Urgency >= 0 {
		js.urgency = int32Ptr(sum.Urgency)
	}
	if sum.Started() {
		js.started = eventTime(sum.StartTime)
	}
	id := job.ID(obs.JobID)
	switch {
	case sum.Ended():
		terminalFromEvents(&js, id, sum)
		return js
	case obs.Outcome.Kind.Final() && obs.Outcome.Kind != broker.OutcomeExited && obs.Outcome.Kind != broker.OutcomeException:
		js.phase = fluxjobv1.PhaseFailed
		switch obs.Outcome.Kind {
		case broker.OutcomeInvalidJobspec:
			js.reason, js.message = broker.Rejection(obs.Outcome.Message)
		case broker.OutcomeNoSuchJob:
			js.reason = fluxjobv1.ReasonJobNotFound
			js.message = fmt.Sprintf("Flux job %s not found (was the Flux instance restarted?): %s", id, obs.Outcome.Message)
		default:
			js.reason = fluxjobv1.ReasonSubmitFailed
			js.message = "Flux job failed: " + obs.Outcome.Message
		}
		return js
	case sum.Started():
		js.phase, js.reason, js.message = fluxjobv1.PhaseRunning, fluxjobv1.ReasonStarted, fmt.Sprintf("Flux job %s is running", id)
	case obs.HasJobID:
		js.phase, js.reason, js.message = fluxjobv1.PhaseSubmitted, fluxjobv1.ReasonSubmitted, fmt.Sprintf("Flux job %s submitted", id)
	default:
		js.phase = obj.Status.Phase
		if js.phase == "" {
			js.phase = fluxjobv1.PhasePending
		}
		js.reason, js.message = phaseReason(js.phase), defaultMessage(obj, in.Marker, js.phase)
	}
	if sum.Fatal != nil {
		// A fatal exception was raised; the job ends once finish or clean
		// is posted. Say so meanwhile.
		js.message = fmt.Sprintf("Flux job %s: exception %s raised, ending", id, sum.Fatal.Type)
	}
	return js
}

// terminalFromEvents fills js for a job whose eventlog has a finish or
// clean event.
func terminalFromEvents(js *jobState, id job.ID, sum job.Summary) {
	switch {
	case sum.FinishTime != 0:
		js.completed = eventTime(sum.FinishTime)
		if sum.HasStatus {
			js.exitStatus = int32Ptr(sum.Status.Result())
		}
	case sum.Fatal != nil:
		js.completed = eventTime(sum.FatalTime)
	default:
		js.completed = eventTime(sum.CleanTime)
	}
	if exc := sum.Fatal; exc != nil {
		js.exception = &fluxjobv1.FluxJobException{Type: fluxjobv1.Clip(exc.Type, 64), Severity: 0, Note: fluxjobv1.Clip(exc.Note, fluxjobv1.MaxExceptionNoteLength)}
		msg := fmt.Sprintf("Flux job %s: exception %s", id, exc.Type)
		if exc.Note != "" {
			msg += ": " + exc.Note
		}
		if exc.Type == "cancel" {
			js.phase, js.reason, js.message = fluxjobv1.PhaseCancelled, fluxjobv1.ReasonCancelled, msg
		} else {
			js.phase, js.reason, js.message = fluxjobv1.PhaseFailed, broker.ExceptionReason(exc.Type), msg
		}
		return
	}
	switch {
	case js.exitStatus == nil:
		js.phase, js.reason = fluxjobv1.PhaseFailed, fluxjobv1.ReasonException
		js.message = fmt.Sprintf("Flux job %s ended without an exit status", id)
	case *js.exitStatus == 0:
		js.phase, js.reason = fluxjobv1.PhaseSucceeded, fluxjobv1.ReasonCompleted
		js.message = fmt.Sprintf("Flux job %s completed (exit 0)", id)
	case *js.exitStatus > 0:
		js.phase, js.reason = fluxjobv1.PhaseFailed, fluxjobv1.ReasonNonZeroExit
		js.message = fmt.Sprintf("Flux job %s exited with code %d", id, *js.exitStatus)
	default:
		js.phase, js.reason = fluxjobv1.PhaseFailed, fluxjobv1.ReasonSignaled
		js.message = fmt.Sprintf("Flux job %s was killed by signal %d", id, -*js.exitStatus)
	}
}

func phaseReason(p fluxjobv1.FluxJobPhase) string {
	switch p {
	case fluxjobv1.PhaseSubmitted:
		return fluxjobv1.ReasonSubmitted
	case fluxjobv1.PhaseRunning:
		return fluxjobv1.ReasonStarted
	case fluxjobv1.PhaseSuspended:
		return fluxjobv1.ReasonSuspended
	}
	return fluxjobv1.ReasonPending
}

func defaultMessage(obj *fluxjobv1.FluxJob, m marker, p fluxjobv1.FluxJobPhase) string {
	switch {
	case p == fluxjobv1.PhasePending && m.attempted() && obj.Status.JobID == 0:
		return "Submitting to Flux"
	case p == fluxjobv1.PhasePending:
		return "Waiting to be submitted to Flux"
	case obj.Status.JobIDF58 != "":
		return fmt.Sprintf("Flux job %s is %s", obj.Status.JobIDF58, p)
	}
	return string(p)
}

// setConditions sets every condition from the job state. Conditions keep
// their lastTransitionTime while their status does not change.
func setConditions(st *fluxjobv1.FluxJobStatus, obj *fluxjobv1.FluxJob, js jobState, in statusInput, gen int64, now metav1.Time) {
	set := func(typ string, s metav1.ConditionStatus, reason, msg string) {
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{
			Type: typ, Status: s, Reason: reason, Message: fluxjobv1.Clip(msg, 32768),
			ObservedGeneration: gen, LastTransitionTime: now,
		})
	}
	terminal := js.phase.IsTerminal()
	failed := js.phase == fluxjobv1.PhaseFailed || js.phase == fluxjobv1.PhaseCancelled
	hasID := st.JobID != 0

	switch {
	case hasID:
		set(fluxjobv1.ConditionSubmitted, metav1.ConditionTrue, fluxjobv1.ReasonSubmitted, "Flux job "+st.JobIDF58)
	case failed:
		set(fluxjobv1.ConditionSubmitted, metav1.ConditionFalse, js.reason, js.message)
	case st.SubmitAttemptTime != nil:
		set(fluxjobv1.ConditionSubmitted, metav1.ConditionUnknown, fluxjobv1.ReasonSubmitting, "Submitting to Flux")
	default:
		set(fluxjobv1.ConditionSubmitted, metav1.ConditionFalse, fluxjobv1.ReasonPending, "Not submitted yet")
	}

	switch js.phase {
	case fluxjobv1.PhaseRunning:
		set(fluxjobv1.ConditionRunning, metav1.ConditionTrue, fluxjobv1.ReasonStarted, js.message)
	case fluxjobv1.PhasePending, fluxjobv1.PhaseSubmitted, fluxjobv1.PhaseSuspended:
		set(fluxjobv1.ConditionRunning, metav1.ConditionFalse, phaseReason(js.phase), "Not started yet")
	default:
		set(fluxjobv1.ConditionRunning, metav1.ConditionFalse, js.reason, "Ended")
	}

	if js.phase == fluxjobv1.PhaseSucceeded {
		set(fluxjobv1.ConditionSucceeded, metav1.ConditionTrue, js.reason, js.message)
		set(fluxjobv1.ConditionReady, metav1.ConditionTrue, js.reason, js.message)
	} else {
		reason := fluxjobv1.ReasonInProgress
		if terminal {
			reason = js.reason
		}
		set(fluxjobv1.ConditionSucceeded, metav1.ConditionFalse, reason, js.message)
		set(fluxjobv1.ConditionReady, metav1.ConditionFalse, reason, js.message)
	}

	if failed {
		set(fluxjobv1.ConditionFailed, metav1.ConditionTrue, js.reason, js.message)
		set(fluxjobv1.ConditionStalled, metav1.ConditionTrue, js.reason, js.message)
	} else {
		set(fluxjobv1.ConditionFailed, metav1.ConditionFalse, fluxjobv1.ReasonInProgress, js.message)
		meta.RemoveStatusCondition(&st.Conditions, fluxjobv1.ConditionStalled)
	}

	if terminal {
		meta.RemoveStatusCondition(&st.Conditions, fluxjobv1.ConditionReconciling)
	} else {
		set(fluxjobv1.ConditionReconciling, metav1.ConditionTrue, fluxjobv1.ReasonInProgress, js.message)
	}

	if in.UrgencyRejected != "" && !terminal {
		set(fluxjobv1.ConditionUrgencyApplied, metav1.ConditionFalse, fluxjobv1.ReasonUrgencyRejected, "Flux refused the urgency: "+in.UrgencyRejected)
	} else {
		meta.RemoveStatusCondition(&st.Conditions, fluxjobv1.ConditionUrgencyApplied)
	}

	switch {
	case in.Unreachable != "" && !terminal:
		set(fluxjobv1.ConditionFluxReachable, metav1.ConditionFalse, fluxjobv1.ReasonFluxUnreachable,
			"Cannot reach the Flux broker, will re-attach when it is back: "+in.Unreachable)
	case in.Reachable && in.Failure == nil:
		set(fluxjobv1.ConditionFluxReachable, metav1.ConditionTrue, fluxjobv1.ReasonFluxReachable, "Connected to the Flux broker")
	}
	setBatchConditions(st, &obj.Spec, js, in, gen, now)
}

// statusEvents converts the latest MaxStatusEvents events for the status.
func statusEvents(evs []job.Event) []fluxjobv1.FluxJobEvent {
	if len(evs) > fluxjobv1.MaxStatusEvents {
		evs = evs[len(evs)-fluxjobv1.MaxStatusEvents:]
	}
	out := make([]fluxjobv1.FluxJobEvent, 0, len(evs))
	for i := range evs {
		ev := &evs[i]
		var ctx string
		if len(ev.Context) > 0 {
			b, err := json.Marshal(ev.Context)
			if err == nil {
				ctx = fluxjobv1.Clip(string(b), fluxjobv1.MaxEventContextLength)
			}
		}
		out = append(out, fluxjobv1.FluxJobEvent{
			Name:    fluxjobv1.Clip(ev.Name, fluxjobv1.MaxEventNameLength),
			Time:    metav1.NewMicroTime(floatTime(ev.Timestamp).Truncate(time.Microsecond)),
			Context: ctx,
		})
	}
	return out
}

// jobDuration is finish minus start, rounded to the millisecond, from the
// raw event timestamps.
func jobDuration(sum job.Summary) time.Duration {
	start, end := sum.StartTime, sum.FinishTime
	if start == 0 || end < start {
		return 0
	}
	return floatTime(end).Sub(floatTime(start)).Round(time.Millisecond)
}

// floatTime converts an eventlog timestamp (seconds since the epoch).
func floatTime(ts float64) time.Time {
	sec := int64(ts)
	nsec := int64((ts - float64(sec)) * 1e9)
	return time.Unix(sec, nsec).UTC()
}

// eventTime is an eventlog time at the second precision metav1.Time
// keeps over the wire (so that recomputing the status is stable).
func eventTime(ts float64) *metav1.Time {
	t := metav1.NewTime(floatTime(ts).Truncate(time.Second))
	return &t
}

func int32Ptr(v int) *int32 {
	x := int32(v)
	return &x
}
