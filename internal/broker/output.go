package broker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"

	"k8s.io/apimachinery/pkg/types"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
)

// The output tail (status.output) is read once per job, when the job has
// ended: the controller holds back the FluxJob's final status write until
// the job's clean event, then ReadOutput reads the job's output eventlog
// (guest.output) to its end on the instance's control connection, keeping
// only the last tailBytes of each stream. No stream is open while the job
// runs; the cost is one eventlog read per job that started, bounded by a
// deadline.
//
// Only after "clean" is the read started: flux-core 0.88's job-info has a
// race for a watch that starts after the job's guest namespace was removed
// but before "release" is in the main eventlog: it waits for the namespace
// to be created again, for ever (checked against a real broker; see
// test/realflux TestOutput). After "clean" it streams the stored eventlog
// and ends.

// ReadOutput returns the output tails of the ended job v follows (ref's
// FluxJob on rt), reading them once: the first call after the job's clean
// event starts the read; until it is over (ended, failed, or past timeout
// counted from the first call) ReadOutput returns nil and how long to wait
// (the read's end also pokes the reconciler). It returns nil and 0 when v
// is no longer ref's current future.
func (t *Tracker) ReadOutput(ctx context.Context, rt Route, uid types.UID, key types.NamespacedName, v *View, tailBytes int, timeout time.Duration, now time.Time) (*fluxjobv1.FluxJobOutput, time.Duration) {
	c := t.outputCollector(uid, v.Token, func() *outputCollector {
		return newOutputCollector(tailBytes, now.Add(timeout))
	})
	if c == nil {
		return nil, 0
	}
	if v.Summary().Clean() && c.markStarted() {
		if err := t.startOutputRead(ctx, rt, key, v, c); err != nil {
			c.handle(job.OutputEvent{}, err)
		}
	}
	out, over := c.result(now)
	if !over {
		return nil, c.deadline.Sub(now)
	}
	c.stop()
	return out, 0
}

// startOutputRead starts following the job's output eventlog on rt's
// control connection; its end pokes the reconciler about key.
func (t *Tracker) startOutputRead(ctx context.Context, rt Route, key types.NamespacedName, v *View, c *outputCollector) error {
	_, ctl, err := rt.Get()
	if err != nil {
		return err
	}
	return startOutputWatch(ctx, ctl, job.ID(v.JobID), c, func() { t.Poke(key) })
}

// tail keeps the last max bytes written to it and counts them all.
type tail struct {
	max   int
	buf   []byte
	total int64
}

func (t *tail) write(p []byte) {
	t.total += int64(len(p))
	if len(p) >= t.max {
		t.buf = append(t.buf[:0], p[len(p)-t.max:]...)
		return
	}
	if len(t.buf)+len(p) > 2*t.max {
		// keep the buffer within 2*max: drop what can no longer be
		// in the tail
		keep := t.max - len(p)
		t.buf = append(t.buf[:0], t.buf[len(t.buf)-keep:]...)
	}
	t.buf = append(t.buf, p...)
}

// bytes returns the last max bytes.
func (t *tail) bytes() []byte {
	if len(t.buf) > t.max {
		return t.buf[len(t.buf)-t.max:]
	}
	return t.buf
}

// renderTail makes a tail a valid UTF-8 string of at most max bytes: bytes
// that are not valid UTF-8 become \xNN escapes, the partial character a
// cut may have left at the start is dropped, and if escaping made it
// longer than max its oldest characters go.
func renderTail(raw []byte, max int, cut bool) string {
	if cut {
		// a cut tail may start inside a character
		for i := 0; i < 3 && len(raw) > 0 && !utf8.RuneStart(raw[0]); i++ {
			raw = raw[1:]
		}
	}
	if utf8.Valid(raw) {
		return string(raw)
	}
	var units []string // characters and escapes, oldest first
	n := 0
	for len(raw) > 0 {
		r, size := utf8.DecodeRune(raw)
		u := string(raw[:size])
		if r == utf8.RuneError && size == 1 {
			u = fmt.Sprintf(`\x%02x`, raw[0])
		}
		units = append(units, u)
		n += len(u)
		raw = raw[size:]
	}
	i := 0
	for n > max && i < len(units) {
		n -= len(units[i])
		i++
	}
	return strings.Join(units[i:], "")
}

