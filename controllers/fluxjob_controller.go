// Package controllers reconciles FluxJobs: it submits each to Flux through
// the shared fluxbridge.Executor (exactly once), follows its Flux job
// through the executor's callbacks, and keeps the FluxJob's status true.
//
// The executor's callbacks never call the API server: they record into a
// Tracker and poke the reconciler through a channel source. Reconcile
// computes the status from the object and the tracker (computeStatus) and
// patches the status subresource only when it changed, so the workqueue
// coalesces many callbacks into few writes.
package controllers

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
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
	"sigs.k8s.io/controller-runtime/pkg/source"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
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
	// (status.submitAttemptTime without a job ID) the controller keeps
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
	// instance (see route.go). If nil, SetupWithManager makes a registry
	// whose only instance is Flux, named "default".
	Instances *InstanceRegistry
	// Flux, when Instances is nil, is the one broker connection: the
	// implicit default instance.
	Flux *FluxConnector
	// Tracker holds what the executor reported; NewTracker if nil at
	// SetupWithManager.
	Tracker *Tracker
	// Options tune the reconciler.
	Options Options

	now     func() time.Time
	waiting waitList   // FluxJobs waiting for an instance (route.go)
	written writtenSet // this controller's latest writes, for stale cached reads (written.go)
	regOnce sync.Once
}

// Permissions, least privilege: read FluxJobs, write their status and
// finalizers (patch on the object is for the finalizer and the submission
// marker annotation only; spec and labels are never written), and emit
// events.
// +kubebuilder:rbac:groups=fluxjob.io,resources=fluxjobs,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=fluxjob.io,resources=fluxjobs/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=fluxjob.io,resources=fluxjobs/finalizers,verbs=update
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
// Namespaces' labels, for a FluxInstance's namespaceSelector.
// +kubebuilder:rbac:groups="",resources=namespaces,verbs=get;list;watch

