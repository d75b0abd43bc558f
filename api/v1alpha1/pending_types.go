package v1alpha1

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// Why a FluxJob that has not started waits, read from Flux's own data: the job's eventlog
// (urgency, dependency-add/dependency-remove, the begin-time dependency, priority), the
// instance's queues (job-manager.queue-status) and the scheduler's annotations (job-list).

// MaxPendingMessageLength is the longest status.pending.message, in bytes.
const MaxPendingMessageLength = 1024

// FluxJobPending is why a FluxJob waits: before submission (the controller holds it), or in Flux
// before its job starts. Absent once the job started or ended; an array's says why its first
// waiting index waits, while any index waits in Flux.
type FluxJobPending struct {
	// Reason is one of the PendingReason values (shown by kubectl get as REASON).
	// +required
	// +kubebuilder:validation:MaxLength=64
	Reason string `json:"reason"`
	// Message says it in words, with Flux's own descriptions (dependencies, the queue's stop
	// reason, the scheduler's estimate).
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	Message string `json:"message,omitempty"`
	// Since is when the FluxJob started to wait for this reason: the time of the Flux event that
	// set it (urgency, dependency-add, priority), else when the controller first saw it.
	// +optional
	Since *metav1.Time `json:"since,omitempty"`
	// EstimatedStartTime is the scheduler's estimate of the job's start (its sched.t_estimate
	// annotation), when the scheduler gives one (flux-core's sched-fifo and sched-backfill, and
	// Fluxion do; the default sched-simple does not).
	// +optional
	EstimatedStartTime *metav1.Time `json:"estimatedStartTime,omitempty"`
}

// Pending reasons (status.pending.reason). Each names a Flux state a job waits in; the README
// maps them to Slurm's reason codes and to `flux jobs` fields.
const (
	// PendingSuspended: spec.suspend keeps the FluxJob from being submitted.
	PendingSuspended = "Suspended"
	// PendingWaitingForDependency: a FluxJob in spec.dependsOn has no Flux job ID yet, or does
	// not exist; the controller submits once each has one.
	PendingWaitingForDependency = "WaitingForDependency"
	// PendingNotAdmitted: the FluxJob's FluxEndpoint does not exist or does not admit it yet.
	PendingNotAdmitted = "NotAdmitted"
	// PendingHeld: the Flux job has urgency 0 (spec.suspend, `flux job urgency ID hold`) or
	// priority 0; the scheduler does not consider it. Slurm: JobHeldUser / JobHeldAdmin.
	PendingHeld = "Held"
	// PendingDependency: the Flux job is in DEPEND on job dependencies (after*, singleton, or
	// any description a plugin added). Slurm: Dependency.
	PendingDependency = "Dependency"
	// PendingBeginTime: the Flux job waits for its begin-time dependency. Slurm: BeginTime.
	PendingBeginTime = "BeginTime"
	// PendingLimit: a limit holds the Flux job in DEPEND (flux-accounting's
	// max-running-jobs-user-limit and its other *-limit dependencies). Slurm: AssocMaxJobsLimit,
	// QOSMaxJobsPerUserLimit and the other *Limit codes.
	PendingLimit = "Limit"
	// PendingPriority: the Flux job waits in PRIORITY for a priority plugin to give it one
	// (flux-accounting holds jobs there while it cannot). Slurm: AccountingPolicy.
	PendingPriority = "Priority"
	// PendingQueueStopped: the job's queue is stopped (`flux queue stop`), or the scheduler is
	// offline. Slurm: PartitionInactive / PartitionDown.
	PendingQueueStopped = "QueueStopped"
	// PendingResources: the scheduler says the job waits for resources (its t_estimate or
	// reason_pending annotation). Slurm: Resources.
	PendingResources = "Resources"
	// PendingScheduling: the Flux job is in SCHED and the scheduler has said nothing more about
	// it (no estimate). Slurm: Priority / None.
	PendingScheduling = "Scheduling"
)
