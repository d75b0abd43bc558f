package testbroker

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/wire"
)

// jobAttrs are job-list's attribute names, in the order "all" stores them
// (src/modules/job-list/job_util.c store_attr).
var jobAttrs = []string{
	"userid", "urgency", "priority", "t_submit", "t_depend", "t_priority",
	"t_sched", "t_run", "t_cleanup", "t_inactive", "state", "name", "cwd",
	"queue", "project", "bank", "ntasks", "ncores", "duration", "nnodes",
	"ranks", "nodelist", "expiration", "waitstatus", "success",
	"exception_occurred", "exception_severity", "exception_type",
	"exception_note", "result", "annotations", "dependencies",
}

// attr returns job j's value of attribute a, and false when job-list would
// leave it out (not yet known in the job's state).
func (s *Server) attr(j *jobRecord, a string) (any, bool, error) {
	has := func(st int) bool { return j.statesMask&st != 0 }
	switch a {
	case "userid":
		return int64(j.userid), true, nil
	case "urgency":
		return j.urgency, true, nil
	case "priority":
		return j.priority, has(stateSched), nil
	case "t_submit":
		return real(j.tSubmit), true, nil
	case "t_depend":
		return real(j.tDepend), has(stateDepend), nil
	case "t_priority":
		return real(j.tPriority), j.tPriority != 0, nil
	case "t_sched":
		return real(j.tSched), j.tSched != 0, nil
	case "t_run":
		return real(j.tRun), has(stateRun), nil
	case "t_cleanup":
		return real(j.tCleanup), has(stateCleanup), nil
	case "t_inactive":
		return real(j.tInactive), has(stateInactive), nil
	case "state":
		return j.state, true, nil
	case "name":
		return j.name, j.name != "", nil
	case "cwd":
		return j.cwd, j.cwd != "", nil
	case "queue":
		return j.queue, j.queue != "", nil
	case "project", "bank", "dependencies":
		return nil, false, nil
	case "ntasks":
		return j.ntasks, true, nil
	case "ncores":
		return j.ncores, true, nil
	case "duration":
		return real(j.duration), true, nil
	case "nnodes":
		return 1, true, nil
	case "ranks":
		return "0", has(stateRun), nil
	case "nodelist":
		return s.opts.hostname(), has(stateRun), nil
	case "expiration":
		exp := 0.0
		if j.duration > 0 {
			exp = j.tRun + j.duration
		}
		return real(exp), has(stateRun), nil
	case "waitstatus":
		return j.waitStatus, j.waitStatus >= 0, nil
	case "success":
		return j.result == resultCompleted, has(stateInactive), nil
	case "exception_occurred":
		return j.excOccurred, has(stateInactive), nil
	case "exception_severity":
		return j.excSeverity, has(stateInactive) && j.excOccurred, nil
	case "exception_type":
		return j.excType, has(stateInactive) && j.excOccurred, nil
	case "exception_note":
		return j.excNote, has(stateInactive) && j.excOccurred && j.excNote != "", nil
	case "result":
		return j.result, has(stateInactive), nil
	case "annotations":
		return j.annotations, j.annotations != nil, nil
	}
	return nil, false, errorf(syscall.EINVAL, "%s is not a valid attribute", a)
}

// jobJSON is job_to_json: "id" then the requested attributes.
func (s *Server) jobJSON(j *jobRecord, attrs []any) (obj, error) {
	o := obj{{"id", j.id}}
	for _, a := range attrs {
		name, ok := a.(string)
		if !ok {
			return nil, errorf(syscall.EINVAL, "attr has no string value")
		}
		names := []string{name}
		if name == "all" {
			names = jobAttrs
		}
		for _, n := range names {
			v, ok, err := s.attr(j, n)
			if err != nil {
				return nil, err
			}
			if ok {
				o = append(o, kv{n, v})
			}
		}
	}
	return o, nil
}

