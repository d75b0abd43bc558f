package controllers

import (
	"context"
	"fmt"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	toolscache "k8s.io/client-go/tools/cache"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
	"github.com/fluxjob/fluxjob-operator/internal/broker"
	"github.com/fluxjob/fluxjob-operator/internal/jobspec"
)

// Tenancy: what a FluxJob may ask of the Flux instance.
//
// The manager submits as the Flux instance owner, so Flux itself lets
// every FluxJob use the owner's powers: urgencies above 16 (ahead of every
// other user's jobs) and the waitable flag (the job stays a zombie in the
// job-manager until someone waits for it). The controller grants them
// only to the namespaces the operator names (Options.PrivilegedNamespaces,
// --privileged-namespaces): a FluxJob elsewhere that asks for them ends
// Failed with reason PrivilegeNotAllowed (a Warning event says why) and is
// never submitted, and an urgency raised above 16 later is refused like
// one Flux refuses (UrgencyApplied=False, reason UrgencyRejected). The
// controller reaps the waitable jobs it submitted (job-manager.wait) once
// their result is in the status, so that they do not pile up in the
// broker; condition Reaped records it.

// tenancy is the manager's namespace policy: which namespaces may run
// jobs at all (Options.AllowedNamespaces, empty: all) and which may use
// the instance owner's powers (Options.PrivilegedNamespaces).
type tenancy struct {
	allowed, privileged []string
}

func tenancyOf(o Options) tenancy {
	return tenancy{allowed: o.AllowedNamespaces, privileged: o.PrivilegedNamespaces}
}

// failure returns why obj may not be submitted as it is, or nil: its
// namespace may not run jobs here, or it asks for an owner power its
// namespace does not have.
func (t tenancy) failure(obj *fluxjobv1.FluxJob) *failure {
	if len(t.allowed) > 0 && !slices.Contains(t.allowed, obj.Namespace) {
		return &failure{Reason: fluxjobv1.ReasonNamespaceNotAllowed, Message: fmt.Sprintf(
			"namespace %q is not allowed to run jobs on this Flux instance (--allowed-namespaces)", obj.Namespace)}
	}
	if slices.Contains(t.privileged, obj.Namespace) {
		return nil
	}
	var asked string
	switch {
	case obj.Spec.Urgency != nil && *obj.Spec.Urgency > fluxjobv1.DefaultUrgency:
		asked = fmt.Sprintf("spec.urgency %d (above %d)", *obj.Spec.Urgency, fluxjobv1.DefaultUrgency)
	case obj.Spec.Waitable:
		asked = "spec.waitable"
	default:
		return nil
	}
	return &failure{Reason: fluxjobv1.ReasonPrivilegeNotAllowed, Message: fmt.Sprintf(
		"%s is reserved to the Flux instance owner; namespace %q is not among the manager's --privileged-namespaces", asked, obj.Namespace)}
}

// urgencyError is the refusal of an urgency change to want, or "" when
// obj's namespace may set it.
func (t tenancy) urgencyError(obj *fluxjobv1.FluxJob, want int) string {
	if want <= int(fluxjobv1.DefaultUrgency) || slices.Contains(t.privileged, obj.Namespace) {
		return ""
	}
	return fmt.Sprintf("urgency %d (above %d) is reserved to the Flux instance owner; namespace %q is not among the manager's --privileged-namespaces",
		want, fluxjobv1.DefaultUrgency, obj.Namespace)
}

