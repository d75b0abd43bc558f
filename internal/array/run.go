// Package array holds, in memory, where each index of a FluxJob array is:
// one byte of state and one job ID per index, so that an array of 100,000
// indexes costs about a megabyte whatever its Flux jobs do. The controller
// (controllers/array.go) decides what to submit and writes the status; the
// executor's callbacks only move indexes between states here and poke the
// reconciler.
package array

import (
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
	"github.com/fluxjob/fluxjob-operator/internal/idset"
	"github.com/fluxjob/fluxjob-operator/internal/jobspec"
)

// State is where one index is.
type State uint8

// The states of an index. Succeeded, Failed and Cancelled are final.
const (
	// Unsubmitted: never handed to Flux (as far as anyone knows).
	Unsubmitted State = iota
	// Uncertain: may have been submitted (below the marker's high-water
	// mark after a restart, or a submission whose answer was lost): looked
	// up by name before anything else.
	Uncertain
	// Submitting: handed to the executor, no job ID yet.
	Submitting
	// Active: Flux has the job (its ID is known); not started.
	Active
	// Running: the job started.
	Running
	// Detached: the job's ID is known but its future was lost with its
	// connection: attached again.
	Detached
	// Cancelling: the array is ending and the job's cancellation was
	// requested.
	Cancelling
	// Succeeded: exited 0.
	Succeeded
	// Failed: ended any other way, or refused.
	Failed
	// Cancelled: not run, or cancelled, because the array ended early
	// (success policy) or was deleted.
	Cancelled
	nStates
)

// Final reports whether s is a final state.
func (s State) Final() bool { return s >= Succeeded }

// active reports whether s counts against parallelism.
func (s State) active() bool { return s >= Uncertain && s <= Cancelling }

// Run is one array's indexes. Safe for concurrent use.
type Run struct {
	// UID and Key name the FluxJob.
	UID types.UID
	Key types.NamespacedName
	// Set is spec.array.indexes.
	Set idset.Set
	// Template renders each index's jobspec.
	Template *jobspec.Template
	// Policy is the success policy (nil: none).
	Policy *Policy
	// Retry is the per-index retry settings (nil: none; retry.go).
	Retry *Retry

	mu     sync.Mutex
	st     []State
	ids    []job.ID
	counts [nStates]int
	// low: no Unsubmitted index below it.
	low int
	// through: the marker's high-water mark (positions below it may have
	// been submitted).
	through int
	// cancelAsked: the array is ending; no more submissions.
	cancelAsked bool
	// lostAt: when a submission last lost its answer (Lost without an ID).
	lostAt time.Time
	// attempts and ignored: per index, the attempt number and the failures
	// ignored; nil until an index is retried (retry.go).
	attempts, ignored []uint8
	// retries: attempts beyond the first submitted.
	retries int
	// failReason, failMessage: the array fails (retry.go).
	failReason, failMessage string
	// urgency: applying spec.urgency (urgency.go).
	urgency UrgencyState
	// inherited: through was above 0 at New.
	inherited bool
}

// New returns the run of set, of which the positions below through may
// have been submitted already (Uncertain); final lists states known from
// the status (position -> state), applied to those positions.
func New(uid types.UID, key types.NamespacedName, set idset.Set, through int) *Run {
	n := set.Len()
	r := &Run{UID: uid, Key: key, Set: set, st: make([]State, n), ids: make([]job.ID, n)}
	through = min(through, n)
	for i := 0; i < through; i++ {
		r.st[i] = Uncertain
	}
	r.counts[Uncertain] = through
	r.counts[Unsubmitted] = n - through
	r.low = through
	r.through = through
	r.inherited = through > 0
	r.urgency = UrgencyState{Applied: -1, Target: -1, From: -1, Rejected: -1}
	return r
}

// set moves position p to state s (under mu).
func (r *Run) set(p int, s State) {
	r.counts[r.st[p]]--
	r.st[p] = s
	r.counts[s]++
	if s == Unsubmitted && p < r.low {
		r.low = p
	}
}

// Known applies a final state the status recorded for the index at
// position p, if p is still Uncertain.
func (r *Run) Known(p int, s State) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.st[p] == Uncertain && s.Final() {
		r.set(p, s)
	}
}

// Through returns the marker's high-water mark as the run knows it.
func (r *Run) Through() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.through
}

// SetThrough records a marker written with high-water mark n.
func (r *Run) SetThrough(n int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.through = max(r.through, min(n, len(r.st)))
}

// Take returns up to k Unsubmitted positions, lowest first, and marks
// them Submitting; none once the array is ending. Positions at or above
// limit are not taken (the marker does not cover them yet).
func (r *Run) Take(k, limit int) []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cancelAsked {
		return nil
	}
	var out []int
	for p := r.low; p < len(r.st) && p < limit && len(out) < k; p++ {
		if r.st[p] == Unsubmitted {
			r.set(p, Submitting)
			out = append(out, p)
		}
		r.low = p + 1
	}
	return out
}

// NextUnsubmitted returns the lowest Unsubmitted position (Len if none).
func (r *Run) NextUnsubmitted() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	for r.low < len(r.st) && r.st[r.low] != Unsubmitted {
		r.low++
	}
	return r.low
}

// In returns up to max positions in state s, lowest first.
func (r *Run) In(s State, max int) []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []int
	if r.counts[s] == 0 {
		return nil
	}
	for p, x := range r.st {
		if x == s {
			out = append(out, p)
			if len(out) == max {
				break
			}
		}
	}
	return out
}

