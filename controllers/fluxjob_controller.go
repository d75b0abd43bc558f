// Package controllers reconciles FluxJobs and FluxEndpoints. A FluxJob is
// submitted to Flux exactly once through the Flux side (internal/broker:
// instance connections, the Tracker the executor's callbacks record into,
// the verbs), and its status is a pure function of its spec and the job's
// broker.View (computeStatus), written through one locked-patch helper
// (writer.go) only when it changed.
package controllers

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
	"github.com/fluxjob/fluxjob-operator/internal/array"
	"github.com/fluxjob/fluxjob-operator/internal/broker"
	"github.com/fluxjob/fluxjob-operator/internal/pending"
	"github.com/fluxjob/fluxjob-operator/internal/written"
)

// Options tune a FluxJobReconciler. Zero values mean the defaults.
type Options struct {
	// AllowedNamespaces, if not empty, are the only namespaces whose
	// FluxJobs may run on this Flux instance; others end Failed with
	// reason NamespaceNotAllowed and are never submitted.
	AllowedNamespaces []string
	// PrivilegedNamespaces are the namespaces whose FluxJobs may use the
	// Flux instance owner's powers (urgency above 16, waitable); see
	// tenancy.go. Empty: none.
	PrivilegedNamespaces []string
	// CancelTimeout bounds how long deleting a FluxJob waits for its
	// cancelled Flux job to end (counted from the deletion timestamp).
	// Default 30s.
	CancelTimeout time.Duration
	// AdoptWindow is how long after an unfinished submission attempt
	// (a submission marker without a job ID, marker.go) the controller keeps
	// looking the job up in job-list before submitting again. Default 10s.
	AdoptWindow time.Duration
	// PurgeAge is the Flux instance's job-manager inactive-age-limit (0:
	// none configured). A submission marker older than this with no job
	// found is not submitted again: the job may have run and been purged
	// (the FluxJob fails with reason SubmissionUnknown).
	PurgeAge time.Duration
	// Resync is the requeue period for unfinished FluxJobs, a safety net
	// for dropped notifications. Default 30s.
	Resync time.Duration
	// UnreachableRetry is the requeue period while the broker is
	// unreachable. Default 2s.
	UnreachableRetry time.Duration
	// RPCTimeout bounds each job RPC (list, cancel, urgency). Default 10s.
	RPCTimeout time.Duration
	// MaxConcurrentReconciles is passed to the controller. Default 1.
	MaxConcurrentReconciles int
	// OutputTimeout bounds how long the final status write of a job that
	// ran waits for its output eventlog to be read (status.output).
	// Default 10s.
	OutputTimeout time.Duration
}

func (o *Options) defaults() {
	if o.CancelTimeout <= 0 {
		o.CancelTimeout = 30 * time.Second
	}
	if o.AdoptWindow <= 0 {
		o.AdoptWindow = 10 * time.Second
	}
	if o.Resync <= 0 {
		o.Resync = 30 * time.Second
	}
	if o.UnreachableRetry <= 0 {
		o.UnreachableRetry = 2 * time.Second
	}
	if o.RPCTimeout <= 0 {
		o.RPCTimeout = 10 * time.Second
	}
	if o.MaxConcurrentReconciles <= 0 {
		o.MaxConcurrentReconciles = 1
	}
	if o.OutputTimeout <= 0 {
		o.OutputTimeout = 10 * time.Second
	}
}

// FluxJobReconciler reconciles FluxJob objects with Flux jobs.
type FluxJobReconciler struct {
	client.Client
	// Scheme knows the FluxJob types.
	Scheme *runtime.Scheme
	// Recorder emits Kubernetes events (events.k8s.io).
	Recorder events.EventRecorder
	// Instances holds one executor and control connection per Flux
	// instance. If nil, SetupWithManager makes a registry whose only
	// instance is Flux, named "default".
	Instances *broker.Registry
	// Flux, when Instances is nil, is the one broker connection: the
	// implicit default instance.
	Flux *broker.Connector
	// Tracker holds what the executor reported; broker.NewTracker if nil
	// at SetupWithManager.
	Tracker *broker.Tracker
	// Options tune the reconciler.
	Options Options

	now     func() time.Time
	waiting waitList     // FluxJobs waiting for an instance (route.go)
	arrays  array.Runs   // the arrays followed (array.go)
	samples arraySamples // why arrays' indexes wait (arraypending.go)
	written written.Set
	w       *writer
	once    sync.Once
}

