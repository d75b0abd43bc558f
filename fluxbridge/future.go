package fluxbridge

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/go-logr/logr"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
)

// Events holds the names of the eventlog events a callback can be added
// for with Future.AddEventCallback: the main job eventlog events that
// flux-core's Python executor exposes (its EVENTS attribute). Do not modify.
var Events = map[string]struct{}{
	job.EventSubmit: {}, job.EventDepend: {}, job.EventPriority: {}, job.EventUrgency: {},
	job.EventAlloc: {}, job.EventStart: {}, job.EventException: {}, job.EventFinish: {},
	job.EventRelease: {}, job.EventFree: {}, job.EventClean: {}, job.EventDebug: {},
	job.EventFluxRestart: {},
}

// IsEvent reports whether name is in Events.
func IsEvent(name string) bool {
	_, ok := Events[name]
	return ok
}

// WaitEvents are the eventlog events, beyond Events, that a Future also
// records and hands to AddAllEventsCallback (not to AddEventCallback, which
// keeps to Events as the Python executor does): "validate" (the job entered
// DEPEND) and "dependency-add" / "dependency-remove" (what it waits for
// there), which say why a job waits. Do not modify.
var WaitEvents = map[string]struct{}{
	job.EventValidate: {}, job.EventDependencyAdd: {}, job.EventDependencyRemove: {},
}

// IsDelivered reports whether a Future records events called name and
// hands them to AddAllEventsCallback: Events and WaitEvents.
func IsDelivered(name string) bool {
	if IsEvent(name) {
		return true
	}
	_, ok := WaitEvents[name]
	return ok
}

type futureState uint8

const (
	statePending   futureState = iota // queued in the executor, can be cancelled
	stateRunning                      // taken by a worker, cannot be cancelled
	stateCancelled                    // cancelled before it ran
	stateFinished                     // result or error set
)

// invocation is one queued step: a callback call (fn or eventFn), or
// one of the executor's own steps, run in order with the callbacks: a
// completion (complete, with result and err; see Future.completeLocked)
// or the future's retirement from its worker (retire).
type invocation struct {
	fn      func(*Future)            // jobid or done callback
	eventFn func(*Future, job.Event) // event callback
	ev      job.Event
	// completion marker fields
	complete bool
	result   int
	err      error
	retire   func()
	// inline: a lean future's Observer call (fn), run where the step
	// is pumped, like the executor's own steps (see Observer).
	inline bool
}

// internal reports whether inv is run where it is pumped: one of the
// executor's own steps, or a lean future's Observer call.
func (inv *invocation) internal() bool { return inv.complete || inv.retire != nil || inv.inline }

type eventCallback struct {
	name string // "" (AddAllEventsCallback): every event in Events
	fn   func(*Future, job.Event)
}

func (cb *eventCallback) matches(name string) bool { return cb.name == "" || cb.name == name }

// closedChan is returned by the channel accessors once the awaited thing
// has happened, so futures need not allocate a channel nobody waits on.
var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// Future represents one Flux job submitted through, or attached to by, an
// Executor. It is the Go counterpart of flux-core's Python
// FluxExecutorFuture: a concurrent.futures.Future with a job ID and event
// callbacks.
//
// # Callbacks
//
// Callbacks of one future (job ID, event and done callbacks) are called one
// at a time, in the order the triggering things happened and, for one
// trigger, in registration order. They are never called while the future's
// lock is held, so they may call any method of the future, including
// adding further callbacks. Normally a goroutine started for the purpose
// runs them, and ends when none is left (an in-flight future with no
// callback to run costs no goroutine), so a slow callback delays only its
// own future. A callback added for something that already happened (a done
// callback on a done future, an event callback for past events) is run
// before the Add method returns by the calling goroutine, unless another
// goroutine is running this future's callbacks right then, in which case
// that goroutine runs it next.
//
// A callback that panics is recovered; the panic is logged with the job ID
// and the remaining callbacks still run.
//
// Result, Exception and JobID called from inside one of the future's own
// callbacks, before the future is complete, return ErrCallbackDeadlock
// instead of waiting for work the calling goroutine itself has to do.
type Future struct {
	log *logr.Logger

	// cbGoroutine is the id of the goroutine currently running this
	// future's callbacks, or 0.
	cbGoroutine atomic.Uint64

	mu          sync.Mutex
	state       futureState
	decided     bool // a completion is queued or done
	idSet       bool
	dispatching bool
	// seen marks the event names received (bounds.go: the first of each
	// name is free up to a small context; a lean future: start). Next to
	// the flags, it shares their word.
	seen    uint16
	id      job.ID
	idErr   error
	result  int
	err     error
	done    chan struct{} // created lazily by DoneChan
	idReady chan struct{} // created lazily by JobID
	queue   []invocation

	// *history is nil in a lean future: obs, when set, makes the future
	// lean (see Observer): it keeps no events and has no callbacks but
	// obs's.
	*history
	obs Observer
}

