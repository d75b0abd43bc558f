package testbroker

import (
	"context"
	"encoding/base64"
	"strconv"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
)

// OutputChunk is bytes a job's tasks write to one stream, At after the job
// started (before Options.TimeScale). Every task of the job writes it (a
// command runs once per task), so a job of N tasks gets N data events per
// chunk, ranks 0 to N-1.
type OutputChunk struct {
	At     time.Duration
	Stream string // "stdout" or "stderr"
	Data   []byte
}

// jobOutput is a job's simulated output eventlog (guest.output, RFC 24),
// as flux-core's job shell writes it (src/shell/output/kvs.c, task.c):
// a header when the shell starts, a data event per line a task writes, an
// eof data event per task and stream when the task exits. It ends (its
// watchers get ENODATA) when the job's guest namespace would be moved to
// the job's directory: at release, or at clean for a job that never ran.
type jobOutput struct {
	events   []event
	watchers []*watch
	started  bool
	closed   bool // the tasks exited: no more data
	ended    bool // the eventlog is complete
	ntasks   int
	t0       time.Time     // when the shell started (real time)
	pending  []OutputChunk // not yet written, by At
	stop     chan struct{} // closed with closed, ends the writer goroutine
}

// postOutputLocked appends an entry to j's output eventlog and sends it to
// its watchers.
func (s *Server) postOutputLocked(j *jobRecord, name string, ctx obj) {
	ts := s.timestamp()
	if n := len(j.output.events); n > 0 && ts < j.output.events[n-1].ts {
		ts = j.output.events[n-1].ts
	}
	line, err := appendEventLine(make([]byte, 0, 96), ts, name, ctx)
	if err != nil {
		s.log.Error(err, "encode output event", "id", j.id, "name", name)
		return
	}
	j.output.events = append(j.output.events, event{ts: ts, name: name, ctx: ctx, line: line})
	e := &j.output.events[len(j.output.events)-1]
	for _, w := range j.output.watchers {
		s.sendEventLocked(w, e)
	}
}

// startOutputLocked runs when j's shell starts: the header, the output due
// at once, and a goroutine for the output due later.
func (s *Server) startOutputLocked(ctx context.Context, j *jobRecord, out Outcome) {
	o := &j.output
	o.started, o.ntasks, o.t0 = true, max(j.ntasks, 1), time.Now()
	s.postOutputLocked(j, "header", obj{
		{"version", 1},
		{"encoding", obj{{"stdout", "UTF-8"}, {"stderr", "UTF-8"}}},
		{"count", obj{{"stdout", o.ntasks}, {"stderr", o.ntasks}}},
		{"options", obj{}},
	})
	// a sentinel asked for before the shell started comes once the
	// eventlog exists (guest_watch.c)
	for _, w := range o.watchers {
		if w.sentinel {
			s.respond(w.c, w.req, nil)
			w.sentinel = false
		}
	}
	o.pending = append([]OutputChunk(nil), out.Output...)
	s.writeDueOutputLocked(j, time.Now())
	if len(o.pending) == 0 {
		return
	}
	o.stop = make(chan struct{})
	s.jobWG.Add(1)
	go s.writeOutput(ctx, j, o.stop)
}

// writeOutput writes j's pending output at its times until the tasks exit.
func (s *Server) writeOutput(ctx context.Context, j *jobRecord, stop <-chan struct{}) {
	defer s.jobWG.Done()
	for {
		s.mu.Lock()
		if j.output.closed || len(j.output.pending) == 0 {
			s.mu.Unlock()
			return
		}
		due := j.output.t0.Add(s.opts.scale(j.output.pending[0].At))
		s.mu.Unlock()
		t := time.NewTimer(time.Until(due))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-stop:
			t.Stop()
			return
		case <-t.C:
		}
		s.mu.Lock()
		if !j.output.closed {
			s.writeDueOutputLocked(j, time.Now())
		}
		s.mu.Unlock()
	}
}

