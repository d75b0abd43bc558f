package broker

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
)

// What an instance says about the jobs that wait in it, beyond their own
// eventlogs: the state of its queues and the scheduler's annotations. It
// is read once per instance per WaitingPace, and only while FluxJobs wait
// in SCHED on the instance (they ask with Route.Waiting): a FluxJob that
// does not wait costs nothing, and a thousand that do cost the same
// handful of RPCs as one.

// WaitingPace is how often an instance's Waiting is read again while
// FluxJobs wait on it: the status pace (written.Pace).
const WaitingPace = time.Second

// waitingInterest is how long one Route.Waiting call keeps the reads
// going: longer than the reconciler's resync, which asks again.
const waitingInterest = 2 * time.Minute

// Bounds of one read: the queues asked about, the jobs listed, the users
// whose jobs are listed.
const (
	maxWaitingQueues = 64
	maxWaitingJobs   = 1000
	maxWaitingUsers  = 16
)

// QueueState is a queue's job-manager.queue-status answer (flux-core 0.88
// queues.c queue_status_encode): "start" is false with stop_reason
// "Scheduler is offline" while no scheduler is loaded.
type QueueState struct {
	Enabled       bool   `json:"enable"`
	Started       bool   `json:"start"`
	DisableReason string `json:"disable_reason,omitempty"`
	StopReason    string `json:"stop_reason,omitempty"`
}

// SchedInfo is what job-list says of one job waiting in SCHED: its queue
// and the scheduler's annotations (RFC 27 sched.t_estimate, seconds since
// the epoch; sched.reason_pending and sched.jobs_ahead).
type SchedInfo struct {
	Queue         string
	TEstimate     float64
	ReasonPending string
	JobsAhead     int
}

// Waiting is one read of an instance's queues and of the scheduler's
// annotations of the jobs waiting in SCHED. A zero Waiting was never read.
type Waiting struct {
	// At is when the read ended.
	At time.Time
	// Queues are the instance's queues by name; "" is the anonymous
	// queue of an instance without named queues.
	Queues map[string]QueueState
	// Jobs are the jobs in SCHED of the users asked about (at most
	// maxWaitingJobs, in job-list's order: the highest priority first).
	Jobs map[job.ID]SchedInfo
	// Err is why part of the read failed ("" if none).
	Err string
}

// Read reports whether w holds a read.
func (w Waiting) Read() bool { return !w.At.IsZero() }

// Queue returns the state of the queue a job waits in: name, or with ""
// the anonymous queue of an instance without named ones. ok is false when
// the queue is unknown.
func (w Waiting) Queue(name string) (QueueState, bool) {
	q, ok := w.Queues[name]
	return q, ok
}

// AllStopped reports whether the instance has queues and none is started
// (a stopped scheduler stops them all).
func (w Waiting) AllStopped() bool {
	if len(w.Queues) == 0 {
		return false
	}
	for _, q := range w.Queues {
		if q.Started {
			return false
		}
	}
	return true
}

// ChangedFor reports whether what w and old say about job id differs: its
// own entry, or any queue (the job's queue may be unknown).
func (w Waiting) ChangedFor(old Waiting, id job.ID) bool {
	if !old.Read() {
		return true
	}
	a, aok := w.Jobs[id]
	b, bok := old.Jobs[id]
	return aok != bok || a != b || !maps.Equal(w.Queues, old.Queues)
}

// waitingWatch reads an instance's Waiting on its control connection,
// asynchronously (handlers on the connection's reader goroutine: no
// goroutine of its own), when asked to and at most once per WaitingPace.
// One read at a time: a broker that does not answer gets no second one
// (its Waiting then says so), so unanswered requests do not pile up.
type waitingWatch struct {
	mu       sync.Mutex
	last     Waiting
	until    time.Time // read while now is before it
	users    []int
	reading  bool
	started  time.Time // of the read in progress
	stalled  bool      // the read in progress is overdue (reported)
	conn     *flux.Conn
	onChange func(old, new Waiting)
	timeout  time.Duration
}

// want records that a FluxJob of user uid (-1: unknown) waits on the
// instance, and returns the latest read (zero before the first).
func (w *waitingWatch) want(now time.Time, uid int) Waiting {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.until = now.Add(waitingInterest)
	if uid >= 0 && !slices.Contains(w.users, uid) && len(w.users) < maxWaitingUsers {
		w.users = append(w.users, uid)
	}
	return w.last
}