// SetupWithManager registers the reconciler with mgr: it watches FluxJobs
// (spec changes, creation, deletion) and the tracker's channel, and adds
// the Flux connector as a runnable if it is not added yet.
func (r *FluxJobReconciler) SetupWithManager(mgr ctrl.Manager) error {
	r.Options.defaults()
	if r.now == nil {
		r.now = time.Now
	}
	if r.Tracker == nil {
		r.Tracker = NewTracker(1024)
	}
	if r.registry() == nil {
		return errors.New("controllers: FluxJobReconciler.Instances and .Flux are nil")
	}
	RegisterMetrics()
	if err := indexDependsOn(context.Background(), mgr); err != nil {
		return fmt.Errorf("indexing spec.dependsOn: %w", err)
	}
	if err := r.watchOwnWrites(mgr); err != nil {
		return err
	}
	tr := r.Tracker
	r.Instances.OnConnect(func(instance string) { tr.PokeUnsettled(instance) })
	r.Instances.OnChange(func(string) { r.waiting.pokeAll(tr) })
	return ctrl.NewControllerManagedBy(mgr).
		For(&fluxjobv1.FluxJob{}, builder.WithPredicates(predicate.Or[client.Object](
			predicate.GenerationChangedPredicate{}, deletionPredicate()))).
		Watches(&fluxjobv1.FluxJob{}, r.dependantsHandler(), builder.WithPredicates(dependencyChanged())).
		WatchesRawSource(source.Channel(tr.Events(), &handler.EnqueueRequestForObject{})).
		WithOptions(controller.Options{MaxConcurrentReconciles: r.Options.MaxConcurrentReconciles}).
		Named("fluxjob").
		Complete(r)
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

// Reconcile brings one FluxJob's status in line with its Flux job:
// this controller's own latest write if the cache lags it (written.go) ->
// deletion (finalizer) -> namespace allowed? -> held (suspend,
// dependencies)? -> submit once (marker and finalizer, submit.go) or
// attach -> urgency -> status patch (non-final ones paced, pace.go) ->
// requeue policy (ttlSecondsAfterFinished once finished).
func (r *FluxJobReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	log := logf.FromContext(ctx)
	var obj fluxjobv1.FluxJob
	if err := r.Get(ctx, req.NamespacedName, &obj); err != nil {
		if apierrors.IsNotFound(err) {
			r.waiting.remove(req.NamespacedName)
			r.Tracker.ForgetKey(req.NamespacedName)
			trackedJobs.Set(float64(r.Tracker.Len()))
			return ctrl.Result{}, nil
		}
		return ctrl.Result{}, fmt.Errorf("getting FluxJob %s: %w", req.NamespacedName, err)
	}
	if w := r.written.latest(&obj, r.now()); w != &obj {
		// The cache does not show this controller's latest write yet.
		obj = *w
	}
	log = log.WithValues("uid", obj.UID)
	if _, _, err := parseMarker(&obj); err != nil {
		log.Info("unreadable submission marker: counted as an attempt at the FluxJob's creation (looked up before any submission)", "error", err.Error())
	}
	if obj.Status.JobIDF58 != "" {
		log = log.WithValues("jobid", obj.Status.JobIDF58)
	}
	ctx = logf.IntoContext(ctx, log)
	defer func() { trackedJobs.Set(float64(r.Tracker.Len())) }()

	if !obj.DeletionTimestamp.IsZero() {
		return r.finalize(ctx, &obj)
	}
	if obj.Status.Phase.IsTerminal() {
		// Settled for good: only observedGeneration may need a write (an
		// urgency edit after the end). Nothing is tracked any more.
		r.Tracker.Forget(obj.UID)
		r.waiting.remove(req.NamespacedName)
		if err := r.writeStatus(ctx, &obj, statusInput{}); err != nil {
			return ctrl.Result{}, err
		}
		return r.afterFinished(ctx, &obj)
	}
	if !r.namespaceAllowed(obj.Namespace) && obj.Status.JobID == 0 && submitAttempt(&obj) == nil {
		msg := fmt.Sprintf("namespace %q is not allowed to run jobs on this Flux instance (--allowed-namespaces)", obj.Namespace)
		return ctrl.Result{}, r.writeStatus(ctx, &obj, statusInput{Failure: &failure{Reason: fluxjobv1.ReasonNamespaceNotAllowed, Message: msg}})
	}
	if fail := r.privilegeFailure(&obj); fail != nil && obj.Status.JobID == 0 && submitAttempt(&obj) == nil {
		return ctrl.Result{}, r.writeStatus(ctx, &obj, statusInput{Failure: fail})
	}
	rt, adm, err := r.admit(ctx, &obj)
	if err != nil {
		return ctrl.Result{}, err
	}
	if !adm.OK {
		return r.notAdmitted(ctx, &obj, adm)
	}
	r.waiting.remove(req.NamespacedName)
	ctx = withRoute(ctx, rt)
	deps, held, fail, err := r.beforeSubmit(ctx, &obj)
	if err != nil {
		return ctrl.Result{}, err
	}
	if held != nil || fail != nil {
		return r.holdStatus(ctx, &obj, rt, &adm, held, fail)
	}
	requeue, fail, err := r.ensureTracked(ctx, &obj, rt, deps)
	if err != nil {
		return ctrl.Result{}, err
	}
	obs, tracked := r.Tracker.Get(obj.UID)
	if tracked && fail == nil {
		requeue = minRequeue(requeue, r.syncUrgency(ctx, &obj, obs))
		obs, _ = r.Tracker.Get(obj.UID)
	}
	in := statusInput{Failure: fail, Admission: &adm}
	if tracked {
		in.Obs = &obs
	}
	connected, unreachable := rt.state()
	switch {
	case unreachable != "":
		in.Unreachable = unreachable
	case tracked && obs.Outcome.Kind == outcomeLost:
		in.Unreachable = obs.Outcome.Message
	case connected:
		in.Reachable = true
	}
	if tracked && obs.UrgencyError != "" {
		in.UrgencyRejected = obs.UrgencyError
	}
	if hold, after := r.gateOutput(ctx, &obj, &in); hold {
		return ctrl.Result{RequeueAfter: after}, nil
	}
	st := computeStatus(&obj, in, r.now())
	if wait := r.paceStatus(&obj, st); wait > 0 {
		return ctrl.Result{RequeueAfter: wait}, nil
	}
	if err := r.patchStatus(ctx, &obj, st); err != nil {
		return ctrl.Result{}, err
	}
	if obj.Status.Phase.IsTerminal() {
		// The status is final; later callbacks (release, free, clean)
		// find no entry and are dropped.
		r.Tracker.Forget(obj.UID)
		return r.afterFinished(ctx, &obj)
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

func (r *FluxJobReconciler) namespaceAllowed(ns string) bool {
	return len(r.Options.AllowedNamespaces) == 0 || slices.Contains(r.Options.AllowedNamespaces, ns)
}

// ensureTracked makes sure a future follows the FluxJob's Flux job:
// nothing to do while one does (or its outcome is final); otherwise attach
// to a known job ID, or submit (exactly once, see submit) with the RFC 26
// dependencies deps (see beforeSubmit). It returns a
// requeue delay when it has to wait (broker unreachable, job-list catching
// up), or a failure the controller decided itself.
func (r *FluxJobReconciler) ensureTracked(ctx context.Context, obj *fluxjobv1.FluxJob, rt route, deps []job.Dependency) (time.Duration, *failure, error) {
	obs, ok := r.Tracker.Get(obj.UID)
	if ok && !r.needsNewFuture(obs) {
		return 0, nil, nil
	}
	exec, ctl, err := rt.get()
	if err != nil {
		if _, unreachable := rt.state(); unreachable == "" {
			return 200 * time.Millisecond, nil, nil // still connecting
		}
		return r.Options.UnreachableRetry, nil, nil
	}
	var id uint64
	switch {
	case obj.Status.JobID != 0:
		id = uint64(obj.Status.JobID)
	case ok && obs.HasJobID:
		id = obs.JobID
	}
	if id != 0 {
		if err := r.ensureFinalizer(ctx, obj); err != nil {
			return 0, nil, err
		}
		// Never trust a bare job ID: it may be another instance's (see
		// identity.go).
		return r.reattach(ctx, obj, exec, ctl, job.ID(id))
	}
	return r.submit(ctx, obj, exec, ctl, deps)
}

// needsNewFuture reports whether the tracked future can no longer tell us
// anything: it lost its connection, was aborted, or ended on a fatal
// exception but has been silent too long without the job's clean event
// (its eventlog watch may have died with a connection).
func (r *FluxJobReconciler) needsNewFuture(obs observation) bool {
	switch obs.Outcome.Kind {
	case outcomeLost, outcomeAborted:
		return true
	case outcomeException:
		for _, ev := range obs.Events {
			if ev.Name == "clean" || ev.Name == "finish" {
				return false
			}
		}
		return r.now().Sub(obs.LastSeen) > r.Options.Resync
	}
	return false
}

// writeStatus computes the status and patches the status subresource if
// it changed, with an optimistic lock so that a stale cache never
// overwrites a newer status (a conflict is returned and requeued). It
// emits an event for a phase change. obj is updated in place.
func (r *FluxJobReconciler) writeStatus(ctx context.Context, obj *fluxjobv1.FluxJob, in statusInput) error {
	return r.patchStatus(ctx, obj, computeStatus(obj, in, r.now()))
}

// patchStatus is writeStatus for a status already computed.
func (r *FluxJobReconciler) patchStatus(ctx context.Context, obj *fluxjobv1.FluxJob, st fluxjobv1.FluxJobStatus) error {
	if !significantChange(obj.Status, st) {
		return nil
	}
	oldPhase := obj.Status.Phase
	base := obj.DeepCopy()
	obj.Status = st
	r.written.begin(obj.UID)
	if err := r.Status().Patch(ctx, obj, clientMergeLocked(base)); err != nil {
		r.written.end(obj.UID)
		*obj = *base
		statusPatchesTotal.WithLabelValues(patchResult(err)).Inc()
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("patching FluxJob status: %w", err)
	}
	statusPatchesTotal.WithLabelValues("success").Inc()
	r.written.add(base.ResourceVersion, obj, r.now())
	if st.Phase != oldPhase {
		phaseTransitionsTotal.WithLabelValues(string(st.Phase)).Inc()
		r.phaseEvent(ctx, obj, oldPhase)
	}
	return nil
}

// significantChange reports whether the new status is worth a write:
// anything but the event list and the event times changed. Eventlog
// events that do not change the phase (validate, depend, priority, alloc,
// non-fatal exceptions...) ride along with the next write that matters
// (the phase change to Running, or to the final phase), which keeps a job
// to about four status writes.
func significantChange(old, updated fluxjobv1.FluxJobStatus) bool {
	strip := func(s fluxjobv1.FluxJobStatus) fluxjobv1.FluxJobStatus {
		s.Events, s.SubmitTime, s.StartTime, s.CompletionTime, s.Duration = nil, nil, nil, nil, nil
		return s
	}
	return !equality.Semantic.DeepEqual(strip(old), strip(updated))
}

// phaseEvent emits the Kubernetes event for a phase change just written:
// one per FluxJob lifetime, for its end (Succeeded, or a Warning with the
// failure's reason), and one when it is suspended. The phases in between
// (Submitted, Running) are in the status (conditions, startTime) and the
// log, not in events: an event is a create in the API server, and one per
// phase cost a FluxJob that waited in Flux's queue two or three.
func (r *FluxJobReconciler) phaseEvent(ctx context.Context, obj *fluxjobv1.FluxJob, old fluxjobv1.FluxJobPhase) {
	st := &obj.Status
	logf.FromContext(ctx).Info("phase changed", "from", old, "to", st.Phase, "jobid", st.JobIDF58, "message", st.Message)
	typ, reason := corev1.EventTypeNormal, string(st.Phase)
	switch st.Phase {
	case fluxjobv1.PhasePending, fluxjobv1.PhaseSubmitted, fluxjobv1.PhaseRunning:
		return
	case fluxjobv1.PhaseFailed, fluxjobv1.PhaseCancelled:
		typ = corev1.EventTypeWarning
		if c := failedCondition(st); c != "" {
			reason = c
		}
	}
	r.event(obj, typ, reason, "Reconcile", st.Message)
}

func failedCondition(st *fluxjobv1.FluxJobStatus) string {
	for _, c := range st.Conditions {
		if c.Type == fluxjobv1.ConditionFailed {
			return c.Reason
		}
	}
	return ""
}

// event emits a Kubernetes event if a recorder is set.
func (r *FluxJobReconciler) event(obj *fluxjobv1.FluxJob, typ, reason, action, note string) {
	if r.Recorder == nil {
		return
	}
	r.Recorder.Eventf(obj, nil, typ, reason, action, "%s", clip(note, 1024))
}

// key returns obj's namespaced name.
func key(obj client.Object) types.NamespacedName {
	return types.NamespacedName{Namespace: obj.GetNamespace(), Name: obj.GetName()}
}

// clientMergeLocked is a merge patch from base that fails with a conflict
// if the object changed since base was read.
func clientMergeLocked(base client.Object) client.Patch {
	return client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{})
}

// patchResult is the metrics label for a failed patch.
func patchResult(err error) string {
	if apierrors.IsConflict(err) {
		return "conflict"
	}
	return "error"
}