// outputCollector reads one job's output eventlog into tails. Its handler
// runs on the connection's reader goroutine; the reconciler reads it.
type outputCollector struct {
	mu        sync.Mutex
	stdout    tail
	stderr    tail
	redirects []string
	done      bool
	err       error
	deadline  time.Time
	cancel    func()
	// started is set once the read was started (after the job's clean
	// event).
	started bool
}

// markStarted reports whether the read is to be started now (only once).
func (c *outputCollector) markStarted() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.started {
		return false
	}
	c.started = true
	return true
}

func newOutputCollector(tailBytes int, deadline time.Time) *outputCollector {
	return &outputCollector{stdout: tail{max: tailBytes}, stderr: tail{max: tailBytes}, deadline: deadline}
}

// handle records one output event or the end of the eventlog.
func (c *outputCollector) handle(ev job.OutputEvent, err error) (ended bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done {
		return false
	}
	if err != nil {
		c.done = true
		if !errors.Is(err, io.EOF) {
			c.err = err
		}
		return true
	}
	switch {
	case ev.Data != nil && len(ev.Data.Data) > 0:
		if ev.Data.Stream == job.Stdout {
			c.stdout.write(ev.Data.Data)
		} else {
			c.stderr.write(ev.Data.Data)
		}
	case ev.Log != nil:
		c.stderr.write([]byte(ev.Log.String() + "\n"))
	case ev.Redirect != nil:
		c.redirects = append(c.redirects, fmt.Sprintf("%s of tasks %s went to %s", ev.Redirect.Stream, ev.Redirect.Rank, ev.Redirect.Path))
	}
	return false
}

// stop cancels the watch if it still runs.
func (c *outputCollector) stop() {
	c.mu.Lock()
	cancel := c.cancel
	c.cancel = nil
	c.mu.Unlock()
	if cancel != nil {
		cancel()
	}
}

// result returns the status output and whether the read is over (ended,
// failed, or past its deadline at now).
func (c *outputCollector) result(now time.Time) (*fluxjobv1.FluxJobOutput, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.done && now.Before(c.deadline) {
		return nil, false
	}
	out := &fluxjobv1.FluxJobOutput{
		Stdout:      renderTail(c.stdout.bytes(), c.stdout.max, c.stdout.total > int64(len(c.stdout.bytes()))),
		Stderr:      renderTail(c.stderr.bytes(), c.stderr.max, c.stderr.total > int64(len(c.stderr.bytes()))),
		StdoutBytes: c.stdout.total,
		StderrBytes: c.stderr.total,
	}
	msgs := append([]string(nil), c.redirects...)
	switch {
	case c.err != nil:
		msgs = append(msgs, "output incomplete: "+c.err.Error())
	case !c.done && !c.started:
		msgs = append(msgs, "output not read: the job was not cleaned up in time")
	case !c.done:
		msgs = append(msgs, "output incomplete: the output eventlog did not end in time")
	}
	out.Message = fluxjobv1.Clip(strings.Join(msgs, "; "), fluxjobv1.MaxOutputMessageLength)
	return out, true
}

// outputCollector returns the collector of uid's current future, creating
// it with mk if there is none; nil if uid is not tracked under token.
func (t *Tracker) outputCollector(uid types.UID, token uint64, mk func() *outputCollector) *outputCollector {
	t.mu.Lock()
	defer t.mu.Unlock()
	tr, ok := t.jobs[uid]
	if !ok || tr.obs.Token != token {
		return nil
	}
	if tr.out == nil {
		tr.out = mk()
	}
	return tr.out
}

// dropOutput stops and forgets the output read of a tracked entry that is
// being replaced or forgotten.
func (tr *tracked) dropOutput() {
	if tr.out != nil {
		tr.out.stop()
		tr.out = nil
	}
}

// startOutputWatch starts c's watch of id's output on conn; ended runs
// once when the eventlog ended or failed.
func startOutputWatch(ctx context.Context, conn *flux.Conn, id job.ID, c *outputCollector, ended func()) error {
	// the watch outlives this reconcile: only the deadline and stop end it
	watchCtx := context.WithoutCancel(ctx)
	cancel, err := job.StartWatchOutput(watchCtx, conn, id, job.OutputOptions{}, func(ev job.OutputEvent, err error) {
		if c.handle(ev, err) {
			ended()
		}
	})
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.cancel = cancel
	c.mu.Unlock()
	return nil
}
