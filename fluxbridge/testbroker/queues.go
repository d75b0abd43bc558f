package testbroker

import (
	"slices"
	"syscall"
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
		return "", nil
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
	return queue, nil
}
