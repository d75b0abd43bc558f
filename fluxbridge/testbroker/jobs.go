package testbroker

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
)

// Job states (RFC 21; flux-core src/common/libjob/job.h FLUX_JOB_STATE_*).
const (
	stateNewJob   = 1
	stateDepend   = 2
	statePriority = 4
	stateSched    = 8
	stateRun      = 16
	stateCleanup  = 32
	stateInactive = 64

	statePending = stateDepend | statePriority | stateSched
	stateRunning = stateRun | stateCleanup
)

// Job results (flux-core FLUX_JOB_RESULT_*).
const (
	resultCompleted = 1
	resultFailed    = 2
	resultCanceled  = 4
	resultTimeout   = 8
)

// Submit flags (flux-core src/common/libjob/job.h FLUX_JOB_*).
const (
	flagPreSigned  = 1
	flagDebug      = 2
	flagWaitable   = 4
	flagNoValidate = 8
)

// Urgency limits and the priorities the default priority plugin gives them
// (src/modules/job-manager/prioritize.c, priority-default.c).
const (
	urgencyMin      = 0
	urgencyHold     = 0
	urgencyDefault  = 16
	urgencyMax      = 31
	urgencyExpedite = 31
	priorityMax     = 4294967295
)

// event is one eventlog entry. line is its JSON encoding (no newline).
type event struct {
	ts   float64
	name string
	ctx  obj
	line []byte
	// watchPayload is the job-info.eventlog-watch response payload for
	// the event, made on first use (guarded by Server.mu).
	watchPayload []byte
}

// jobRecord is the simulated job: what job-manager, job-info and job-list
// would each know about it.
type jobRecord struct {
	id       job.ID
	userid   uint32
	urgency  int
	flags    int
	priority int64

	// From the jobspec.
	jobspecText string // the jobspec as submitted (job-info.lookup "jobspec")
	jobspec     any    // redacted jobspec (environment removed), for the journal
	name        string
	command     []string
	ntasks      int
	ncores      int
	duration    float64
	cwd         string
	queue       string
	runDuration *time.Duration // attributes.system.exec.test.run_duration

	state      int
	statesMask int
	events     []event
	tSubmit    float64
	tDepend    float64
	tPriority  float64
	tSched     float64
	tRun       float64
	tCleanup   float64
	tInactive  float64

	hasResources bool
	cores        []int
	annotations  obj
	r            obj

	waitStatus  int // -1 until finish
	fatal       bool
	excOccurred bool
	excType     string
	excNote     string
	excSeverity int
	endEvent    *event
	result      int
	killSignal  int
	timedOut    bool

	watchers []*watch
	waiter   *stream
	// output is the job's guest.output eventlog (see output.go).
	output jobOutput

	// listedAt is when job-list lists the job (zero: at once); see
	// Options.ListLag.
	listedAt time.Time

	// dep is the job's dependencies and dependants (depend.go); nil for
	// a job that has none.
	dep *depState

	// wake is signalled when something the lifecycle goroutine waits on
	// changes: a fatal exception, a kill, an urgency change, freed cores.
	wake chan struct{}
}

func (j *jobRecord) signal() {
	select {
	case j.wake <- struct{}{}:
	default:
	}
}

func (s *Server) timestamp() float64 {
	t := s.opts.now()
	return float64(t.UnixNano()) / 1e9
}

// postLocked appends an event to j's eventlog, applies it to j's state as
// job-manager (src/modules/job-manager/event.c event_job_update) and
// job-list do, and sends it to eventlog watchers and journal listeners.
func (s *Server) postLocked(j *jobRecord, name string, ctx obj) *event {
	return s.postEventLocked(j, name, ctx, false)
}

// postJournalOnlyLocked sends an event to journal listeners without adding
// it to the eventlog (job-manager's EVENT_NO_COMMIT, e.g. "annotations").
func (s *Server) postJournalOnlyLocked(j *jobRecord, name string, ctx obj) {
	s.postEventLocked(j, name, ctx, true)
}

func (s *Server) postEventLocked(j *jobRecord, name string, ctx obj, journalOnly bool) *event {
	ts := s.timestamp()
	if n := len(j.events); n > 0 && ts < j.events[n-1].ts {
		ts = j.events[n-1].ts
	}
	e := &event{ts: ts, name: name, ctx: ctx}
	line, err := appendEventLine(make([]byte, 0, 128), ts, name, ctx)
	if err != nil {
		s.log.Error(err, "encode event", "id", j.id, "name", name)
		return e
	}
	e.line = line
	if !journalOnly {
		if j.events == nil {
			// a job's main eventlog has about ten events
			j.events = make([]event, 0, 12)
		}
		j.events = append(j.events, *e)
		e = &j.events[len(j.events)-1]
		s.applyLocked(j, e)
		s.dependencyEventLocked(j, e)
	}
	s.journalEventLocked(j, e)
	if !journalOnly {
		s.notifyWatchersLocked(j, e)
		if name == "release" || name == "clean" {
			s.endOutputLocked(j)
		}
		if name == "clean" {
			s.inactiveLocked(j)
		}
	}
	return e
}

