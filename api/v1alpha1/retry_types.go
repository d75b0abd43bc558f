package v1alpha1

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// Retries and the failure policy: spec.backoffLimit and spec.failurePolicy (batch/v1 Job's
// backoffLimit and podFailurePolicy, adapted to how a Flux job ends), status.retry.

// Bounds of the retry API.
const (
	// MaxFailurePolicyRules is the most rules a failure policy has (batch/v1: 20).
	MaxFailurePolicyRules = 20
	// MaxAttemptHistory is the most ended attempts status.retry.history keeps (the latest).
	MaxAttemptHistory = 16
	// MaxAttemptNoteLength is the longest exception note an attempt of the history keeps.
	MaxAttemptNoteLength = 256
	// MaxBackoffLimit is the largest spec.backoffLimit.
	MaxBackoffLimit = 10000
)

// Condition reasons of the failure policy.
const (
	// ReasonBackoffLimitExceeded: a failed attempt counted toward spec.backoffLimit and no
	// retry was left (batch/v1's reason).
	ReasonBackoffLimitExceeded = "BackoffLimitExceeded"
	// ReasonFailurePolicy: a failure policy rule with action FailJob (or FailIndex, for a
	// FluxJob that is one index) matched the failed attempt (batch/v1: PodFailurePolicy).
	ReasonFailurePolicy = "FailurePolicy"
	// ReasonRetrying: the latest attempt failed and the FluxJob's next attempt is being submitted.
	ReasonRetrying = "Retrying"
)

// FailurePolicyAction is what a failure policy rule does with a failed attempt.
// +kubebuilder:validation:Enum=Retry;Ignore;FailIndex;FailJob
type FailurePolicyAction string

// The failure policy's actions.
const (
	// ActionRetry counts the failure toward spec.backoffLimit and submits a new attempt while
	// the limit allows (batch/v1: Count). What happens to a failure no rule matches.
	ActionRetry FailurePolicyAction = "Retry"
	// ActionIgnore submits a new attempt without counting the failure toward spec.backoffLimit
	// (batch/v1: Ignore).
	ActionIgnore FailurePolicyAction = "Ignore"
	// ActionFailIndex fails the index, with no retry; the FluxJob of a single job fails
	// (batch/v1: FailIndex).
	ActionFailIndex FailurePolicyAction = "FailIndex"
	// ActionFailJob fails the FluxJob at once, with no retry (batch/v1: FailJob).
	ActionFailJob FailurePolicyAction = "FailJob"
)

// ExitCodeOperator says how an exit code rule compares.
// +kubebuilder:validation:Enum=In;NotIn
type ExitCodeOperator string

// The exit code operators.
const (
	// ExitCodeIn matches an exit code among the values.
	ExitCodeIn ExitCodeOperator = "In"
	// ExitCodeNotIn matches an exit code not among the values.
	ExitCodeNotIn ExitCodeOperator = "NotIn"
)

// FailurePolicy decides what follows a failed attempt (batch/v1 podFailurePolicy): the first
// rule that matches it, in order; a failure no rule matches counts toward spec.backoffLimit
// (action Retry), except a cancel exception (flux cancel), which ends the FluxJob Cancelled.
type FailurePolicy struct {
	// Rules, tried in order; the first that matches decides.
	// +required
	// +listType=atomic
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=20
	Rules []FailurePolicyRule `json:"rules"`
}

// FailurePolicyRule matches a failed attempt by its exit code or by the exceptions Flux raised
// on it: exactly one of onExitCodes and onExceptions.
// +kubebuilder:validation:XValidation:rule="has(self.onExitCodes) != has(self.onExceptions)",message="a failure policy rule has exactly one of onExitCodes and onExceptions"
type FailurePolicyRule struct {
	// Action is what the rule does with an attempt it matches.
	// +required
	Action FailurePolicyAction `json:"action"`
	// OnExitCodes matches the job's exit code, as flux job status and flux run report it: the
	// highest exit code of its tasks, 128+N for a task a signal N killed. Every attempt that
	// finished has one, also one a fatal exception ended (a timeout exits 142: SIGALRM); an
	// attempt that never started (cancelled while pending, an unsatisfiable request) has none
	// and matches no exit code rule.
	// +optional
	OnExitCodes *FailurePolicyOnExitCodes `json:"onExitCodes,omitempty"`
	// OnExceptions matches when any exception raised on the job (flux job eventlog: exception
	// events) matches one of these.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=20
	OnExceptions []FailurePolicyOnException `json:"onExceptions,omitempty"`
}