// Move sets position p to s if it is in one of from (any state if from is
// empty), and reports whether it did.
func (r *Run) Move(p int, s State, from ...State) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.moveLocked(p, s, from...)
}

func (r *Run) moveLocked(p int, s State, from ...State) bool {
	cur := r.st[p]
	if cur.Final() {
		return false // final is final
	}
	if len(from) > 0 {
		ok := false
		for _, f := range from {
			ok = ok || f == cur
		}
		if !ok {
			return false
		}
	}
	r.set(p, s)
	return true
}

// SetID records position p's job ID; a Submitting or Uncertain index
// becomes Active.
func (r *Run) SetID(p int, id job.ID) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ids[p] = id
	r.moveLocked(p, Active, Submitting, Uncertain, Detached)
}

// ID returns position p's job ID (0: none known).
func (r *Run) ID(p int) job.ID {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ids[p]
}

// Lost records that position p's future ended without telling how the
// job ended (connection lost): Detached with a job ID, else Uncertain.
func (r *Run) Lost(p int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ids[p] != 0 {
		r.moveLocked(p, Detached)
	} else if r.moveLocked(p, Uncertain) {
		r.lostAt = time.Now()
	}
}

// LostAt returns when a submission last lost its answer (zero: never):
// its request may still be inside job-ingest, so the adopt window counts
// from then.
func (r *Run) LostAt() time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lostAt
}

// EndEarly stops submissions: every Unsubmitted index becomes Cancelled.
func (r *Run) EndEarly() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cancelAsked {
		return
	}
	r.cancelAsked = true
	for p, s := range r.st {
		if s == Unsubmitted {
			r.set(p, Cancelled)
		}
	}
}

// ToCancel returns up to max positions whose job is active with a known
// ID and not asked to cancel yet, and moves them to Cancelling.
func (r *Run) ToCancel(max int) []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []int
	if r.counts[Active]+r.counts[Running] == 0 {
		return nil
	}
	for p, s := range r.st {
		if (s == Active || s == Running) && r.ids[p] != 0 {
			r.set(p, Cancelling)
			out = append(out, p)
			if len(out) == max {
				break
			}
		}
	}
	return out
}

// Ending reports whether EndEarly was called.
func (r *Run) Ending() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cancelAsked
}

// Counts is a snapshot of an array.
type Counts struct {
	Indexes, Unsubmitted, Uncertain, Submitting, Active, Running, Detached, Cancelling, Succeeded, Failed, Cancelled int
}

// InFlight is the indexes that count against parallelism.
func (c Counts) InFlight() int {
	return c.Uncertain + c.Submitting + c.Active + c.Running + c.Detached + c.Cancelling
}

// Done reports whether every index is final.
func (c Counts) Done() bool { return c.Succeeded+c.Failed+c.Cancelled == c.Indexes }

// Counts returns the counts by state.
func (r *Run) Counts() Counts {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := r.counts
	return Counts{Indexes: len(r.st), Unsubmitted: k[Unsubmitted], Uncertain: k[Uncertain], Submitting: k[Submitting],
		Active: k[Active], Running: k[Running], Detached: k[Detached], Cancelling: k[Cancelling], Succeeded: k[Succeeded], Failed: k[Failed], Cancelled: k[Cancelled]}
}

// Bits returns the positions in state s.
func (r *Run) Bits(s State) idset.Bits {
	r.mu.Lock()
	defer r.mu.Unlock()
	b := idset.NewBits(len(r.st))
	if r.counts[s] == 0 {
		return b
	}
	for p, x := range r.st {
		if x == s {
			b.Set(p)
		}
	}
	return b
}

// Status returns the array's status: counts and compressed idsets.
func (r *Run) Status() *fluxjobv1.ArrayStatus {
	c := r.Counts()
	ok, t1 := idset.Encode(r.Set, r.Bits(Succeeded), fluxjobv1.MaxIndexSetLength)
	bad, t2 := idset.Encode(r.Set, r.Bits(Failed), fluxjobv1.MaxIndexSetLength)
	return &fluxjobv1.ArrayStatus{
		Indexes:          int32(c.Indexes),
		Pending:          int32(c.Unsubmitted),
		Active:           int32(c.InFlight()),
		Running:          int32(c.Running),
		Succeeded:        int32(c.Succeeded),
		Failed:           int32(c.Failed),
		Cancelled:        int32(c.Cancelled),
		SucceededIndexes: ok,
		FailedIndexes:    bad,
		IndexesTruncated: t1 || t2,
		Retries:          int32(r.retryCount()),
		Urgency:          r.appliedUrgency(),
	}
}

func (r *Run) appliedUrgency() *int32 {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.urgency.Applied < 0 {
		return nil
	}
	u := int32(r.urgency.Applied)
	return &u
}

func (r *Run) retryCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.retries
}

// Runs holds the arrays this manager follows, by FluxJob UID.
type Runs struct {
	mu   sync.Mutex
	runs map[types.UID]*Run
}

// Get returns uid's run.
func (rs *Runs) Get(uid types.UID) (*Run, bool) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	r, ok := rs.runs[uid]
	return r, ok
}

// Put records r.
func (rs *Runs) Put(r *Run) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if rs.runs == nil {
		rs.runs = map[types.UID]*Run{}
	}
	rs.runs[r.UID] = r
}

// Forget drops uid's run.
func (rs *Runs) Forget(uid types.UID) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	delete(rs.runs, uid)
}

// ForgetKey drops the run of the FluxJob named key.
func (rs *Runs) ForgetKey(key types.NamespacedName) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	for uid, r := range rs.runs {
		if r.Key == key {
			delete(rs.runs, uid)
		}
	}
}
