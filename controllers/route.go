package controllers

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
	"github.com/fluxjob/fluxjob-operator/internal/broker"
)

// Routing FluxJobs to Flux instances
//
// A FluxJob runs on spec.instance (immutable), else on the instance its
// submission attempt recorded (status.instance, then the marker
// annotation's instance: the default as it was resolved when the
// controller submitted), else on the default instance
// (broker.Registry.Default: the one FluxEndpoint annotated default, or
// the manager's implicit --flux-uri instance). spec is never rewritten:
// the resolved default is recorded in status, so a later change of the
// default does not move a submitted job.
//
// Every gate is decided from what only the manager writes (spec, status)
// and is checked before every submission and resubmission: the manager's
// namespace gates (tenancy.go), then the instance's existence and its
// namespaceSelector. Failing them, the FluxJob fails for good (tenancy)
// or waits (phase Pending, InstanceAdmitted=False with the reason, a
// Warning event) and nothing reaches Flux; it is looked at again when any
// instance changes and at every resync. Only a FluxJob that has a Flux
// job (status.jobID, or a job ID the tracker holds) skips them: a later
// change of policy does not take a Flux job away from it.
//
// The marker annotation is metadata a user may write (the admission
// policy in config/policy forbids changing it on an existing FluxJob, but
// it may be absent): it never grants anything. It only makes the
// controller look a job up by name before submitting (findEarlier) and
// adopt the job it finds there, named fluxjob-<uid>, on an instance that
// passed the gates; and, with spec.instance empty, it names the instance
// to look on, which must pass them like any other.

// admission is the outcome of routing a FluxJob, for its status.
type admission struct {
	// Instance is the instance the FluxJob is routed to ("" if none).
	Instance string
	// OK is true when the FluxJob may run there.
	OK bool
	// Reason and Message explain a refusal (ConditionInstanceAdmitted).
	Reason, Message string
	// Failure, if set, is a refusal for good: the FluxJob asks for what
	// its namespace may not have (tenancy.go).
	Failure *failure
}

// admit resolves obj's route once and decides whether obj may run there:
// the manager's namespace gates (tenancy.go), then the instance's
// existence and namespaceSelector. Only a FluxJob that has a Flux job
// (hasJob) was admitted for good: a later change of policy does not take
// it away. A submission marker counts for nothing here (see above).
func (r *FluxJobReconciler) admit(ctx context.Context, obj *fluxjobv1.FluxJob, m marker) (broker.Route, admission, error) {
	submitted := hasJob(r.Tracker, obj) || r.arraySubmitted(obj) // arrayurgency.go
	if !submitted {
		if fail := tenancyOf(r.Options).failure(obj); fail != nil {
			return broker.Route{}, admission{Failure: fail}, nil
		}
	}
	name, reason, msg := instanceName(r.Instances, obj, m)
	if name == "" {
		return broker.Unroutable("", msg), admission{Reason: reason, Message: msg}, nil
	}
	_, cfg, ok := r.Instances.Lookup(name)
	if !ok {
		return r.Instances.Route(name), admission{Instance: name, Reason: fluxjobv1.ReasonInstanceNotFound,
			Message: fmt.Sprintf("FluxEndpoint %q does not exist; the FluxJob waits for it", name)}, nil
	}
	rt, noAccount, err := r.routeFor(ctx, name, obj) // accounts.go
	switch {
	case err != nil:
		return rt, admission{}, err
	case submitted:
		return rt, admission{Instance: name, OK: true}, nil
	}
	admitted, err := selects(ctx, r.Client, cfg.Selector, obj.Namespace)
	if err != nil {
		return rt, admission{}, err
	}
	switch {
	case !admitted:
		return rt, admission{Instance: name, Reason: fluxjobv1.ReasonNamespaceNotAdmitted,
			Message: fmt.Sprintf("FluxEndpoint %q does not admit namespace %q (spec.namespaceSelector); the FluxJob waits", name, obj.Namespace)}, nil
	case noAccount != nil:
		return rt, admission{Instance: name, Reason: noAccount.Reason, Message: noAccount.Message}, nil
	}
	if fail := ownerOnly(obj, rt); fail != nil {
		return rt, admission{Instance: name, Failure: fail}, nil
	}
	return rt, admission{Instance: name, OK: true}, nil
}

// hasJob reports whether obj has a Flux job, by what only the manager
// writes or holds: status.jobID, or a job ID the tracker recorded (a
// submission whose ID is not in the status yet).
func hasJob(t *broker.Tracker, obj *fluxjobv1.FluxJob) bool {
	if obj.Status.JobID != 0 {
		return true
	}
	if t == nil {
		return false // a reconciler not set up yet follows nothing
	}
	v, ok := t.Get(obj.UID)
	return ok && v.HasJobID
}

// instanceName returns the instance obj runs on and, if there is none
// to choose, the reason and message: spec.instance first (a marker never
// overrides it), then the instance of the submission attempt (status,
// then annotation), then the default.
func instanceName(reg *broker.Registry, obj *fluxjobv1.FluxJob, m marker) (name, reason, msg string) {
	switch {
	case obj.Spec.Instance != "":
		return obj.Spec.Instance, "", ""
	case m.Instance != "":
		return m.Instance, "", ""
	}
	name, reason, candidates := reg.Default()
	switch reason {
	case "":
		return name, "", ""
	case fluxjobv1.ReasonAmbiguousDefaultInstance:
		return "", reason, fmt.Sprintf("spec.instance is empty and %d FluxEndpoints are marked default (%s=true): %s; set spec.instance or unmark all but one",
			len(candidates), fluxjobv1.DefaultInstanceAnnotation, strings.Join(candidates, ", "))
	}
	return "", reason, "spec.instance is empty and there is no default FluxEndpoint (annotation " + fluxjobv1.DefaultInstanceAnnotation + "=true)"
}

