package testbroker

import (
	"slices"
	"syscall"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/wire"
)

// checkQueue decides the queue of a job being submitted, as a flux-core
// 0.88 instance does, and returns it or the refusal:
//
//   - With queues configured (Options.Queues), job-ingest runs the
//     frobnicator, whose defaults plugin
//     (python/flux/job/frobnicator/plugins/defaults.py) applies the default
//     queue (Options.DefaultQueue, policy.jobspec.defaults.system.queue) and
//     refuses "no queue specified" or "Invalid queue 'Q' specified"; a
//     frobnicator error reaches the client as errnum 1, EPERM
//     (src/cmd/flux-job-frobnicator.py, job-ingest/worker.c).
//   - Without queues, only the anonymous queue exists and job-manager
//     refuses any named one (queue.c queue_submit_check, queues.c
//     queues_lookup): "'Q' is not a valid queue", EINVAL.
//
// Named queues of a real instance start stopped until `flux queue start`;
// the test broker's configured queues are all started.
func (s *Server) checkQueue(queue string) (string, error) {
	if len(s.opts.Queues) == 0 {
		if queue != "" {
			return "", errorf(syscall.EINVAL, "'%s' is not a valid queue", queue)
		}
		return "", s.checkEnabled("")
	}
	if queue == "" {
		queue = s.opts.DefaultQueue
	}
	if queue == "" {
		return "", errorf(syscall.EPERM, "no queue specified")
	}
	if !slices.Contains(s.opts.Queues, queue) {
		return "", errorf(syscall.EPERM, "Invalid queue '%s' specified", queue)
	}
	return queue, s.checkEnabled(queue)
}

// checkEnabled refuses a submission to a disabled queue.
func (s *Server) checkEnabled(queue string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	q := s.queueStates[queue]
	if !q.disabled {
		return nil
	}
	to := ""
	if queue != "" {
		to = " to " + queue
	}
	return errorf(syscall.EINVAL, "job submission%s is disabled: %s", to, q.disableReason)
}

// queueState is a queue's state where it differs from enabled and started
// (flux-core 0.88 queues.c: is_enabled, disable_reason, is_started,
// stop_reason).
type queueState struct {
	disabled      bool
	disableReason string
	stopped       bool
	stopReason    string
}

// queueStoppedLocked reports whether jobs of queue may not be allocated
// (job-manager holds the alloc requests of a stopped queue's jobs).
func (s *Server) queueStoppedLocked(queue string) bool {
	return s.queueStates[queue].stopped
}

// lookupQueueLocked is queues.c queues_lookup: a name must be a
// configured queue, and no name means the anonymous queue, which exists
// only without named queues.
func (s *Server) lookupQueueLocked(name string, named bool) error {
	switch {
	case named && len(s.opts.Queues) == 0 || named && !slices.Contains(s.opts.Queues, name):
		return errorf(syscall.EINVAL, "'%s' is not a valid queue", name)
	case !named && len(s.opts.Queues) > 0:
		return errorf(syscall.EINVAL, "a named queue is required")
	}
	return nil
}

// handleQueueList serves job-manager.queue-list -> {"queues": [names]}
// (empty without named queues).
func (s *Server) handleQueueList(c *conn, req *wire.Message) {
	if _, err := decodeRequest(req.Payload, req.Flags&wire.FlagPayload != 0); err != nil {
		s.respondError(c, req, err)
		return
	}
	s.respond(c, req, obj{{"queues", append([]string{}, s.opts.Queues...)}})
}

