package array

import "github.com/fluxjob/fluxjob-operator/fluxbridge/job"

// UrgencyState is where an array is in applying spec.urgency to its
// submitted indexes (controllers/arrayurgency.go). Urgencies are -1 when
// none.
type UrgencyState struct {
	// Init: Applied was read from the status (or found vacuous).
	Init bool
	// Applied is the urgency every submitted index has; -1 while a pass
	// runs or when not known.
	Applied int
	// Target is the urgency being applied, From what it replaces, Next
	// the position the pass goes on from.
	Target, From, Next int
	// Sent, Started and Refused count the pass's indexes: given the
	// urgency, found started or ended, refused by Flux.
	Sent, Started, Refused int
	// Rejected is an urgency refused (by policy or Flux), not tried again
	// until spec.urgency changes; RejectedMsg says why.
	Rejected    int
	RejectedMsg string
}

// Urgency returns the run's UrgencyState.
func (r *Run) Urgency() UrgencyState {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.urgency
}

// SetUrgency records the run's UrgencyState.
func (r *Run) SetUrgency(u UrgencyState) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.urgency = u
}

// Inherited reports whether an earlier manager may have submitted some
// of the indexes (the marker's mark was above 0 when the run was made).
func (r *Run) Inherited() bool { return r.inherited }

// Unstarted returns, from position from on, up to max positions whose
// Flux job is submitted and not started (Active, with a job ID), with
// their job IDs, how many of the positions visited have started (Running),
// and the position to go on from. It stops at an index
// whose job ID is not known yet (Submitting, Uncertain, Detached): its
// urgency is then unknown, so the caller looks again once it is. next
// is Len when every position was visited.
func (r *Run) Unstarted(from, max int) (ids []job.ID, started, next int, blocked bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	p := from
	for ; p < len(r.st) && len(ids) < max; p++ {
		switch r.st[p] {
		case Active:
			if r.ids[p] == 0 {
				return ids, started, p, true
			}
			ids = append(ids, r.ids[p])
		case Running:
			started++
		case Submitting, Uncertain, Detached:
			return ids, started, p, true
		}
	}
	return ids, started, p, false
}
