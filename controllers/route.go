package controllers

import (
	"context"
	"fmt"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
	"github.com/fluxjob/fluxjob-operator/fluxbridge"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux"
)

// Routing FluxJobs to Flux instances
//
// A FluxJob runs on the instance recorded with its submission attempt
// (the submission marker, then status.instance: recordedInstance), else by
// spec.instance, else on the default instance (InstanceRegistry.Default:
// the one FluxInstance annotated default, or the manager's implicit
// --flux-uri instance). spec is never rewritten: the resolved default is
// recorded in status, so a later change of the default does not move a
// submitted job. Before submission the instance must exist and its
// namespaceSelector must select the FluxJob's namespace; otherwise the
// FluxJob waits (phase Pending, InstanceAdmitted=False with the reason,
// a Warning event) and nothing reaches Flux. It is looked at again when
// any instance changes and at every resync.

// registry returns r.Instances; if that is nil, it is made on first use
// with r.Flux as its only instance, the implicit one named "default" (a
// reconciler built the single-instance way, as most tests do).
func (r *FluxJobReconciler) registry() *InstanceRegistry {
	r.regOnce.Do(func() {
		if r.Instances == nil && r.Flux != nil {
			r.Instances = NewInstanceRegistry(FluxConnectorOptions{Logger: r.Flux.opts.Logger})
			r.Instances.SetImplicit("default", r.Flux)
		}
	})
	return r.Instances
}

// route is the instance a FluxJob runs on.
type route struct {
	name string
	// conn is the instance's connector; nil if the instance is unknown
	// or its connection settings are invalid (why says which).
	conn *FluxConnector
	why  string
}

// get returns the instance's executor and control connection, or an
// error wrapping ErrFluxUnreachable.
func (rt route) get() (*fluxbridge.Executor, *flux.Conn, error) {
	if rt.conn == nil {
		return nil, nil, fmt.Errorf("%w: %s", ErrFluxUnreachable, rt.why)
	}
	return rt.conn.Get()
}

// state is FluxConnector.State for the instance; an unusable instance is
// unreachable.
func (rt route) state() (connected bool, unreachable string) {
	if rt.conn == nil {
		return false, rt.why
	}
	return rt.conn.State()
}

// instanceID is the identity of the instance's Flux instance (see
// InstanceIdentity), "" if not connected or unknown.
func (rt route) instanceID() string {
	if rt.conn == nil {
		return ""
	}
	return rt.conn.InstanceID()
}

// routeKey is the context key of the route a Reconcile decided on.
type routeKey struct{}

// withRoute records rt in ctx for the rest of one Reconcile, so that
// submission, attach and identity checks all use the instance the
// FluxJob was admitted to, even if the default instance changes
// meanwhile.
func withRoute(ctx context.Context, rt route) context.Context {
	return context.WithValue(ctx, routeKey{}, rt)
}

// routeFor returns the route recorded in ctx, else obj's route.
func (r *FluxJobReconciler) routeFor(ctx context.Context, obj *fluxjobv1.FluxJob) route {
	if rt, ok := ctx.Value(routeKey{}).(route); ok {
		return rt
	}
	return r.routeOf(obj)
}

// admission is the outcome of routing a FluxJob, for its status.
type admission struct {
	// Instance is the instance the FluxJob is routed to ("" if none).
	Instance string
	// OK is true when the FluxJob may run there.
	OK bool
	// Reason and Message explain a refusal (ConditionInstanceAdmitted).
	Reason, Message string
}

// instanceName returns the instance obj runs on and, if there is none
// to choose, the reason and message.
func (r *FluxJobReconciler) instanceName(obj *fluxjobv1.FluxJob) (name, reason, msg string) {
	switch {
	case recordedInstance(obj) != "":
		return recordedInstance(obj), "", ""
	case obj.Spec.Instance != "":
		return obj.Spec.Instance, "", ""
	}
	name, reason, candidates := r.registry().Default()
	switch reason {
	case "":
		return name, "", ""
	case fluxjobv1.ReasonAmbiguousDefaultInstance:
		return "", reason, fmt.Sprintf("spec.instance is empty and %d FluxInstances are marked default (%s=true): %s; set spec.instance or unmark all but one",
			len(candidates), fluxjobv1.DefaultInstanceAnnotation, strings.Join(candidates, ", "))
	}
	return "", reason, "spec.instance is empty and there is no default FluxInstance (annotation " + fluxjobv1.DefaultInstanceAnnotation + "=true)"
}