// appendEventLine appends the eventlog entry {"timestamp":TS,"name":NAME}
// (with ,"context":CTX when ctx is not nil) to b, as
// marshal(obj{{"timestamp", real(ts)}, {"name", name}, {"context", ctx}})
// would, without building the obj.
func appendEventLine(b []byte, ts float64, name string, ctx obj) ([]byte, error) {
	b = append(b, `{"timestamp":`...)
	b, err := real(ts).appendJSON(b)
	if err != nil {
		return b, fmt.Errorf("key %q: %w", "timestamp", err)
	}
	b = append(b, `,"name":`...)
	if b, err = appendJSONString(b, name); err != nil {
		return b, err
	}
	if ctx != nil {
		b = append(b, `,"context":`...)
		if b, err = appendJSON(b, ctx); err != nil {
			return b, fmt.Errorf("key %q: %w", "context", err)
		}
	}
	return append(b, '}'), nil
}

func (j *jobRecord) setState(st int, ts float64) {
	j.state = st
	j.statesMask |= st
	switch st {
	case stateDepend:
		j.tDepend = ts
	case statePriority:
		if j.tPriority == 0 {
			j.tPriority = ts
		}
	case stateSched:
		if j.tSched == 0 {
			j.tSched = ts
		}
	case stateRun:
		j.tRun = ts
	case stateCleanup:
		j.tCleanup = ts
	case stateInactive:
		j.tInactive = ts
	}
}

// applyLocked is the RFC 21 state machine.
func (s *Server) applyLocked(j *jobRecord, e *event) {
	switch e.name {
	case "submit":
		j.tSubmit = e.ts
		j.setState(stateNewJob, e.ts)
	case "validate":
		if j.state == stateNewJob {
			j.setState(stateDepend, e.ts)
		}
	case "depend":
		if j.state == stateDepend {
			j.setState(statePriority, e.ts)
		}
	case "flux-restart":
		// src/modules/job-manager/event.c: a SCHED job goes back to
		// PRIORITY to be given its priority again.
		if j.state == stateSched {
			j.setState(statePriority, e.ts)
		}
	case "priority":
		if j.state == statePriority {
			j.setState(stateSched, e.ts)
		}
	case "alloc":
		j.hasResources = true
		if j.state == stateSched {
			j.setState(stateRun, e.ts)
		}
	case "finish":
		if j.state == stateRun {
			j.setState(stateCleanup, e.ts)
		}
		if j.endEvent == nil {
			j.endEvent = e
		}
	case "exception":
		sev := 0
		typ := ""
		for _, f := range e.ctx {
			switch f.k {
			case "severity":
				sev, _ = f.v.(int)
			case "type":
				typ, _ = f.v.(string)
			}
		}
		if sev == 0 {
			if !j.excOccurred {
				j.excOccurred = true
				j.excType = typ
				j.excSeverity = sev
				for _, f := range e.ctx {
					if f.k == "note" {
						j.excNote, _ = f.v.(string)
					}
				}
			}
			if j.state&(stateCleanup|stateInactive) == 0 {
				j.fatal = true
				j.setState(stateCleanup, e.ts)
			}
			if j.endEvent == nil {
				j.endEvent = e
			}
			j.signal()
		}
	case "clean":
		j.setState(stateInactive, e.ts)
		j.result = j.computeResult()
	}
}

// computeResult is job-list's result rule (src/modules/job-list/job_state.c).
func (j *jobRecord) computeResult() int {
	if j.excOccurred {
		switch j.excType {
		case "cancel":
			return resultCanceled
		case "timeout":
			return resultTimeout
		}
		return resultFailed
	}
	if j.waitStatus == 0 {
		return resultCompleted
	}
	return resultFailed
}

// priorityFor is the default priority plugin: priority = urgency, except
// hold (0) and expedite (31 -> max).
func priorityFor(urgency int) int64 {
	switch urgency {
	case urgencyHold:
		return 0
	case urgencyExpedite:
		return priorityMax
	}
	return int64(urgency)
}

// pauseResult says why pause returned.
type pauseResult int