// history is what a Future that is not lean keeps: its events (within
// the bounds of bounds.go) and its callbacks. It is apart from the Future
// so that a lean one does not carry it.
type history struct {
	events   []job.Event
	eventCBs []eventCallback
	jobidCBs []func(*Future)
	doneCBs  []func(*Future)
	// ctxCost is the estimated memory of the stored events' contexts;
	// eventsDropped counts what the bounds dropped (bounds.go).
	ctxCost       int
	eventsDropped int
	// fatalSeen: a fatal exception was received; charges holds, per
	// stored event, what it took from the executor's budget (0:
	// nothing).
	fatalSeen bool
	charges   []int
	charge    *budgetCharge
}

// newFuture returns a future charging its events to b (nil: no budget).
// With obs it is lean: it keeps nothing to charge.
func newFuture(log *logr.Logger, b *eventBudget, obs Observer) *Future {
	f := &Future{log: log, obs: obs}
	if obs == nil {
		f.history = &history{}
	}
	if b != nil && obs == nil {
		f.charge = &budgetCharge{b: b}
		// A Future nobody references any more gives its events' share
		// of the budget back.
		runtime.AddCleanup(f, func(c *budgetCharge) { c.release() }, f.charge)
	}
	return f
}

// JobID returns the ID of the future's job, waiting until it is known or
// ctx is done. It fails with ErrCancelled if the future was cancelled
// before the job was submitted, with a *SubmitError wrapping the reason if
// the job could not be submitted, with ErrCallbackDeadlock when called
// from one of the future's own callbacks before the ID is known, and with
// ctx's error.
func (f *Future) JobID(ctx context.Context) (job.ID, error) {
	f.mu.Lock()
	if f.idSet {
		id, err := f.id, f.idErr
		f.mu.Unlock()
		return id, err
	}
	if f.idReady == nil {
		f.idReady = make(chan struct{})
	}
	ch := f.idReady
	f.mu.Unlock()
	if f.inOwnCallback() {
		return 0, ErrCallbackDeadlock
	}
	select {
	case <-ch:
	case <-ctx.Done():
		return 0, fmt.Errorf("waiting for job ID: %w", ctx.Err())
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.id, f.idErr
}

// Result waits for the future to complete and returns the job's result:
// the highest exit status of its processes (≥ 0), or -signum when a process
// was killed by signal signum. The error is the one the future completed
// with (*JobException, *InvalidJobspecError, ErrNoSuchJob, a connection
// error...), ErrCancelled, ErrCallbackDeadlock, or ctx's error.
func (f *Future) Result(ctx context.Context) (int, error) {
	if err := f.Wait(ctx); err != nil {
		return 0, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.state == stateCancelled {
		return 0, ErrCancelled
	}
	return f.result, f.err
}

// Exception waits for the future to complete and returns the error it
// completed with, or nil if the job produced a result. Like Python's
// Future.exception it returns ErrCancelled for a cancelled future; it also
// returns ErrCallbackDeadlock or ctx's error (wrapped) when it could not
// wait; use errors.Is to tell these apart from the job's error.
func (f *Future) Exception(ctx context.Context) error {
	_, err := f.Result(ctx)
	return err
}

// Wait blocks until the future is complete (finished or cancelled), ctx is
// done (its error is returned, wrapped), or it is called from one of the
// future's own callbacks before completion (ErrCallbackDeadlock).
func (f *Future) Wait(ctx context.Context) error {
	ch := f.DoneChan()
	select {
	case <-ch:
		return nil
	default:
	}
	if f.inOwnCallback() {
		return ErrCallbackDeadlock
	}
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("waiting for future: %w", ctx.Err())
	}
}

// DoneChan returns a channel that is closed once the future is complete.
func (f *Future) DoneChan() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.state >= stateCancelled {
		return closedChan
	}
	if f.done == nil {
		f.done = make(chan struct{})
	}
	return f.done
}

