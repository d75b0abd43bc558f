package v1alpha1

// Arrays: one FluxJob runs a set of indexes, each index one Flux job (as
// `flux submit --cc=IDSET` does; batch/v1's Indexed Job is the Kubernetes
// counterpart). See the README's "Arrays" section.

const (
	// MaxArrayIndexes is the most indexes one FluxJob's spec.array.indexes may hold.
	MaxArrayIndexes = 1 << 20
	// MaxIndexSetLength is the longest idset the status writes (status.array.succeededIndexes,
	// failedIndexes): a longer one is cut after its last whole range and
	// status.array.indexesTruncated is set, so the status stays small whatever the array's size.
	MaxIndexSetLength = 8192
	// ArrayIndexEnv is the environment variable each index's job gets, as flux submit --cc sets it.
	ArrayIndexEnv = "FLUX_JOB_CC"

	// ReasonInvalidArray: spec.array cannot be run (an idset the controller cannot read, too many
	// indexes, a {cc} template it does not know).
	ReasonInvalidArray = "InvalidArray"
	// ReasonIndexesFailed: an array ended with failed indexes (status.array.failedIndexes).
	ReasonIndexesFailed = "IndexesFailed"
	// ReasonSuccessPolicy: an array's success policy was met; the indexes still running were
	// cancelled.
	ReasonSuccessPolicy = "SuccessPolicyMet"
	// ReasonMaxFailedIndexesExceeded: more indexes failed than spec.array.maxFailedIndexes
	// allows; the indexes still active were cancelled (batch/v1's reason).
	ReasonMaxFailedIndexesExceeded = "MaxFailedIndexesExceeded"

	// ConditionFailureTarget is set on an array that is going to fail (a FailJob rule matched,
	// or maxFailedIndexes was exceeded) while its active indexes are being cancelled; Failed
	// follows once none is active (batch/v1's FailureTarget). A manager that restarts reads it
	// and keeps ending the array.
	ConditionFailureTarget = "FailureTarget"

	// MaxBackoffLimitPerIndex is the largest spec.array.backoffLimitPerIndex: after a manager
	// restart, each index not final in the status is looked up under every attempt name it may
	// have (fluxjob-<uid>-<index>.<attempt>), so the limit bounds that lookup.
	MaxBackoffLimitPerIndex = 100
	// MaxIgnoredPerIndex is how many failures of one index a failure policy rule with action
	// Ignore may retry without counting them (batch/v1 has no bound): the attempt numbers of an
	// index stay below backoffLimitPerIndex+1+MaxIgnoredPerIndex, which a lookup covers.
	MaxIgnoredPerIndex = 10
)

// ArraySpec makes a FluxJob an array: one Flux job per index, as `flux submit --cc=INDEXES`.
// Each index's job gets the index in FLUX_JOB_CC, and "{cc}" in spec.command, spec.env values and
// spec.workingDir replaced by it (Python format syntax as flux-core's submit: "{cc:03d}" pads).
// With spec.jobspec, FLUX_JOB_CC is set and "{cc}" is replaced in the tasks' commands.
// +kubebuilder:validation:XValidation:rule="!has(self.maxFailedIndexes) || has(self.backoffLimitPerIndex)",message="spec.array.maxFailedIndexes needs spec.array.backoffLimitPerIndex"
type ArraySpec struct {
	// Indexes is the set of indexes, as flux submit --cc takes it: "0-99,200" (ascending ranges
	// and singletons; at most 1,048,576 indexes, each at most 2147483647).
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=4096
	// +kubebuilder:validation:Pattern=`^\[?[0-9]+(-[0-9]+)?(,[0-9]+(-[0-9]+)?)*\]?$`
	Indexes string `json:"indexes"`

	// Parallelism is the most indexes with an active Flux job (submitted and not ended) at once
	// (batch/v1 parallelism). Omitted: every index is submitted at once and Flux's scheduler
	// decides what runs.
	// +optional
	// +kubebuilder:validation:Minimum=1
	Parallelism *int32 `json:"parallelism,omitempty"`

	// SuccessPolicy ends the array Succeeded as soon as one of its rules is met, cancelling the
	// indexes still active and submitting no more (batch/v1 successPolicy). Omitted: the array
	// succeeds when every index succeeded.
	// +optional
	SuccessPolicy *ArraySuccessPolicy `json:"successPolicy,omitempty"`

	// BackoffLimitPerIndex is how many failed attempts of each index are retried, each as a new
	// Flux job named fluxjob-<uid>-<index>.<attempt> (batch/v1 backoffLimitPerIndex; flux-core
	// has no retry). An index that fails past it is failed (status.array.failedIndexes) and the
	// others go on. spec.failurePolicy applies to each index's failed attempts (FailIndex fails
	// the index, FailJob the array, Ignore retries without counting). Omitted: an index is not
	// retried (a failurePolicy's Ignore rule still retries it).
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	BackoffLimitPerIndex *int32 `json:"backoffLimitPerIndex,omitempty"`

	// MaxFailedIndexes fails the array as soon as more indexes than this failed, cancelling the
	// indexes still active and submitting no more (batch/v1 maxFailedIndexes; reason
	// MaxFailedIndexesExceeded). Needs backoffLimitPerIndex. Omitted: every index runs.
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=1048576
	MaxFailedIndexes *int32 `json:"maxFailedIndexes,omitempty"`
}