const (
	pauseElapsed pauseResult = iota
	pauseInterrupted
	pauseDone
)

// pause waits d. It returns early with pauseInterrupted when the job is
// woken and stop (called under s.mu) says so, and pauseDone when ctx ends.
func (s *Server) pause(ctx context.Context, j *jobRecord, d time.Duration, stop func() bool) pauseResult {
	deadline := time.Now().Add(d)
	for {
		if stop != nil {
			s.mu.Lock()
			st := stop()
			s.mu.Unlock()
			if st {
				return pauseInterrupted
			}
		}
		left := time.Until(deadline)
		if left <= 0 {
			if ctx.Err() != nil {
				return pauseDone
			}
			return pauseElapsed
		}
		t := time.NewTimer(left)
		select {
		case <-ctx.Done():
			t.Stop()
			return pauseDone
		case <-t.C:
		case <-j.wake:
			t.Stop()
		}
	}
}

// lockLive takes s.mu unless ctx (a job goroutine's) has ended: then the
// broker that ran the job is gone (Close, Restart) and the goroutine must
// post nothing more. Restart cancels the context under s.mu.
func (s *Server) lockLive(ctx context.Context) bool {
	s.mu.Lock()
	if ctx.Err() != nil {
		s.mu.Unlock()
		return false
	}
	return true
}

// waitWake blocks until j is woken or ctx ends (false).
func waitWake(ctx context.Context, j *jobRecord) bool {
	select {
	case <-ctx.Done():
		return false
	case <-j.wake:
		return true
	}
}

