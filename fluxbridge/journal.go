package fluxbridge

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"reflect"
	"sync"
	"sync/atomic"

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
	cancel func()        // cancels the journal stream at the service
	ready  chan struct{} // closed at the first entry or failure
	// onFail is called when the journal fails other than by close: the
	// worker cannot follow its jobs any more.
	onFail  func(error)
	closing atomic.Bool
	once    sync.Once

	// mu guards everything below and serialises deliveries: events reach
	// a job's future under mu, from the journal's reader goroutine or,
	// for an attached job, from the reader goroutine that got its
	// eventlog. Nothing called under mu calls back into the source.
	mu       sync.Mutex
	users    int32                      // workers that have not released the source yet
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

// journalSub is one followed job. Its fields are guarded by
// journalSource.mu.
type journalSub struct {
	id   job.ID
	next *journalSub // another subscription to the same job

	fl   follower    // nil until follow
	held []job.Event // events not delivered yet: before follow, or while replaying
	err  error       // the journal failed before follow
	done bool        // end was called (or is due at follow)

	// An attached job's eventlog is read once (replaying) and the journal
	// events it already contained are skipped: known is that eventlog,
	// aligned the index of the last skipped one; live means no more
	// skipping.
	replaying bool
	known     []job.Event
	aligned   int
	live      bool
}

// journalEvents is the journal's allow filter: only the events a Future
// exposes.
func journalEvents() []string {
	names := make([]string, 0, len(Events))
	for n := range Events {
		names = append(names, n)
	}
	return names
}

// newJournalSource opens the journal stream on c (its responses are
// handled on c's reader goroutine); ctx bounds the opening only. The
// stream lives until the last of users workers calls close.
func newJournalSource(ctx context.Context, c *flux.Conn, users int, onFail func(error)) (*journalSource, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s := &journalSource{
		ready:    make(chan struct{}),
		users:    int32(users),
		conn:     c,
		onFail:   onFail,
		inflight: make(map[*submitTicket]struct{}),
		orphans:  make(map[job.ID]*journalOrphan),
		subs:     make(map[job.ID]*journalSub),
		claimed:  make(map[job.ID]*journalSub),
	}
	cancel, err := job.StartJournal(context.Background(), c, job.JournalOptions{Allow: journalEvents()}, s.handle)
	if err != nil {
		return nil, fmt.Errorf("fluxbridge: opening the events journal: %w", err)
	}
	s.mu.Lock()
	s.cancel = cancel
	s.mu.Unlock()
	return s, nil
}

// handle receives the journal's entries and its end.
func (s *journalSource) handle(e job.JournalEntry, err error) {
	if err != nil {
		if err == io.EOF { //nolint:errorlint // StartJournal ends with io.EOF itself
			// the service ended the journal (a lost connection is an
			// error matching flux.ErrDisconnected, which wraps the
			// socket's io.EOF: hence ==)
			err = fmt.Errorf("fluxbridge: the events journal ended: %w", io.ErrUnexpectedEOF)
		}
		s.fail(err)
		if !s.closing.Load() && s.onFail != nil {
			s.onFail(err)
		}
		return
	}
	s.once.Do(func() { close(s.ready) })
	s.dispatch(e)
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
	defer s.mu.Unlock()
	seq := s.seq
	s.seq++
	if e.Sentinel || len(e.Events) == 0 {
		return
	}
	if sub, ok := s.subs[e.ID]; ok {
		for sub != nil {
			next := sub.next // pushLocked may unlink sub
			s.pushLocked(sub, e.Events)
			sub = next
		}
		return
	}
	if o, ok := s.orphans[e.ID]; ok {
		for _, ev := range e.Events {
			o.events = appendBounded(o.events, ev, maxHeldEvents)
		}
	} else if len(s.inflight) > 0 && e.Events[0].Name == job.EventSubmit && len(s.orphans) < maxJournalOrphans {
		o := &journalOrphan{firstSeq: seq}
		for _, ev := range e.Events {
			o.events = appendBounded(o.events, ev, maxHeldEvents)
		}
		s.orphans[e.ID] = o
	}
}

// pushLocked delivers evs to sub, or holds them until it can, skipping
// what a replayed eventlog already delivered; "clean" ends sub.
func (s *journalSource) pushLocked(sub *journalSub, evs []job.Event) {
	for _, ev := range evs {
		if sub.done {
			return
		}
		if !IsDelivered(ev.Name) {
			continue
		}
		if sub.fl == nil || sub.replaying {
			sub.held = appendBounded(sub.held, ev, maxHeldEvents)
			continue
		}
		if !sub.live {
			if i := matchEvent(sub.known, sub.aligned, ev); i >= 0 {
				sub.aligned = i
				continue
			}
			sub.live = true
		}
		sub.fl.deliver(ev)
		if ev.Name == job.EventClean {
			s.finishLocked(sub, nil)
		}
	}
}