// reap collects the waitable Flux job of a FluxJob whose final status is
// written (job-manager.wait) on rt, then records condition Reaped. A job
// the broker no longer knows, or that was already collected, counts as
// reaped. It returns a requeue delay when it has to try again (broker
// unreachable, the job not inactive yet within the RPC timeout).
func reap(ctx context.Context, w *writer, rt broker.Route, obj *fluxjobv1.FluxJob, timeout, retry time.Duration) (time.Duration, error) {
	if !obj.Spec.Waitable || obj.Status.JobID == 0 || !obj.Status.Phase.IsTerminal() ||
		meta.IsStatusConditionTrue(obj.Status.Conditions, fluxjobv1.ConditionReaped) {
		return 0, nil
	}
	id := job.ID(obj.Status.JobID)
	res, msg, err := broker.Wait(ctx, rt, id, timeout)
	if err != nil {
		return retry, nil // timeout or connection lost: try again later
	}
	reason := [...]string{broker.Waited: "Waited", broker.NothingToWait: "NothingToWait", broker.WaitFailed: "WaitFailed"}[res]
	if res == broker.WaitFailed {
		logf.FromContext(ctx).Info("job-manager.wait refused; not retrying", "jobid", id.F58(), "message", msg)
	}
	base := obj.DeepCopy()
	meta.SetStatusCondition(&obj.Status.Conditions, metav1.Condition{
		Type: fluxjobv1.ConditionReaped, Status: metav1.ConditionTrue, Reason: reason, Message: fluxjobv1.Clip(msg, fluxjobv1.MaxMessageLength),
		ObservedGeneration: obj.Generation,
	})
	if err := w.patch(ctx, obj, base, true); err != nil {
		return 0, fmt.Errorf("recording that the waitable job was reaped: %w", err)
	}
	logf.FromContext(ctx).V(1).Info("reaped waitable Flux job", "jobid", id.F58(), "reason", reason)
	if res == broker.WaitFailed {
		w.event(obj, corev1.EventTypeWarning, "WaitFailed", "Wait", msg)
	}
	return 0, nil
}

// collectEnded is reap for a FluxJob being deleted whose waitable job is
// known to have ended: one bounded job-manager.wait, best effort (the
// object goes away, so there is nowhere to record the result).
func collectEnded(ctx context.Context, rt broker.Route, obj *fluxjobv1.FluxJob, id job.ID, timeout time.Duration) {
	if !obj.Spec.Waitable || id == 0 || meta.IsStatusConditionTrue(obj.Status.Conditions, fluxjobv1.ConditionReaped) {
		return
	}
	if _, _, err := broker.Wait(ctx, rt, id, timeout); err != nil {
		logf.FromContext(ctx).V(1).Info("could not reap the waitable Flux job of a deleted FluxJob", "jobid", id.F58(), "error", err.Error())
	}
}

// CacheOptions says what the informer cache keeps of FluxJobs the
// controller will refuse anyway.
type CacheOptions struct {
	// AllowedNamespaces is Options.AllowedNamespaces: a FluxJob of
	// another namespace, never submitted, keeps only its metadata, status
	// and spec.urgency in the cache (the rest of its spec is never read:
	// it ends NamespaceNotAllowed).
	AllowedNamespaces []string
}

// CacheTransformFor is CacheTransform, and it bounds what the cache keeps
// of a spec: a FluxJob of a namespace not allowed loses its spec, and one
// whose jobspec inputs (spec.jobspec, or spec.command, spec.env and
// spec.attributes together) exceed MaxJobspecBytes keeps only their size,
// which the controller turns into reason JobspecTooLarge. Without it the
// cache holds each such object's spec (up to the API server's 1.5 MiB
// object limit) for as long as the object exists.
func CacheTransformFor(opts CacheOptions) toolscache.TransformFunc {
	compact := CacheTransform()
	return func(obj any) (any, error) {
		if fj, ok := obj.(*fluxjobv1.FluxJob); ok {
			boundSpec(fj, opts)
		}
		return compact(obj)
	}
}

// boundSpec drops what the controller will never read of fj's spec.
func boundSpec(fj *fluxjobv1.FluxJob, opts CacheOptions) {
	s := &fj.Spec
	// A marker annotation grants nothing (route.go): without a job ID the
	// FluxJob is refused before any submission.
	if fj.Status.JobID == 0 && len(opts.AllowedNamespaces) > 0 && !slices.Contains(opts.AllowedNamespaces, fj.Namespace) {
		*s = fluxjobv1.FluxJobSpec{Urgency: s.Urgency}
		return
	}
	if n := jobspec.InputBytes(s); n > fluxjobv1.MaxJobspecBytes {
		*s = fluxjobv1.FluxJobSpec{Urgency: s.Urgency, Jobspec: &runtime.RawExtension{Object: &jobspec.Dropped{Bytes: n}}}
	}
}