// routeOf returns obj's route without the admission check (for a FluxJob
// already submitted, or being deleted): on an instance with accounts, the
// account its namespace maps to.
func (r *FluxJobReconciler) routeOf(ctx context.Context, obj *fluxjobv1.FluxJob, m marker) broker.Route {
	name, _, msg := instanceName(r.Instances, obj, m)
	if name == "" {
		return broker.Unroutable("", msg)
	}
	rt, _, _ := r.routeFor(ctx, name, obj)
	return rt
}

// selects reports whether sel selects namespace ns (read from the cache
// only when the selector looks at labels).
func selects(ctx context.Context, c client.Reader, sel labels.Selector, ns string) (bool, error) {
	switch {
	case sel == nil:
		return false, nil
	case sel.Empty():
		return true, nil
	}
	var nsObj corev1.Namespace
	if err := c.Get(ctx, types.NamespacedName{Name: ns}, &nsObj); err != nil {
		return false, fmt.Errorf("reading namespace %s for the instance's namespaceSelector: %w", ns, err)
	}
	return sel.Matches(labels.Set(nsObj.Labels)), nil
}

// notAdmitted ends a reconcile whose FluxJob may not run: an error is
// returned (requeued); a refusal for good is written as the failure; a
// FluxJob waiting for an instance gets InstanceAdmitted=False with the
// reason, phase unchanged, a Warning event when the reason is new, and is
// put on the wait list, so that a change of any instance reconciles it
// again.
func (r *FluxJobReconciler) notAdmitted(ctx context.Context, obj *fluxjobv1.FluxJob, m marker, adm admission, err error) (ctrl.Result, error) {
	if err != nil {
		return ctrl.Result{}, err
	}
	if d, done, err := r.followEarlier(ctx, obj, m, adm.Failure != nil); err != nil || done {
		return ctrl.Result{RequeueAfter: d}, err
	}
	switch {
	case adm.Failure != nil:
		return ctrl.Result{}, r.w.writeStatus(ctx, obj, computeStatus(obj, statusInput{Marker: m, Failure: adm.Failure}, r.now()))
	}
	r.waiting.add(key(obj))
	old := meta.FindStatusCondition(obj.Status.Conditions, fluxjobv1.ConditionInstanceAdmitted)
	in := statusInput{Marker: m, Admission: &adm}
	if obj.Status.JobID != 0 || m.attempted() {
		in.Unreachable = adm.Message // submitted to an instance that went away
	}
	if err := r.w.writeStatus(ctx, obj, computeStatus(obj, in, r.now())); err != nil {
		return ctrl.Result{}, err
	}
	if old == nil || old.Status != metav1.ConditionFalse || old.Reason != adm.Reason {
		logf.FromContext(ctx).Info("FluxJob not admitted to a Flux instance; waiting", "instance", adm.Instance, "reason", adm.Reason, "message", adm.Message)
		r.w.event(obj, corev1.EventTypeWarning, adm.Reason, "Route", adm.Message)
	}
	return ctrl.Result{RequeueAfter: r.Options.Resync}, nil
}

// followEarlier looks, before a FluxJob is held or failed at a gate, for
// the Flux job an earlier submission attempt may have left (by name, as
// track does), and follows it if there is one: it passed the gates of its
// day, and a FluxJob failed here would never cancel it. A marker grants
// nothing else: it only makes the controller look. done is true when the
// caller must stop and requeue after d: the job is now followed, job-list
// may still be catching up, or (failing, the gate would end the FluxJob)
// the broker cannot be asked yet.
func (r *FluxJobReconciler) followEarlier(ctx context.Context, obj *fluxjobv1.FluxJob, m marker, failing bool) (d time.Duration, done bool, err error) {
	if obj.Status.JobID != 0 || !m.attempted() || obj.Spec.Array != nil {
		// An array's indexes have names of their own: a FluxJob failed
		// at a gate cancels them when deleted (finalizeArray).
		return 0, false, nil
	}
	if v, ok := r.Tracker.Get(obj.UID); ok && v.HasJobID {
		return 0, false, nil
	}
	rt := r.routeOf(ctx, obj, m)
	if _, _, err := rt.Get(); err != nil {
		return r.Options.UnreachableRetry, failing, nil
	}
	d, fail, id, err := findEarlier(ctx, r.w, r.Options, obj, rt, attemptName(obj), m)
	switch {
	case err != nil || d > 0:
		return d, true, err
	case fail != nil || id == 0:
		return 0, false, nil
	}
	logf.FromContext(ctx).Info("found the Flux job of a submission that passed the gates before; following it", "jobid", id.F58())
	if d, _, err = attach(ctx, r.Tracker, r.w, r.Options, obj, rt, id, true); err != nil || d > 0 {
		return d, true, err
	}
	return time.Millisecond, true, nil
}

// waitList holds the FluxJobs waiting for an instance to appear or admit
// them; they are poked whenever an instance changes.
type waitList struct {
	mu   sync.Mutex
	keys map[types.NamespacedName]struct{}
}

func (w *waitList) add(k types.NamespacedName) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.keys == nil {
		w.keys = map[types.NamespacedName]struct{}{}
	}
	w.keys[k] = struct{}{}
}

func (w *waitList) remove(k types.NamespacedName) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.keys, k)
}

// pokeAll notifies the reconciler about every waiting FluxJob.
func (w *waitList) pokeAll(t *broker.Tracker) {
	w.mu.Lock()
	keys := make([]types.NamespacedName, 0, len(w.keys))
	for k := range w.keys {
		keys = append(keys, k)
	}
	w.mu.Unlock()
	for _, k := range keys {
		t.Poke(k)
	}
}