// runJob drives one job through its lifecycle. It is started after the
// submit event and returns when the job is inactive or ctx ends.
func (s *Server) runJob(ctx context.Context, j *jobRecord) {
	defer s.jobWG.Done()
	d := s.opts.Delays
	fatal := func() bool { return j.fatal }

	// validate, depend, priority (src/modules/job-manager/event.c).
	// A job replayed after a restart resumes where it was.
	for _, step := range []struct {
		name  string
		delay time.Duration
		state int
	}{{"validate", d.Validate, stateNewJob}, {"depend", d.Depend, stateDepend}} {
		if !s.lockLive(ctx) {
			return
		}
		skip := j.state != step.state
		s.mu.Unlock()
		if skip {
			continue
		}
		if step.name == "depend" {
			// DEPEND: wait for the job's dependencies (depend.go).
			switch s.waitDependencies(ctx, j) {
			case pauseDone:
				return
			case pauseInterrupted:
				s.cleanupPending(ctx, j)
				return
			}
		}
		switch s.pause(ctx, j, step.delay, fatal) {
		case pauseDone:
			return
		case pauseInterrupted:
			s.cleanupPending(ctx, j)
			return
		}
		if !s.lockLive(ctx) {
			return
		}
		if j.fatal {
			s.mu.Unlock()
			s.cleanupPending(ctx, j)
			return
		}
		s.postLocked(j, step.name, nil)
		if step.name == "depend" {
			j.priority = priorityFor(j.urgency)
			s.postLocked(j, "priority", obj{{"priority", j.priority}})
		}
		s.mu.Unlock()
	}

	// SCHED: wait until not held, the sched delay has passed, and cores are
	// free.
	for {
		if !s.lockLive(ctx) {
			return
		}
		if j.fatal {
			s.mu.Unlock()
			s.cleanupPending(ctx, j)
			return
		}
		held := j.priority == 0 || s.schedPaused || s.queueStoppedLocked(j.queue)
		s.mu.Unlock()
		if held {
			if !waitWake(ctx, j) {
				return
			}
			continue
		}
		switch s.pause(ctx, j, d.Sched, func() bool { return j.fatal || j.priority == 0 || s.schedPaused || s.queueStoppedLocked(j.queue) }) {
		case pauseDone:
			return
		case pauseInterrupted:
			continue
		}
		if !s.lockLive(ctx) {
			return
		}
		if j.fatal || j.priority == 0 || s.schedPaused || s.queueStoppedLocked(j.queue) {
			s.mu.Unlock()
			continue
		}
		if j.ncores > len(s.coreUsed) {
			// The scheduler's answer to a request it can never satisfy.
			s.postLocked(j, "exception", obj{
				{"type", "alloc"}, {"severity", 0},
				{"note", "alloc denied due to type=\"unsatisfiable\""},
				{"userid", int(s.owner)},
			})
			s.mu.Unlock()
			s.cleanupPending(ctx, j)
			return
		}
		if !s.allocLocked(j) {
			s.mu.Unlock()
			if !waitWake(ctx, j) {
				return
			}
			continue
		}
		s.mu.Unlock()
		break
	}

	// RUN: start, then the command's outcome, a kill, a fatal exception or
	// the time limit, whichever comes first.
	interrupted := func() bool { return j.fatal || j.killSignal != 0 }
	switch s.pause(ctx, j, d.Start, fatal) {
	case pauseDone:
		return
	case pauseInterrupted:
		// Fatal exception before the shells started: nothing to finish.
		s.cleanupRunning(ctx, j)
		return
	}
	if !s.lockLive(ctx) {
		return
	}
	if j.fatal {
		s.mu.Unlock()
		s.cleanupRunning(ctx, j)
		return
	}
	out := s.outcome(j)
	// the shell writes its output header before the job's start event
	s.startOutputLocked(ctx, j, out)
	s.postLocked(j, "start", nil)
	s.mu.Unlock()

	if out.NotFound {
		if s.pause(ctx, j, d.Run, nil) == pauseDone {
			return
		}
		if !s.lockLive(ctx) {
			return
		}
		if !j.fatal {
			prog := ""
			if len(j.command) > 0 {
				prog = j.command[0]
			}
			// src/shell: a task that cannot be exec'd raises a fatal "exec"
			// exception (and logs it to the output eventlog); the shell
			// then exits 127.
			note := fmt.Sprintf("task 0 (host %s): start failed: %s: No such file or directory", s.opts.hostname(), prog)
			s.execFailedOutputLocked(j, note)
			s.postLocked(j, "exception", obj{
				{"type", "exec"}, {"severity", 0},
				{"note", note},
				{"userid", int(s.owner)},
			})
		}
		s.closeOutputLocked(j, false)
		s.finishLocked(j, 127<<8)
		s.mu.Unlock()
		s.cleanupRunning(ctx, j)
		return
	}

	runFor := s.opts.scale(out.Run)
	if runFor < d.Run {
		runFor = d.Run
	}
	deadline := time.Now().Add(runFor)
	var limit time.Time
	if j.duration > 0 {
		limit = time.Now().Add(s.opts.scale(time.Duration(j.duration * float64(time.Second))))
	}
	status := out.Status
	exitedNormally := true
	for {
		left := time.Until(deadline)
		if !limit.IsZero() && time.Until(limit) < left {
			left = time.Until(limit)
		}
		r := s.pause(ctx, j, max(left, 0), interrupted)
		if r == pauseDone {
			return
		}
		if !s.lockLive(ctx) {
			return
		}
		if r == pauseElapsed && !limit.IsZero() && !time.Now().Before(limit) && time.Now().Before(deadline) {
			// job-exec's time limit (src/modules/job-exec/job-exec.c).
			j.timedOut = true
			s.postLocked(j, "exception", obj{
				{"type", "timeout"}, {"severity", 0},
				{"note", "resource allocation expired"},
				{"userid", int(s.owner)},
			})
		}
		if j.fatal {
			s.mu.Unlock()
			if s.pause(ctx, j, d.Kill, nil) == pauseDone {
				return
			}
			// The shell forwards SIGTERM; tasks die; the shell reports 128+15.
			// A time limit sends SIGALRM instead (job-exec.c's timeout):
			// 128+14, as flux-core 0.88 reports a timed-out sleep.
			status, exitedNormally = (128+15)<<8, false
			if j.timedOut {
				status = (128 + 14) << 8
			}
			break
		}
		if sig := j.killSignal; sig != 0 {
			j.killSignal = 0
			if terminates(sig) {
				s.mu.Unlock()
				if s.pause(ctx, j, d.Kill, nil) == pauseDone {
					return
				}
				status, exitedNormally = (128+sig)<<8, false
				break
			}
			s.mu.Unlock()
			continue
		}
		s.mu.Unlock()
		if r == pauseElapsed && !time.Now().Before(deadline) {
			break
		}
	}
	if !s.lockLive(ctx) {
		return
	}
	s.closeOutputLocked(j, exitedNormally)
	s.finishLocked(j, status)
	s.mu.Unlock()
	s.cleanupRunning(ctx, j)
}

func (s *Server) finishLocked(j *jobRecord, status int) {
	j.waitStatus = status
	s.postLocked(j, "finish", obj{{"status", status}})
}

// cleanupPending ends a job that never got resources: clean after the
// cleanup delay.
func (s *Server) cleanupPending(ctx context.Context, j *jobRecord) {
	if s.pause(ctx, j, s.opts.Delays.Cleanup, nil) == pauseDone {
		return
	}
	if !s.lockLive(ctx) {
		return
	}
	defer s.mu.Unlock()
	s.postLocked(j, "clean", nil)
}