// handleList serves job-list.list {"max_entries","attrs","since"?,
// "constraint"?}: with STREAMING one {"jobs":[job]} response per job (the
// first also carries "version":1) then ENODATA; without, one {"jobs":[...]}
// (src/modules/job-list/list.c list_cb). Jobs come pending (by priority,
// then submission), running, then inactive (newest first).
func (s *Server) handleList(c *conn, req *wire.Message) {
	r, err := decodeRequest(req.Payload, req.Flags&wire.FlagPayload != 0)
	if err != nil {
		s.respondError(c, req, errorf(syscall.EPROTO, "invalid payload: %s", "Protocol error"))
		return
	}
	maxEntries, err1 := required(r.int("max_entries"))
	attrsV, err2 := required(r.value("attrs"))
	since, err3 := optional(r.float("since"))
	constraint, err4 := optional(r.value("constraint"))
	if err := firstErr(err1, err2, err3, err4); err != nil {
		s.respondError(c, req, errorf(syscall.EPROTO, "invalid payload: %s", "Protocol error"))
		return
	}
	if maxEntries < 0 {
		s.respondError(c, req, errorf(syscall.EPROTO, "invalid payload: max_entries < 0 not allowed"))
		return
	}
	if since < 0 {
		s.respondError(c, req, errorf(syscall.EPROTO, "invalid payload: since < 0.0 not allowed"))
		return
	}
	attrs, ok := attrsV.([]any)
	if !ok {
		s.respondError(c, req, errorf(syscall.EPROTO, "invalid payload: attrs must be an array"))
		return
	}
	match, err := parseConstraint(constraint, s.opts.hostname())
	if err != nil {
		s.respondError(c, req, errorf(syscall.EPROTO, "invalid payload: constraint object invalid: %s", err))
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var pending, running, inactive []*jobRecord
	now := time.Now()
	for _, j := range s.order {
		if !j.listed(now) {
			continue // job-list has not heard of it yet
		}
		// In private mode guests see only their own jobs
		// (src/modules/job-list/auth.c job_auth_constraint).
		if s.restrictedLocked(req) && j.userid != req.UserID {
			continue
		}
		switch {
		case j.state == stateInactive:
			if j.tInactive > since {
				inactive = append(inactive, j)
			}
		case j.state&(stateRun|stateCleanup) != 0:
			running = append(running, j)
		default:
			pending = append(pending, j)
		}
	}
	sort.SliceStable(pending, func(a, b int) bool {
		if pending[a].priority != pending[b].priority {
			return pending[a].priority > pending[b].priority
		}
		return pending[a].tSubmit < pending[b].tSubmit
	})
	sort.SliceStable(running, func(a, b int) bool { return running[a].tRun > running[b].tRun })
	sort.SliceStable(inactive, func(a, b int) bool { return inactive[a].tInactive > inactive[b].tInactive })
	var jobs []obj
	for _, list := range [][]*jobRecord{pending, running, inactive} {
		for _, j := range list {
			if maxEntries > 0 && len(jobs) == maxEntries {
				break
			}
			if !match(j) {
				continue
			}
			o, err := s.jobJSON(j, attrs)
			if err != nil {
				s.respondError(c, req, err)
				return
			}
			jobs = append(jobs, o)
		}
	}
	if req.Flags&wire.FlagStreaming == 0 {
		if jobs == nil {
			jobs = []obj{}
		}
		s.respond(c, req, obj{{"jobs", jobs}})
		return
	}
	for i, o := range jobs {
		resp := obj{{"jobs", []obj{o}}}
		if i == 0 {
			resp = append(resp, kv{"version", 1})
		}
		s.respond(c, req, resp)
	}
	s.respondError(c, req, &rpcError{errno: syscall.ENODATA})
}

// handleListID serves job-list.list-id {"id","attrs","state"?} ->
// {"job":{...}}; an unknown job is ENOENT with no message
// (src/modules/job-list/list.c list_id_cb).
func (s *Server) handleListID(c *conn, req *wire.Message) {
	r, err := decodeRequest(req.Payload, req.Flags&wire.FlagPayload != 0)
	if err != nil {
		s.respondError(c, req, errorf(syscall.EPROTO, "invalid payload: %s", "Protocol error"))
		return
	}
	id, err1 := required(r.int64("id"))
	attrsV, err2 := required(r.value("attrs"))
	state, err3 := optional(r.int("state"))
	if firstErr(err1, err2, err3) != nil {
		s.respondError(c, req, errorf(syscall.EPROTO, "invalid payload: %s", "Protocol error"))
		return
	}
	attrs, ok := attrsV.([]any)
	if !ok {
		s.respondError(c, req, errorf(syscall.EPROTO, "invalid payload: attrs must be an array"))
		return
	}
	if state != 0 && state&^(stateNewJob|statePending|stateRunning|stateInactive) != 0 {
		s.respondError(c, req, errorf(syscall.EPROTO, "invalid payload: invalid state specified"))
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	j, ok := s.jobs[job.ID(id)]
	if ok && !j.listed(time.Now()) {
		// The ID is valid but job-list has not heard of the job yet:
		// answer once it has (src/modules/job-list/idsync.c).
		s.deferListIDLocked(c, req, job.ID(id), attrs, j.listedAt)
		return
	}
	s.respondListIDLocked(c, req, j, ok, attrs)
}

// respondListIDLocked answers a list-id request for j (ok false: unknown).
func (s *Server) respondListIDLocked(c *conn, req *wire.Message, j *jobRecord, ok bool, attrs []any) {
	// Another user's job is ENOENT to a guest in private mode, as an
	// unknown ID is (src/modules/job-list/list.c check_job_visible).
	if !ok || (s.restrictedLocked(req) && j.userid != req.UserID) {
		s.respondError(c, req, &rpcError{errno: syscall.ENOENT})
		return
	}
	o, err := s.jobJSON(j, attrs)
	if err != nil {
		s.respondError(c, req, err)
		return
	}
	s.respond(c, req, obj{{"job", o}})
}

// listed reports whether job-list lists j at now (Options.ListLag).
func (j *jobRecord) listed(now time.Time) bool {
	return j.listedAt.IsZero() || !now.Before(j.listedAt)
}

// deferListIDLocked answers a list-id request for job id at time at (or
// never, if the broker restarts or closes first: the connection is gone
// then).
func (s *Server) deferListIDLocked(c *conn, req *wire.Message, id job.ID, attrs []any, at time.Time) {
	ctx := s.jobCtx
	if ctx.Err() != nil {
		return // Close or Restart is under way: no new goroutine
	}
	s.jobWG.Add(1)
	go func() {
		defer s.jobWG.Done()
		t := time.NewTimer(time.Until(at))
		defer t.Stop()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if !s.lockLive(ctx) {
			return
		}
		defer s.mu.Unlock()
		j, ok := s.jobs[id]
		s.respondListIDLocked(c, req, j, ok, attrs)
	}()
}

// SetListLag changes Options.ListLag for jobs submitted from now on.
func (s *Server) SetListLag(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.listLag = d
}

// matcher reports whether a job matches a constraint.
type matcher func(*jobRecord) bool

// parseConstraint compiles an RFC 31 constraint as job-list does
// (src/modules/job-list/match.c): {"op": [values...]} with op one of and,
// or, not, userid, name, queue, states, results, hostlist, ranks, t_*.
// host is the simulated node's name, what hostlist matches (plain
// comma-separated names only; ranks matches "0").
func parseConstraint(v any, host string) (matcher, error) {
	if v == nil {
		return func(*jobRecord) bool { return true }, nil
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("constraint must be JSON object")
	}
	if len(m) == 0 {
		return func(*jobRecord) bool { return true }, nil
	}
	if len(m) > 1 {
		return nil, fmt.Errorf("constraint must only contain 1 element")
	}
	for op, raw := range m {
		values, ok := raw.([]any)
		if !ok {
			return nil, fmt.Errorf("operator %s values not an array", op)
		}
		switch op {
		case "and", "or", "not":
			subs := make([]matcher, 0, len(values))
			for _, sv := range values {
				sm, err := parseConstraint(sv, host)
				if err != nil {
					return nil, err
				}
				subs = append(subs, sm)
			}
			return combine(op, subs), nil
		case "userid":
			var uids []int64
			for _, x := range values {
				n, ok := x.(json.Number)
				i, err := n.Int64()
				if !ok || err != nil {
					return nil, fmt.Errorf("userid value must be an integer")
				}
				uids = append(uids, i)
			}
			return func(j *jobRecord) bool {
				for _, u := range uids {
					if u == -1 || uint32(u) == j.userid {
						return true
					}
				}
				return false
			}, nil
		case "name", "queue", "hostlist", "ranks":
			var strs []string
			for _, x := range values {
				s, ok := x.(string)
				if !ok {
					if op == "hostlist" {
						return nil, fmt.Errorf("host value must be a string")
					}
					if op == "ranks" {
						return nil, fmt.Errorf("ranks value must be a string")
					}
					return nil, fmt.Errorf("%s value must be a string", op)
				}
				strs = append(strs, s)
			}
			return func(j *jobRecord) bool {
				var have string
				switch op {
				case "name":
					have = j.name
				case "queue":
					have = j.queue
				case "hostlist":
					if j.statesMask&stateRun == 0 {
						return false
					}
					have = host
				case "ranks":
					if j.statesMask&stateRun == 0 {
						return false
					}
					have = "0"
				}
				for _, s := range strs {
					if op == "hostlist" {
						if hostlistContains(s, have) {
							return true
						}
						continue
					}
					if have != "" && s == have {
						return true
					}
				}
				return false
			}, nil
		case "states":
			mask, err := statesMask(values)
			if err != nil {
				return nil, err
			}
			return func(j *jobRecord) bool { return j.state&mask != 0 }, nil
		case "results":
			mask, err := resultsMask(values)
			if err != nil {
				return nil, err
			}
			return func(j *jobRecord) bool { return j.state == stateInactive && j.result&mask != 0 }, nil
		case "t_submit", "t_depend", "t_priority", "t_sched", "t_run", "t_cleanup", "t_inactive":
			return timestampConstraint(op, values)
		default:
			return nil, fmt.Errorf("unknown constraint operator: %s", op)
		}
	}
	return nil, fmt.Errorf("constraint must only contain 1 element")
}

func combine(op string, subs []matcher) matcher {
	return func(j *jobRecord) bool {
		switch op {
		case "and":
			for _, m := range subs {
				if !m(j) {
					return false
				}
			}
			return true
		case "or":
			for _, m := range subs {
				if m(j) {
					return true
				}
			}
			return len(subs) == 0
		default: // not: true when the first (only) sub-constraint fails
			for _, m := range subs {
				if m(j) {
					return false
				}
			}
			return true
		}
	}
}

// hostlistContains matches one node name against a hostlist value; only
// plain comma-separated names are understood.
func hostlistContains(hl, host string) bool {
	for _, h := range strings.Split(hl, ",") {
		if h == host {
			return true
		}
	}
	return false
}

var stateNames = map[string]int{
	"new": stateNewJob, "depend": stateDepend, "priority": statePriority,
	"sched": stateSched, "run": stateRun, "cleanup": stateCleanup,
	"inactive": stateInactive, "pending": statePending,
	"running": stateRunning, "active": stateNewJob | statePending | stateRunning,
}

func statesMask(values []any) (int, error) {
	mask := 0
	valid := stateNewJob | statePending | stateRunning | stateInactive
	for _, x := range values {
		switch v := x.(type) {
		case string:
			st, ok := stateNames[strings.ToLower(v)]
			if !ok {
				return 0, fmt.Errorf("invalid states value '%s' specified", v)
			}
			mask |= st
		case json.Number:
			n, err := v.Int64()
			if err != nil || int(n)&^valid != 0 {
				return 0, fmt.Errorf("invalid states value '%Xh' specified", n)
			}
			mask |= int(n)
		default:
			return 0, fmt.Errorf("states value invalid type")
		}
	}
	return mask, nil
}

var resultNames = map[string]int{
	"completed": resultCompleted, "failed": resultFailed,
	"canceled": resultCanceled, "timeout": resultTimeout,
}

func resultsMask(values []any) (int, error) {
	mask := 0
	valid := resultCompleted | resultFailed | resultCanceled | resultTimeout
	for _, x := range values {
		switch v := x.(type) {
		case string:
			r, ok := resultNames[strings.ToLower(v)]
			if !ok {
				return 0, fmt.Errorf("invalid results value '%s' specified", v)
			}
			mask |= r
		case json.Number:
			n, err := v.Int64()
			if err != nil || int(n)&^valid != 0 {
				return 0, fmt.Errorf("invalid results value '%Xh' specified", n)
			}
			mask |= int(n)
		default:
			return 0, fmt.Errorf("results value invalid type")
		}
	}
	return mask, nil
}

// timestampConstraint compiles {"t_X": ["OPvalue"]} with OP one of >, >=,
// <, <= (src/modules/job-list/match.c).
func timestampConstraint(op string, values []any) (matcher, error) {
	if len(values) == 0 {
		return nil, fmt.Errorf("timestamp value not specified")
	}
	s, ok := values[0].(string)
	if !ok {
		return nil, fmt.Errorf("%s value must be a string", op)
	}
	var cmp string
	for _, p := range []string{">=", "<=", ">", "<"} {
		if strings.HasPrefix(s, p) {
			cmp, s = p, strings.TrimPrefix(s, p)
			break
		}
	}
	if cmp == "" {
		return nil, fmt.Errorf("timestamp comparison operator not specified")
	}
	var t float64
	if _, err := fmt.Sscanf(s, "%g", &t); err != nil {
		//lint:ignore ST1005 flux-core job-list's own message, imitated word for word
		return nil, fmt.Errorf("Invalid timestamp value specified")
	}
	if t < 0 {
		return nil, fmt.Errorf("timestamp value must be >= 0.0")
	}
	return func(j *jobRecord) bool {
		var v float64
		switch op {
		case "t_submit":
			v = j.tSubmit
		case "t_depend":
			v = j.tDepend
		case "t_priority":
			v = j.tPriority
		case "t_sched":
			v = j.tSched
		case "t_run":
			v = j.tRun
		case "t_cleanup":
			v = j.tCleanup
		case "t_inactive":
			v = j.tInactive
		}
		if v == 0 {
			return false
		}
		switch cmp {
		case ">=":
			return v >= t
		case "<=":
			return v <= t
		case ">":
			return v > t
		}
		return v < t
	}, nil
}

// restrictedLocked tells whether req comes from a guest that private mode
// restricts to its own jobs ([access] private-mode; flux-core
// src/modules/job-list/auth.c job_auth_restricted: the owner is exempt).
func (s *Server) restrictedLocked(req *wire.Message) bool {
	return s.opts.PrivateMode && req.Rolemask&roleOwner == 0
}