// handleQueueStatus serves job-manager.queue-status {"name"?} ->
// {"enable", "start", "disable_reason"?, "stop_reason"?} (queue.c
// queue_status_cb, queues.c queue_status_encode).
func (s *Server) handleQueueStatus(c *conn, req *wire.Message) {
	r, err := decodeRequest(req.Payload, req.Flags&wire.FlagPayload != 0)
	var name string
	if err == nil {
		name, err = optional(r.str("name"))
	}
	if err != nil {
		s.respondError(c, req, err)
		return
	}
	s.mu.Lock()
	err = s.lookupQueueLocked(name, r.has("name"))
	q := s.queueStates[name]
	s.mu.Unlock()
	if err != nil {
		s.respondError(c, req, err)
		return
	}
	resp := obj{{"enable", !q.disabled}, {"start", !q.stopped}}
	if q.disabled && q.disableReason != "" {
		resp = append(resp, kv{"disable_reason", q.disableReason})
	}
	if q.stopped && q.stopReason != "" {
		resp = append(resp, kv{"stop_reason", q.stopReason})
	}
	s.respond(c, req, resp)
}

// queueRequest reads the common part of queue-start and queue-enable:
// {"name"?, <flag>: b, "reason"?, "all": b}, and the queues it names.
func (s *Server) queueRequest(req *wire.Message, flag string) (names []string, on bool, reason string, err error) {
	r, err := decodeRequest(req.Payload, req.Flags&wire.FlagPayload != 0)
	var name string
	var all bool
	if err == nil {
		name, err = optional(r.str("name"))
	}
	if err == nil {
		on, err = required(r.bool(flag))
	}
	if err == nil {
		reason, err = optional(r.str("reason"))
	}
	if err == nil {
		all, err = required(r.bool("all"))
	}
	if err != nil {
		return nil, false, "", errProto
	}
	if flag == "enable" && !on && !r.has("reason") {
		return nil, false, "", errorf(syscall.EINVAL, "reason is required for disable")
	}
	named := r.has("name")
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case !named && len(s.opts.Queues) > 0 && !all:
		return nil, false, "", errorf(syscall.EINVAL, "Use --all to apply this command to all queues")
	case !named && len(s.opts.Queues) > 0:
		return append([]string{}, s.opts.Queues...), on, reason, nil
	}
	if err := s.lookupQueueLocked(name, named); err != nil {
		return nil, false, "", err
	}
	return []string{name}, on, reason, nil
}

// updateQueuesLocked applies fn to the state of each queue in names.
// s.mu is held.
func (s *Server) updateQueuesLocked(names []string, fn func(*queueState)) {
	for _, n := range names {
		q := s.queueStates[n]
		fn(&q)
		s.setQueueStateLocked(n, q)
	}
}

// handleQueueStart serves job-manager.queue-start {"name"?, "start",
// "reason"?, "all", "nocheckpoint"?} (queue.c queue_start_cb): a stopped
// queue's jobs stay in SCHED; starting it lets them be allocated.
func (s *Server) handleQueueStart(c *conn, req *wire.Message) {
	names, start, reason, err := s.queueRequest(req, "start")
	if err != nil {
		s.respondError(c, req, err)
		return
	}
	s.mu.Lock()
	s.updateQueuesLocked(names, func(q *queueState) {
		q.stopped, q.stopReason = !start, ""
		if !start {
			q.stopReason = reason
		}
	})
	if start {
		for _, j := range s.order {
			if j.state == stateSched {
				j.signal()
			}
		}
	}
	s.mu.Unlock()
	s.respond(c, req, nil)
}

// handleQueueEnable serves job-manager.queue-enable {"name"?, "enable",
// "reason"?, "all"} (queue.c queue_enable_cb).
func (s *Server) handleQueueEnable(c *conn, req *wire.Message) {
	names, enable, reason, err := s.queueRequest(req, "enable")
	if err != nil {
		s.respondError(c, req, err)
		return
	}
	s.mu.Lock()
	s.updateQueuesLocked(names, func(q *queueState) {
		q.disabled, q.disableReason = !enable, ""
		if !enable {
			q.disableReason = reason
		}
	})
	s.mu.Unlock()
	s.respond(c, req, nil)
}

func (s *Server) setQueueStateLocked(name string, q queueState) {
	if q == (queueState{}) {
		delete(s.queueStates, name)
		return
	}
	if s.queueStates == nil {
		s.queueStates = map[string]queueState{}
	}
	s.queueStates[name] = q
}
