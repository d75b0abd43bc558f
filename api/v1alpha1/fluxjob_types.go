package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// Bounds shared by the CRD schema and the controller. The controller must clip what it writes
// into the status to these sizes, or the API server rejects the status patch.
const (
	// DefaultUrgency is the Flux default job urgency (FLUX_JOB_URGENCY_DEFAULT in flux-core's
	// src/common/libjob/job.h), applied by the CRD schema when spec.urgency is omitted.
	DefaultUrgency int32 = 16
	// MinUrgency is the lowest Flux urgency (FLUX_JOB_URGENCY_MIN, 0: the job is held).
	MinUrgency int32 = 0
	// MaxUrgency is the highest Flux urgency (FLUX_JOB_URGENCY_MAX, 31: expedite). Urgencies above
	// DefaultUrgency are reserved by Flux to the instance owner.
	MaxUrgency int32 = 31

	// MaxStatusEvents is the most eventlog entries kept in status.events (the latest ones).
	MaxStatusEvents = 32
	// MaxEventContextLength is the longest status.events[].context, in bytes.
	MaxEventContextLength = 256
	// MaxEventNameLength is the longest status.events[].name, in bytes.
	MaxEventNameLength = 64
	// MaxExceptionNoteLength is the longest status.exception.note, in bytes.
	MaxExceptionNoteLength = 1024
	// MaxMessageLength is the longest status.message, in bytes.
	MaxMessageLength = 1024

	// MaxJobspecBytes is the largest spec.jobspec, JSON-encoded, that the controller submits.
	// The CRD schema cannot measure the size of a free-form object, so this bound is enforced by
	// the controller (the FluxJob ends Failed with reason JobspecTooLarge); the API server's own
	// request size limit (3 MiB) bounds what reaches it at all.
	MaxJobspecBytes = 256 * 1024
)

// Names shared by the controller and the Flux side.
const (
	// CancelFinalizer is the finalizer through which the controller cancels a FluxJob's Flux job
	// before the object goes away.
	CancelFinalizer = "fluxjob.io/cancel"
	// SubmitAttemptAnnotation is the controller's submission marker: written, with the cancel
	// finalizer, in one optimistic-locked patch just before the controller submits the FluxJob to
	// Flux (JSON: the FluxJob's uid, the attempt time to the nanosecond, the instance and its
	// identity). The status repeats it (status.submitAttemptTime, instance, instanceID) with the
	// next status write. It is the only annotation the controller writes; a copy on another object
	// (another uid) is ignored, and an unreadable one counts as an attempt at the object's creation.
	SubmitAttemptAnnotation = "fluxjob.io/submit-attempt"
	// FluxJobNamePrefix prefixes the FluxJob UID to make the Flux job name
	// (attributes.system.job.name), which lets the controller find a job it submitted.
	FluxJobNamePrefix = "fluxjob-"
	// UserAttributeKey is the key under the jobspec's attributes.user where the controller records
	// which FluxJob a Flux job belongs to ({namespace, name, uid}). It is reserved: a value given in
	// spec.attributes is replaced by the controller's.
	UserAttributeKey = "fluxjob"
)

// FluxJobPhase is where a FluxJob is in its life.
// +kubebuilder:validation:Enum=Pending;Suspended;Submitted;Running;Succeeded;Failed;Cancelled
type FluxJobPhase string

// The phases of a FluxJob. Succeeded, Failed and Cancelled are terminal.
const (
	// PhasePending: accepted by Kubernetes, not submitted to Flux yet.
	PhasePending FluxJobPhase = "Pending"
	// PhaseSuspended: spec.suspend is true and the job has not started: nothing was submitted,
	// or the Flux job is held at urgency 0 (see spec.suspend).
	PhaseSuspended FluxJobPhase = "Suspended"
	// PhaseSubmitted: Flux has the job (status.jobID is set) but it is not running yet
	// (Flux states DEPEND, PRIORITY, SCHED).
	PhaseSubmitted FluxJobPhase = "Submitted"
	// PhaseRunning: Flux started the job (the "start" event).
	PhaseRunning FluxJobPhase = "Running"
	// PhaseSucceeded: the job finished with exit status 0.
	PhaseSucceeded FluxJobPhase = "Succeeded"
	// PhaseFailed: the job finished with a non-zero exit status or a fatal exception, or it could not
	// be submitted or tracked (bad jobspec, job lost); see the Failed condition's reason.
	PhaseFailed FluxJobPhase = "Failed"
	// PhaseCancelled: the job was cancelled (a "cancel" exception) before it finished normally.
	PhaseCancelled FluxJobPhase = "Cancelled"
)

