package array

import (
	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
)

// Per-index retries (spec.array.backoffLimitPerIndex, spec.failurePolicy).
// Attempt k of an index is the Flux job fluxjob-<uid>-<index>.<k>. A run
// keeps an index's attempt number and how many of its failures were
// ignored in two byte slices allocated on the first retry, so an array
// whose indexes do not fail costs nothing more. The controller decides
// (controllers/arrayretry.go); the run only records.

// Retry is an array's retry settings; a nil *Retry: indexes are not retried.
type Retry struct {
	// Limit is backoffLimitPerIndex: the counted failures an index may retry.
	Limit int
	// Window is the highest attempt number an index may reach: a lookup
	// after a restart covers attempts 0..Window.
	Window int
	// Policy is spec.failurePolicy (nil: none).
	Policy *fluxjobv1.FailurePolicy
}

// RetryOf returns the retry settings of an array spec with the failure
// policy fp, or nil when the array does not retry or judge its indexes.
func RetryOf(a *fluxjobv1.ArraySpec, fp *fluxjobv1.FailurePolicy) *Retry {
	if a.BackoffLimitPerIndex == nil && fp == nil {
		return nil
	}
	r := &Retry{Policy: fp}
	if a.BackoffLimitPerIndex != nil {
		r.Limit = int(min(max(*a.BackoffLimitPerIndex, 0), fluxjobv1.MaxBackoffLimitPerIndex))
	}
	r.Window = r.Limit
	if fp != nil {
		for _, rule := range fp.Rules {
			if rule.Action == fluxjobv1.ActionIgnore {
				r.Window += fluxjobv1.MaxIgnoredPerIndex
				break
			}
		}
	}
	return r
}

// Attempt returns position p's current attempt number (0: the first).
func (r *Run) Attempt(p int) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.attempts == nil {
		return 0
	}
	return int(r.attempts[p])
}

// Failures returns how many of position p's failed attempts counted
// toward the limit, and how many were ignored.
func (r *Run) Failures(p int) (counted, ignored int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.failuresLocked(p)
}

func (r *Run) failuresLocked(p int) (counted, ignored int) {
	var a, i int
	if r.attempts != nil {
		a = int(r.attempts[p])
	}
	if r.ignored != nil {
		i = int(r.ignored[p])
	}
	return a - i, i
}

// setAttemptLocked records position p at attempt a with i ignored failures.
func (r *Run) setAttemptLocked(p, a, i int) {
	if a > 0 && r.attempts == nil {
		r.attempts = make([]uint8, len(r.st))
	}
	if i > 0 && r.ignored == nil {
		r.ignored = make([]uint8, len(r.st))
	}
	if r.attempts != nil {
		r.attempts[p] = uint8(min(a, 255))
	}
	if r.ignored != nil {
		r.ignored[p] = uint8(min(i, 255))
	}
}

// Recovered records what a lookup after a restart found of position p:
// attempt a is its newest, after i ignored failures. No retry is counted
// (the status's count holds the retries an earlier manager made).
func (r *Run) Recovered(p, a, i int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.st[p].Final() {
		r.setAttemptLocked(p, a, i)
	}
}

// NextAttempt moves position p, whose attempt just failed, to its next attempt:
// Unsubmitted again (Submitting it renders the new attempt), the failure
// counted toward the limit or ignored. Once the array is ending the index
// is Failed instead. It reports whether a retry was recorded.
func (r *Run) NextAttempt(p int, counted bool) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.st[p].Final() {
		return false
	}
	if r.cancelAsked {
		r.set(p, Failed)
		return false
	}
	c, i := r.failuresLocked(p)
	if counted {
		c++
	} else {
		i++
	}
	r.setAttemptLocked(p, c+i, i)
	r.retries++
	r.set(p, Unsubmitted)
	return true
}

// Resubmit makes the Uncertain position p, whose current attempt a lookup
// proved was never submitted, Unsubmitted; Cancelled once the array is
// ending.
func (r *Run) Resubmit(p int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cancelAsked {
		r.moveLocked(p, Cancelled, Uncertain)
		return
	}
	r.moveLocked(p, Unsubmitted, Uncertain)
}

// SetRetries starts the count of retries at n (the status's).
func (r *Run) SetRetries(n int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.retries = n
}

// Fail records that the array fails (reason, message: its Failed
// condition), unless a failure was recorded already: the first decides.
func (r *Run) Fail(reason, message string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.failReason == "" {
		r.failReason, r.failMessage = reason, message
	}
}

// Failure returns the recorded failure of the array ("": none).
func (r *Run) Failure() (reason, message string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.failReason, r.failMessage
}