// Cancel cancels the future if it has not started running, and reports
// whether it is cancelled. It does not cancel a Flux job: once a future is
// running (it has been taken by a worker, which is unrelated to the state
// of the job) use job.Cancel to cancel the job itself; the future then
// completes with a *JobException.
func (f *Future) Cancel() bool {
	f.mu.Lock()
	switch f.state {
	case stateCancelled:
		f.mu.Unlock()
		return true
	case statePending:
	default:
		f.mu.Unlock()
		return false
	}
	f.state = stateCancelled
	f.decided = true
	if f.done != nil {
		close(f.done)
	}
	if !f.idSet {
		f.setJobIDLocked(0, ErrCancelled)
	}
	f.queueDoneLocked()
	f.mu.Unlock()
	f.runCallbacks(0)
	return true
}

// Cancelled reports whether the future was cancelled.
func (f *Future) Cancelled() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.state == stateCancelled
}

// Running reports whether a worker has taken the future and it has not
// completed yet.
func (f *Future) Running() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.state == stateRunning
}

// Done reports whether the future is complete: finished or cancelled.
func (f *Future) Done() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.state >= stateCancelled
}

// AddJobIDCallback arranges for fn to be called with the future once its
// job ID is set (or known never to be, see JobID). If that already
// happened, fn is called right away. It returns f.
func (f *Future) AddJobIDCallback(fn func(*Future)) *Future {
	f.mu.Lock()
	if f.idSet {
		f.queue = append(f.queue, invocation{fn: fn})
	} else {
		f.jobidCBs = append(f.jobidCBs, fn)
	}
	f.mu.Unlock()
	f.runAdded()
	return f
}

// AddDoneCallback arranges for fn to be called with the future once it
// completes or is cancelled; if it already has, fn is called right away.
// Done callbacks run in the order they were added. It returns f.
func (f *Future) AddDoneCallback(fn func(*Future)) *Future {
	f.mu.Lock()
	if f.state >= stateCancelled {
		f.queue = append(f.queue, invocation{fn: fn})
	} else {
		f.doneCBs = append(f.doneCBs, fn)
	}
	f.mu.Unlock()
	f.runAdded()
	return f
}

// AddEventCallback arranges for fn to be called with the future and the
// event each time an event called name is posted to the job's eventlog,
// including events posted after the future completed. Events that already
// happened are replayed to fn at once, in order. Callbacks for one event
// run in the order they were added. name must be in Events; otherwise
// AddEventCallback returns an error wrapping ErrUnknownEvent.
func (f *Future) AddEventCallback(name string, fn func(*Future, job.Event)) error {
	if !IsEvent(name) {
		return fmt.Errorf("%w: %q", ErrUnknownEvent, name)
	}
	f.addEventCallback(eventCallback{name: name, fn: fn})
	return nil
}

// AddAllEventsCallback is AddEventCallback for every name in Events, and
// WaitEvents, at once: fn is called with each event the future records,
// past events replayed at once, in order. It costs one registration instead of one
// per name.
func (f *Future) AddAllEventsCallback(fn func(*Future, job.Event)) {
	f.addEventCallback(eventCallback{fn: fn})
}

func (f *Future) addEventCallback(cb eventCallback) {
	f.mu.Lock()
	f.eventCBs = append(f.eventCBs, cb)
	for _, ev := range f.events {
		if cb.matches(ev.Name) {
			f.queue = append(f.queue, invocation{eventFn: cb.fn, ev: ev})
		}
	}
	f.mu.Unlock()
	f.runAdded()
}

// runAdded runs what an Add…Callback call queued (the replay of what
// already happened) before that call returns, as the Python executor does
// under its event lock: in this goroutine when no other goroutine runs
// f's callbacks (runCallbacks), else by waiting until the one that does
// has run it, so callbacks stay one at a time and in order. Called from
// one of f's own callbacks it does not wait for itself: what it added
// runs when that callback returns.
func (f *Future) runAdded() {
	f.mu.Lock()
	if !f.dispatching || len(f.queue) == 0 || f.cbGoroutine.Load() == goroutineID() {
		f.mu.Unlock()
		f.runCallbacks(0)
		return
	}
	ran := make(chan struct{})
	f.queue = append(f.queue, invocation{retire: func() { close(ran) }}) // an own step: never trimmed
	f.mu.Unlock()
	<-ran
}

