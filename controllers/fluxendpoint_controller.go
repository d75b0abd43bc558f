package controllers

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/source"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
	"github.com/fluxjob/fluxjob-operator/internal/broker"
)

// FluxEndpointReconciler keeps the InstanceRegistry in line with the
// FluxEndpoint objects: it resolves each one's spec.connection (reading
// the ssh Secret in the manager's namespace, finding the broker pod),
// registers the result (a new connector when the connection settings
// change, none when the FluxEndpoint goes away), and writes the
// instance's status: Connected and Ready conditions, flux-core version,
// size, job counts, queues, last contact. It runs again when the
// instance's connection changes state and every StatusInterval.
type FluxEndpointReconciler struct {
	client.Client
	// APIReader reads Secrets and Pods directly from the API server, so
	// that the manager keeps no cache (and needs no list/watch) of them.
	APIReader client.Reader
	// Registry is shared with the FluxJob reconciler.
	Registry *broker.Registry
	// Recorder emits events about FluxEndpoints (optional).
	Recorder events.EventRecorder
	// Namespace is the manager's own namespace, the only one Secrets
	// are read from.
	Namespace string
	// Transports are the ssh and pod-exec transports available.
	Transports broker.Transports
	// StatusInterval is how often a FluxEndpoint's status is refreshed.
	// Default 30s.
	StatusInterval time.Duration
	// RetryInterval is how soon an unusable connection (Secret or pod
	// missing) is resolved again. Default 10s.
	RetryInterval time.Duration
	// RPCTimeout bounds each status RPC. Default 10s.
	RPCTimeout time.Duration
	// ExecNamespaces are the namespaces miniCluster and pod connections
	// may name (--exec-namespaces): the ones config/components/pod-exec
	// grants the manager pods and pods/exec in. Empty (the default
	// install): none; such FluxEndpoints are refused with reason
	// ExecNamespaceNotAllowed, before any pod is read.
	ExecNamespaces []string
	// AllowExecCommand lets miniCluster and pod connections replace the
	// relay command (spec.connection.*.command; --allow-exec-command).
	// Off by default: the command would run as the container's user in
	// any pod of the exec namespaces, so such FluxEndpoints are refused
	// with reason ExecCommandNotAllowed.
	AllowExecCommand bool

	changes chan event.TypedGenericEvent[client.Object]
	now     func() time.Time
}

// Permissions: FluxEndpoints and their status.
// +kubebuilder:rbac:groups=fluxjob.io,resources=fluxendpoints,verbs=get;list;watch
// +kubebuilder:rbac:groups=fluxjob.io,resources=fluxendpoints/status,verbs=get;update;patch
// The ssh key of an ssh:// FluxEndpoint, read only in the manager's own
// namespace (a Role there, not a ClusterRole).
// +kubebuilder:rbac:groups="",namespace=fluxjob-system,resources=secrets,verbs=get

// SetupWithManager registers the reconciler and the registry (as a
// runnable) with mgr.
func (r *FluxEndpointReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.StatusInterval <= 0 {
		r.StatusInterval = 30 * time.Second
	}
	if r.RetryInterval <= 0 {
		r.RetryInterval = 10 * time.Second
	}
	if r.RPCTimeout <= 0 {
		r.RPCTimeout = 10 * time.Second
	}
	if r.now == nil {
		r.now = time.Now
	}
	if r.APIReader == nil {
		r.APIReader = mgr.GetAPIReader()
	}
	r.changes = make(chan event.TypedGenericEvent[client.Object], 256)
	r.Registry.OnChange(func(name string) {
		obj := &metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Name: name}}
		select {
		case r.changes <- event.TypedGenericEvent[client.Object]{Object: obj}:
		default: // the periodic refresh catches up
		}
	})
	return ctrl.NewControllerManagedBy(mgr).
		For(&fluxjobv1.FluxEndpoint{}, builder.WithPredicates(predicate.Or[client.Object](
			predicate.GenerationChangedPredicate{}, predicate.AnnotationChangedPredicate{}))).
		WatchesRawSource(source.Channel(r.changes, &handler.EnqueueRequestForObject{})).
		Named("fluxendpoint").
		Complete(r)
}