// cleanupRunning releases a job's resources: release, free, clean.
func (s *Server) cleanupRunning(ctx context.Context, j *jobRecord) {
	if s.pause(ctx, j, s.opts.Delays.Cleanup, nil) == pauseDone {
		return
	}
	if !s.lockLive(ctx) {
		return
	}
	defer s.mu.Unlock()
	s.postLocked(j, "release", obj{{"ranks", "all"}, {"final", true}})
	s.freeLocked(j)
	s.postLocked(j, "free", nil)
	s.postLocked(j, "clean", nil)
}

// allocLocked takes j.ncores free cores and posts annotations (journal
// only) and alloc, as sched-simple does. It reports false when not enough
// cores are free.
func (s *Server) allocLocked(j *jobRecord) bool {
	var cores []int
	for i, used := range s.coreUsed {
		if !used {
			cores = append(cores, i)
			if len(cores) == j.ncores {
				break
			}
		}
	}
	if len(cores) < j.ncores {
		// freeLocked wakes it when cores come back
		s.coreWaiters = append(s.coreWaiters, j)
		return false
	}
	for _, c := range cores {
		s.coreUsed[c] = true
	}
	j.cores = cores
	idset := coreIDSet(cores)
	summary := "rank0/core" + idset
	j.annotations = obj{{"sched", obj{{"resource_summary", summary}}}}
	start := s.timestamp()
	expiration := 0.0
	if j.duration > 0 {
		expiration = start + j.duration
	}
	j.r = obj{
		{"version", 1},
		{"execution", obj{
			{"R_lite", []obj{{{"rank", "0"}, {"children", obj{{"core", idset}}}}}},
			{"starttime", real(start)},
			{"expiration", real(expiration)},
			{"nslots", j.ntasks},
			{"nodelist", []string{s.opts.hostname()}},
		}},
	}
	s.postJournalOnlyLocked(j, "annotations", obj{{"annotations", j.annotations}})
	s.postLocked(j, "alloc", obj{{"annotations", j.annotations}})
	return true
}

// freeLocked returns j's cores and wakes the jobs waiting in SCHED.
func (s *Server) freeLocked(j *jobRecord) {
	for _, c := range j.cores {
		if c < len(s.coreUsed) {
			s.coreUsed[c] = false
		}
	}
	j.cores = nil
	// wake the jobs that found too few cores (not every job ever
	// submitted: that made each job's end cost O(jobs))
	for i, o := range s.coreWaiters {
		if o.state == stateSched {
			o.signal()
		}
		s.coreWaiters[i] = nil
	}
	s.coreWaiters = s.coreWaiters[:0]
}

// coreIDSet formats core indexes as an RFC 22 idset ("0", "0-3", "0,2").
func coreIDSet(cores []int) string {
	out := ""
	for i := 0; i < len(cores); {
		k := i
		for k+1 < len(cores) && cores[k+1] == cores[k]+1 {
			k++
		}
		if out != "" {
			out += ","
		}
		out += strconv.Itoa(cores[i])
		if k > i {
			out += "-" + strconv.Itoa(cores[k])
		}
		i = k + 1
	}
	return out
}

// outcome decides what j's command does.
func (s *Server) outcome(j *jobRecord) Outcome {
	if j.runDuration != nil {
		return Outcome{Run: *j.runDuration}
	}
	if s.opts.Outcome != nil {
		return s.opts.Outcome(j.command)
	}
	return DefaultOutcome(j.command)
}

// eventlogText returns j's eventlog as flux stores it: one JSON object per
// line, each ending in a newline.
func (j *jobRecord) eventlogText() string {
	n := 0
	for i := range j.events {
		n += len(j.events[i].line) + 1
	}
	b := make([]byte, 0, n)
	for i := range j.events {
		b = append(b, j.events[i].line...)
		b = append(b, '\n')
	}
	return string(b)
}

// inactiveLocked runs when j posts clean: a waitable job answers its waiter
// or becomes a zombie (src/modules/job-manager/wait.c wait_notify_inactive).
func (s *Server) inactiveLocked(j *jobRecord) {
	s.log.V(1).Info("job inactive", "id", j.id.String(), "result", j.result, "waitstatus", j.waitStatus)
	if j.flags&flagWaitable == 0 {
		return
	}
	switch {
	case j.waiter != nil:
		s.waitRespondLocked(j.waiter, j)
		j.waiter = nil
	case len(s.waitAny) > 0:
		w := s.waitAny[0]
		s.waitAny = s.waitAny[1:]
		s.waitRespondLocked(w, j)
	default:
		s.zombies = append(s.zombies, j)
	}
}
