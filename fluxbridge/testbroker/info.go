package testbroker

import (
	"encoding/json"
	"syscall"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/wire"
)

// Eventlog watch flags (flux-core FLUX_JOB_EVENT_WATCH_*).
const (
	watchWaitCreate      = 1
	watchInitialSentinel = 2
)

// watch is one job-info.eventlog-watch stream.
type watch struct {
	c        *conn
	req      *wire.Message
	id       job.ID
	sentinel bool
}

func removeWatches(ws []*watch, drop func(*watch) bool) []*watch {
	keep := ws[:0]
	for _, w := range ws {
		if !drop(w) {
			keep = append(keep, w)
		}
	}
	for i := len(keep); i < len(ws); i++ {
		ws[i] = nil
	}
	return keep
}

// handleEventlogWatch serves job-info.eventlog-watch {"id","path","flags"}
// (STREAMING): one {"event": "<line>\n"} response per eventlog entry, the
// existing ones first, then new ones as they are posted; ENODATA after
// "clean" (src/modules/job-info/watch.c).
func (s *Server) handleEventlogWatch(c *conn, req *wire.Message) {
	r, err := decodeRequest(req.Payload, req.Flags&wire.FlagPayload != 0)
	if err != nil {
		s.respondError(c, req, err)
		return
	}
	id, err1 := required(r.int64("id"))
	path, err2 := required(r.str("path"))
	flags, err3 := required(r.int("flags"))
	if firstErr(err1, err2, err3) != nil {
		s.respondError(c, req, errProto)
		return
	}
	if flags&^(watchWaitCreate|watchInitialSentinel) != 0 {
		s.respondError(c, req, errorf(syscall.EPROTO, "eventlog-watch request rejected with invalid flag"))
		return
	}
	if req.Flags&wire.FlagStreaming == 0 {
		s.respondError(c, req, errorf(syscall.EPROTO, "eventlog-watch request rejected without streaming RPC flag"))
		return
	}
	if path != "eventlog" && path != outputWatchPath {
		// The test double keeps only the main and output eventlogs.
		s.respondError(c, req, &rpcError{errno: syscall.ENOENT})
		return
	}
	w := &watch{c: c, req: req, id: job.ID(id), sentinel: flags&watchInitialSentinel != 0}
	s.mu.Lock()
	defer s.mu.Unlock()
	j, ok := s.jobs[w.id]
	if path == outputWatchPath {
		if !ok {
			// job-info's guest watch looks the job up first: ENOENT
			s.respondError(c, req, &rpcError{errno: syscall.ENOENT})
			return
		}
		s.startOutputWatchLocked(j, w)
		return
	}
	if !ok {
		if flags&watchWaitCreate != 0 {
			s.waiting[w.id] = append(s.waiting[w.id], w)
			return
		}
		// The KVS lookup of a job that does not exist fails with ENOENT,
		// sent without a message.
		s.respondError(c, req, &rpcError{errno: syscall.ENOENT})
		return
	}
	s.startWatchLocked(j, w)
}

// startWatchLocked checks access, replays j's eventlog to w and, unless
// the log is complete, registers w for new events.
func (s *Server) startWatchLocked(j *jobRecord, w *watch) {
	if !authorize(w.req, j) {
		// src/modules/job-info/allow.c: guests see only their own jobs.
		s.respondError(w.c, w.req, &rpcError{errno: syscall.EPERM})
		return
	}
	for i := range j.events {
		s.sendEventLocked(w, &j.events[i])
		if j.events[i].name == "clean" {
			if w.sentinel {
				s.respond(w.c, w.req, nil)
			}
			s.respondError(w.c, w.req, &rpcError{errno: syscall.ENODATA})
			return
		}
	}
	if w.sentinel {
		s.respond(w.c, w.req, nil)
	}
	j.watchers = append(j.watchers, w)
}

// startWaitingWatchesLocked starts the WAITCREATE watches that were
// waiting for j to exist.
func (s *Server) startWaitingWatchesLocked(j *jobRecord) {
	ws := s.waiting[j.id]
	if len(ws) == 0 {
		return
	}
	delete(s.waiting, j.id)
	for _, w := range ws {
		s.startWatchLocked(j, w)
	}
}

func (s *Server) sendEventLocked(w *watch, e *event) {
	if w.req.Flags&wire.FlagNoResponse != 0 {
		return
	}
	if e.watchPayload == nil {
		// {"event":"<line>\n"} and the NUL, made once per event and shared
		// by every watcher (wire.AppendFramed copies it)
		line := make([]byte, 0, len(e.line)+1)
		line = append(line, e.line...)
		line = append(line, '\n')
		p, err := appendJSONString(append(make([]byte, 0, 2*len(line)+16), `{"event":`...), line)
		if err != nil {
			s.respondError(w.c, w.req, &rpcError{errno: syscall.ENOMEM})
			return
		}
		e.watchPayload = append(p, '}', 0)
	}
	w.c.send(response(w.req, e.watchPayload))
}

