package controllers

import (
	"fmt"
	"slices"
	"strings"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
)

// The failure policy (spec.backoffLimit, spec.failurePolicy) as a pure
// function: how one failed attempt ended in, what follows out. retry.go
// wires it into the reconcile.

// ending is how one failed attempt ended, as its eventlog says.
type ending struct {
	// ExitCode is the job's exit code (exitCode); nil if it never finished.
	ExitCode *int32
	// Exceptions are the exceptions raised on it, any severity, in order.
	Exceptions []job.ExceptionContext
	// Fatal is the exception that ended it, if one did.
	Fatal *job.ExceptionContext
}

// endingOf reads the ending from a job's summary.
func endingOf(sum job.Summary) ending {
	e := ending{Exceptions: sum.Exceptions, Fatal: sum.Fatal}
	if sum.FinishTime != 0 && sum.HasStatus {
		c := exitCode(sum.Status)
		e.ExitCode = &c
	}
	return e
}

// exitCode is the exit code flux job status reports for a wait status:
// the exit code, or 128+N for a process a signal N killed. (flux-core's
// shell already exits 128+N when a task is killed, so a job's finish
// status is nearly always "exited".)
func exitCode(ws job.WaitStatus) int32 {
	switch {
	case ws.Exited():
		return int32(ws.ExitCode())
	case ws.Signaled():
		return int32(128 + ws.Signal())
	}
	return 0
}

// verdict is what follows a failed attempt.
type verdict struct {
	// Action is the matching rule's, ActionRetry when none matched, or ""
	// for a cancel no rule matched (the FluxJob ends Cancelled).
	Action fluxjobv1.FailurePolicyAction
	// Rule is the index of the matching rule, -1 for none.
	Rule int
	// Exception is the exception the rule matched, else the fatal one.
	Exception *job.ExceptionContext
	// Retry: a new attempt follows. Counted: the failure counts toward
	// backoffLimit.
	Retry, Counted bool
	// Reason is the FluxJob's Failed condition reason when it ends here
	// (BackoffLimitExceeded, FailurePolicy); "" keeps the attempt's own.
	Reason string
	// Message says why, for the status and the event.
	Message string
}

// decide applies the policy to a failed attempt, given how many failures
// already counted toward backoffLimit. The first matching rule decides;
// no match counts the failure (action Retry), except a cancel exception:
// someone cancelled the job in Flux, and retrying would undo that.
func decide(policy *fluxjobv1.FailurePolicy, backoffLimit, failed int32, e ending) verdict {
	v := verdict{Rule: -1, Action: fluxjobv1.ActionRetry, Exception: e.Fatal}
	matched := false
	if policy != nil {
		for i := range policy.Rules {
			if exc, ok := matchRule(&policy.Rules[i], e); ok {
				v.Rule, v.Action, matched = i, policy.Rules[i].Action, true
				if exc != nil {
					v.Exception = exc
				}
				break
			}
		}
	}
	rule := "no failure policy rule matched"
	if matched {
		rule = fmt.Sprintf("failure policy rule %d (%s) matched", v.Rule, v.Action)
	}
	switch {
	case !matched && e.Fatal != nil && e.Fatal.Type == "cancel":
		v.Action = ""
		v.Message = "the Flux job was cancelled; not retried"
	case v.Action == fluxjobv1.ActionIgnore:
		v.Retry = true
		v.Message = rule + ": retrying, not counted toward backoffLimit"
	case v.Action == fluxjobv1.ActionRetry && failed < backoffLimit:
		v.Retry, v.Counted = true, true
		v.Message = fmt.Sprintf("%s: retrying (failure %d of backoffLimit %d)", rule, failed+1, backoffLimit)
	case v.Action == fluxjobv1.ActionRetry:
		v.Counted = true
		v.Reason = fluxjobv1.ReasonBackoffLimitExceeded
		v.Message = fmt.Sprintf("%s: backoffLimit %d reached", rule, backoffLimit)
	default: // FailJob, FailIndex
		v.Reason = fluxjobv1.ReasonFailurePolicy
		v.Message = rule + ": not retried"
	}
	return v
}

// matchRule reports whether r matches e, and the exception it matched.
func matchRule(r *fluxjobv1.FailurePolicyRule, e ending) (*job.ExceptionContext, bool) {
	if c := r.OnExitCodes; c != nil {
		if e.ExitCode == nil {
			return nil, false
		}
		in := slices.Contains(c.Values, *e.ExitCode)
		return nil, in == (c.Operator == fluxjobv1.ExitCodeIn)
	}
	for i := range e.Exceptions {
		exc := &e.Exceptions[i]
		for j := range r.OnExceptions {
			if matchException(&r.OnExceptions[j], exc) {
				return exc, true
			}
		}
	}
	return nil, false
}

func matchException(p *fluxjobv1.FailurePolicyOnException, exc *job.ExceptionContext) bool {
	maxSev := int32(0)
	if p.MaxSeverity != nil {
		maxSev = *p.MaxSeverity
	}
	return (p.Type == "" || p.Type == exc.Type) && exc.Severity >= 0 && int32(exc.Severity) <= maxSev &&
		strings.Contains(exc.Note, p.NoteContains)
}

// fluxResult is flux-core job-list's result of an ended job
// (src/modules/job-list/job_state.c): the fatal exception's type, else
// the exit status.
func fluxResult(e ending) string {
	switch {
	case e.Fatal != nil && e.Fatal.Type == "cancel":
		return "CANCELED"
	case e.Fatal != nil && e.Fatal.Type == "timeout":
		return "TIMEOUT"
	case e.Fatal != nil, e.ExitCode == nil || *e.ExitCode != 0:
		return "FAILED"
	}
	return "COMPLETED"
}

// hasPolicy reports whether spec, of a single job, asks for retries or a
// failure policy: only then do failed attempts go through decide (and
// status.retry exist). An array judges its indexes (arrayretry.go).
func hasPolicy(spec *fluxjobv1.FluxJobSpec) bool {
	return spec.Array == nil && (spec.BackoffLimit != nil || spec.FailurePolicy != nil)
}