// IsTerminal reports whether p is a final phase (Succeeded, Failed or Cancelled).
func (p FluxJobPhase) IsTerminal() bool {
	return p == PhaseSucceeded || p == PhaseFailed || p == PhaseCancelled
}

// Condition types set on FluxJobs. Each condition carries observedGeneration.
const (
	// ConditionSubmitted is True once Flux accepted the job and returned its ID; Unknown (reason
	// Submitting) while a submission is in flight; False if submission failed.
	ConditionSubmitted = "Submitted"
	// ConditionRunning is True while the job runs; False before it starts and after it ends.
	ConditionRunning = "Running"
	// ConditionSucceeded is True when the job finished with exit status 0.
	ConditionSucceeded = "Succeeded"
	// ConditionFailed is True when the FluxJob ended in phase Failed or Cancelled.
	ConditionFailed = "Failed"
	// ConditionReady is the kstatus Ready condition: True when the job succeeded, False otherwise.
	ConditionReady = "Ready"
	// ConditionReconciling is the kstatus Reconciling condition: True while the job is in progress
	// (pending, submitted, running); absent or False once it ended.
	ConditionReconciling = "Reconciling"
	// ConditionStalled is the kstatus Stalled condition: True when the job ended in failure or
	// cannot make progress without a change (bad input, namespace not allowed).
	ConditionStalled = "Stalled"
	// ConditionFluxReachable is False while the controller cannot reach the Flux broker. It does
	// not make the FluxJob fail: the controller re-attaches once the broker is back.
	ConditionFluxReachable = "FluxReachable"
	// ConditionUrgencyApplied is False (reason UrgencyRejected, the broker's message quoted) while
	// Flux refuses the urgency in spec.urgency; absent otherwise. The job keeps running at its
	// previous urgency.
	ConditionUrgencyApplied = "UrgencyApplied"
	// ConditionReaped is True once the controller collected the FluxJob's waitable Flux job with
	// job-manager.wait (reason Waited), or found there was nothing to collect (reason
	// NothingToWait). Only waitable jobs get it.
	ConditionReaped = "Reaped"
)