// notifyWatchersLocked sends a new event to j's watchers; "clean" ends
// every watch with ENODATA.
func (s *Server) notifyWatchersLocked(j *jobRecord, e *event) {
	for _, w := range j.watchers {
		s.sendEventLocked(w, e)
		if e.name == "clean" {
			s.respondError(w.c, w.req, &rpcError{errno: syscall.ENODATA})
		}
	}
	if e.name == "clean" {
		j.watchers = nil
	}
}

// handleEventlogWatchCancel serves job-info.eventlog-watch-cancel
// {"matchtag"}: the watch with that matchtag on this connection ends with
// ENODATA.
func (s *Server) handleEventlogWatchCancel(c *conn, req *wire.Message) {
	mt, ok := cancelMatchtag(req)
	if !ok {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	match := func(w *watch) bool { return w.c == c && w.req.Matchtag() == mt }
	for _, j := range s.order {
		for _, w := range j.watchers {
			if match(w) {
				j.watchers = removeWatches(j.watchers, match)
				s.respondError(c, w.req, &rpcError{errno: syscall.ENODATA})
				return
			}
		}
		for _, w := range j.output.watchers {
			if match(w) {
				j.output.watchers = removeWatches(j.output.watchers, match)
				s.respondError(c, w.req, &rpcError{errno: syscall.ENODATA})
				return
			}
		}
	}
	for id, ws := range s.waiting {
		for _, w := range ws {
			if match(w) {
				s.waiting[id] = removeWatches(ws, match)
				if len(s.waiting[id]) == 0 {
					delete(s.waiting, id)
				}
				s.respondError(c, w.req, &rpcError{errno: syscall.ENODATA})
				return
			}
		}
	}
}

// Lookup flags (flux-core FLUX_JOB_LOOKUP_*).
const lookupJSONDecode = 1

// handleLookup serves job-info.lookup {"id","keys","flags"} -> {"id", key:
// value...}: the values of "eventlog", "jobspec" and "R" (as strings, or
// decoded with FLUX_JOB_LOOKUP_JSON_DECODE) (src/modules/job-info/lookup.c).
func (s *Server) handleLookup(c *conn, req *wire.Message) {
	r, err := decodeRequest(req.Payload, req.Flags&wire.FlagPayload != 0)
	if err != nil {
		s.respondError(c, req, err)
		return
	}
	id, err1 := required(r.int64("id"))
	keysV, err2 := required(r.value("keys"))
	flags, err3 := required(r.int("flags"))
	keys, ok := keysV.([]any)
	if firstErr(err1, err2, err3) != nil || !ok {
		s.respondError(c, req, errProto)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	j, found := s.jobs[job.ID(id)]
	if !found {
		// job-info remembers whom it let read a job's eventlog
		// (eventlog_allow_lru): for a job it knew, since purged, the
		// owner skips the eventlog and the first key asked for is
		// missing; otherwise the eventlog is looked up first to check
		// access: "invalid job id" (lookup.c info_lookup_continuation).
		if uid, ok := s.purgedUsers[job.ID(id)]; ok && len(keys) > 0 {
			if req.Rolemask&roleOwner == 0 && uid != req.UserID {
				s.respondError(c, req, errorf(syscall.EPERM, "access is restricted to job/instance owner"))
				return
			}
			first, _ := keys[0].(string)
			s.respondError(c, req, errorf(syscall.ENOENT, "%s: key not found", first))
			return
		}
		s.respondError(c, req, errorf(syscall.ENOENT, "invalid job id"))
		return
	}
	if !authorize(req, j) {
		// the eventlog check's refusal carries a message (lookup.c); the
		// eventlog-watch refusal has none
		s.respondError(c, req, errorf(syscall.EPERM, "access is restricted to job/instance owner"))
		return
	}
	out := obj{{"id", j.id}}
	for _, k := range keys {
		key, ok := k.(string)
		if !ok {
			s.respondError(c, req, errProto)
			return
		}
		var val any
		switch key {
		case "eventlog":
			val = j.eventlogText()
		case "jobspec":
			val = j.jobspecText
			if flags&lookupJSONDecode != 0 {
				val = json.RawMessage(j.jobspecText)
			}
		case "R":
			if j.r == nil {
				s.respondError(c, req, &rpcError{errno: syscall.ENOENT})
				return
			}
			b, err := marshal(j.r)
			if err != nil {
				s.respondError(c, req, &rpcError{errno: syscall.ENOMEM})
				return
			}
			val = string(b)
			if flags&lookupJSONDecode != 0 {
				val = j.r
			}
		default:
			s.respondError(c, req, &rpcError{errno: syscall.ENOENT})
			return
		}
		out = append(out, kv{key, val})
	}
	s.respond(c, req, out)
}
