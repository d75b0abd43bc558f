package controllers

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	toolscache "k8s.io/client-go/tools/cache"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
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

// ReasonPrivilegeNotAllowed: the FluxJob asks for an instance-owner power
// (urgency above 16, waitable) that its namespace is not granted
// (--privileged-namespaces).
const ReasonPrivilegeNotAllowed = "PrivilegeNotAllowed"

// ConditionReaped is True once the controller collected the FluxJob's
// waitable Flux job with job-manager.wait (reason Waited), or found there
// was nothing to collect (reason NothingToWait). Only waitable jobs get it.
const ConditionReaped = "Reaped"

// namespacePrivileged reports whether FluxJobs in ns may use the owner's
// powers.
func (r *FluxJobReconciler) namespacePrivileged(ns string) bool {
	return slices.Contains(r.Options.PrivilegedNamespaces, ns)
}

// privilegeFailure returns why obj may not be submitted as it is, or nil:
// it asks for an owner power its namespace does not have.
func (r *FluxJobReconciler) privilegeFailure(obj *fluxjobv1.FluxJob) *failure {
	if r.namespacePrivileged(obj.Namespace) {
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
	return &failure{Reason: ReasonPrivilegeNotAllowed, Message: fmt.Sprintf(
		"%s is reserved to the Flux instance owner; namespace %q is not among the manager's --privileged-namespaces", asked, obj.Namespace)}
}

// urgencyPrivilegeError is the refusal of an urgency change to want, or ""
// when obj's namespace may set it.
func (r *FluxJobReconciler) urgencyPrivilegeError(obj *fluxjobv1.FluxJob, want int) string {
	if want <= int(fluxjobv1.DefaultUrgency) || r.namespacePrivileged(obj.Namespace) {
		return ""
	}
	return fmt.Sprintf("urgency %d (above %d) is reserved to the Flux instance owner; namespace %q is not among the manager's --privileged-namespaces",
		want, fluxjobv1.DefaultUrgency, obj.Namespace)
}

// reapWaitable collects the waitable Flux job of a FluxJob whose final
// status is written (job-manager.wait), then records condition Reaped. A
// job the broker no longer knows, or that was already collected, counts as
// reaped. It returns a requeue delay when it has to try again (broker
// unreachable, the job not inactive yet within the RPC timeout).
func (r *FluxJobReconciler) reapWaitable(ctx context.Context, obj *fluxjobv1.FluxJob) (time.Duration, error) {
	if !obj.Spec.Waitable || obj.Status.JobID == 0 || !obj.Status.Phase.IsTerminal() ||
		meta.IsStatusConditionTrue(obj.Status.Conditions, ConditionReaped) {
		return 0, nil
	}
	_, ctl, err := r.routeOf(obj).get()
	if err != nil {
		return r.Options.UnreachableRetry, nil
	}
	id := job.ID(obj.Status.JobID)
	cctx, cancel := context.WithTimeout(ctx, r.Options.RPCTimeout)
	defer cancel()
	// The job is inactive once its clean event is posted, soon after the
	// finish event that made the status final; wait answers then.
	res, err := job.Wait(cctx, ctl, id)
	reason, msg := "Waited", fmt.Sprintf("job-manager.wait collected Flux job %s (success=%t)", id.F58(), res.Success)
	var fe *flux.Error
	switch {
	case err == nil:
	case errors.As(err, &fe) && (errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.ECHILD)):
		// Unknown (a new instance, or purged), not waitable, or
		// already collected: nothing is left in the broker.
		reason, msg = "NothingToWait", fmt.Sprintf("Flux job %s has nothing to wait for: %s", id.F58(), fe.Message)
	case errors.As(err, &fe):
		logf.FromContext(ctx).Info("job-manager.wait refused; not retrying", "jobid", id.F58(), "error", err.Error())
		reason, msg = "WaitFailed", fmt.Sprintf("job-manager.wait on Flux job %s failed: %s", id.F58(), fe.Message)
	default:
		// Timeout or connection lost: try again later.
		return r.Options.UnreachableRetry, nil
	}
	base := obj.DeepCopy()
	meta.SetStatusCondition(&obj.Status.Conditions, metav1.Condition{
		Type: ConditionReaped, Status: metav1.ConditionTrue, Reason: reason, Message: clip(msg, fluxjobv1.MaxMessageLength),
		ObservedGeneration: obj.Generation,
	})
	if err := r.Status().Patch(ctx, obj, clientMergeLocked(base)); err != nil {
		*obj = *base
		statusPatchesTotal.WithLabelValues(patchResult(err)).Inc()
		return 0, fmt.Errorf("recording that the waitable job was reaped: %w", err)
	}
	statusPatchesTotal.WithLabelValues("success").Inc()
	logf.FromContext(ctx).V(1).Info("reaped waitable Flux job", "jobid", id.F58(), "reason", reason)
	if reason == "WaitFailed" {
		r.event(obj, corev1.EventTypeWarning, "WaitFailed", "Wait", msg)
	}
	return 0, nil
}