// ArraySuccessPolicy is batch/v1's successPolicy for an array.
type ArraySuccessPolicy struct {
	// Rules: the array succeeds when any rule is met.
	// +required
	// +listType=atomic
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=20
	Rules []ArraySuccessRule `json:"rules"`
}

// ArraySuccessRule is met when the given indexes all succeeded, or when succeededCount of them
// (of all indexes, without succeededIndexes) did. At least one of the two is set.
// +kubebuilder:validation:XValidation:rule="has(self.succeededIndexes) || has(self.succeededCount)",message="a success rule needs succeededIndexes or succeededCount"
type ArraySuccessRule struct {
	// SucceededIndexes is an idset ("0,2-4"): with no succeededCount, every one of them must have
	// succeeded. Indexes outside spec.array.indexes are ignored, as batch/v1 does.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=4096
	// +kubebuilder:validation:Pattern=`^\[?[0-9]+(-[0-9]+)?(,[0-9]+(-[0-9]+)?)*\]?$`
	SucceededIndexes string `json:"succeededIndexes,omitempty"`
	// SucceededCount is how many indexes (of succeededIndexes, if given) must have succeeded.
	// +optional
	// +kubebuilder:validation:Minimum=1
	SucceededCount *int32 `json:"succeededCount,omitempty"`
}

// ArrayStatus counts an array's indexes by state; the idsets are compressed (flux's form) and
// bounded in size (MaxIndexSetLength) whatever the array's size.
type ArrayStatus struct {
	// Indexes is how many indexes the array has.
	Indexes int32 `json:"indexes"`
	// Pending: indexes not submitted to Flux yet (waiting for parallelism, or for the submission).
	// +optional
	Pending int32 `json:"pending,omitempty"`
	// Active: indexes whose Flux job was submitted and has not ended.
	// +optional
	Active int32 `json:"active,omitempty"`
	// Running: of the active ones, those whose Flux job started.
	// +optional
	Running int32 `json:"running,omitempty"`
	// Succeeded: indexes whose Flux job exited 0.
	// +optional
	Succeeded int32 `json:"succeeded,omitempty"`
	// Failed: indexes whose Flux job ended otherwise (non-zero exit, signal, exception, refused).
	// +optional
	Failed int32 `json:"failed,omitempty"`
	// Cancelled: indexes cancelled or never submitted because the success policy was met or the
	// FluxJob was deleted.
	// +optional
	Cancelled int32 `json:"cancelled,omitempty"`
	// SucceededIndexes is the succeeded indexes as an idset ("0-99,200"; batch/v1 completedIndexes).
	// +optional
	// +kubebuilder:validation:MaxLength=8192
	SucceededIndexes string `json:"succeededIndexes,omitempty"`
	// FailedIndexes is the failed indexes as an idset (batch/v1 failedIndexes).
	// +optional
	// +kubebuilder:validation:MaxLength=8192
	FailedIndexes string `json:"failedIndexes,omitempty"`
	// Retries counts the attempts beyond the first submitted for the indexes (failed attempts
	// retried, counted toward backoffLimitPerIndex or ignored). Retries decided in the last
	// seconds before a manager restart may be missing from it.
	// +optional
	Retries int32 `json:"retries,omitempty"`
	// Urgency is the urgency every submitted index's Flux job has (given at submission or by a
	// later change of spec.urgency), except those that had started when it changed. Unset while
	// a change of spec.urgency is being applied to the submitted indexes, or when it is not known.
	// +optional
	Urgency *int32 `json:"urgency,omitempty"`
	// IndexesTruncated is true when succeededIndexes or failedIndexes did not fit MaxIndexSetLength
	// and hold only their smallest members (the counts are exact; kubectl fluxjob indexes lists
	// every index from Flux).
	// +optional
	IndexesTruncated bool `json:"indexesTruncated,omitempty"`
}
