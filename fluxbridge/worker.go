package fluxbridge

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/go-logr/logr"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/sign"
)

// request is a future waiting in a worker's queue, with what it needs to
// start: a jobspec to submit, or a job ID to attach to.
type request struct {
	f      *Future
	attach bool
	id     job.ID
	spec   []byte
	opts   job.SubmitOptions
	obs    Observer // a lean future's (SubmitLean, AttachLean)
}

// eventSource follows the events of jobs. It is the seam between the
// per-job eventlog watch and a shared journal.
type eventSource interface {
	// beginSubmit is called before a job is submitted; the function it
	// returns is called with the job's ID (ok) or not (the submission
	// failed) once the submission is answered.
	beginSubmit() func(id job.ID, ok bool)
	// follow starts following job id: fl.deliver is called with each of
	// its events, in order and from the job's first event (attach says
	// the job was not submitted through beginSubmit), then fl.end exactly
	// once, with nil when the job's eventlog ended or with the error that
	// stopped following. They are called from reader goroutines (for one
	// job never concurrently) or, for an error at once, by follow's
	// caller, and must not block.
	follow(id job.ID, attach bool, fl follower)
	// close is called by each worker using the source as it exits; the
	// source releases its resources once none uses it.
	close()
}

// eventlogSource follows a job through its own job-info.eventlog-watch.
type eventlogSource struct{ conn *flux.Conn }

func (eventlogSource) beginSubmit() func(job.ID, bool) { return func(job.ID, bool) {} }

func (eventlogSource) close() {}

func (s eventlogSource) follow(id job.ID, _ bool, fl follower) {
	_, err := job.StartWatchEvents(context.Background(), s.conn, id, job.WatchOptions{}, func(ev job.Event, err error) {
		switch {
		case err == nil:
			fl.deliver(ev)
		case err == io.EOF: //nolint:errorlint // the end of the eventlog is io.EOF itself
			// a lost connection comes as an error matching
			// flux.ErrDisconnected or flux.ErrClosed (which wraps the
			// socket's io.EOF: hence ==, not errors.Is)
			fl.end(nil)
		default:
			fl.end(err)
		}
	})
	if err != nil {
		fl.end(err)
	}
}

// worker owns one connection, a queue of futures not yet running, and the
// goroutines of its running futures.
type worker struct {
	ex     *Executor
	index  int
	conn   *flux.Conn
	src    eventSource
	log    logr.Logger
	notify chan struct{} // capacity 1: "look at the queue"
	load   atomic.Int64  // queued + running futures
	signer sign.Signer   // ExecutorOptions.NewSigner's for conn; nil: none
	// paused keeps queued futures from starting; only tests set it, to
	// hold futures in the cancellable state.
	paused atomic.Bool
	// started counts the futures this worker has started.
	started atomic.Int64
	// labels carries the worker's pprof labels, for the goroutines that
	// run callbacks.
	labels context.Context
	// sharedConn: the connection also carries the events journal, which
	// other workers' futures depend on; the journal closes it when its
	// last user leaves, not the worker.
	sharedConn bool

	mu       sync.Mutex
	queue    []*request
	running  int
	stopping bool  // Shutdown called: exit once idle
	broken   error // connection lost: reject new work
}

// setPaused holds (true) or releases queued futures; for tests.
func (w *worker) setPaused(p bool) {
	w.paused.Store(p)
	w.wake()
}

func (w *worker) wake() {
	select {
	case w.notify <- struct{}{}:
	default:
	}
}

// enqueue adds r to the queue, or returns the worker's error if it is
// broken (it raced with Executor.schedule's check).
func (w *worker) enqueue(r *request) error {
	w.mu.Lock()
	if err := w.broken; err != nil {
		w.mu.Unlock()
		return err
	}
	w.queue = append(w.queue, r)
	w.load.Add(1)
	w.mu.Unlock()
	w.wake()
	return nil
}

// stop marks the worker as shutting down and, with cancelFutures, cancels
// the futures still queued.
func (w *worker) stop(cancelFutures bool) {
	w.mu.Lock()
	w.stopping = true
	var drop []*request
	if cancelFutures {
		drop, w.queue = w.queue, nil
		w.load.Add(-int64(len(drop)))
	}
	w.mu.Unlock()
	for _, r := range drop {
		r.f.Cancel()
	}
	w.wake()
}

// run is the worker's goroutine: it starts queued futures, notices a lost
// connection, and exits closing the connection once it is shutting down
// (or broken) and has nothing queued or running.
func (w *worker) run() {
	defer w.ex.wg.Done()
	gone := w.conn.Done()
	for {
		w.mu.Lock()
		var batch []*request
		if !w.paused.Load() {
			batch, w.queue = w.queue, nil
			w.running += len(batch)
		}
		idle := w.running == 0 && len(w.queue) == 0 && (w.stopping || w.broken != nil)
		w.mu.Unlock()
		for _, r := range batch {
			w.start(r)
		}
		if idle {
			w.src.close()
			if !w.sharedConn {
				w.conn.Close()
			}
			return
		}
		select {
		case <-w.notify:
		case <-gone:
			gone = nil
			w.lost()
		}
	}
}

