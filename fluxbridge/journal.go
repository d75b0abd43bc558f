package fluxbridge

import (
	"context"
	"fmt"
	"io"
	"reflect"
	"sync"
	"sync/atomic"

	"github.com/go-logr/logr"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
)

// journalSource follows every job of an executor (all its workers)
// through a single job-manager.events-journal stream (flux-core v0.88.0
// src/modules/job-manager/journal.c) instead of one
// job-info.eventlog-watch stream per job.
//
// The journal carries every job's events, ours and other clients', in the
// order the job manager posts them. Two things make it fit the Future
// contract (all of a job's events, in order, replayed on Attach):
//
//   - Submitted jobs: the journal stream is open before any job of ours is
//     submitted, so every event of a job we submit arrives on it, but the
//     "submit" event may arrive before the job-ingest.submit response tells
//     us the ID. While submissions are in flight, events of new jobs
//     (whose first entry is "submit") that were read after the oldest
//     in-flight submission was sent are kept as orphans; the submission
//     claims its job's orphan when its ID is known, and orphans no in-flight
//     submission can own are dropped. Memory is therefore bounded by the
//     jobs submitted (by anyone) during our own submissions.
//   - Attached jobs: the job may be half way through its life. Its
//     subscription is registered first (so live events are queued), then
//     its eventlog is read once with job-info.lookup and delivered, then
//     queued journal events that the eventlog already contained are
//     skipped (matched in order by name, timestamp and context) and the
//     rest delivered. A real broker commits the eventlog to the KVS a
//     little after the journal posts an event; an event posted in that
//     window just before Attach could be missed by both. The test broker
//     has no such window.
type journalSource struct {
	conn   *flux.Conn
	log    logr.Logger
	w      *job.JournalWatch
	cancel context.CancelFunc // ends the journal stream
	ready  chan struct{}      // closed at the first entry or failure
	// onFail is called when the journal fails other than by close: the
	// worker cannot follow its jobs any more.
	onFail  func(error)
	closing atomic.Bool
	users   int32 // workers that have not released the source yet (under mu)
	once    sync.Once

	mu       sync.Mutex
	seq      uint64                     // journal entries read so far
	inflight map[*submitTicket]struct{} // submissions not yet answered
	orphans  map[job.ID]*journalOrphan  // events of new jobs nobody claimed yet
	subs     map[job.ID]*journalSub     // jobs being followed (a list per job)
	err      error                      // set once the journal ended
	claimed  map[job.ID]*journalSub     // subscriptions made by endSubmit, taken by follow
}

type submitTicket struct{ startSeq uint64 }

type journalOrphan struct {
	firstSeq uint64
	events   []job.Event
}

// journalSub is one followed job: events queued by the journal reader and
// a signal for the follower.
type journalSub struct {
	next *journalSub // another subscription to the same job (guarded by journalSource.mu)

	mu     sync.Mutex
	queue  []job.Event
	err    error
	signal chan struct{} // capacity 1
}

func (s *journalSub) push(evs []job.Event, err error) {
	s.mu.Lock()
	for _, ev := range evs {
		if IsEvent(ev.Name) {
			s.queue = append(s.queue, ev)
		}
	}
	if err != nil && s.err == nil {
		s.err = err
	}
	s.mu.Unlock()
	select {
	case s.signal <- struct{}{}:
	default:
	}
}

func (s *journalSub) take() ([]job.Event, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	q := s.queue
	s.queue = nil
	return q, s.err
}

func newJournalSub() *journalSub { return &journalSub{signal: make(chan struct{}, 1)} }

// journalEvents is the journal's allow filter: only the events a Future
// exposes.
func journalEvents() []string {
	names := make([]string, 0, len(Events))
	for n := range Events {
		names = append(names, n)
	}
	return names
}