// Condition reasons (CamelCase, as metav1.Condition requires).
const (
	// ReasonPending: not submitted yet.
	ReasonPending = "Pending"
	// ReasonSubmitting: a submission is in flight (written before the submit RPC, see the
	// controller's exactly-once design).
	ReasonSubmitting = "Submitting"
	// ReasonSubmitted: Flux returned a job ID.
	ReasonSubmitted = "Submitted"
	// ReasonStarted: the job started running.
	ReasonStarted = "Started"
	// ReasonCompleted: the job finished with exit status 0.
	ReasonCompleted = "Completed"
	// ReasonNonZeroExit: the job finished with a non-zero exit code.
	ReasonNonZeroExit = "NonZeroExit"
	// ReasonSignaled: the job was killed by a signal (status.exitStatus is -signum).
	ReasonSignaled = "Signaled"
	// ReasonException: the job ended because of a fatal Flux exception other than cancel.
	ReasonException = "Exception"
	// ReasonCancelled: the job was cancelled.
	ReasonCancelled = "Cancelled"
	// ReasonInvalidJobspec: the broker (or the controller's own validation) rejected the jobspec.
	ReasonInvalidJobspec = "InvalidJobspec"
	// ReasonJobspecTooLarge: spec.jobspec is larger than MaxJobspecBytes.
	ReasonJobspecTooLarge = "JobspecTooLarge"
	// ReasonSubmitFailed: the submission failed for another reason the broker reported.
	ReasonSubmitFailed = "SubmitFailed"
	// ReasonJobNotFound: status.jobID names a job Flux does not know (for example after a broker
	// restart that lost its jobs).
	ReasonJobNotFound = "JobNotFound"
	// ReasonInstanceReplaced: the Flux instance that ran the job was replaced by a new one (a new
	// pod, a new state directory): the job is gone, and its ID may name another job of the new
	// instance, which the controller never follows or cancels.
	ReasonInstanceReplaced = "InstanceReplaced"
	// ReasonSubmissionUnknown: a submission was attempted longer ago than the Flux instance keeps
	// inactive jobs (Options.PurgeAge) and no job was found: it may have run and been purged, so
	// it is not submitted again.
	ReasonSubmissionUnknown = "SubmissionUnknown"
	// ReasonUrgencyRejected: Flux refused the urgency in spec.urgency (permission or range).
	ReasonUrgencyRejected = "UrgencyRejected"
	// ReasonNamespaceNotAllowed: the FluxJob's namespace may not run jobs on this Flux instance.
	ReasonNamespaceNotAllowed = "NamespaceNotAllowed"
	// ReasonPrivilegeNotAllowed: the FluxJob asks for an instance-owner power (urgency above 16,
	// waitable) that its namespace is not granted (--privileged-namespaces).
	ReasonPrivilegeNotAllowed = "PrivilegeNotAllowed"
	// ReasonFluxReachable: the controller is connected to the broker.
	ReasonFluxReachable = "FluxReachable"
	// ReasonFluxUnreachable: the controller lost, or has not got, a broker connection.
	ReasonFluxUnreachable = "FluxUnreachable"
	// ReasonInProgress: used with Reconciling=True while the job is not finished.
	ReasonInProgress = "InProgress"
	// ReasonFinished: used with Reconciling=False once the job ended.
	ReasonFinished = "Finished"
)

// EnvVar is an environment variable of a command job. Unlike corev1.EnvVar it has no valueFrom:
// the value is given literally (the controller never logs it).
type EnvVar struct {
	// Name of the variable (a C identifier).
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=256
	// +kubebuilder:validation:Pattern=`^[A-Za-z_][A-Za-z0-9_]*$`
	Name string `json:"name"`
	// Value of the variable; empty if omitted.
	// +optional
	// +kubebuilder:validation:MaxLength=32768
	Value string `json:"value,omitempty"`
}