// routeOf returns obj's route without the admission check (for a FluxJob
// already submitted, or being deleted).
func (r *FluxJobReconciler) routeOf(obj *fluxjobv1.FluxJob) route {
	name, _, msg := r.instanceName(obj)
	if name == "" {
		return route{why: msg}
	}
	conn, cfg, ok := r.registry().Lookup(name)
	switch {
	case !ok:
		return route{name: name, why: fmt.Sprintf("FluxInstance %q does not exist", name)}
	case conn == nil:
		return route{name: name, why: fmt.Sprintf("FluxInstance %q cannot be used: %s", name, cfg.Invalid)}
	}
	return route{name: name, conn: conn}
}

// admit routes obj and, if it has not been submitted yet, checks that
// its instance exists and admits its namespace.
func (r *FluxJobReconciler) admit(ctx context.Context, obj *fluxjobv1.FluxJob) (route, admission, error) {
	name, reason, msg := r.instanceName(obj)
	if name == "" {
		return route{why: msg}, admission{Reason: reason, Message: msg}, nil
	}
	rt := r.routeOf(obj)
	_, cfg, ok := r.registry().Lookup(name)
	if !ok {
		return rt, admission{Instance: name, Reason: fluxjobv1.ReasonInstanceNotFound,
			Message: fmt.Sprintf("FluxInstance %q does not exist; the FluxJob waits for it", name)}, nil
	}
	if obj.Status.JobID != 0 || submitAttempt(obj) != nil {
		// Admitted when it was submitted; a later selector change does
		// not take a Flux job away from its FluxJob.
		return rt, admission{Instance: name, OK: true}, nil
	}
	admitted, err := r.selects(ctx, cfg.Selector, obj.Namespace)
	if err != nil {
		return rt, admission{}, err
	}
	if !admitted {
		return rt, admission{Instance: name, Reason: fluxjobv1.ReasonNamespaceNotAdmitted,
			Message: fmt.Sprintf("FluxInstance %q does not admit namespace %q (spec.namespaceSelector); the FluxJob waits", name, obj.Namespace)}, nil
	}
	return rt, admission{Instance: name, OK: true}, nil
}

// selects reports whether sel selects namespace ns (read from the cache
// only when the selector looks at labels).
func (r *FluxJobReconciler) selects(ctx context.Context, sel labels.Selector, ns string) (bool, error) {
	switch {
	case sel == nil:
		return false, nil
	case sel.Empty():
		return true, nil
	}
	var nsObj corev1.Namespace
	if err := r.Get(ctx, types.NamespacedName{Name: ns}, &nsObj); err != nil {
		return false, fmt.Errorf("reading namespace %s for the instance's namespaceSelector: %w", ns, err)
	}
	return sel.Matches(labels.Set(nsObj.Labels)), nil
}

// notAdmitted writes the status of a FluxJob that may not run (yet):
// InstanceAdmitted=False with the reason, phase unchanged, a Warning
// event when the reason is new. The FluxJob is put on the wait list, so
// that a change of any instance reconciles it again.
func (r *FluxJobReconciler) notAdmitted(ctx context.Context, obj *fluxjobv1.FluxJob, adm admission) (ctrl.Result, error) {
	r.waiting.add(key(obj))
	old := meta.FindStatusCondition(obj.Status.Conditions, fluxjobv1.ConditionInstanceAdmitted)
	in := statusInput{Admission: &adm}
	if obj.Status.JobID != 0 || submitAttempt(obj) != nil {
		in.Unreachable = adm.Message // submitted to an instance that went away
	}
	if err := r.writeStatus(ctx, obj, in); err != nil {
		return ctrl.Result{}, err
	}
	if old == nil || old.Status != metav1.ConditionFalse || old.Reason != adm.Reason {
		logf.FromContext(ctx).Info("FluxJob not admitted to a Flux instance; waiting", "instance", adm.Instance, "reason", adm.Reason, "message", adm.Message)
		r.event(obj, corev1.EventTypeWarning, adm.Reason, "Route", adm.Message)
	}
	return ctrl.Result{RequeueAfter: r.Options.Resync}, nil
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
func (w *waitList) pokeAll(t *Tracker) {
	w.mu.Lock()
	keys := make([]types.NamespacedName, 0, len(w.keys))
	for k := range w.keys {
		keys = append(keys, k)
	}
	w.mu.Unlock()
	for _, k := range keys {
		t.poke(k)
	}
}
