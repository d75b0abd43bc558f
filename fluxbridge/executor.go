// Package fluxbridge runs Flux jobs asynchronously: an Executor submits
// jobspecs (or attaches to existing jobs) and hands back a *Future per job
// that yields its job ID, its eventlog events and its result. It is a Go
// port of flux-core's Python flux.job.FluxExecutor and FluxExecutorFuture,
// built on the fluxbridge/flux connection and the fluxbridge/job RPCs.
//
// # Goroutines
//
// Python's executor runs one thread per worker with a Flux reactor and
// hands callbacks to that thread. Here each worker owns one *flux.Conn
// (with its reader and writer goroutines) and one goroutine that takes
// queued futures and queues their submissions. From then on a future is
// driven by the connection's reader goroutine, through handlers: the
// submission's answer sets the job ID and starts following the job, each
// event is recorded and, when it decides the future, completes it. No
// goroutine waits on a future: completions run at once, and the future's
// callbacks run in a goroutine started for them, which ends when none is
// left (so a slow callback delays only its own future, and a future with
// no callbacks costs no goroutine). The goroutines carry pprof labels
// ("fluxbridge.executor"=NamePrefix, "fluxbridge.worker"=index) so that
// they can be told apart in profiles and goroutine dumps.
//
// # Scale
//
// A future that is in flight costs the Future itself (a few hundred bytes
// plus its recorded events) and no goroutine. With EventSourceEventlog it
// also costs one job-info.eventlog-watch stream at the broker (and its
// matchtag and handler in the client); EventSourceJournal replaces those
// with one job-manager.events-journal stream per executor, which the
// instance owner alone may open. BenchmarkInFlightFuture measures both
// (10,000 held jobs against the test broker: about 2.7 KB per future with
// per-job watches, 1.7 KB with the journal). EventSourceEventlog stays the
// default because it works for guests too and is what flux-core's Python
// executor does.
//
// A lean future (SubmitLean, AttachLean) keeps no events and no callbacks
// but its Observer: a Future of about 160 bytes besides its event
// source's per-job cost, for callers that follow many jobs and need only
// their start and end (an array's indexes: BenchmarkControllerArrayMemory).
package fluxbridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime/pprof"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/go-logr/logr"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/sign"
)

// EventSource selects how an Executor learns about its jobs' events.
type EventSource int

const (
	// EventSourceEventlog watches each job's main eventlog with its own
	// job-info.eventlog-watch stream, as flux-core's Python executor does.
	EventSourceEventlog EventSource = iota
	// EventSourceJournal follows all of the executor's jobs through one
	// job-manager.events-journal stream per executor (instance owner only),
	// reading an attached job's eventlog once with job-info.lookup to
	// replay the events it already had. Futures behave the same as with
	// EventSourceEventlog.
	EventSourceJournal
)

// String implements fmt.Stringer.
func (s EventSource) String() string {
	switch s {
	case EventSourceEventlog:
		return "eventlog"
	case EventSourceJournal:
		return "journal"
	}
	return "EventSource(" + strconv.Itoa(int(s)) + ")"
}

// ExecutorOptions configures an Executor. The zero value is usable: one
// worker connected to $FLUX_URI (or the local default broker).
type ExecutorOptions struct {
	// Workers is the number of workers (Python's threads), each with its
	// own broker connection. New futures go to the least-loaded worker
	// (queued plus running futures), ties broken round robin. Zero means 1.
	Workers int
	// NamePrefix labels the executor's goroutines for pprof (Python's
	// thread_name_prefix). Empty means "FluxExecutor-N", N counting
	// executors created by this process.
	NamePrefix string
	// PollInterval is accepted for parity with Python's poll_interval and
	// has no effect. Python's worker threads had to leave the Flux reactor
	// every poll_interval to look for newly submitted jobs; Go workers
	// block on a channel that Submit signals, and do not reconnect or retry
	// (a lost connection breaks the executor, as in Python), so there is
	// nothing to poll.
	PollInterval time.Duration
	// URI is the broker to connect to, in place of Python's handle_args;
	// empty means $FLUX_URI, then local:///run/flux/local (see flux.Dial).
	URI string
	// DialOptions are passed to flux.Dial for each worker connection, in
	// place of Python's handle_kwargs.
	DialOptions []flux.Option
	// Logger receives the executor's logs, among them panics recovered
	// from callbacks. The zero Logger discards them.
	Logger logr.Logger
	// EventSource selects how job events are followed; see EventSource.
	EventSource EventSource
	// NewSigner, when set, makes the Signer of each worker connection:
	// submissions whose SubmitOptions have no Signer (and are not
	// PreSigned) are wrapped by it. A guest of a multi-user instance uses
	// job.MungeSigner (munge from the broker's host, as the connection's
	// user); nil keeps the "none" signature, which only the instance
	// owner may use.
	NewSigner func(c *flux.Conn) sign.Signer
}

