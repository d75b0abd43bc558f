package v1alpha1

// What batch users expect of a FluxJob besides running it: queues, dependencies between FluxJobs,
// suspend, cleanup after the end, and one condition for "finished, either way".

// DependencyCondition is when a dependant FluxJob may start, relative to the Flux job of the
// FluxJob it depends on. The values are the dependency schemes of flux-core 0.88's
// dependency-after plugin (src/modules/job-manager/plugins/dependency-after.c, RFC 26).
// +kubebuilder:validation:Enum=after;afterstart;afterany;afterok;afternotok
type DependencyCondition string

// The dependency conditions.
const (
	// DependAfterStart: once the dependency has started. Submitted to Flux as "afterstart"
	// (flux-core 0.88 deprecates its alias "after", with a warning exception on the job).
	DependAfterStart DependencyCondition = "afterstart"
	// DependAfter is the older name of DependAfterStart; the controller submits "afterstart".
	DependAfter DependencyCondition = "after"
	// DependAfterAny: once the dependency has ended, however it ended.
	DependAfterAny DependencyCondition = "afterany"
	// DependAfterOK: once the dependency has succeeded (exit 0). The default.
	DependAfterOK DependencyCondition = "afterok"
	// DependAfterNotOK: once the dependency has ended in failure (after it ran).
	DependAfterNotOK DependencyCondition = "afternotok"
)

// Dependency names a FluxJob of the same namespace and the condition its Flux job must meet.
type Dependency struct {
	// Name of the FluxJob, in this FluxJob's namespace.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
	// Condition is the Flux dependency scheme: afterok (default), afterany, afternotok,
	// afterstart (or its older name after).
	// +optional
	// +kubebuilder:default=afterok
	Condition DependencyCondition `json:"condition,omitempty"`
}

// Conditions of the batch options.
const (
	// ConditionFinished is True once the FluxJob ended, whether it succeeded or not (phase
	// Succeeded, Failed or Cancelled; the reason is the ending's reason); False before. It is the
	// one condition `kubectl wait --for=condition=Finished` needs.
	ConditionFinished = "Finished"
	// ConditionDependenciesReady is present when spec.dependsOn is set: False while the
	// controller waits for a dependency to get a Flux job ID (reason WaitingForDependency or
	// DependencyNotFound), True once the FluxJob was submitted with all of them (Flux then
	// enforces the conditions).
	ConditionDependenciesReady = "DependenciesReady"
	// ConditionSuspended is present while spec.suspend is true: True when it holds the job
	// (nothing submitted, or held in Flux at urgency 0), False with reason AlreadyStarted when
	// the job had started and suspend has no effect.
	ConditionSuspended = "Suspended"
)

// Reasons of the batch options.
const (
	// ReasonSuspended: spec.suspend keeps the job from being submitted or from starting.
	ReasonSuspended = "Suspended"
	// ReasonAlreadyStarted: spec.suspend was set on a job that had started; it has no effect.
	ReasonAlreadyStarted = "AlreadyStarted"
	// ReasonWaitingForDependency: a FluxJob in spec.dependsOn has no Flux job ID yet.
	ReasonWaitingForDependency = "WaitingForDependency"
	// ReasonDependencyNotFound: a FluxJob in spec.dependsOn does not exist (yet).
	ReasonDependencyNotFound = "DependencyNotFound"
	// ReasonDependenciesSubmitted: the FluxJob was submitted with all its dependencies.
	ReasonDependenciesSubmitted = "DependenciesSubmitted"
	// ReasonDependencyFailed: a dependency can never be satisfied: Flux raised a "dependency"
	// exception or refused the submission (afterok on a job that failed, say), or a dependency
	// ended without ever getting a Flux job.
	ReasonDependencyFailed = "DependencyFailed"
	// ReasonDependencyCycle: the FluxJobs' dependsOn form a cycle; none of them can start.
	ReasonDependencyCycle = "DependencyCycle"
	// ReasonQueueRejected: Flux refused the queue (unknown, required but missing, disabled).
	ReasonQueueRejected = "QueueRejected"
)