// newJournalSource opens the journal stream on c; ctx bounds the opening
// only (the stream lives until close). Its reader is run.
func newJournalSource(ctx context.Context, c *flux.Conn, log logr.Logger, users int) (*journalSource, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	// The stream gets a context of its own, cancelled by close: cancelling
	// it wakes a Recv in progress, which (*flux.Stream).Close from another
	// goroutine does not do.
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	w, err := job.WatchJournal(sctx, c, job.JournalOptions{Allow: journalEvents()})
	if err != nil {
		cancel()
		return nil, fmt.Errorf("fluxbridge: opening the events journal: %w", err)
	}
	return &journalSource{
		cancel:   cancel,
		ready:    make(chan struct{}),
		users:    int32(users),
		conn:     c,
		log:      log,
		w:        w,
		inflight: make(map[*submitTicket]struct{}),
		orphans:  make(map[job.ID]*journalOrphan),
		subs:     make(map[job.ID]*journalSub),
		claimed:  make(map[job.ID]*journalSub),
	}, nil
}

// run reads the journal until it ends, routing entries to subscriptions.
func (s *journalSource) run() {
	for {
		e, err := s.w.Next()
		if err != nil {
			if err == io.EOF { //nolint:errorlint // Next returns io.EOF itself at the end
				// the service ended the journal (job.JournalWatch.Next
				// reports a lost connection as flux.ErrDisconnected,
				// which wraps the socket's io.EOF: hence ==)
				err = fmt.Errorf("fluxbridge: the events journal ended: %w", io.ErrUnexpectedEOF)
			}
			s.fail(err)
			s.w.Close()
			if !s.closing.Load() && s.onFail != nil {
				s.onFail(err)
			}
			return
		}
		s.once.Do(func() { close(s.ready) })
		s.dispatch(e)
	}
}