var executorCount atomic.Int64

// Executor submits jobs to Flux, or attaches to existing ones, and
// completes a Future for each as its eventlog reports progress. Create it
// with NewExecutor and release it with Shutdown (or Close). All methods
// are safe for concurrent use.
type Executor struct {
	log     logr.Logger
	prefix  string
	workers []*worker
	next    atomic.Uint32
	wg      sync.WaitGroup // worker and future goroutines

	// budget bounds the repeatable events all of this executor's
	// Futures keep (bounds.go).
	budget *eventBudget

	mu       sync.Mutex
	shutdown bool
	broken   error
}

// NewExecutor connects Workers connections to the broker and starts the
// workers. ctx bounds the connecting only. If any connection fails, the
// ones already made are closed and the error is returned.
func NewExecutor(ctx context.Context, opts ExecutorOptions) (*Executor, error) {
	n := opts.Workers
	if n < 0 {
		return nil, fmt.Errorf("fluxbridge: the number of workers must be > 0, got %d", n)
	}
	if n == 0 {
		n = 1
	}
	if opts.EventSource != EventSourceEventlog && opts.EventSource != EventSourceJournal {
		return nil, fmt.Errorf("fluxbridge: event source %v is not supported", opts.EventSource)
	}
	prefix := opts.NamePrefix
	if prefix == "" {
		prefix = "FluxExecutor-" + strconv.FormatInt(executorCount.Add(1)-1, 10)
	}
	e := &Executor{log: opts.Logger.WithName("fluxbridge").WithValues("executor", prefix), prefix: prefix,
		budget: newEventBudget(MaxRepeatedEventBytes)}
	conns := make([]*flux.Conn, 0, n)
	for i := 0; i < n; i++ {
		c, err := flux.Dial(ctx, opts.URI, opts.DialOptions...)
		if err != nil {
			for _, c := range conns {
				c.Close()
			}
			return nil, fmt.Errorf("fluxbridge: connecting worker %d: %w", i, err)
		}
		conns = append(conns, c)
	}
	// With EventSourceJournal, one journal stream (on the first worker's
	// connection) serves every worker: the job manager then sends each
	// event once, not once per worker.
	var journal *journalSource
	if opts.EventSource == EventSourceJournal {
		onFail := func(err error) {
			if errors.Is(err, flux.ErrClosed) && e.isShutdown() {
				return // Close closed the connection
			}
			e.markBroken(fmt.Errorf("%w: %w", ErrBroken, err))
		}
		j, err := newJournalSource(ctx, conns[0], len(conns), onFail)
		if err != nil {
			for _, c := range conns {
				c.Close()
			}
			return nil, err
		}
		journal = j
	}
	for i, c := range conns {
		w := &worker{
			ex:     e,
			index:  i,
			conn:   c,
			src:    eventlogSource{conn: c},
			log:    e.log.WithValues("worker", i),
			notify: make(chan struct{}, 1),
		}
		if opts.NewSigner != nil {
			w.signer = opts.NewSigner(c)
		}
		if journal != nil {
			w.src = journal
			w.sharedConn = i == 0
		}
		e.workers = append(e.workers, w)
	}
	for _, w := range e.workers {
		w.labels = pprof.WithLabels(context.Background(), pprof.Labels("fluxbridge.executor", prefix, "fluxbridge.worker", strconv.Itoa(w.index)))
		e.wg.Add(1)
		go func() {
			pprof.SetGoroutineLabels(w.labels)
			w.run()
		}()
	}
	if journal != nil {
		if err := journal.waitReady(ctx); err != nil {
			e.Close()
			return nil, err
		}
	}
	return e, nil
}

