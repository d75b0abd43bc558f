package broker

import (
	"strings"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
)

// Rejection classifies the broker's refusal of a submission: a dependency
// it cannot accept (flux-core 0.88 dependency-after.c and jobtap.c messages
// start "dependency" or name the scheme), a queue it does not have
// (job-manager queues.c "'Q' is not a valid queue", "a named queue is
// required", queue.c "job submission to Q is disabled", the frobnicator's
// defaults plugin "Invalid queue 'Q' specified", "no queue specified"), a
// rule for the instance owner only (job-ingest job.c), or else the jobspec
// itself.
func Rejection(msg string) (reason, message string) {
	lower := strings.ToLower(msg)
	switch {
	case strings.HasPrefix(lower, "dependency") || strings.Contains(lower, "dependency scheme") ||
		strings.HasPrefix(lower, "after") || strings.Contains(lower, "begin-time"):
		return fluxjobv1.ReasonDependencyFailed, "Flux refused the job's dependencies: " + msg
	case strings.Contains(lower, "queue") || strings.HasPrefix(lower, "job submission") && strings.Contains(lower, "is disabled"):
		return fluxjobv1.ReasonQueueRejected, "Flux refused the queue: " + msg
	case strings.Contains(lower, "instance owner"):
		// job-ingest's owner-only rules (job.c): urgency > 16, the
		// waitable flag, sign-type=none from a guest.
		return fluxjobv1.ReasonSubmitFailed, "Flux refused the submission: " + msg
	}
	return fluxjobv1.ReasonInvalidJobspec, "Flux rejected the jobspec: " + msg
}

// ExceptionReason is the Failed reason for a fatal exception that is not a
// cancel: DependencyFailed for Flux's "dependency" exceptions.
func ExceptionReason(typ string) string {
	if typ == "dependency" {
		return fluxjobv1.ReasonDependencyFailed
	}
	return fluxjobv1.ReasonException
}
