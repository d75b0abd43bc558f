package testbroker

import (
	"syscall"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/wire"
)

// SimulatedVersion is what the test broker answers for the broker
// attribute "version". It is not a flux-core version on purpose.
const SimulatedVersion = "0.0.0-testbroker"

// The instance-level RPCs a FluxEndpoint's status is read from: broker
// attributes and job-list's job statistics.
func init() {
	handlers["attr.get"] = handler{fn: (*Server).handleAttrGet}
	handlers["job-list.job-stats"] = handler{fn: (*Server).handleJobStats}
}

// handleAttrGet serves attr.get {"name"} -> {"value","flags"} for the
// attributes a client of this broker may ask for, as flux-core's broker
// does (src/broker/attr.c getattr_request_cb: ENOENT for an unknown or
// unset attribute; flags are the immutable bit only).
func (s *Server) handleAttrGet(c *conn, req *wire.Message) {
	r, err := decodeRequest(req.Payload, req.Flags&wire.FlagPayload != 0)
	var name string
	if err == nil {
		name, err = required(r.str("name"))
	}
	if err != nil {
		s.respondError(c, req, &rpcError{errno: syscall.EPROTO})
		return
	}
	const immutable = 1 // ATTR_IMMUTABLE
	var val string
	switch name {
	case "size":
		val = "1"
	case "rank":
		val = "0"
	case "version":
		val = SimulatedVersion
	case "local-uri":
		val = s.URI()
	default:
		s.respondError(c, req, &rpcError{errno: syscall.ENOENT})
		return
	}
	s.respond(c, req, obj{{"value", val}, {"flags", immutable}})
}

// jobStats are job-list's statistics for a set of jobs, in the shape of
// flux-core src/modules/job-list/stats.c stats_encode.
type jobStats struct {
	states                                        [7]int // by state index: new(unused) depend priority sched run cleanup inactive
	successful, failed, canceled, timeout, purged int
}

func (st *jobStats) add(j *jobRecord) {
	for i := 1; i < len(st.states); i++ {
		if j.state == 1<<i {
			st.states[i]++
		}
	}
	if j.state != stateInactive {
		return
	}
	switch j.result {
	case resultCompleted:
		st.successful++
	case resultCanceled:
		st.canceled++
	case resultTimeout:
		st.timeout++
	default:
		st.failed++
	}
}

func (st *jobStats) encode(name string) obj {
	names := []string{"", "depend", "priority", "sched", "run", "cleanup", "inactive"}
	var states obj
	total := 0
	for i := 1; i < len(st.states); i++ {
		states = append(states, kv{names[i], st.states[i]})
		total += st.states[i]
	}
	states = append(states, kv{"total", total})
	o := obj{{"job_states", states}, {"successful", st.successful}, {"failed", st.failed},
		{"canceled", st.canceled}, {"timeout", st.timeout}, {"inactive_purged", st.purged}}
	if name != "" {
		o = append(o, kv{"name", name})
	}
	return o
}

// handleJobStats serves job-list.job-stats {} with the counts of every
// job the broker knows, and per named queue (flux-core
// src/modules/job-list/stats.c job_stats_encode).
func (s *Server) handleJobStats(c *conn, req *wire.Message) {
	s.mu.Lock()
	var all jobStats
	queues := map[string]*jobStats{}
	var order []string
	for _, j := range s.order {
		all.add(j)
		if j.queue == "" {
			continue
		}
		q := queues[j.queue]
		if q == nil {
			q = &jobStats{}
			queues[j.queue] = q
			order = append(order, j.queue)
		}
		q.add(j)
	}
	s.mu.Unlock()
	qs := make([]any, 0, len(order))
	for _, name := range order {
		qs = append(qs, queues[name].encode(name))
	}
	s.respond(c, req, append(all.encode(""), kv{"queues", qs}))
}