// FluxJobSpec is what to run. Give exactly one of jobspec or command. The options tasks, nodes,
// coresPerTask, gpusPerTask, exclusive, duration, workingDir, env and attributes build the jobspec
// of a command (as flux-core's Jobspec.from_command does) and are not allowed with jobspec.
// Everything but urgency, suspend and ttlSecondsAfterFinished is immutable: a submitted Flux job
// cannot change.
//
// +kubebuilder:validation:XValidation:rule="!has(self.jobspec) || !has(self.queue)",message="spec.queue goes with spec.command; with spec.jobspec set attributes.system.queue in the jobspec"
// +kubebuilder:validation:XValidation:rule="has(self.queue) == has(oldSelf.queue) && has(self.dependsOn) == has(oldSelf.dependsOn) && has(self.beginTime) == has(oldSelf.beginTime)",message="spec.queue, spec.dependsOn and spec.beginTime are immutable (they cannot be added or removed)"
//
// +kubebuilder:validation:XValidation:rule="has(self.jobspec) != has(self.command)",message="exactly one of spec.jobspec and spec.command must be set"
// +kubebuilder:validation:XValidation:rule="!has(self.jobspec) || !(has(self.tasks) || has(self.nodes) || has(self.coresPerTask) || has(self.gpusPerTask) || has(self.exclusive) || has(self.duration) || has(self.workingDir) || has(self.env) || has(self.attributes))",message="tasks, nodes, coresPerTask, gpusPerTask, exclusive, duration, workingDir, env and attributes go with spec.command; with spec.jobspec put them into the jobspec"
// +kubebuilder:validation:XValidation:rule="!has(self.nodes) || self.nodes <= (has(self.tasks) ? self.tasks : 1)",message="spec.nodes must not be greater than spec.tasks (default 1)"
// +kubebuilder:validation:XValidation:rule="!has(self.exclusive) || !self.exclusive || has(self.nodes)",message="spec.exclusive can only be set with spec.nodes"
// +kubebuilder:validation:XValidation:rule="has(self.jobspec) == has(oldSelf.jobspec) && has(self.command) == has(oldSelf.command) && has(self.tasks) == has(oldSelf.tasks) && has(self.nodes) == has(oldSelf.nodes) && has(self.coresPerTask) == has(oldSelf.coresPerTask) && has(self.gpusPerTask) == has(oldSelf.gpusPerTask) && has(self.exclusive) == has(oldSelf.exclusive) && has(self.duration) == has(oldSelf.duration) && has(self.workingDir) == has(oldSelf.workingDir) && has(self.env) == has(oldSelf.env) && has(self.attributes) == has(oldSelf.attributes) && has(self.waitable) == has(oldSelf.waitable) && has(self.debug) == has(oldSelf.debug)",message="spec is immutable except spec.urgency: a submitted Flux job cannot change (fields cannot be added or removed)"
// +kubebuilder:validation:XValidation:rule="has(self.instance) == has(oldSelf.instance)",message="spec.instance is immutable (it cannot be added or removed)"
// +kubebuilder:validation:XValidation:rule="has(self.backoffLimit) == has(oldSelf.backoffLimit) && has(self.failurePolicy) == has(oldSelf.failurePolicy)",message="spec.backoffLimit and spec.failurePolicy are immutable (they cannot be added or removed)"
// +kubebuilder:validation:XValidation:rule="!has(self.waitable) || !self.waitable || !(has(self.backoffLimit) || has(self.failurePolicy))",message="spec.waitable cannot be combined with spec.backoffLimit or spec.failurePolicy: only the final Flux job would be reaped"
// +kubebuilder:validation:XValidation:rule="has(self.array) == has(oldSelf.array)",message="spec.array is immutable (it cannot be added or removed)"
// +kubebuilder:validation:XValidation:rule="!has(self.array) || !has(self.backoffLimit)",message="spec.backoffLimit is not used with spec.array: set spec.array.backoffLimitPerIndex"
type FluxJobSpec struct {
	// Jobspec is a complete Flux jobspec, version 1 (Flux RFC 25 / RFC 14), given as an object.
	// The schema only requires an object: CEL cannot see inside an object whose fields the schema
	// does not declare, so the jobspec's content (version 1, resources, tasks, attributes) is
	// checked by the controller and the broker; a jobspec either rejects ends the FluxJob in phase
	// Failed with reason InvalidJobspec. Its JSON encoding may not exceed 256 KiB (MaxJobspecBytes,
	// checked by the controller). The controller sets attributes.system.job.name and
	// attributes.user.fluxjob.
	// +optional
	// +kubebuilder:validation:Type=object
	// +kubebuilder:pruning:PreserveUnknownFields
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.jobspec is immutable"
	Jobspec *runtime.RawExtension `json:"jobspec,omitempty"`

	// Command is the program and its arguments, run by the Flux job shell (no shell expansion).
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=1024
	// +kubebuilder:validation:items:MaxLength=4096
	// +kubebuilder:validation:XValidation:rule="size(self[0]) > 0",message="spec.command[0] (the program) must not be empty"
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.command is immutable"
	Command []string `json:"command,omitempty"`

	// Tasks is the number of tasks (flux submit -n). Default 1.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.tasks is immutable"
	Tasks *int32 `json:"tasks,omitempty"`

	// Nodes spreads the tasks over this many nodes (flux submit -N); at most tasks.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.nodes is immutable"
	Nodes *int32 `json:"nodes,omitempty"`

	// CoresPerTask is the number of cores per task (flux submit -c). Default 1.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.coresPerTask is immutable"
	CoresPerTask *int32 `json:"coresPerTask,omitempty"`

	// GPUsPerTask is the number of GPUs per task (flux submit -g). Default 0.
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.gpusPerTask is immutable"
	GPUsPerTask *int32 `json:"gpusPerTask,omitempty"`

	// Exclusive allocates whole nodes (flux submit --exclusive); requires nodes.
	// +optional
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.exclusive is immutable"
	Exclusive bool `json:"exclusive,omitempty"`

	// Duration is the job's time limit (attributes.system.duration), in Go duration syntax
	// ("90s", "10m", "1h30m"). 0 or omitted: no limit beyond the instance's own.
	// +optional
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('0s')",message="spec.duration must not be negative"
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.duration is immutable"
	Duration *metav1.Duration `json:"duration,omitempty"`

	// WorkingDir is the absolute directory the tasks start in (attributes.system.cwd) on the
	// Flux nodes. Omitted: the controller's working directory as Flux sees it.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=4096
	// +kubebuilder:validation:XValidation:rule="self.startsWith('/')",message="spec.workingDir must be an absolute path"
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.workingDir is immutable"
	WorkingDir string `json:"workingDir,omitempty"`

	// Env is the tasks' environment (attributes.system.environment). Values are literal.
	// +optional
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=256
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.env is immutable"
	Env []EnvVar `json:"env,omitempty"`

	// Attributes are user attributes, merged into the jobspec's attributes.user (visible with
	// flux job info). The key "fluxjob" is reserved: the controller sets it (the schema cannot
	// reject it, as CEL cannot see undeclared fields of a free-form object).
	// +optional
	// +kubebuilder:validation:Type=object
	// +kubebuilder:pruning:PreserveUnknownFields
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.attributes is immutable"
	Attributes *runtime.RawExtension `json:"attributes,omitempty"`

	// Urgency is the Flux job urgency, 0 (held) to 31 (expedite), default 16. Values above 16 are
	// allowed by Flux for the instance owner only. The one field that may change after creation:
	// the controller applies a change to the Flux job (flux job urgency).
	// +optional
	// +kubebuilder:default=16
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=31
	Urgency *int32 `json:"urgency,omitempty"`

	// Waitable submits the job with the waitable flag (flux submit --flags=waitable; instance
	// owner only).
	// +optional
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.waitable is immutable"
	Waitable bool `json:"waitable,omitempty"`

	// Debug submits the job with the debug flag (flux submit --flags=debug).
	// +optional
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.debug is immutable"
	Debug bool `json:"debug,omitempty"`

	// Instance is the name of the FluxEndpoint to run on. Omitted: the default instance, resolved
	// when the FluxJob is first reconciled and recorded in status.instance (spec is never
	// rewritten). Immutable. See FluxEndpoint.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.instance is immutable"
	Instance string `json:"instance,omitempty"`

	// Output says how much of the job's output status.output keeps (default: the last 4096 bytes
	// of stdout and of stderr). It is read when the job ends, so it may change until then.
	// +optional
	Output *FluxJobOutputSpec `json:"output,omitempty"`

	// The batch options below are described in batch_types.go.

	// Queue is the Flux queue to submit to (flux submit -q; attributes.system.queue), with
	// spec.command only. The instance must have the queue configured ([queues] in its config); an
	// unknown queue ends the FluxJob Failed with reason QueueRejected and Flux's message.
	// Omitted: the instance's default queue, if it has queues.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=128
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.queue is immutable"
	Queue string `json:"queue,omitempty"`

	// DependsOn names FluxJobs of the same namespace this one runs after, each with a Flux
	// dependency condition (RFC 26 schemes of flux-core's dependency-after plugin). The controller
	// submits this FluxJob only once every one of them has a Flux job ID, with the dependencies in
	// attributes.system.dependencies; Flux then holds the job in its DEPEND state. A dependency
	// that cannot be satisfied ends this FluxJob Failed with reason DependencyFailed.
	// +optional
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.dependsOn is immutable"
	DependsOn []Dependency `json:"dependsOn,omitempty"`

	// BeginTime holds the job in Flux until this time (flux submit --begin-time: a "begin-time"
	// dependency).
	// +optional
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.beginTime is immutable"
	BeginTime *metav1.Time `json:"beginTime,omitempty"`

	// Suspend, while true, keeps the job from running: before submission nothing is submitted
	// (phase Suspended); a submitted job that has not started is held in Flux at urgency 0 and
	// gets spec.urgency back when Suspend turns false. It has no effect on a job that has started
	// (as with Kueue's contract for a started workload): the Suspended condition says so.
	// +optional
	Suspend bool `json:"suspend,omitempty"`

	// TTLSecondsAfterFinished, if set, deletes the FluxJob this many seconds after it finished
	// (succeeded or failed), as batch/v1 Job's field does; 0 deletes it as soon as it finished.
	// +optional
	// +kubebuilder:validation:Minimum=0
	TTLSecondsAfterFinished *int32 `json:"ttlSecondsAfterFinished,omitempty"`

	// Retries (retry_types.go).

	// BackoffLimit is how many failed attempts are retried, each as a new Flux job (batch/v1
	// backoffLimit; flux-core has no retry). Default 0: a failed job is not retried. Failures a
	// failure policy rule ignores do not count. Not with spec.array: an array's indexes are
	// retried by spec.array.backoffLimitPerIndex.
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=10000
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.backoffLimit is immutable"
	BackoffLimit *int32 `json:"backoffLimit,omitempty"`

	// FailurePolicy decides, from a failed attempt's exit code and the Flux exceptions raised on
	// it, whether it is retried, ignored or fails the FluxJob (batch/v1 podFailurePolicy).
	// +optional
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.failurePolicy is immutable"
	FailurePolicy *FailurePolicy `json:"failurePolicy,omitempty"`
	// Array makes this FluxJob an array of Flux jobs, one per index (array_types.go). Immutable.
	// +optional
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.array is immutable"
	Array *ArraySpec `json:"array,omitempty"`
}

