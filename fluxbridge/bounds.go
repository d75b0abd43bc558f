package fluxbridge

import (
	"sync"
	"sync/atomic"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
)

// What a Future keeps of its job's events is bounded, because the broker
// that sends them is untrusted input (an endless stream of events, huge
// contexts). A Flux job's main eventlog has about a dozen events of a few
// hundred bytes; urgency, priority, debug and non-fatal exception events
// can repeat.
const (
	// MaxStoredEvents is the most events a Future keeps to replay to
	// event callbacks added later. Beyond it the oldest event that is not
	// a lifecycle event (protectedEvent) is dropped, or the oldest event
	// if all are.
	MaxStoredEvents = 64
	// MaxEventContextCost bounds the estimated memory of one event's
	// context (job.ContextCost) as a Future keeps and delivers it; a
	// larger one is clipped with job.ClipContext (its essential members
	// kept). job.ParseEvent has already clipped it to
	// job.MaxContextBytes of JSON.
	MaxEventContextCost = 4 << 10
	// MaxStoredContextCost bounds the contexts a Future keeps in all:
	// once its stored events' contexts cost this much, the contexts of
	// further events keep their essential members only.
	MaxStoredContextCost = 32 << 10
	// MaxQueuedEvents bounds the event callback calls waiting to run for
	// one Future, per event callback added (events arriving faster than
	// its callbacks take them).
	// Beyond it the oldest waiting call for an event that is not a
	// lifecycle event is dropped (or the oldest if all are): callbacks
	// may then miss repeated events, never the ones a job's outcome is
	// read from unless the broker floods those too.
	MaxQueuedEvents = 256
	// MaxRepeatedEventBytes bounds, per Executor (one per connection to a
	// Flux instance), the estimated memory of the repeatable events its
	// Futures keep together: every event but the first of each lifecycle
	// event (protectedEvent). The per-Future bounds above alone let a
	// broker that streams events to every job hold tens of KiB per job, a
	// manager with 10,000 jobs past its memory limit; beyond this budget a
	// repeatable event is neither kept nor delivered (EventsDropped).
	MaxRepeatedEventBytes = 8 << 20
	// eventOverhead is what one kept event costs besides its context (the
	// job.Event value and its slots).
	eventOverhead = 96
	// freeContextCost is the context cost the first event of each name
	// keeps without charge: a usual eventlog's events fit in it, so jobs
	// that behave take nothing from the budget.
	freeContextCost = 1 << 10
)

// eventBudget is the share of MaxRepeatedEventBytes an Executor's Futures
// have taken.
type eventBudget struct {
	used atomic.Int64
	max  int64
}

func newEventBudget(max int) *eventBudget { return &eventBudget{max: int64(max)} }

// take reserves n bytes, or reports false if that would exceed the budget.
func (b *eventBudget) take(n int) bool {
	if b.used.Add(int64(n)) > b.max {
		b.used.Add(-int64(n))
		return false
	}
	return true
}

func (b *eventBudget) give(n int) { b.used.Add(-int64(n)) }

// budgetCharge is what one Future holds of its executor's budget. It is
// apart from the Future so that a cleanup can return it once the Future
// is unreachable.
type budgetCharge struct {
	b  *eventBudget
	mu sync.Mutex
	n  int
}

func (c *budgetCharge) add(n int) {
	c.mu.Lock()
	c.n += n
	c.mu.Unlock()
}

func (c *budgetCharge) release() {
	c.mu.Lock()
	n := c.n
	c.n = 0
	c.mu.Unlock()
	c.b.give(n)
}

// protectedEvent reports whether ev is one of the events a job's state
// and outcome are read from (lifecycle events and fatal exceptions),
// which bounding drops last.
func protectedEvent(ev job.Event) bool {
	switch ev.Name {
	case "submit", "alloc", "start", "finish", "release", "clean":
		return true
	case "exception":
		sev, ok := job.ContextInt(ev.Context, "severity")
		return ok && sev == 0 // fatal; others can repeat
	}
	return false
}

// boundEventLocked clips ev's context for keeping (see the constants
// above) given what f keeps already. f.mu is held.
func (f *Future) boundEventLocked(ev job.Event) job.Event {
	limit := MaxEventContextCost
	if f.ctxCost >= MaxStoredContextCost {
		limit = 0 // essential members only
	}
	ev.Context = job.ClipContext(ev.Context, limit)
	return ev
}