// FailurePolicyOnExitCodes matches exit codes (batch/v1 onExitCodes).
type FailurePolicyOnExitCodes struct {
	// Operator is In or NotIn.
	// +required
	Operator ExitCodeOperator `json:"operator"`
	// Values are exit codes, 0 to 255.
	// +required
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=255
	// +kubebuilder:validation:items:Minimum=0
	// +kubebuilder:validation:items:Maximum=255
	Values []int32 `json:"values"`
}

// FailurePolicyOnException matches an exception Flux raised on the job. flux-core 0.88 raises,
// among others: cancel (flux cancel), timeout (the time limit: "resource allocation expired"),
// exec (a task that cannot start, "node failure on HOST (rank N)" of a critical node, a task
// exit with exit-timeout expired), alloc (an unsatisfiable request), dependency (a dependency
// that can never be met), node-failure of severity 2 (a non-critical node lost); all fatal
// (severity 0) but node-failure. flux job raise raises any type and severity.
type FailurePolicyOnException struct {
	// Type is the exception's type; omitted: any type.
	// +optional
	// +kubebuilder:validation:MaxLength=64
	Type string `json:"type,omitempty"`
	// MaxSeverity matches exceptions of severity 0 (fatal: the job ends) to this. Default 0:
	// fatal exceptions only.
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=7
	MaxSeverity *int32 `json:"maxSeverity,omitempty"`
	// NoteContains matches exceptions whose note contains this text ("node failure" tells a lost
	// node from a task that could not start, both of type exec).
	// +optional
	// +kubebuilder:validation:MaxLength=256
	NoteContains string `json:"noteContains,omitempty"`
}

// FluxJobRetryStatus is where a FluxJob with spec.backoffLimit or spec.failurePolicy is in its
// attempts. Each attempt is one Flux job: attempt 0 is named fluxjob-<uid>, attempt k
// fluxjob-<uid>.<k>, each submitted exactly once.
type FluxJobRetryStatus struct {
	// Attempt is the current attempt: 0 for the first Flux job. status.jobID is its job's.
	// +optional
	// +kubebuilder:validation:Minimum=0
	Attempt int32 `json:"attempt,omitempty"`
	// Failed counts the failed attempts counted toward spec.backoffLimit.
	// +optional
	// +kubebuilder:validation:Minimum=0
	Failed int32 `json:"failed,omitempty"`
	// Ignored counts the failed attempts a rule with action Ignore did not count.
	// +optional
	// +kubebuilder:validation:Minimum=0
	Ignored int32 `json:"ignored,omitempty"`
	// History are the latest ended attempts (at most 16), oldest first.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=16
	History []FluxJobAttempt `json:"history,omitempty"`
}

// FluxJobAttempt is one ended attempt: its Flux job, how it ended, and what followed.
type FluxJobAttempt struct {
	// Attempt is the attempt's number.
	// +required
	// +kubebuilder:validation:Minimum=0
	Attempt int32 `json:"attempt"`
	// JobID is its Flux job's ID, in F58.
	// +optional
	// +kubebuilder:validation:MaxLength=32
	JobID string `json:"jobID,omitempty"`
	// Result is Flux's result of the job (flux jobs -o RESULT): COMPLETED, FAILED, CANCELED or
	// TIMEOUT.
	// +optional
	// +kubebuilder:validation:MaxLength=16
	Result string `json:"result,omitempty"`
	// Reason is how it ended, as a condition reason (NonZeroExit, Signaled, Exception,
	// Cancelled, ...).
	// +optional
	// +kubebuilder:validation:MaxLength=64
	Reason string `json:"reason,omitempty"`
	// ExitCode is the job's exit code (128+N for a task signal N killed); absent if it never
	// started.
	// +optional
	ExitCode *int32 `json:"exitCode,omitempty"`
	// Exception is the first exception that matched the rule, else the fatal one, if any (its
	// note cut to 256 bytes).
	// +optional
	Exception *FluxJobException `json:"exception,omitempty"`
	// Action is what the failure policy did: Retry, Ignore, FailIndex or FailJob.
	// +optional
	Action FailurePolicyAction `json:"action,omitempty"`
	// Rule is the index of the failure policy rule that matched; absent: none did.
	// +optional
	Rule *int32 `json:"rule,omitempty"`
	// CompletionTime is when the attempt ended.
	// +optional
	CompletionTime *metav1.Time `json:"completionTime,omitempty"`
}