// Reconcile registers the FluxEndpoint's connection and refreshes its
// status.
func (r *FluxEndpointReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	log := logf.FromContext(ctx)
	var fi fluxjobv1.FluxEndpoint
	if err := r.Get(ctx, req.NamespacedName, &fi); err != nil {
		if apierrors.IsNotFound(err) {
			r.Registry.Remove(req.Name)
			return ctrl.Result{}, nil
		}
		return ctrl.Result{}, fmt.Errorf("getting FluxEndpoint %s: %w", req.Name, err)
	}
	if !fi.DeletionTimestamp.IsZero() {
		r.Registry.Remove(fi.Name)
		return ctrl.Result{}, nil
	}
	if fi.Name == r.Registry.Implicit() {
		msg := fmt.Sprintf("the name %q is the manager's implicit instance (--flux-uri, named by --default-instance); rename this FluxEndpoint or start the manager with --default-instance=\"\"", fi.Name)
		return ctrl.Result{}, r.writeStatus(ctx, &fi, instanceObservation{invalid: msg})
	}
	cfg, endpoint, refusal := broker.Resolver{Reader: r.APIReader, Namespace: r.Namespace, Transports: r.Transports,
		ExecNamespaces: r.ExecNamespaces, AllowExecCommand: r.AllowExecCommand}.Resolve(ctx, &fi)
	if cfg.Invalid != "" {
		log.Info("FluxEndpoint connection cannot be used", "reason", cfg.Invalid, "refusal", refusal)
	}
	r.Registry.Set(fi.Name, cfg)
	conn, _, _ := r.Registry.Lookup(fi.Name)
	obs := instanceObservation{invalid: cfg.Invalid, refusal: refusal, endpoint: endpoint, accounts: r.Registry.AccountStates(fi.Name)}
	if conn != nil {
		obs.connected, obs.unreachable = conn.State()
		obs.reason = conn.Reason()
		if obs.connected {
			obs.info, obs.infoErr = conn.Info(ctx, r.RPCTimeout)
		}
	}
	if err := r.writeStatus(ctx, &fi, obs); err != nil {
		return ctrl.Result{}, err
	}
	if cfg.Invalid != "" || obs.unreachable != "" || obs.infoErr != nil {
		return ctrl.Result{RequeueAfter: r.RetryInterval}, nil
	}
	return ctrl.Result{RequeueAfter: r.StatusInterval}, nil
}

// instanceObservation is everything the status is computed from.
type instanceObservation struct {
	invalid     string
	refusal     string // the reason when invalid is a policy refusal
	endpoint    string
	accounts    []fluxjobv1.FluxEndpointAccountStatus
	connected   bool
	unreachable string
	reason      string // the broker broke the protocol: ProtocolReason

	info    broker.InstanceInfo
	infoErr error
}

// writeStatus computes fi's status from obs and patches it if it changed;
// it emits an event when Connected changes.
func (r *FluxEndpointReconciler) writeStatus(ctx context.Context, fi *fluxjobv1.FluxEndpoint, obs instanceObservation) error {
	now := metav1.NewTime(r.now().Truncate(time.Second))
	st := *fi.Status.DeepCopy()
	st.ObservedGeneration = fi.Generation
	st.Endpoint = obs.endpoint
	st.Accounts = obs.accounts
	var status metav1.ConditionStatus
	var reason, msg string
	switch {
	case obs.invalid != "" && obs.refusal != "":
		status, reason, msg = metav1.ConditionFalse, obs.refusal, obs.invalid
	case obs.invalid != "":
		status, reason, msg = metav1.ConditionFalse, fluxjobv1.ReasonInvalidConnection, obs.invalid
	case obs.connected:
		status, reason, msg = metav1.ConditionTrue, fluxjobv1.ReasonConnected, "Connected to the Flux broker"
	case obs.unreachable != "" && obs.reason != "":
		status, reason, msg = metav1.ConditionFalse, obs.reason, obs.unreachable
	case obs.unreachable != "":
		status, reason, msg = metav1.ConditionFalse, fluxjobv1.ReasonConnectFailed, obs.unreachable
	default:
		status, reason, msg = metav1.ConditionUnknown, fluxjobv1.ReasonConnecting, "Connecting to the Flux broker"
	}
	msg = fluxjobv1.Clip(msg, 32768)
	meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: fluxjobv1.InstanceConditionConnected, Status: status, Reason: reason, Message: msg,
		ObservedGeneration: fi.Generation, LastTransitionTime: now})
	// Ready also needs the broker to answer: a connection whose status
	// read fails (a hung relay, a broker that stopped answering) is not
	// ready even while it is still open (the keepalive closes it soon).
	ready, readyReason, readyMsg := status, reason, msg
	if obs.connected && obs.infoErr != nil {
		ready, readyReason = metav1.ConditionFalse, fluxjobv1.ReasonBrokerUnresponsive
		readyMsg = fluxjobv1.Clip("The broker does not answer the status read: "+obs.infoErr.Error(), 32768)
	}
	meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: fluxjobv1.InstanceConditionReady, Status: ready, Reason: readyReason, Message: readyMsg,
		ObservedGeneration: fi.Generation, LastTransitionTime: now})
	if obs.connected && obs.infoErr == nil {
		st.Version, st.Size, st.Queues = obs.info.Version, obs.info.Size, obs.info.Queues
		jobs := obs.info.Jobs
		st.Jobs = &jobs
		st.LastContactTime = &now
	} else if obs.infoErr != nil {
		logf.FromContext(ctx).Info("could not read the instance's status from the broker", "error", obs.infoErr.Error())
	}
	if equality.Semantic.DeepEqual(fi.Status, st) {
		return nil
	}
	old := meta.FindStatusCondition(fi.Status.Conditions, fluxjobv1.InstanceConditionConnected)
	base := fi.DeepCopy()
	fi.Status = st
	if err := r.Status().Patch(ctx, fi, client.MergeFrom(base)); err != nil {
		*fi = *base
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("patching FluxEndpoint status: %w", err)
	}
	if r.Recorder != nil && (old == nil || old.Status != status || old.Reason != reason) && status != metav1.ConditionUnknown {
		typ := corev1.EventTypeNormal
		if status != metav1.ConditionTrue {
			typ = corev1.EventTypeWarning
		}
		r.Recorder.Eventf(fi, nil, typ, reason, "Connect", "%s", fluxjobv1.Clip(msg, 1024))
	}
	return nil
}