// Permissions, least privilege: read FluxJobs, write their status and
// finalizers (patch on the object is for the finalizer and the submission
// marker annotation only; spec and labels are never written), and emit
// events.
// +kubebuilder:rbac:groups=fluxjob.io,resources=fluxjobs,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=fluxjob.io,resources=fluxjobs/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=fluxjob.io,resources=fluxjobs/finalizers,verbs=update
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
// Namespaces' labels, for a FluxEndpoint's namespaceSelector.
// +kubebuilder:rbac:groups="",resources=namespaces,verbs=get;list;watch

// SetupWithManager registers the reconciler with mgr: it watches FluxJobs
// (spec changes, creation, deletion), the FluxJobs they depend on, and the
// tracker's channel.
func (r *FluxJobReconciler) SetupWithManager(mgr ctrl.Manager) error {
	r.once.Do(r.init)
	if r.Instances == nil {
		return errors.New("controllers: FluxJobReconciler.Instances and .Flux are nil")
	}
	RegisterMetrics()
	if err := indexDependsOn(context.Background(), mgr); err != nil {
		return fmt.Errorf("indexing spec.dependsOn: %w", err)
	}
	if err := r.written.Watch(mgr); err != nil {
		return err
	}
	tr := r.Tracker
	r.Instances.OnConnect(func(instance string) { tr.PokeUnsettled(instance) })
	r.Instances.OnChange(func(string) { r.waiting.pokeAll(tr) })
	r.Instances.OnWaiting(func(instance string, old, new broker.Waiting) { tr.PokeWaiting(instance, old, new) })
	dependants := handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, o client.Object) []reconcile.Request {
		return dependants(ctx, r.Client, o)
	})
	return ctrl.NewControllerManagedBy(mgr).
		For(&fluxjobv1.FluxJob{}, builder.WithPredicates(predicate.Or[client.Object](
			predicate.GenerationChangedPredicate{}, deletionPredicate()))).
		Watches(&fluxjobv1.FluxJob{}, dependants, builder.WithPredicates(dependencyChanged())).
		WatchesRawSource(source.Channel(tr.Events(), &handler.EnqueueRequestForObject{})).
		WithOptions(controller.Options{MaxConcurrentReconciles: r.Options.MaxConcurrentReconciles}).
		Named("fluxjob").
		Complete(r)
}

// init fills in the defaults: options, clock, tracker, the registry of a
// reconciler built the single-instance way (r.Flux as the implicit
// instance "default", as most tests do), and the writer.
func (r *FluxJobReconciler) init() {
	r.Options.defaults()
	if r.now == nil {
		r.now = time.Now
	}
	if r.Tracker == nil {
		r.Tracker = broker.NewTracker(1024)
	}
	if r.Instances == nil && r.Flux != nil {
		r.Instances = broker.NewRegistry(broker.ConnectorOptions{Logger: r.Flux.Logger()})
		r.Instances.SetImplicit("default", r.Flux)
	}
	r.w = &writer{Client: r.Client, recorder: r.Recorder, written: &r.written, now: r.now}
}

// deletionPredicate passes updates that mark an object for deletion.
func deletionPredicate() predicate.Funcs {
	return predicate.Funcs{
		UpdateFunc: func(e event.UpdateEvent) bool {
			return e.ObjectNew != nil && !e.ObjectNew.GetDeletionTimestamp().IsZero()
		},
		CreateFunc:  func(event.CreateEvent) bool { return false },
		DeleteFunc:  func(event.DeleteEvent) bool { return false },
		GenericFunc: func(event.GenericEvent) bool { return false },
	}
}