// collectEnded is reapWaitable for a FluxJob being deleted whose waitable
// job is known to have ended: one bounded job-manager.wait, best effort
// (the object goes away, so there is nowhere to record the result).
func (r *FluxJobReconciler) collectEnded(ctx context.Context, obj *fluxjobv1.FluxJob, id job.ID) {
	if !obj.Spec.Waitable || id == 0 || meta.IsStatusConditionTrue(obj.Status.Conditions, ConditionReaped) {
		return
	}
	_, ctl, err := r.routeOf(obj).get()
	if err != nil {
		return
	}
	cctx, cancel := context.WithTimeout(ctx, r.Options.RPCTimeout)
	defer cancel()
	if _, err := job.Wait(cctx, ctl, id); err != nil {
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
	neverSubmitted := fj.Status.JobID == 0 && submitAttempt(fj) == nil
	if neverSubmitted && len(opts.AllowedNamespaces) > 0 && !slices.Contains(opts.AllowedNamespaces, fj.Namespace) {
		*s = fluxjobv1.FluxJobSpec{Urgency: s.Urgency}
		return
	}
	if n := specInputBytes(s); n > fluxjobv1.MaxJobspecBytes {
		*s = fluxjobv1.FluxJobSpec{Urgency: s.Urgency, Jobspec: &runtime.RawExtension{Object: &droppedSpec{Bytes: n}}}
	}
}

// specInputBytes is the size of what a jobspec is built from: the raw
// spec.jobspec, or the command words, environment and user attributes of
// a command. The jobspec built from them is at least as large, so more
// than MaxJobspecBytes here is more than MaxJobspecBytes there.
func specInputBytes(s *fluxjobv1.FluxJobSpec) int {
	n := 0
	if s.Jobspec != nil {
		n += len(s.Jobspec.Raw)
	}
	if s.Attributes != nil {
		n += len(s.Attributes.Raw)
	}
	for _, c := range s.Command {
		n += len(c)
	}
	for _, e := range s.Env {
		n += len(e.Name) + len(e.Value)
	}
	return n
}

// droppedSpec stands, in the cache, for a spec too large to keep: only its
// size is left. It is a runtime.Object so that it can sit in
// spec.jobspec's RawExtension and survive the cache's deep copies; an API
// object can never carry one.
type droppedSpec struct {
	// Bytes is the size of the spec's jobspec inputs (specInputBytes).
	Bytes int `json:"droppedBytes"`
}

// GetObjectKind implements runtime.Object.
func (d *droppedSpec) GetObjectKind() schema.ObjectKind { return schema.EmptyObjectKind }

// DeepCopyObject implements runtime.Object.
func (d *droppedSpec) DeepCopyObject() runtime.Object { c := *d; return &c }

// droppedSpecFailure is the failure of a FluxJob whose spec the cache
// dropped as too large, or nil.
func droppedSpecFailure(obj *fluxjobv1.FluxJob) *failure {
	if obj.Spec.Jobspec == nil {
		return nil
	}
	d, ok := obj.Spec.Jobspec.Object.(*droppedSpec)
	if !ok {
		return nil
	}
	return &failure{Reason: fluxjobv1.ReasonJobspecTooLarge, Message: fmt.Sprintf(
		"the jobspec inputs (spec.jobspec, or spec.command, spec.env and spec.attributes) are %d bytes, more than the %d allowed",
		d.Bytes, fluxjobv1.MaxJobspecBytes)}
}