// storeEventLocked appends ev to f.events, dropping one event if that
// makes more than MaxStoredEvents. What a Future keeps beyond one event of
// each name with a small context (freeContextCost) is charged to its
// executor's budget: if that is spent, ev is not kept and
// storeEventLocked reports false (the caller then does not deliver it
// either). The first lifecycle event of each name and the first fatal
// exception are always kept, charged or not. f.mu is held.
func (f *Future) storeEventLocked(ev job.Event) bool {
	bit := uint16(1) << eventBits[ev.Name]
	cost := eventOverhead + job.ContextCost(ev.Context)
	if f.seen&bit == 0 {
		cost = max(0, cost-eventOverhead-freeContextCost)
	}
	protected := protectedEvent(ev) && f.seen&bit == 0 || ev.Name == "exception" && protectedEvent(ev) && !f.fatalSeen
	f.seen |= bit
	if ev.Name == "exception" && protectedEvent(ev) {
		f.fatalSeen = true
	}
	switch {
	case f.charge == nil || cost == 0:
		cost = 0
	case protected:
		f.charge.b.used.Add(int64(cost)) // never refused: bounded by the few lifecycle names
		f.charge.add(cost)
	case !f.charge.b.take(cost):
		f.eventsDropped++
		return false
	default:
		f.charge.add(cost)
	}
	f.events = append(f.events, ev)
	f.charges = append(f.charges, cost)
	f.ctxCost += job.ContextCost(ev.Context)
	if len(f.events) <= MaxStoredEvents {
		return true
	}
	drop := 0
	for i, e := range f.events {
		if !protectedEvent(e) {
			drop = i
			break
		}
	}
	if c := f.charges[drop]; c != 0 {
		f.charge.add(-c)
		f.charge.b.give(c)
	}
	f.ctxCost -= job.ContextCost(f.events[drop].Context)
	f.events = append(f.events[:drop], f.events[drop+1:]...)
	f.charges = append(f.charges[:drop], f.charges[drop+1:]...)
	f.eventsDropped++
	return true
}

// eventBits numbers the names a Future records (Events and WaitEvents:
// 16, the bits of a uint16), for its set of names seen.
var eventBits = func() map[string]uint8 {
	m := make(map[string]uint8, len(Events)+len(WaitEvents))
	for _, set := range []map[string]struct{}{Events, WaitEvents} {
		for name := range set {
			m[name] = uint8(len(m))
		}
	}
	if len(m) > 16 {
		panic("fluxbridge: more recorded event names than bits in Future.seen")
	}
	return m
}()

// trimQueueLocked drops waiting event callback calls while more than
// MaxQueuedEvents per event callback wait. f.mu is held.
func (f *Future) trimQueueLocked() {
	limit := MaxQueuedEvents * max(1, len(f.eventCBs))
	for len(f.queue) > limit {
		drop, oldest := -1, -1
		for i := range f.queue {
			inv := &f.queue[i]
			if inv.eventFn == nil {
				continue
			}
			if oldest < 0 {
				oldest = i
			}
			if !protectedEvent(inv.ev) {
				drop = i
				break
			}
		}
		if drop < 0 {
			drop = oldest
		}
		if drop < 0 {
			return // only the executor's own steps and job ID/done callbacks
		}
		f.queue = append(f.queue[:drop], f.queue[drop+1:]...)
		f.eventsDropped++
	}
}

// EventsDropped returns how many events (or event callback calls) the
// Future dropped to stay within its bounds: non-zero means the broker sent
// more events than a job normally has, or sent them faster than the
// callbacks took them.
func (f *Future) EventsDropped() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.history == nil {
		return 0 // lean: nothing kept, nothing dropped
	}
	return f.eventsDropped
}

// The journal event source (journal.go) keeps events for jobs it cannot
// deliver yet: new jobs' events read while our submissions are in flight
// (orphans), and a job's live events while its eventlog is replayed.
const (
	// maxJournalOrphans bounds the jobs whose events are kept unclaimed;
	// events of further new jobs are not kept (their submissions, if
	// ours, then miss the events read before their answer).
	maxJournalOrphans = 1 << 16
	// maxHeldEvents bounds the events kept per job while they cannot be
	// delivered.
	maxHeldEvents = 2 * MaxStoredEvents
)

// appendBounded appends ev (its context clipped to MaxEventContextCost) to
// evs and drops the oldest unprotected event (or the oldest) beyond max.
func appendBounded(evs []job.Event, ev job.Event, max int) []job.Event {
	ev.Context = job.ClipContext(ev.Context, MaxEventContextCost)
	evs = append(evs, ev)
	if len(evs) <= max {
		return evs
	}
	drop := 0
	for i, e := range evs {
		if !protectedEvent(e) {
			drop = i
			break
		}
	}
	return append(evs[:drop], evs[drop+1:]...)
}
