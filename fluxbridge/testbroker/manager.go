package testbroker

import (
	"encoding/json"
	"fmt"
	"strings"
	"syscall"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/wire"
)

// stream is a request that stays open for more responses: a journal
// listener or a job-manager.wait waiting for a job.
type stream struct {
	c   *conn
	req *wire.Message
	// Journal filters (job-manager.events-journal "allow"/"deny").
	allow, deny map[string]bool
}

// jobIDAny is FLUX_JOBID_ANY (-1 as a JSON integer).
const jobIDAny = -1

// authorize is flux_msg_cred_authorize: the owner may act on any job, a
// guest only on its own (errno EPERM).
func authorize(req *wire.Message, j *jobRecord) bool {
	if req.Rolemask&roleOwner != 0 {
		return true
	}
	return req.Rolemask&roleUser != 0 && req.UserID != wire.UserIDUnknown && req.UserID == j.userid
}

// lookupActive finds a job for job-manager: active, inactive or unknown.
func (s *Server) lookupLocked(id int64) (*jobRecord, bool) {
	j, ok := s.jobs[job.ID(id)]
	return j, ok
}

// handleRaise serves job-manager.raise {"id","severity","type","note"?}
// (src/modules/job-manager/raise.c raise_handle_request).
func (s *Server) handleRaise(c *conn, req *wire.Message) {
	r, err := decodeRequest(req.Payload, req.Flags&wire.FlagPayload != 0)
	if err != nil {
		s.respondError(c, req, err)
		return
	}
	id, err1 := required(r.int64("id"))
	severity, err2 := required(r.int("severity"))
	typ, err3 := required(r.str("type"))
	note, err4 := optional(r.str("note"))
	waitStatus, err5 := optional(r.int("wait_status"))
	if firstErr(err1, err2, err3, err4, err5) != nil {
		s.respondError(c, req, errProto)
		return
	}
	if severity < 0 || severity > 7 {
		s.respondError(c, req, errorf(syscall.EPROTO, "invalid exception severity"))
		return
	}
	if typ == "" || strings.ContainsAny(typ, " \t\n\v\f\r=") {
		s.respondError(c, req, errorf(syscall.EPROTO, "invalid exception type"))
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	j, rerr := s.activeJobLocked(req, id, syscall.ENOENT, "unknown job id", "guests can only raise exceptions on their own jobs")
	if rerr != nil {
		s.respondError(c, req, rerr)
		return
	}
	ctx := obj{{"type", typ}, {"severity", severity}, {"note", note}}
	if req.UserID != wire.UserIDUnknown {
		ctx = append(ctx, kv{"userid", int64(req.UserID)})
	}
	if r.has("wait_status") && waitStatus >= 0 {
		ctx = append(ctx, kv{"wait_status", waitStatus})
	}
	s.postLocked(j, "exception", ctx)
	s.respond(c, req, nil)
}

// handleKill serves job-manager.kill {"id","signum"}
// (src/modules/job-manager/kill.c kill_handle_request).
func (s *Server) handleKill(c *conn, req *wire.Message) {
	r, err := decodeRequest(req.Payload, req.Flags&wire.FlagPayload != 0)
	if err != nil {
		s.respondError(c, req, err)
		return
	}
	id, err1 := required(r.int64("id"))
	sig, err2 := required(r.int("signum"))
	if firstErr(err1, err2) != nil {
		s.respondError(c, req, errProto)
		return
	}
	if sig <= 0 || sig >= 65 {
		s.respondError(c, req, errorf(syscall.EINVAL, "Invalid signal number"))
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	j, rerr := s.activeJobLocked(req, id, syscall.EINVAL, "unknown job id", "guests may only send signals to their own jobs")
	switch {
	case rerr != nil:
		s.respondError(c, req, rerr)
		return
	case j.state&stateRunning == 0:
		s.respondError(c, req, errorf(syscall.EINVAL, "job is not running"))
		return
	}
	if j.state == stateRun && j.waitStatus < 0 {
		j.killSignal = sig
		j.signal()
	}
	s.respond(c, req, nil)
}

// handleUrgency serves job-manager.urgency {"id","urgency"} ->
// {"old_urgency"} (src/modules/job-manager/urgency.c).
func (s *Server) handleUrgency(c *conn, req *wire.Message) {
	r, err := decodeRequest(req.Payload, req.Flags&wire.FlagPayload != 0)
	if err != nil {
		s.respondError(c, req, err)
		return
	}
	id, err1 := required(r.int64("id"))
	urgency, err2 := required(r.int("urgency"))
	if firstErr(err1, err2) != nil {
		s.respondError(c, req, errProto)
		return
	}
	if urgency < urgencyMin || urgency > urgencyMax {
		s.respondError(c, req, errorf(syscall.EINVAL, "urgency value is out of range"))
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	j, rerr := s.activeJobLocked(req, id, syscall.EINVAL, "unknown job", "guests can only reprioritize their own jobs")
	switch {
	case rerr != nil:
		s.respondError(c, req, rerr)
		return
	case req.Rolemask&roleOwner == 0 && urgency > max(urgencyDefault, j.urgency):
		s.respondError(c, req, errorf(syscall.EPERM, "guests can only adjust urgency <= default"))
		return
	case j.hasResources:
		s.respondError(c, req, errorf(syscall.EINVAL, "urgency cannot be changed once resources are allocated"))
		return
	}
	old := j.urgency
	s.postLocked(j, "urgency", obj{{"userid", int64(req.UserID)}, {"urgency", urgency}})
	j.urgency = urgency
	if j.state == stateSched {
		// An urgency event sends a job waiting for resources back to
		// the PRIORITY state (src/modules/job-manager/event.c,
		// event_job_action), which always posts a new priority event,
		// even when the value is unchanged: a real 0.88.0 broker gives
		// "priority urgency priority urgency priority alloc" for
		// urgency 0 -> 0 -> 31 on a held job (test/realflux TestManage).
		j.priority = priorityFor(urgency)
		s.postLocked(j, "priority", obj{{"priority", j.priority}})
	}
	j.signal()
	s.respond(c, req, obj{{"old_urgency", old}})
}

// handleWait serves job-manager.wait {"id"} (or {"id":-1} for any
// waitable job) -> {"id","success","errstr"}
// (src/modules/job-manager/wait.c wait_rpc).
func (s *Server) handleWait(c *conn, req *wire.Message) {
	r, err := decodeRequest(req.Payload, req.Flags&wire.FlagPayload != 0)
	var id int64
	if err == nil {
		id, err = required(r.int64("id"))
	}
	if err != nil {
		s.respondError(c, req, errorf(syscall.EPROTO, "malformed wait request"))
		return
	}
	st := &stream{c: c, req: req}
	s.mu.Lock()
	defer s.mu.Unlock()
	if id == jobIDAny {
		if len(s.zombies) > 0 {
			z := s.zombies[0]
			s.zombies = s.zombies[1:]
			s.waitRespondLocked(st, z)
		} else {
			s.waitAny = append(s.waitAny, st)
		}
	} else {
		j, ok := s.lookupLocked(id)
		switch {
		case ok && s.removeZombieLocked(j):
			s.waitRespondLocked(st, j)
		case ok && j.state != stateInactive:
			if j.waiter != nil {
				s.respondError(c, req, errorf(syscall.ECHILD, "job id already has a waiter"))
				return
			}
			if j.flags&flagWaitable == 0 {
				s.respondError(c, req, errorf(syscall.ECHILD, "job was not submitted with FLUX_JOB_WAITABLE"))
				return
			}
			j.waiter = st
		default:
			s.respondError(c, req, errorf(syscall.ECHILD, "invalid job id, or job may be inactive and not waitable"))
			return
		}
	}
	// More waiters than waitable jobs: fail the newest wait-any request.
	waitables, waiters := 0, 0
	for _, j := range s.order {
		if j.state != stateInactive && j.flags&flagWaitable != 0 {
			waitables++
			if j.waiter != nil {
				waiters++
			}
		}
	}
	if n := len(s.waitAny); n > 0 && n+waiters > waitables {
		last := s.waitAny[n-1]
		s.waitAny = s.waitAny[:n-1]
		s.respondError(last.c, last.req, errorf(syscall.ECHILD, "there are no more waitable jobs"))
	}
}

func (s *Server) removeZombieLocked(j *jobRecord) bool {
	for i, z := range s.zombies {
		if z == j {
			s.zombies = append(s.zombies[:i], s.zombies[i+1:]...)
			return true
		}
	}
	return false
}

// waitRespondLocked answers a wait with j's result, decoded from its end
// event: the first fatal exception or the finish event.
func (s *Server) waitRespondLocked(st *stream, j *jobRecord) {
	success := false
	errstr := ""
	if e := j.endEvent; e != nil && e.name == "exception" {
		typ, note := "", ""
		for _, f := range e.ctx {
			switch f.k {
			case "type":
				typ, _ = f.v.(string)
			case "note":
				note, _ = f.v.(string)
			}
		}
		errstr = fmt.Sprintf("Fatal exception type=%s %s", typ, note)
	} else {
		code, text := waitStatusText(j.waitStatus)
		success = code == 0
		errstr = text
	}
	s.respond(st.c, st.req, obj{{"id", j.id}, {"success", success}, {"errstr", errstr}})
}

// waitStatusText is flux_job_waitstatus_to_exitcode's message
// (src/common/libjob/job.c).
func waitStatusText(status int) (int, string) {
	if sig := status & 0x7f; sig != 0 && sig != 0x7f {
		return sig + 128, "job shell " + strsignal(sig)
	}
	code := (status >> 8) & 0xff
	switch {
	case code > 128:
		return code, "task(s) " + strsignal(code-128)
	case code > 0:
		return code, fmt.Sprintf("task(s) exited with exit code %d", code)
	}
	return 0, ""
}

// strsignal is glibc's strsignal for the common signals.
func strsignal(sig int) string {
	names := map[syscall.Signal]string{
		syscall.SIGHUP: "Hangup", syscall.SIGINT: "Interrupt", syscall.SIGQUIT: "Quit",
		syscall.SIGILL: "Illegal instruction", syscall.SIGTRAP: "Trace/breakpoint trap",
		syscall.SIGABRT: "Aborted", syscall.SIGBUS: "Bus error",
		syscall.SIGFPE: "Floating point exception", syscall.SIGKILL: "Killed",
		syscall.SIGUSR1: "User defined signal 1", syscall.SIGSEGV: "Segmentation fault",
		syscall.SIGUSR2: "User defined signal 2", syscall.SIGPIPE: "Broken pipe",
		syscall.SIGALRM: "Alarm clock", syscall.SIGTERM: "Terminated",
		syscall.SIGXCPU: "CPU time limit exceeded", syscall.SIGXFSZ: "File size limit exceeded",
	}
	if n, ok := names[syscall.Signal(sig)]; ok {
		return n
	}
	return fmt.Sprintf("Unknown signal %d", sig)
}

// handleJournal serves job-manager.events-journal {"full"?, "allow"?,
// "deny"?} (STREAMING): the backlog, one response per job, then the
// sentinel {"id":-1,"events":[]}, then every new event
// (src/modules/job-manager/journal.c).
func (s *Server) handleJournal(c *conn, req *wire.Message) {
	r, err := decodeRequest(req.Payload, req.Flags&wire.FlagPayload != 0)
	if err != nil {
		s.respondError(c, req, err)
		return
	}
	full, err1 := optional(r.bool("full"))
	allowV, err2 := optional(r.value("allow"))
	denyV, err3 := optional(r.value("deny"))
	if firstErr(err1, err2, err3) != nil {
		s.respondError(c, req, errProto)
		return
	}
	if req.Flags&wire.FlagStreaming == 0 {
		s.respondError(c, req, errorf(syscall.EPROTO, "job-manager.events requires streaming RPC flag"))
		return
	}
	st := &stream{c: c, req: req}
	if allowV != nil {
		m, ok := allowV.(map[string]any)
		if !ok {
			s.respondError(c, req, errorf(syscall.EPROTO, "job-manager.events allow should be an object"))
			return
		}
		st.allow = keysOf(m)
	}
	if denyV != nil {
		m, ok := denyV.(map[string]any)
		if !ok {
			s.respondError(c, req, errorf(syscall.EPROTO, "job-manager.events deny should be an object"))
			return
		}
		st.deny = keysOf(m)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	send := func(j *jobRecord) {
		events := make([]json.RawMessage, 0, len(j.events))
		for i := range j.events {
			if st.allows(j.events[i].name) {
				events = append(events, j.events[i].line)
			}
		}
		o := obj{{"id", j.id}, {"events", events}}
		if j.jobspec != nil {
			o = append(o, kv{"jobspec", j.jobspec})
		}
		if j.r != nil {
			o = append(o, kv{"R", j.r})
		}
		s.respond(c, req, o)
	}
	if full {
		for _, j := range s.order {
			if j.state == stateInactive {
				send(j)
			}
		}
	}
	for _, j := range s.order {
		if j.state != stateInactive {
			send(j)
		}
	}
	s.respond(c, req, obj{{"id", jobIDAny}, {"events", []any{}}})
	s.journal = append(s.journal, st)
}

func keysOf(m map[string]any) map[string]bool {
	out := make(map[string]bool, len(m))
	for k := range m {
		out[k] = true
	}
	return out
}

// allows is journal.c allow_deny_check.
func (st *stream) allows(name string) bool {
	ok := true
	if st.allow != nil {
		ok = st.allow[name]
	}
	if ok && st.deny != nil && st.deny[name] {
		ok = false
	}
	return ok
}

// journalEventLocked sends one event to every journal listener: the submit
// response carries the redacted jobspec, the alloc one R.
func (s *Server) journalEventLocked(j *jobRecord, e *event) {
	if len(s.journal) == 0 {
		return
	}
	o := obj{{"id", j.id}, {"events", []json.RawMessage{e.line}}}
	switch e.name {
	case "submit":
		o = append(o, kv{"jobspec", j.jobspec})
	case "alloc":
		o = append(o, kv{"R", j.r})
	}
	for _, st := range s.journal {
		if st.allows(e.name) {
			s.respond(st.c, st.req, o)
		}
	}
}

// handleJournalCancel serves job-manager.events-journal-cancel
// {"matchtag"}: the listener with that matchtag on this connection ends
// with ENODATA (flux_msglist_cancel).
func (s *Server) handleJournalCancel(c *conn, req *wire.Message) {
	mt, ok := cancelMatchtag(req)
	if !ok {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, st := range s.journal {
		if st.c == c && st.req.Matchtag() == mt {
			s.journal = append(s.journal[:i], s.journal[i+1:]...)
			s.respondError(c, st.req, &rpcError{errno: syscall.ENODATA})
			return
		}
	}
}

// cancelMatchtag decodes a *-cancel request's {"matchtag": M}.
func cancelMatchtag(req *wire.Message) (uint32, bool) {
	r, err := decodeRequest(req.Payload, req.Flags&wire.FlagPayload != 0)
	if err != nil {
		return 0, false
	}
	mt, err := r.int64("matchtag")
	if err != nil || mt < 0 || mt > 0xffffffff {
		return 0, false
	}
	return uint32(mt), true
}

// disconnectLocked forgets everything c was waiting for, as the services'
// disconnect handlers do: no response is sent.
func (s *Server) disconnectLocked(c *conn) {
	keep := s.journal[:0]
	for _, st := range s.journal {
		if st.c != c {
			keep = append(keep, st)
		}
	}
	s.journal = keep
	keepAny := s.waitAny[:0]
	for _, st := range s.waitAny {
		if st.c != c {
			keepAny = append(keepAny, st)
		}
	}
	s.waitAny = keepAny
	for _, j := range s.order {
		if j.waiter != nil && j.waiter.c == c {
			j.waiter = nil
		}
		if len(j.watchers) > 0 {
			j.watchers = removeWatches(j.watchers, func(w *watch) bool { return w.c == c })
		}
		if len(j.output.watchers) > 0 {
			j.output.watchers = removeWatches(j.output.watchers, func(w *watch) bool { return w.c == c })
		}
	}
	for id, ws := range s.waiting {
		ws = removeWatches(ws, func(w *watch) bool { return w.c == c })
		if len(ws) == 0 {
			delete(s.waiting, id)
		} else {
			s.waiting[id] = ws
		}
	}
}

func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// activeJobLocked finds the active job id for a job-manager request that
// acts on it, or returns the error the service answers with: errno and
// unknown for a job it does not know, errno "job is inactive" for one that
// ended, EPERM guest for another user's job. raise, kill and urgency each
// use their own errno and wording (src/modules/job-manager/raise.c,
// kill.c, urgency.c).
func (s *Server) activeJobLocked(req *wire.Message, id int64, errno syscall.Errno, unknown, guest string) (*jobRecord, *rpcError) {
	j, ok := s.lookupLocked(id)
	switch {
	case !ok:
		return nil, errorf(errno, "%s", unknown)
	case j.state == stateInactive:
		return nil, errorf(errno, "job is inactive")
	case !authorize(req, j):
		return nil, errorf(syscall.EPERM, "%s", guest)
	}
	return j, nil
}