// tick starts a read on ctl if one is wanted and due, and reports a read
// that is overdue.
func (w *waitingWatch) tick(ctx context.Context, now time.Time, ctl *flux.Conn) {
	timeout := w.timeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	w.mu.Lock()
	if w.reading {
		if now.Sub(w.started) < timeout || w.stalled {
			w.mu.Unlock()
			return
		}
		w.stalled = true
		w.publishLocked(Waiting{At: now, Queues: w.last.Queues, Jobs: w.last.Jobs,
			Err: fmt.Sprintf("no answer from the broker within %s", timeout)})
		return
	}
	if !now.Before(w.until) || w.conn == ctl && now.Sub(w.last.At) < WaitingPace {
		w.mu.Unlock()
		return
	}
	w.reading, w.started, w.stalled, w.conn = true, now, false, ctl
	users := slices.Clone(w.users)
	w.mu.Unlock()
	startWaitingRead(ctx, ctl, users, func(r Waiting) {
		r.At = time.Now()
		w.mu.Lock()
		w.reading = false
		w.publishLocked(r)
	})
}

// publishLocked makes r the latest read and tells onChange; it unlocks.
func (w *waitingWatch) publishLocked(r Waiting) {
	old := w.last
	w.last = r
	fn := w.onChange
	w.mu.Unlock()
	if fn != nil {
		fn(old, r)
	}
}

// Waiting records that a FluxJob of user uid (-1: unknown) waits in SCHED
// on the instance, which keeps the instance's Waiting read at the pace for
// a while, and returns the latest read (zero before the first one).
func (c *Connector) Waiting(now time.Time, uid int) Waiting { return c.waiting.want(now, uid) }

// Waiting is Connector.Waiting for the instance (zero if it has none).
func (rt Route) Waiting(now time.Time, uid int) Waiting {
	if rt.conn == nil {
		return Waiting{}
	}
	return rt.conn.Waiting(now, uid)
}

// OnWaiting registers fn to run after each read of any instance's
// Waiting, with the instance's name, the previous read and the new one
// (see Waiting.ChangedFor). It runs on a connection's reader goroutine and
// must not block. Register before Start.
func (r *Registry) OnWaiting(fn func(instance string, old, new Waiting)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.onWaiting = append(r.onWaiting, fn)
}

func (r *Registry) waitingChanged(name string, old, new Waiting) {
	r.mu.RLock()
	fns := slices.Clone(r.onWaiting)
	r.mu.RUnlock()
	for _, fn := range fns {
		fn(name, old, new)
	}
}

// ReadWaiting reads an instance's Waiting at once, for the jobs of users
// (all users when empty).
func ReadWaiting(ctx context.Context, ctl *flux.Conn, users []int) Waiting {
	ch := make(chan Waiting, 1)
	startWaitingRead(ctx, ctl, users, func(w Waiting) { ch <- w })
	select {
	case w := <-ch:
		w.At = time.Now()
		return w
	case <-ctx.Done():
		return Waiting{At: time.Now(), Err: ctx.Err().Error()}
	}
}

// waitingRead is one read in progress: its answers arrive on the
// connection's reader goroutine.
type waitingRead struct {
	mu      sync.Mutex
	w       Waiting
	errs    []string
	pending int
	done    func(Waiting)
}

func (r *waitingRead) fail(what string, err error) {
	r.errs = append(r.errs, fmt.Sprintf("%s: %v", what, err))
}

// finish ends one request; the last one hands the read over.
func (r *waitingRead) finish() {
	r.pending--
	if r.pending > 0 {
		return
	}
	if len(r.errs) > 0 {
		r.w.Err = r.errs[0]
		if len(r.errs) > 1 {
			r.w.Err += fmt.Sprintf(" (and %d more errors)", len(r.errs)-1)
		}
	}
	r.done(r.w)
}