// Jobspec kinds accepted by Submit.
func encodeJobspec(jobspec any) ([]byte, error) {
	switch js := jobspec.(type) {
	case *job.Jobspec:
		if js == nil {
			return nil, errors.New("fluxbridge: nil *job.Jobspec")
		}
		b, err := json.Marshal(js)
		if err != nil {
			return nil, fmt.Errorf("fluxbridge: encoding jobspec: %w", err)
		}
		return b, nil
	case string:
		return []byte(js), nil
	case []byte:
		return js, nil
	case json.RawMessage:
		return js, nil
	}
	return nil, fmt.Errorf("fluxbridge: unsupported jobspec type %T (want *job.Jobspec, string or []byte)", jobspec)
}

// Submit queues a job for submission and returns its Future at once.
//
// jobspec is a *job.Jobspec or its encoding (string or []byte; the J of a
// signed request when opts.PreSigned is set). opts carries urgency (0–31,
// nil meaning the default 16), waitable, debug and pre-signed as in
// Python's submit, and the Signer (else the executor's NewSigner's). Errors Go can catch at once are returned here: an
// unsupported jobspec type or an urgency out of range, ErrShutdown after
// Shutdown, an error wrapping ErrBroken and its cause once the executor is
// broken, and ctx's error if ctx is already done. ctx is not kept: the
// submission is not bound to it, since the future outlives the call.
// Errors from the broker (an invalid jobspec, for one) complete the future.
func (e *Executor) Submit(ctx context.Context, jobspec any, opts job.SubmitOptions) (*Future, error) {
	req, err := e.submitRequest(ctx, jobspec, opts)
	if err != nil {
		return nil, err
	}
	return e.schedule(req)
}

// submitRequest checks what Submit can check at once and returns the
// request to schedule.
func (e *Executor) submitRequest(ctx context.Context, jobspec any, opts job.SubmitOptions) (*request, error) {
	if err := e.usable(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("fluxbridge: submit: %w", err)
	}
	if opts.Urgency != nil && (*opts.Urgency < 0 || *opts.Urgency > 31) {
		return nil, fmt.Errorf("fluxbridge: submit: urgency %d out of range 0-31: %w", *opts.Urgency, syscall.EINVAL)
	}
	spec, err := encodeJobspec(jobspec)
	if err != nil {
		return nil, err
	}
	return &request{spec: spec, opts: opts}, nil
}

// SubmitLean is Submit for a caller that needs only the job ID, the start
// and the end of the job: obs is told them (see Observer) and no Future
// is handed back. The future behind it keeps no events and no callbacks
// but obs's, so that following many jobs at once (the indexes of an
// array) costs little; the submission and the following of the job are
// Submit's. Errors are Submit's; when SubmitLean returns one, obs is never
// called.
func (e *Executor) SubmitLean(ctx context.Context, jobspec any, opts job.SubmitOptions, obs Observer) error {
	_, err := e.submitLean(ctx, jobspec, opts, obs)
	return err
}

// submitLean is SubmitLean returning the future, for tests.
func (e *Executor) submitLean(ctx context.Context, jobspec any, opts job.SubmitOptions, obs Observer) (*Future, error) {
	if obs == nil {
		return nil, errors.New("fluxbridge: submit: nil Observer")
	}
	req, err := e.submitRequest(ctx, jobspec, opts)
	if err != nil {
		return nil, err
	}
	req.obs = obs
	return e.schedule(req)
}

// Attach returns a Future for an existing job, which behaves exactly like
// one returned by Submit (its job ID is set at once). If id matches no job
// the future completes with an error wrapping ErrNoSuchJob. Attach fails at
// once with ErrShutdown after Shutdown, with an error wrapping ErrBroken
// once the executor is broken, or with ctx's error if ctx is done.
func (e *Executor) Attach(ctx context.Context, id job.ID) (*Future, error) {
	if err := e.usable(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("fluxbridge: attach: %w", err)
	}
	return e.schedule(&request{attach: true, id: id})
}