// FluxJobEvent is one entry of the Flux job's eventlog.
type FluxJobEvent struct {
	// Name of the event (submit, depend, alloc, start, finish, exception, clean, ...).
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=64
	Name string `json:"name"`
	// Time of the event, as Flux recorded it.
	// +required
	Time metav1.MicroTime `json:"time"`
	// Context is the event's context, JSON-encoded and cut to 256 bytes.
	// +optional
	// +kubebuilder:validation:MaxLength=256
	Context string `json:"context,omitempty"`
}

// FluxJobException is a fatal exception raised on the Flux job.
type FluxJobException struct {
	// Type of the exception (cancel, timeout, exec, alloc, ...).
	// +required
	// +kubebuilder:validation:MaxLength=64
	Type string `json:"type"`
	// Severity, 0 (fatal) to 7.
	// +required
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=7
	Severity int32 `json:"severity"`
	// Note is the exception's message, cut to 1024 bytes.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	Note string `json:"note,omitempty"`
}

// FluxJobStatus is what the controller observed of the Flux job. Only the controller writes it,
// through the status subresource.
type FluxJobStatus struct {
	// JobID is the Flux job ID as an integer. Flux IDs are unsigned 64-bit FLUIDs; their top bit is
	// zero for the first ~17 years of an instance, so they fit an int64.
	// +optional
	JobID int64 `json:"jobID,omitempty"`
	// JobIDF58 is the job ID in the F58 form flux jobs prints (for example ƒ2Q6Jf8Y3).
	// +optional
	// +kubebuilder:validation:MaxLength=32
	JobIDF58 string `json:"jobIDF58,omitempty"`
	// Phase is where the job is in its life.
	// +optional
	Phase FluxJobPhase `json:"phase,omitempty"`
	// ExitStatus is the job's exit code, or -signum if a signal killed it. Set once it finished.
	// +optional
	ExitStatus *int32 `json:"exitStatus,omitempty"`
	// Events are the latest entries of the Flux job's eventlog (at most 32, oldest first).
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=32
	Events []FluxJobEvent `json:"events,omitempty"`
	// Exception is the fatal exception that ended the job, if any.
	// +optional
	Exception *FluxJobException `json:"exception,omitempty"`
	// SubmitAttemptTime is when the controller started submitting (before the submit RPC), to the
	// nanosecond (RFC 3339; values written by earlier versions have whole seconds). With no jobID,
	// it tells a restarted controller to look for the job before submitting again.
	// +optional
	SubmitAttemptTime *PreciseTime `json:"submitAttemptTime,omitempty"`
	// InstanceID identifies the Flux instance that holds jobID: an ID the controller keeps in that
	// instance's KVS, which survives broker restarts on the same state directory and is new in a new
	// instance. Empty when the controller cannot keep one there (not the instance owner). Flux job
	// IDs are unique only within one instance.
	// +optional
	// +kubebuilder:validation:MaxLength=64
	InstanceID string `json:"instanceID,omitempty"`
	// SubmitTime is when Flux accepted the job (the submit event).
	// +optional
	SubmitTime *metav1.Time `json:"submitTime,omitempty"`
	// StartTime is when the job started running (the start event).
	// +optional
	StartTime *metav1.Time `json:"startTime,omitempty"`
	// CompletionTime is when the job finished (the finish event, or the fatal exception).
	// +optional
	CompletionTime *metav1.Time `json:"completionTime,omitempty"`
	// Duration is how long the job ran (completionTime - startTime), set once it finished; shown
	// by kubectl get.
	// +optional
	Duration *metav1.Duration `json:"duration,omitempty"`
	// Urgency is the urgency last applied to the Flux job.
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=31
	Urgency *int32 `json:"urgency,omitempty"`
	// Conditions: Submitted, Running, Succeeded, Failed, Finished, Ready, Reconciling, Stalled,
	// FluxReachable, and with the batch options DependenciesReady and Suspended.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=16
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// ObservedGeneration is the metadata.generation this status was computed for.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Instance is the FluxEndpoint the FluxJob runs on: spec.instance, or the default instance
	// when it was first routed. Once set it does not change, so that the Flux job is always looked
	// up on the instance it was submitted to.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	Instance string `json:"instance,omitempty"`
	// Message is a human-readable summary (for a failure, the broker's error is quoted).
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	Message string `json:"message,omitempty"`
	// Output is the end of the job's stdout and stderr, written with the final status once the
	// job ended (if it started).
	// +optional
	Output *FluxJobOutput `json:"output,omitempty"`
	// Retry is the current attempt and the history of the ended ones, with spec.backoffLimit or
	// spec.failurePolicy (retry_types.go).
	// +optional
	Retry *FluxJobRetryStatus `json:"retry,omitempty"`
	// Array counts an array's indexes by state (spec.array).
	// +optional
	Array *ArrayStatus `json:"array,omitempty"`
	// Pending is why the FluxJob waits (pending_types.go); absent once its job started (an
	// array's: once none of its indexes waits).
	// +optional
	Pending *FluxJobPending `json:"pending,omitempty"`
}

