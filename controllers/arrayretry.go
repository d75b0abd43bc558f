package controllers

import (
	"fmt"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
	"github.com/fluxjob/fluxjob-operator/internal/array"
	"github.com/fluxjob/fluxjob-operator/internal/broker"
)

// Per-index retries of an array (spec.array.backoffLimitPerIndex,
// spec.failurePolicy, batch/v1 backoffLimitPerIndex and podFailurePolicy).
// An index's failed attempt goes through the same decide as a single
// FluxJob's (failurepolicy.go), with the index's own counts; what follows
// is one of indexStep. The ending an index's future reports holds the
// exit code of a job that finished without a fatal exception, and the
// fatal exception of one that did not; job-list's record of an ended
// job (read after a restart) is reduced to the same, so that a restart
// judges an attempt as the manager that saw it end did.

// indexStep is what follows one ended attempt of an index.
type indexStep int

const (
	// stepSucceeded: the index succeeded.
	stepSucceeded indexStep = iota
	// stepRetry: the next attempt is submitted (counted or ignored).
	stepRetry
	// stepFailIndex: the index failed (limit reached, FailIndex, a cancel
	// no rule matched, a failure no policy judges).
	stepFailIndex
	// stepFailArray: the index failed and so does the array (FailJob).
	stepFailArray
	// stepCancelled: the ending array cancelled it.
	stepCancelled
)

// indexVerdict is what follows an index's ended attempt.
type indexVerdict struct {
	Step indexStep
	// Counted: a retry counts toward backoffLimitPerIndex (else ignored).
	Counted bool
	// Action is the failure policy's (decide), "" when it was not asked.
	Action fluxjobv1.FailurePolicyAction
	// Message says why, for the array's Failed condition (stepFailArray).
	Message string
}

// endingOfOutcome is the ending of an index's attempt as its future
// reported it; false for an end the policy does not judge (a jobspec
// the broker refused, an unknown job, an error).
func endingOfOutcome(out broker.Outcome) (ending, bool) {
	switch out.Kind {
	case broker.OutcomeExited:
		c := int32(out.ExitCode)
		if out.ExitCode < 0 {
			c = int32(128 - out.ExitCode)
		}
		return ending{ExitCode: &c}, true
	case broker.OutcomeException:
		exc := job.ExceptionContext{Type: out.ExcType, Severity: out.ExcSeverity, Note: out.ExcNote}
		return ending{Exceptions: []job.ExceptionContext{exc}, Fatal: &exc}, true
	}
	return ending{}, false
}

// endingOfListed is the ending of an inactive job as job-list records it,
// reduced to what endingOfOutcome sees: the fatal exception, else the
// exit code.
func endingOfListed(l broker.Listed) ending {
	if l.ExcSeverity == 0 && l.ExcType != "" {
		exc := job.ExceptionContext{Type: l.ExcType, Severity: 0, Note: l.ExcNote}
		return ending{Exceptions: []job.ExceptionContext{exc}, Fatal: &exc}
	}
	if l.WaitStatus != nil {
		c := exitCode(*l.WaitStatus)
		return ending{ExitCode: &c}
	}
	return ending{}
}

// judgeIndex decides what follows an index's failed attempt number
// attempt, after counted and ignored earlier failures. cancelling: the array
// is being ended (a cancel is the array's own).
func judgeIndex(rt *array.Retry, attempt, counted, ignored int, e ending, cancelling bool) indexVerdict {
	if e.ExitCode != nil && *e.ExitCode == 0 && e.Fatal == nil {
		return indexVerdict{Step: stepSucceeded}
	}
	if cancelling {
		if e.Fatal != nil && e.Fatal.Type == "cancel" {
			return indexVerdict{Step: stepCancelled}
		}
		return indexVerdict{Step: stepFailIndex}
	}
	if rt == nil {
		return indexVerdict{Step: stepFailIndex}
	}
	v := decide(rt.Policy, int32(rt.Limit), int32(counted), e)
	switch {
	case v.Action == fluxjobv1.ActionFailJob:
		return indexVerdict{Step: stepFailArray, Message: v.Message, Action: v.Action}
	case !v.Retry:
		return indexVerdict{Step: stepFailIndex, Message: v.Message, Action: v.Action}
	case !v.Counted && ignored >= fluxjobv1.MaxIgnoredPerIndex:
		return indexVerdict{Step: stepFailIndex, Message: fmt.Sprintf("%s; but %d failures were ignored already", v.Message, ignored), Action: v.Action}
	case attempt+1 > rt.Window:
		return indexVerdict{Step: stepFailIndex, Message: v.Message + "; no attempt left", Action: v.Action}
	}
	return indexVerdict{Step: stepRetry, Counted: v.Counted, Action: v.Action}
}

// applyIndexVerdict moves position p of run by v and reports whether the
// index ended (a final state).
func applyIndexVerdict(run *array.Run, p int, v indexVerdict, index int32) bool {
	switch v.Step {
	case stepSucceeded:
		run.Move(p, array.Succeeded)
	case stepRetry:
		return !run.NextAttempt(p, v.Counted)
	case stepCancelled:
		run.Move(p, array.Cancelled)
	case stepFailArray:
		run.Move(p, array.Failed)
		run.Fail(fluxjobv1.ReasonFailurePolicy, fmt.Sprintf("index %d: %s", index, v.Message))
	default:
		run.Move(p, array.Failed)
	}
	return true
}

// indexDone records how position p's attempt ended, as its future
// reported it.
func indexDone(run *array.Run, p int, out broker.Outcome) {
	if !out.Kind.Final() {
		run.Lost(p)
		return
	}
	e, ok := endingOfOutcome(out)
	if !ok {
		run.Move(p, array.Failed)
		return
	}
	counted, ignored := run.Failures(p)
	v := judgeIndex(run.Retry, run.Attempt(p), counted, ignored, e, run.Ending())
	applyIndexVerdict(run, p, v, int32(run.Set.At(p)))
	if run.Retry != nil && v.Step != stepSucceeded && v.Step != stepCancelled {
		action := string(v.Action)
		if action == "" {
			action = "None"
		}
		failedAttemptsTotal.WithLabelValues(action).Inc()
	}
}

// attemptsFound is what a lookup found of one index's attempts.
type attemptsFound struct {
	// Newest is the newest attempt found (-1: none).
	Newest int
	// Job is job-list's record of it.
	Job broker.Listed
	// Counted and Ignored are the failures of the attempts before it,
	// judged again from job-list (an attempt not found counts).
	Counted, Ignored int
}

// foundAttempts reads what names (attempt k's name at names[k]) found.
func foundAttempts(rt *array.Retry, names []string, found map[string]broker.Listed) attemptsFound {
	a := attemptsFound{Newest: -1}
	for k := len(names) - 1; k >= 0; k-- {
		if j, ok := found[names[k]]; ok {
			a.Newest, a.Job = k, j
			break
		}
	}
	for k := 0; k < a.Newest; k++ {
		j, ok := found[names[k]]
		if ok && rt != nil && !j.Active {
			v := judgeIndex(rt, k, a.Counted, a.Ignored, endingOfListed(j), false)
			if v.Step == stepRetry && !v.Counted {
				a.Ignored++
				continue
			}
		}
		a.Counted++
	}
	return a
}