// AttachLean is Attach for a caller that needs only the job's start and
// end, as SubmitLean is Submit's: obs.JobID is called with id at once,
// Start if the job started (also before the attach), Done with the end.
func (e *Executor) AttachLean(ctx context.Context, id job.ID, obs Observer) error {
	_, err := e.attachLean(ctx, id, obs)
	return err
}

// attachLean is AttachLean returning the future, for tests.
func (e *Executor) attachLean(ctx context.Context, id job.ID, obs Observer) (*Future, error) {
	if obs == nil {
		return nil, errors.New("fluxbridge: attach: nil Observer")
	}
	if err := e.usable(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("fluxbridge: attach: %w", err)
	}
	return e.schedule(&request{attach: true, id: id, obs: obs})
}

// usable returns the error Submit and Attach fail with once the executor
// is broken or shut down, checked before their arguments as Python does.
func (e *Executor) usable() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.broken != nil {
		return e.broken
	}
	if e.shutdown {
		return ErrShutdown
	}
	return nil
}

func (e *Executor) schedule(r *request) (*Future, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.broken != nil {
		return nil, e.broken
	}
	if e.shutdown {
		return nil, ErrShutdown
	}
	f := newFuture(&e.log, e.budget, r.obs)
	if r.attach {
		f.id, f.idSet = r.id, true
		if f.obs != nil {
			f.queue = append(f.queue, invocation{fn: observeJobID, inline: true})
		}
	}
	r.f = f
	if err := e.pick().enqueue(r); err != nil {
		return nil, err
	}
	return f, nil
}

// pick returns the least-loaded worker, starting the scan at a round-robin
// position so that equal loads spread evenly.
func (e *Executor) pick() *worker {
	n := len(e.workers)
	start := int(e.next.Add(1)-1) % n
	best := e.workers[start]
	bestLoad := best.load.Load()
	for i := 1; i < n && bestLoad > 0; i++ {
		w := e.workers[(start+i)%n]
		if l := w.load.Load(); l < bestLoad {
			best, bestLoad = w, l
		}
	}
	return best
}

// Shutdown stops the executor from accepting futures; Submit and Attach
// then fail with ErrShutdown. It is safe to call many times.
//
// Futures already accepted still run to completion, except that with
// cancelFutures the ones not yet running are cancelled; running and done
// futures are left alone. With wait, Shutdown returns only when every
// running future has completed, its eventlog has ended, and every goroutine
// and connection of the executor is gone. A job that never finishes (held
// at urgency 0, say) makes a waiting Shutdown wait for ever; use
// ShutdownContext to bound the wait, or Close.
func (e *Executor) Shutdown(wait, cancelFutures bool) {
	e.beginShutdown(cancelFutures)
	if wait {
		e.wg.Wait()
	}
}

// ShutdownContext is Shutdown with wait, bounded by ctx: it returns nil
// once everything is gone, or ctx's error (wrapped) if ctx is done first,
// in which case the executor keeps finishing in the background.
func (e *Executor) ShutdownContext(ctx context.Context, cancelFutures bool) error {
	e.beginShutdown(cancelFutures)
	done := make(chan struct{})
	go func() { e.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("fluxbridge: shutdown: %w", ctx.Err())
	}
}

// Close shuts the executor down hard: futures not yet running are
// cancelled, the connections are closed at once, running futures complete
// with an error wrapping flux.ErrClosed (their jobs keep running in Flux),
// and Close returns when every goroutine is gone. It always returns nil.
func (e *Executor) Close() error {
	e.beginShutdown(true)
	for _, w := range e.workers {
		// what is running fails with flux.ErrClosed; each worker
		// releases its event source as it exits
		w.conn.Close()
	}
	e.wg.Wait()
	return nil
}

func (e *Executor) beginShutdown(cancelFutures bool) {
	e.mu.Lock()
	e.shutdown = true
	e.mu.Unlock()
	for _, w := range e.workers {
		w.stop(cancelFutures)
	}
}

func (e *Executor) isShutdown() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.shutdown
}

// Err returns nil while the executor is usable, and an error wrapping
// ErrBroken and the cause once a worker lost its connection.
func (e *Executor) Err() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.broken
}

func (e *Executor) markBroken(err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.broken == nil {
		e.broken = err
	}
}