// setRunning marks a pending future running and reports true, or reports
// false if it was cancelled (Python's set_running_or_notify_cancel).
func (f *Future) setRunning() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.state == statePending {
		f.state = stateRunning
		return true
	}
	return false
}

// setJobID sets the job ID and queues the job ID callbacks; the caller runs
// them with runCallbacks. Setting it twice is an error.
func (f *Future) setJobID(id job.ID) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.idSet {
		return errors.New("fluxbridge: invalid state: job ID already set")
	}
	f.setJobIDLocked(id, nil)
	return nil
}

func (f *Future) setJobIDLocked(id job.ID, err error) {
	f.id, f.idErr, f.idSet = id, err, true
	if f.idReady != nil {
		close(f.idReady)
	}
	if f.obs != nil {
		if err == nil {
			f.queue = append(f.queue, invocation{fn: observeJobID, inline: true})
		}
		return
	}
	for _, fn := range f.jobidCBs {
		f.queue = append(f.queue, invocation{fn: fn})
	}
	f.jobidCBs = nil
}

// queueDoneLocked queues the done callbacks.
func (f *Future) queueDoneLocked() {
	if f.obs != nil {
		f.queue = append(f.queue, invocation{fn: observeDone, inline: true})
		return
	}
	for _, fn := range f.doneCBs {
		f.queue = append(f.queue, invocation{fn: fn})
	}
	f.doneCBs = nil
}

// setResult completes the future with a result once the callbacks queued
// before have run. It reports false if the future was already decided.
func (f *Future) setResult(r int) bool { return f.decide(r, nil) }

// setException completes the future with err once the callbacks queued
// before have run. If the job ID was never set, JobID will fail with a
// *SubmitError wrapping err. It reports false if already decided.
func (f *Future) setException(err error) bool { return f.decide(0, err) }

// isDecided reports whether the future's outcome (result or error) is set.
func (f *Future) isDecided() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.decided
}

func (f *Future) decide(r int, err error) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.decideLocked(r, err)
}

func (f *Future) decideLocked(r int, err error) bool {
	if f.decided {
		return false
	}
	f.decided = true
	f.queue = append(f.queue, invocation{complete: true, result: r, err: err})
	return true
}

// handleEvent records an eventlog event (within the bounds of bounds.go),
// queues the callbacks registered for it and, if it decides the future
// (finish, or an exception of severity 0), queues the completion after
// them.
func (f *Future) handleEvent(ev job.Event) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.obs != nil {
		// lean: nothing kept; the first start is all that is reported
		if ev.Name == job.EventStart && f.seen&startBit == 0 {
			f.seen |= startBit
			f.queue = append(f.queue, invocation{fn: observeStart, inline: true})
		}
	} else if IsDelivered(ev.Name) {
		if f.events == nil {
			// submit, depend, priority, alloc, start, finish, release,
			// free, clean: one allocation for a job's usual events
			f.events = make([]job.Event, 0, 10)
		}
		ev = f.boundEventLocked(ev) // bounds.go: the broker is untrusted
		if f.storeEventLocked(ev) {
			for _, cb := range f.eventCBs {
				if cb.matches(ev.Name) {
					f.queue = append(f.queue, invocation{eventFn: cb.fn, ev: ev})
				}
			}
			f.trimQueueLocked()
		}
	}
	if f.decided {
		return
	}
	switch ev.Name {
	case job.EventFinish:
		ws, ok := job.FinishStatus(ev)
		if !ok {
			f.decideLocked(0, fmt.Errorf("fluxbridge: finish event without a wait status: %v", ev.Context))
			return
		}
		if !ws.Exited() && !ws.Signaled() {
			f.decideLocked(0, fmt.Errorf("fluxbridge: wait status %#x is neither exited nor signaled", int(ws)))
			return
		}
		f.decideLocked(ws.Result(), nil)
	case job.EventException:
		if exc, ok := job.FatalException(ev); ok {
			f.decideLocked(0, &JobException{ID: f.id, Type: exc.Type, Severity: exc.Severity, Note: exc.Note, Event: ev})
		}
	}
}

