package job

import (
	"context"
	"errors"
	"io"
	"sync"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux"
)

// FollowOutput reads job id's output eventlog as WatchOutput does, handing
// each event to h on the calling goroutine, until the eventlog ends (nil),
// until the initial sentinel with opts.Sentinel (nil; the sentinel is not
// passed to h), until h returns an error (that error), or until ctx ends.
//
// Unlike a bare WatchOutput it always ends once the job is inactive.
// flux-core 0.88's job-info (src/modules/job-info/guest_watch.c) serves a
// guest.output watch from the job's guest KVS namespace while the main
// eventlog has "start" but no "release" with final=true; a watch that
// starts in the moment after job-exec removed that namespace (it has moved
// the output into the job's directory) and before the job manager posted
// "release" asks kvs-watch to wait for the namespace to be created again,
// which never happens: the watch neither sends nor ends. That moment is
// short, but a reader that starts as another one ended lands in it every
// time (test/realflux TestFollowOutputGap). So FollowOutput also follows
// the job's main eventlog; when that ends (after "clean", i.e. release is
// in it) while the output watch has not, it starts the output watch again,
// now served from the job's directory, and skips the entries h already
// had (the eventlog only grows, so the count identifies them).
func FollowOutput(ctx context.Context, c *flux.Conn, id ID, opts OutputOptions, h func(OutputEvent) error) error {
	inactive := make(chan struct{})
	var once sync.Once
	stopEvents, err := StartWatchEvents(ctx, c, id, WatchOptions{}, func(_ Event, err error) {
		if err != nil {
			once.Do(func() { close(inactive) })
		}
	})
	if err != nil {
		return err
	}
	defer stopEvents()
	delivered := 0
	for restart := inactive; ; restart = nil {
		q := &outputQueue{notify: make(chan struct{}, 1)}
		stop, err := StartWatchOutput(ctx, c, id, opts, q.push)
		if err != nil {
			return err
		}
		again, err := q.drain(ctx, restart, delivered, func(ev OutputEvent) error {
			delivered++
			return h(ev)
		})
		stop()
		if !again {
			return err
		}
	}
}

// outputQueue takes the events of one output watch from the connection's
// reader goroutine (which must not block) to FollowOutput's.
type outputQueue struct {
	mu     sync.Mutex
	evs    []OutputEvent
	end    error // io.EOF or the watch's error, once ended
	notify chan struct{}
}

func (q *outputQueue) push(ev OutputEvent, err error) {
	q.mu.Lock()
	if err != nil {
		q.end = err
	} else {
		q.evs = append(q.evs, ev)
	}
	q.mu.Unlock()
	select {
	case q.notify <- struct{}{}:
	default:
	}
}

func (q *outputQueue) take() ([]OutputEvent, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	evs := q.evs
	q.evs = nil
	return evs, q.end
}

// drain hands the watch's events after the first skip to h until the
// watch ends, the sentinel comes or h fails (again false), or restart is
// closed first (again true: start the watch again).
func (q *outputQueue) drain(ctx context.Context, restart <-chan struct{}, skip int, h func(OutputEvent) error) (again bool, err error) {
	for {
		evs, end := q.take()
		for _, ev := range evs {
			switch {
			case ev.Sentinel:
				return false, nil
			case skip > 0:
				skip--
				continue
			}
			if err := h(ev); err != nil {
				return false, err
			}
		}
		if end != nil {
			if errors.Is(end, io.EOF) {
				return false, nil
			}
			return false, end
		}
		select {
		case <-q.notify:
		case <-restart:
			return true, nil
		case <-ctx.Done():
			return false, ctx.Err()
		}
	}
}