// startWaitingRead sends job-manager.queue-list, then queue-status for
// each queue (the anonymous one when there is none), and job-list.list of
// the jobs in SCHED of users, and calls done once with what came back.
func startWaitingRead(ctx context.Context, ctl *flux.Conn, users []int, done func(Waiting)) {
	r := &waitingRead{w: Waiting{Queues: map[string]QueueState{}, Jobs: map[job.ID]SchedInfo{}}, pending: 2, done: done}
	r.mu.Lock()
	defer r.mu.Unlock()
	status := func(name string) {
		var req any = struct{}{}
		if name != "" {
			req = map[string]string{"name": name}
		}
		r.pending++
		err := ctl.StartRPC(ctx, "job-manager.queue-status", req, func(payload []byte, err error) {
			r.mu.Lock()
			defer r.mu.Unlock()
			var q QueueState
			if err == nil {
				err = json.Unmarshal(trimNUL(payload), &q)
			}
			if err != nil {
				r.fail("queue-status "+name, err)
			} else {
				r.w.Queues[name] = q
			}
			r.finish()
		})
		if err != nil {
			r.fail("queue-status "+name, err)
			r.pending--
		}
	}
	err := ctl.StartRPC(ctx, "job-manager.queue-list", struct{}{}, func(payload []byte, err error) {
		r.mu.Lock()
		defer r.mu.Unlock()
		var resp struct {
			Queues []string `json:"queues"`
		}
		if err == nil {
			err = json.Unmarshal(trimNUL(payload), &resp)
		}
		switch {
		case err != nil:
			r.fail("queue-list", err)
		case len(resp.Queues) == 0:
			status("")
		default:
			for _, q := range resp.Queues[:min(len(resp.Queues), maxWaitingQueues)] {
				status(q)
			}
		}
		r.finish()
	})
	if err != nil {
		r.fail("queue-list", err)
		r.pending--
	}
	constraint := map[string]any{"states": []string{"sched"}}
	if len(users) > 0 {
		constraint = map[string]any{"and": []any{constraint, map[string]any{"userid": users}}}
	}
	req := map[string]any{"max_entries": maxWaitingJobs, "attrs": []string{"queue", "annotations"}, "constraint": constraint}
	err = ctl.StartRPC(ctx, "job-list.list", req, func(payload []byte, err error) {
		r.mu.Lock()
		defer r.mu.Unlock()
		var resp struct {
			Jobs []struct {
				ID          uint64 `json:"id"`
				Queue       string `json:"queue"`
				Annotations struct {
					Sched struct {
						TEstimate     *float64 `json:"t_estimate"`
						ReasonPending string   `json:"reason_pending"`
						JobsAhead     int      `json:"jobs_ahead"`
					} `json:"sched"`
				} `json:"annotations"`
			} `json:"jobs"`
		}
		if err == nil {
			err = json.Unmarshal(trimNUL(payload), &resp)
		}
		if err != nil {
			r.fail("job-list", err)
		}
		for _, j := range resp.Jobs[:min(len(resp.Jobs), maxWaitingJobs)] {
			si := SchedInfo{Queue: j.Queue, ReasonPending: j.Annotations.Sched.ReasonPending, JobsAhead: j.Annotations.Sched.JobsAhead}
			if t := j.Annotations.Sched.TEstimate; t != nil {
				si.TEstimate = *t
			}
			r.w.Jobs[job.ID(j.ID)] = si
		}
		r.finish()
	})
	if err != nil {
		r.fail("job-list", err)
		r.pending--
	}
	if r.pending == 0 {
		r.pending = 1
		r.finish()
	}
}

// trimNUL drops the NUL that ends a JSON payload.
func trimNUL(b []byte) []byte {
	if n := len(b); n > 0 && b[n-1] == 0 {
		return b[:n-1]
	}
	return b
}

// PokeWaiting notifies the reconciler about the FluxJobs tracked on
// instance whose Flux job waits in SCHED and about which the new read of
// the instance's Waiting says something else than the old one (see
// Registry.OnWaiting); it returns how many it poked. It does not block.
func (t *Tracker) PokeWaiting(instance string, old, new Waiting) int {
	t.mu.Lock()
	var keys []types.NamespacedName
	for _, tr := range t.jobs {
		if tr.instance != instance || !tr.obs.HasJobID || tr.obs.Outcome.Kind.Final() {
			continue
		}
		if s := job.NewSummary(tr.obs.Events); s.PriorityTime == 0 || s.Allocated() || s.Ended() || s.Fatal != nil {
			continue
		}
		if new.ChangedFor(old, job.ID(tr.obs.JobID)) {
			keys = append(keys, tr.key)
		}
	}
	t.mu.Unlock()
	for _, k := range keys {
		t.Poke(k)
	}
	return len(keys)
}