// FluxJob runs one job on a Flux instance.
//
// +kubebuilder:validation:XValidation:rule="!has(self.spec.dependsOn) || self.spec.dependsOn.all(d, d.name != self.metadata.name)",message="spec.dependsOn must not name the FluxJob itself"
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=fj,categories=flux
// +kubebuilder:printcolumn:name="JobID",type=string,JSONPath=`.status.jobIDF58`
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.pending.reason`
// +kubebuilder:printcolumn:name="Exit",type=integer,JSONPath=`.status.exitStatus`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:printcolumn:name="Duration",type=string,JSONPath=`.status.duration`
// +kubebuilder:printcolumn:name="Instance",type=string,JSONPath=`.status.instance`,priority=1
// +kubebuilder:printcolumn:name="Urgency",type=integer,JSONPath=`.spec.urgency`,priority=1
// +kubebuilder:printcolumn:name="Queue",type=string,JSONPath=`.spec.queue`,priority=1
// +kubebuilder:printcolumn:name="Message",type=string,JSONPath=`.status.message`,priority=1
type FluxJob struct {
	metav1.TypeMeta `json:",inline"`
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Spec is what to run.
	// +required
	Spec FluxJobSpec `json:"spec"`
	// Status is what the controller observed.
	// +optional
	Status FluxJobStatus `json:"status,omitempty"`
}

// FluxJobList is a list of FluxJobs.
//
// +kubebuilder:object:root=true
type FluxJobList struct {
	metav1.TypeMeta `json:",inline"`
	// +optional
	metav1.ListMeta `json:"metadata,omitempty"`
	// Items are the FluxJobs.
	Items []FluxJob `json:"items"`
}

func init() {
	SchemeBuilder.Register(&FluxJob{}, &FluxJobList{})
}