// runCallbacks runs the queued callbacks unless another goroutine is
// already doing so (it then runs ours as well, in order). gid is the
// calling goroutine's id, or 0 to look it up. Callbacks run without f.mu.
func (f *Future) runCallbacks(gid uint64) {
	f.mu.Lock()
	if f.dispatching || len(f.queue) == 0 {
		f.mu.Unlock()
		return
	}
	f.dispatching = true
	f.mu.Unlock()
	if gid == 0 {
		gid = goroutineID()
	}
	f.dispatch(gid)
}

// queueRetire queues fn, the future's retirement from its worker, after
// what is queued already.
func (f *Future) queueRetire(fn func()) {
	f.mu.Lock()
	f.queue = append(f.queue, invocation{retire: fn})
	f.mu.Unlock()
}

// pumpInternal runs the executor's own queued steps (completions,
// retirement) in the calling goroutine, up to the first callback. If a
// callback is queued it reports true, having claimed the dispatching: the
// caller must then run dispatch in a new goroutine. It does nothing while
// another goroutine dispatches, which runs everything queued.
func (f *Future) pumpInternal() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for !f.dispatching && len(f.queue) > 0 {
		inv := f.queue[0]
		if !inv.internal() {
			f.dispatching = true
			return true
		}
		f.queue[0] = invocation{}
		f.queue = f.queue[1:]
		if inv.complete {
			f.completeLocked(inv.result, inv.err)
			continue
		}
		f.dispatching = true
		f.mu.Unlock()
		if inv.retire != nil {
			inv.retire()
		} else {
			f.invoke(inv)
		}
		f.mu.Lock()
		f.dispatching = false
	}
	if len(f.queue) == 0 {
		f.queue = nil
	}
	return false
}

// dispatch runs the queue until it is empty; the caller has set
// f.dispatching. gid is the calling goroutine's id, recorded so that the
// callbacks' own waits are recognised as deadlocks.
func (f *Future) dispatch(gid uint64) {
	f.cbGoroutine.Store(gid)
	for {
		f.mu.Lock()
		if len(f.queue) == 0 {
			f.queue = nil
			f.cbGoroutine.Store(0)
			f.dispatching = false
			f.mu.Unlock()
			return
		}
		inv := f.queue[0]
		f.queue[0] = invocation{}
		f.queue = f.queue[1:]
		if inv.complete {
			f.completeLocked(inv.result, inv.err)
			f.mu.Unlock()
			continue
		}
		f.mu.Unlock()
		if inv.retire != nil {
			inv.retire()
			continue
		}
		f.invoke(inv)
	}
}

func (f *Future) completeLocked(r int, err error) {
	if f.state >= stateCancelled {
		return
	}
	f.state = stateFinished
	f.result, f.err = r, err
	// The completion runs from the front of the queue; the callbacks it
	// triggers go to the front too, to run right after it and before the
	// steps queued meanwhile (the events after "finish", which reach the
	// queue while earlier callbacks run).
	rest := f.queue
	f.queue = nil
	if !f.idSet {
		// Only reachable with an error: nothing completes a future with a
		// result before its job ID is known.
		f.setJobIDLocked(0, &SubmitError{Err: err})
	}
	if f.done != nil {
		close(f.done)
	}
	f.queueDoneLocked()
	f.queue = append(f.queue, rest...)
}

func (f *Future) invoke(inv invocation) {
	defer func() {
		if p := recover(); p != nil {
			f.mu.Lock()
			id := f.id
			f.mu.Unlock()
			if f.log != nil {
				f.log.Error(fmt.Errorf("panic: %v", p), "future callback panicked; ignored", "jobid", id)
			}
		}
	}()
	if inv.eventFn != nil {
		inv.eventFn(f, inv.ev)
		return
	}
	inv.fn(f)
}

// inOwnCallback reports whether the calling goroutine is running one of
// f's callbacks right now.
func (f *Future) inOwnCallback() bool {
	g := f.cbGoroutine.Load()
	return g != 0 && g == goroutineID()
}

// goroutineID returns the runtime's id of the calling goroutine, parsed
// from the first line of its stack trace ("goroutine 42 [running]:"). It
// is used only to recognise the goroutine running a future's callbacks.
func goroutineID() uint64 {
	var buf [64]byte
	n := runtime.Stack(buf[:], false)
	const prefix = "goroutine "
	if n <= len(prefix) {
		return 0
	}
	var id uint64
	for _, c := range buf[len(prefix):n] {
		if c < '0' || c > '9' {
			break
		}
		id = id*10 + uint64(c-'0')
	}
	return id
}