// Reconcile brings one FluxJob's status in line with its Flux job, in one
// straight line over one view of the job: the object (this controller's
// own latest write if the cache lags it) and its marker, read once ->
// deletion (finalizer.go) -> settled? -> the route and admission, resolved
// once (route.go) -> held (suspend, dependencies: batch.go)? -> submit once
// or attach (submit.go) -> the job's view from the tracker -> urgency ->
// status computed from spec and view (status.go), output gate, paced, one
// locked write -> requeue policy (ttl.go once finished).
func (r *FluxJobReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	r.once.Do(r.init)
	log := logf.FromContext(ctx)
	var obj fluxjobv1.FluxJob
	if err := r.Get(ctx, req.NamespacedName, &obj); err != nil {
		if apierrors.IsNotFound(err) {
			r.waiting.remove(req.NamespacedName)
			r.Tracker.ForgetKey(req.NamespacedName)
			r.arrays.ForgetKey(req.NamespacedName)
			trackedJobs.Set(float64(r.Tracker.Len()))
			return ctrl.Result{}, nil
		}
		return ctrl.Result{}, fmt.Errorf("getting FluxJob %s: %w", req.NamespacedName, err)
	}
	if w := r.written.Latest(&obj, r.now()); w != &obj {
		obj = *w // the cache does not show this controller's latest write yet
	}
	m := readMarker(&obj)
	log = log.WithValues("uid", obj.UID)
	if m.Err != nil {
		log.Info("unreadable submission marker: the Flux job is looked up by name before any submission; it grants nothing", "error", m.Err.Error())
	}
	if obj.Status.JobIDF58 != "" {
		log = log.WithValues("jobid", obj.Status.JobIDF58)
	}
	ctx = logf.IntoContext(ctx, log)
	defer func() { trackedJobs.Set(float64(r.Tracker.Len())) }()

	dropEndedAttempt(r.Tracker, &obj)
	if !obj.DeletionTimestamp.IsZero() {
		if obj.Spec.Array != nil {
			return r.finalizeArray(ctx, &obj, m)
		}
		return r.finalize(ctx, &obj, m)
	}
	if obj.Status.Phase.IsTerminal() {
		// Settled for good: only observedGeneration may need a write (an
		// urgency edit after the end). Nothing is tracked any more.
		r.Tracker.Forget(obj.UID)
		r.arrays.Forget(obj.UID)
		r.waiting.remove(req.NamespacedName)
		if err := r.w.writeStatus(ctx, &obj, computeStatus(&obj, statusInput{Marker: m}, r.now())); err != nil {
			return ctrl.Result{}, err
		}
		return r.afterFinished(ctx, &obj, m)
	}
	rt, adm, err := r.admit(ctx, &obj, m)
	if err != nil || adm.Failure != nil || !adm.OK {
		return r.notAdmitted(ctx, &obj, m, adm, err)
	}
	r.waiting.remove(req.NamespacedName)
	deps, held, fail, err := r.beforeSubmit(ctx, &obj, m, rt)
	if err != nil {
		return ctrl.Result{}, err
	}
	if held != nil || fail != nil {
		return r.holdStatus(ctx, &obj, m, rt, &adm, held, fail)
	}
	if obj.Spec.Array != nil {
		return r.reconcileArray(ctx, &obj, &m, rt, &adm, deps)
	}
	requeue, fail, err := r.track(ctx, &obj, &m, rt, deps)
	if err != nil {
		return ctrl.Result{}, err
	}
	view, tracked := r.Tracker.Get(obj.UID)
	if tracked && fail == nil {
		requeue = minRequeue(requeue, r.syncUrgency(ctx, &obj, rt, view))
		view, _ = r.Tracker.Get(obj.UID)
	}
	in := statusInput{Marker: m, Failure: fail, Admission: &adm}
	if tracked {
		in.Obs = &view
		in.UrgencyRejected = view.UrgencyError
	}
	in.reachability(rt)
	if tracked && view.HasJobID {
		if sum := view.Summary(); pending.WantsWaiting(sum) {
			in.Waiting = rt.Waiting(r.now(), sum.UserID)
		}
	}
	if hold, after := r.gateOutput(ctx, &obj, rt, &in); hold {
		return ctrl.Result{RequeueAfter: after}, nil
	}
	st := computeStatus(&obj, in, r.now())
	if wait := r.w.pace(&obj, st); wait > 0 {
		return ctrl.Result{RequeueAfter: wait}, nil
	}
	before := obj.Status.Retry
	if err := r.w.writeStatus(ctx, &obj, st); err != nil {
		return ctrl.Result{}, err
	}
	countVerdict(before, obj.Status.Retry)
	if startedAttempt(&obj, in) {
		// The ended attempt is in the history; the next one is submitted
		// by the next reconcile (retry.go).
		r.Tracker.Forget(obj.UID)
		r.w.event(&obj, corev1.EventTypeWarning, fluxjobv1.ReasonRetrying, "Retry", obj.Status.Message)
		return ctrl.Result{RequeueAfter: time.Millisecond}, nil
	}
	if obj.Status.Phase.IsTerminal() {
		// The status is final; later callbacks (release, free, clean)
		// find no entry and are dropped.
		r.Tracker.Forget(obj.UID)
		return r.afterFinished(ctx, &obj, m)
	}
	if in.Unreachable != "" {
		requeue = minRequeue(requeue, r.Options.UnreachableRetry)
	}
	return ctrl.Result{RequeueAfter: minRequeue(requeue, r.Options.Resync)}, nil
}

// minRequeue returns the smaller positive duration (0 means none).
func minRequeue(a, b time.Duration) time.Duration {
	switch {
	case a <= 0:
		return b
	case b <= 0 || a < b:
		return a
	}
	return b
}

// key returns obj's namespaced name.
func key(obj client.Object) types.NamespacedName {
	return types.NamespacedName{Namespace: obj.GetNamespace(), Name: obj.GetName()}
}