// waitReady waits until the journal answered (its backlog or sentinel,
// proof that the service accepted the request) and returns its error if it
// failed instead, e.g. EPERM for a user who is not the instance owner.
func (s *journalSource) waitReady(ctx context.Context) error {
	select {
	case <-s.ready:
	case <-ctx.Done():
		return fmt.Errorf("fluxbridge: waiting for the events journal: %w", ctx.Err())
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

func (s *journalSource) dispatch(e job.JournalEntry) {
	s.mu.Lock()
	seq := s.seq
	s.seq++
	if e.Sentinel || len(e.Events) == 0 {
		s.mu.Unlock()
		return
	}
	if sub, ok := s.subs[e.ID]; ok {
		for ; sub != nil; sub = sub.next {
			sub.push(e.Events, nil)
		}
		s.mu.Unlock()
		return
	}
	if o, ok := s.orphans[e.ID]; ok {
		o.events = append(o.events, e.Events...)
	} else if len(s.inflight) > 0 && e.Events[0].Name == "submit" {
		s.orphans[e.ID] = &journalOrphan{firstSeq: seq, events: append([]job.Event(nil), e.Events...)}
	}
	s.mu.Unlock()
}

// fail ends every subscription with err; later ones fail at once.
func (s *journalSource) fail(err error) {
	s.mu.Lock()
	if s.err == nil {
		s.err = err
	}
	s.once.Do(func() { close(s.ready) })
	subs := make([]*journalSub, 0, len(s.subs)+len(s.claimed))
	for _, sub := range s.subs {
		for ; sub != nil; sub = sub.next {
			subs = append(subs, sub)
		}
	}
	s.mu.Unlock()
	for _, sub := range subs {
		sub.push(nil, err)
	}
}

// close stops the journal stream; the reader then fails what is left.
// close releases one worker's use; the last one stops the journal.
func (s *journalSource) close() {
	s.mu.Lock()
	s.users--
	last := s.users <= 0
	s.mu.Unlock()
	if last {
		s.closing.Store(true)
		s.cancel()
	}
}

func (s *journalSource) beginSubmit() func(job.ID, bool) {
	s.mu.Lock()
	t := &submitTicket{startSeq: s.seq}
	s.inflight[t] = struct{}{}
	s.mu.Unlock()
	return func(id job.ID, ok bool) {
		s.mu.Lock()
		defer s.mu.Unlock()
		delete(s.inflight, t)
		if ok {
			sub := newJournalSub()
			if o, found := s.orphans[id]; found {
				delete(s.orphans, id)
				sub.push(o.events, nil)
			}
			if s.err != nil {
				sub.push(nil, s.err)
			}
			s.addLocked(id, sub)
			s.claimed[id] = sub
		}
		s.pruneLocked()
	}
}

// pruneLocked drops orphans that no in-flight submission can own: those
// first read before the oldest in-flight submission was sent.
func (s *journalSource) pruneLocked() {
	if len(s.orphans) == 0 {
		return
	}
	if len(s.inflight) == 0 {
		clear(s.orphans)
		return
	}
	min := ^uint64(0)
	for t := range s.inflight {
		if t.startSeq < min {
			min = t.startSeq
		}
	}
	for id, o := range s.orphans {
		if o.firstSeq < min {
			delete(s.orphans, id)
		}
	}
}

func (s *journalSource) addLocked(id job.ID, sub *journalSub) {
	sub.next = s.subs[id]
	s.subs[id] = sub
}

func (s *journalSource) removeLocked(id job.ID, sub *journalSub) {
	head := s.subs[id]
	if head == sub {
		if sub.next == nil {
			delete(s.subs, id)
		} else {
			s.subs[id] = sub.next
		}
		return
	}
	for p := head; p != nil; p = p.next {
		if p.next == sub {
			p.next = sub.next
			return
		}
	}
}

func (s *journalSource) follow(ctx context.Context, id job.ID, attach bool, deliver func(job.Event)) error {
	s.mu.Lock()
	sub, ok := s.claimed[id]
	if ok {
		delete(s.claimed, id)
	} else {
		sub = newJournalSub()
		if s.err != nil {
			sub.push(nil, s.err)
		}
		s.addLocked(id, sub)
	}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.removeLocked(id, sub)
		s.mu.Unlock()
	}()

	var known []job.Event // the eventlog read at attach, for skipping duplicates
	aligned := -1         // index in known of the last duplicate skipped
	live := !attach
	if attach {
		evs, err := lookupEventlog(ctx, s.conn, id)
		if err != nil {
			return err
		}
		for _, ev := range evs {
			if !IsEvent(ev.Name) {
				continue
			}
			known = append(known, ev)
			deliver(ev)
			if ev.Name == "clean" {
				return nil
			}
		}
	}
	for {
		evs, err := sub.take()
		for _, ev := range evs {
			if !live {
				if i := matchEvent(known, aligned, ev); i >= 0 {
					aligned = i
					continue
				}
				live = true
			}
			deliver(ev)
			if ev.Name == "clean" {
				return nil
			}
		}
		if err != nil {
			return err
		}
		select {
		case <-sub.signal:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// matchEvent returns the index in known of ev, an event received from the
// journal that the eventlog read at attach may already have contained,
// or -1. After a first match (aligned ≥ 0) only the next position matches.
func matchEvent(known []job.Event, aligned int, ev job.Event) int {
	same := func(a job.Event) bool {
		return a.Name == ev.Name && a.Timestamp == ev.Timestamp && reflect.DeepEqual(a.Context, ev.Context)
	}
	if aligned >= 0 {
		if aligned+1 < len(known) && same(known[aligned+1]) {
			return aligned + 1
		}
		return -1
	}
	for i, k := range known {
		if same(k) {
			return i
		}
	}
	return -1
}

// lookupEventlog reads a job's main eventlog once (job-info.lookup,
// flux-core src/modules/job-info/lookup.c). An unknown job is an error
// matching syscall.ENOENT.
func lookupEventlog(ctx context.Context, c *flux.Conn, id job.ID) ([]job.Event, error) {
	req := struct {
		ID    job.ID   `json:"id"`
		Keys  []string `json:"keys"`
		Flags int      `json:"flags"`
	}{ID: id, Keys: []string{"eventlog"}, Flags: 0}
	var resp struct {
		Eventlog string `json:"eventlog"`
	}
	if err := c.RPC(ctx, "job-info.lookup", req, &resp); err != nil {
		return nil, fmt.Errorf("fluxbridge: reading the eventlog of job %s: %w", id, err)
	}
	evs, err := job.ParseEventlog([]byte(resp.Eventlog))
	if err != nil {
		return nil, fmt.Errorf("fluxbridge: eventlog of job %s: %w", id, err)
	}
	return evs, nil
}