// finishLocked ends sub: it stops being followed and its end is called
// (at follow, if not followed yet).
func (s *journalSource) finishLocked(sub *journalSub, err error) {
	if sub.done {
		return
	}
	if sub.fl == nil {
		if sub.err == nil {
			sub.err = err
		}
		return
	}
	sub.done = true
	s.removeLocked(sub.id, sub)
	sub.known, sub.held = nil, nil
	sub.fl.end(err)
}

// fail ends every subscription with err; later ones fail at once.
func (s *journalSource) fail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err == nil {
		s.err = err
	}
	s.once.Do(func() { close(s.ready) })
	var subs []*journalSub
	for _, sub := range s.subs {
		for ; sub != nil; sub = sub.next {
			subs = append(subs, sub)
		}
	}
	for _, sub := range subs {
		if sub.fl != nil && !sub.replaying {
			held := sub.held
			sub.held = nil
			s.pushLocked(sub, held)
		}
		s.finishLocked(sub, err)
	}
}

// close releases one worker's use; the last one stops the journal and
// closes its connection (the first worker's, which therefore outlives
// that worker if others still follow jobs), which fails what is left.
func (s *journalSource) close() {
	s.mu.Lock()
	s.users--
	last := s.users <= 0
	cancel := s.cancel
	s.mu.Unlock()
	if last {
		s.closing.Store(true)
		if cancel != nil {
			cancel()
		}
		s.conn.Close()
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
			sub := &journalSub{id: id}
			if o, found := s.orphans[id]; found {
				delete(s.orphans, id)
				s.pushLocked(sub, o.events)
			}
			if s.err != nil {
				sub.err = s.err
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

func (s *journalSource) follow(id job.ID, attach bool, fl follower) {
	s.mu.Lock()
	sub, ok := s.claimed[id]
	if ok {
		delete(s.claimed, id)
	} else {
		sub = &journalSub{id: id, err: s.err}
		s.addLocked(id, sub)
	}
	sub.fl = fl
	if !attach {
		sub.live = true
		s.releaseLocked(sub)
		s.mu.Unlock()
		return
	}
	// Attached: live events are held while the eventlog is read.
	sub.replaying, sub.aligned = true, -1
	s.mu.Unlock()
	err := startLookupEventlog(s.conn, id, func(evs []job.Event, err error) {
		s.mu.Lock()
		defer s.mu.Unlock()
		if err != nil {
			sub.replaying = false
			sub.held = nil
			sub.err = nil
			s.finishLocked(sub, err)
			return
		}
		for _, ev := range evs {
			if sub.done {
				return
			}
			if !IsDelivered(ev.Name) {
				continue
			}
			sub.known = append(sub.known, ev)
			fl.deliver(ev)
			if ev.Name == job.EventClean {
				s.finishLocked(sub, nil)
				return
			}
		}
		sub.replaying = false
		s.releaseLocked(sub)
	})
	if err != nil {
		s.mu.Lock()
		sub.replaying = false
		sub.err = nil
		s.finishLocked(sub, err)
		s.mu.Unlock()
	}
}

// releaseLocked delivers what sub held and ends it if the journal failed
// meanwhile.
func (s *journalSource) releaseLocked(sub *journalSub) {
	held := sub.held
	sub.held = nil
	s.pushLocked(sub, held)
	if err := sub.err; err != nil {
		sub.err = nil
		s.finishLocked(sub, err)
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

// startLookupEventlog reads a job's main eventlog once (job-info.lookup,
// flux-core src/modules/job-info/lookup.c) and calls h with its events
// or the error, on c's reader goroutine. An unknown job is an error
// matching syscall.ENOENT. If it returns an error, h is not called.
func startLookupEventlog(c *flux.Conn, id job.ID, h func([]job.Event, error)) error {
	req := struct {
		ID    job.ID   `json:"id"`
		Keys  []string `json:"keys"`
		Flags int      `json:"flags"`
	}{ID: id, Keys: []string{"eventlog"}, Flags: 0}
	err := c.StartRPC(context.Background(), "job-info.lookup", req, func(p []byte, err error) {
		if err != nil {
			h(nil, fmt.Errorf("fluxbridge: reading the eventlog of job %s: %w", id, err))
			return
		}
		var resp struct {
			Eventlog string `json:"eventlog"`
		}
		if err := json.Unmarshal(p, &resp); err != nil {
			h(nil, fmt.Errorf("fluxbridge: reading the eventlog of job %s: %w", id, err))
			return
		}
		evs, err := job.ParseEventlog([]byte(resp.Eventlog))
		if err != nil {
			h(nil, fmt.Errorf("fluxbridge: eventlog of job %s: %w", id, err))
			return
		}
		h(evs, nil)
	})
	if err != nil {
		return fmt.Errorf("fluxbridge: reading the eventlog of job %s: %w", id, err)
	}
	return nil
}