// writeDueOutputLocked writes the pending chunks due by now.
func (s *Server) writeDueOutputLocked(j *jobRecord, now time.Time) {
	o := &j.output
	n := 0
	for n < len(o.pending) && !o.t0.Add(s.opts.scale(o.pending[n].At)).After(now) {
		c := o.pending[n]
		for rank := 0; rank < o.ntasks; rank++ {
			s.postOutputLocked(j, "data", dataContext(c.Stream, rank, c.Data))
		}
		n++
	}
	o.pending = o.pending[n:]
}

// dataContext is a data event's context as flux-core's ioencode makes it
// (src/common/libioencode/ioencode.c): the bytes as a JSON string when
// they are valid UTF-8, else base64 with "encoding":"base64".
func dataContext(stream string, rank int, data []byte) obj {
	r := strconv.Itoa(rank)
	if utf8.Valid(data) {
		return obj{{"stream", stream}, {"rank", r}, {"data", string(data)}}
	}
	return obj{{"stream", stream}, {"rank", r}, {"encoding", "base64"}, {"data", base64.StdEncoding.EncodeToString(data)}}
}

// closeOutputLocked runs when j's tasks have exited (before finish): a
// task that exited normally wrote all its output, a killed one only what
// was due; then each task's eof on both streams.
func (s *Server) closeOutputLocked(j *jobRecord, exitedNormally bool) {
	o := &j.output
	if !o.started || o.closed {
		return
	}
	now := time.Now()
	if exitedNormally {
		now = now.Add(forever)
	}
	s.writeDueOutputLocked(j, now)
	o.pending = nil
	o.closed = true
	if o.stop != nil {
		close(o.stop)
	}
	for rank := 0; rank < o.ntasks; rank++ {
		for _, stream := range []string{"stdout", "stderr"} {
			s.postOutputLocked(j, "data", obj{{"stream", stream}, {"rank", strconv.Itoa(rank)}, {"eof", true}})
		}
	}
}

// execFailedOutputLocked records a task that could not start as flux-core
// 0.88's shell does (checked against a real broker): a "log" entry of
// level 0 (FATAL) with the exception's note, and no eof for the streams
// of a task that never ran.
func (s *Server) execFailedOutputLocked(j *jobRecord, note string) {
	o := &j.output
	if !o.started || o.closed {
		return
	}
	s.postOutputLocked(j, "log", obj{{"rank", 0}, {"level", 0}, {"message", note}, {"file", "shell.c"}, {"line", 2036}})
	o.pending = nil
	o.closed = true
	if o.stop != nil {
		close(o.stop)
	}
}

// endOutputLocked completes j's output eventlog: its watchers get ENODATA.
func (s *Server) endOutputLocked(j *jobRecord) {
	o := &j.output
	if o.ended {
		return
	}
	o.ended = true
	if o.stop != nil && !o.closed {
		close(o.stop)
		o.closed = true
	}
	for _, w := range o.watchers {
		s.respondError(w.c, w.req, &rpcError{errno: syscall.ENODATA})
	}
	o.watchers = nil
}

// startOutputWatchLocked serves a job-info.eventlog-watch of guest.output:
// the entries so far, then new ones until the eventlog is complete. Like
// job-info's guest watch (src/modules/job-info/guest_watch.c), it waits for
// a job that has not started, and ends with ENODATA, without events, for a
// job that ended without starting; the initial sentinel comes after the
// entries that exist once the shell started.
func (s *Server) startOutputWatchLocked(j *jobRecord, w *watch) {
	if !authorize(w.req, j) {
		s.respondError(w.c, w.req, &rpcError{errno: syscall.EPERM})
		return
	}
	for i := range j.output.events {
		s.sendEventLocked(w, &j.output.events[i])
	}
	if w.sentinel && j.output.started {
		s.respond(w.c, w.req, nil)
		w.sentinel = false
	}
	if j.output.ended {
		s.respondError(w.c, w.req, &rpcError{errno: syscall.ENODATA})
		return
	}
	j.output.watchers = append(j.output.watchers, w)
}

// outputWatchPath is the only eventlog besides the main one the test
// double keeps.
const outputWatchPath = job.OutputPath