// start starts r, unless it was cancelled: its submission (or, attaching,
// the following of its job) is queued on the connection, and from then on
// the connection's reader goroutine drives the future through handlers;
// no goroutine waits for it. The future holds a count in the executor's
// WaitGroup until it is retired.
func (w *worker) start(r *request) {
	if !r.f.setRunning() {
		w.finished()
		return
	}
	w.started.Add(1)
	w.ex.wg.Add(1)
	f := r.f
	if r.attach {
		w.follow(f, r.id, true)
		return
	}
	opts := r.opts
	if opts.Signer == nil && !opts.PreSigned && w.signer != nil {
		opts.Signer = w.signer
	}
	end := w.src.beginSubmit()
	// Background: a Signer's requests (munge) have timeouts of their own.
	err := job.StartSubmit(context.Background(), w.conn, r.spec, opts, func(id job.ID, err error) {
		end(id, err == nil)
		if err != nil {
			f.setException(w.submitError(err))
			w.retire(f)
			return
		}
		if err := f.setJobID(id); err != nil {
			w.log.Error(err, "setting job ID", "jobid", id)
		}
		w.pump(f)
		w.follow(f, id, false)
	})
	if err != nil {
		end(0, false)
		f.setException(w.submitError(err))
		w.retire(f)
	}
}

// follow follows the job of a running future until its eventlog ends,
// then retires the future.
func (w *worker) follow(f *Future, id job.ID, attach bool) {
	w.src.follow(id, attach, &following{w: w, f: f, id: id})
}

// follower receives one followed job's events and end (eventSource).
type follower interface {
	deliver(ev job.Event)
	end(err error)
}

// following is the follower of a running future's job: one value per
// job, not a closure per callback, since an executor may follow many.
type following struct {
	w  *worker
	f  *Future
	id job.ID
}

func (fl *following) deliver(ev job.Event) {
	fl.f.handleEvent(ev)
	fl.w.pump(fl.f)
}

func (fl *following) end(err error) {
	switch {
	case err != nil:
		fl.f.setException(fl.w.followError(fl.id, err))
	case !fl.f.isDecided():
		// the eventlog ended without a result (the usual case, a result,
		// skips building this error)
		fl.f.setException(fmt.Errorf("job %s: %w", fl.id, ErrIncomplete))
	}
	fl.w.retire(fl.f)
}

// retire queues, after the future's pending callbacks, its release from
// the worker and from the executor's WaitGroup.
func (w *worker) retire(f *Future) {
	f.queueRetire(func() {
		w.finished()
		w.ex.wg.Done()
	})
	w.pump(f)
}

// pump runs what f has queued: the executor's own steps (completion,
// retirement) at once, and f's callbacks in a goroutine started for them,
// which ends when none is left. So a slow callback delays only its own
// future, and a future without callbacks costs no goroutine.
func (w *worker) pump(f *Future) {
	if !f.pumpInternal() {
		return
	}
	w.ex.wg.Add(1)
	go func() {
		defer w.ex.wg.Done()
		if w.labels != nil {
			pprof.SetGoroutineLabels(w.labels)
		}
		f.dispatch(goroutineID())
	}()
}

// finished accounts for a future that left the worker.
func (w *worker) finished() {
	w.load.Add(-1)
	w.mu.Lock()
	w.running--
	w.mu.Unlock()
	w.wake()
}

// lost handles the connection going away: unless we closed it while
// shutting down, the executor is broken and queued futures fail with the
// connection's error. Running futures fail by themselves, their RPCs
// failing with the same error.
func (w *worker) lost() {
	cause := w.conn.Err()
	if cause == nil {
		cause = flux.ErrDisconnected
	}
	err := fmt.Errorf("%w: worker %d: %w", ErrBroken, w.index, cause)
	w.mu.Lock()
	if errors.Is(cause, flux.ErrClosed) && w.stopping {
		w.mu.Unlock()
		return
	}
	w.broken = err
	drop := w.queue
	w.queue = nil
	w.load.Add(-int64(len(drop)))
	w.mu.Unlock()
	w.ex.markBroken(err)
	w.log.Error(cause, "connection to the broker lost; executor broken")
	for _, r := range drop {
		if r.f.setRunning() {
			r.f.setException(fmt.Errorf("fluxbridge: connection lost before the job was submitted: %w", cause))
			r.f.runCallbacks(0)
		}
	}
}

// submitError classifies an error from job-ingest.submit.
func (w *worker) submitError(err error) error {
	if cerr := w.connError(err); cerr != nil {
		return cerr
	}
	var fe *flux.Error
	if errors.As(err, &fe) {
		return &InvalidJobspecError{Message: fe.Message, Err: err}
	}
	return fmt.Errorf("fluxbridge: submit: %w", err)
}

// followError classifies an error from following a job's events.
func (w *worker) followError(id job.ID, err error) error {
	if cerr := w.connError(err); cerr != nil {
		return cerr
	}
	if errors.Is(err, syscall.ENOENT) {
		return fmt.Errorf("job %s: %w", id, ErrNoSuchJob)
	}
	return fmt.Errorf("fluxbridge: following job %s: %w", id, err)
}

// connError returns err made to match the connection's error, if the
// connection is gone, or nil.
func (w *worker) connError(err error) error {
	cause := w.conn.Err()
	if cause == nil && !errors.Is(err, flux.ErrDisconnected) && !errors.Is(err, flux.ErrClosed) {
		return nil
	}
	if cause == nil || errors.Is(err, cause) {
		return fmt.Errorf("fluxbridge: connection lost: %w", err)
	}
	return fmt.Errorf("fluxbridge: connection lost: %w: %w", cause, err)
}
