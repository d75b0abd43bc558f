package controllers

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/yaml"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux/fluxtest"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/testbroker"
	"github.com/fluxjob/fluxjob-operator/internal/broker"
	"github.com/fluxjob/fluxjob-operator/internal/recorder"
	"github.com/fluxjob/fluxjob-operator/podexec/podexectest"
)

// forbiddenLog records every request the API server refused with 403.
type forbiddenLog struct {
	mu   sync.Mutex
	reqs []string
}

func (f *forbiddenLog) wrap(rt http.RoundTripper) http.RoundTripper {
	return roundTripFunc(func(req *http.Request) (*http.Response, error) {
		resp, err := rt.RoundTrip(req)
		if err == nil && resp.StatusCode == http.StatusForbidden {
			f.mu.Lock()
			f.reqs = append(f.reqs, req.Method+" "+req.URL.Path)
			f.mu.Unlock()
		}
		return resp, err
	})
}

func (f *forbiddenLog) list() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.reqs)
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// readRole decodes one of the committed RBAC manifests in config/rbac.
func readRole[T any](t *testing.T, name string) *T {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "config", "rbac", name))
	if err != nil {
		t.Fatal(err)
	}
	v := new(T)
	if err := yaml.UnmarshalStrict(b, v); err != nil {
		t.Fatalf("decoding config/rbac/%s: %v", name, err)
	}
	return v
}

// TestRBACLifecycle runs the manager as an ordinary user (not
// system:masters) that has only what config/rbac grants the manager's
// ServiceAccount: the generated ClusterRole of role.yaml (bound, like
// role_binding.yaml, by a ClusterRoleBinding) and the leader-election Role.
// It takes FluxJobs through a whole life — create, finalizer, submit to the
// test broker, run, succeed, delete; and delete while running, which
// cancels — with leader election and the production event recorder, and
// fails on any request the API server refuses: a verb missing from the
// markers fails it.
func TestRBACLifecycle(t *testing.T) {
	h := newHarness(t, testbroker.Options{TimeScale: 0.01}, Options{})
	ctx := context.Background()
	suffix := h.ns

	// The user, and proof that RBAC is on: before the bindings it may not
	// even list FluxJobs.
	user, err := testEnv.AddUser(envtest.User{Name: "fluxjob-manager-" + suffix}, nil)
	if err != nil {
		t.Fatal(err)
	}
	userCfg := rest.CopyConfig(user.Config())
	uc, err := client.New(userCfg, client.Options{Scheme: testScheme()})
	if err != nil {
		t.Fatal(err)
	}
	if err := uc.List(ctx, &fluxjobv1.FluxJobList{}, client.InNamespace(h.ns)); !apierrors.IsForbidden(err) {
		t.Fatalf("listing FluxJobs before any binding: %v, want Forbidden (RBAC is off, so this test would prove nothing)", err)
	}

	subject := rbacv1.Subject{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: "fluxjob-manager-" + suffix}
	role := readRole[rbacv1.ClusterRole](t, "role.yaml")
	role.Name += "-" + suffix
	binding := readRole[rbacv1.ClusterRoleBinding](t, "role_binding.yaml")
	binding.Name += "-" + suffix
	binding.RoleRef.Name = role.Name
	binding.Subjects = []rbacv1.Subject{subject}
	leRole := readRole[rbacv1.Role](t, "leader_election_role.yaml")
	leRole.Namespace = h.ns
	leBinding := readRole[rbacv1.RoleBinding](t, "leader_election_role_binding.yaml")
	leBinding.Namespace, leBinding.Subjects = h.ns, []rbacv1.Subject{subject}
	for _, o := range []client.Object{role, binding, leRole, leBinding} {
		if err := h.c.Create(ctx, o); err != nil {
			t.Fatalf("creating %T %s: %v", o, o.GetName(), err)
		}
	}
	t.Cleanup(func() {
		_ = h.c.Delete(context.Background(), binding)
		_ = h.c.Delete(context.Background(), role)
	})
	// The authorizer's cache of bindings: wait until the user may list.
	if err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		return uc.List(ctx, &fluxjobv1.FluxJobList{}, client.InNamespace(h.ns)) == nil, nil
	}); err != nil {
		t.Fatalf("the user cannot list FluxJobs 30s after the bindings: %v", err)
	}

	forbidden := &forbiddenLog{}
	userCfg.WrapTransport = forbidden.wrap
	mgr, err := ctrl.NewManager(userCfg, electedOptions(h.ns, true))
	if err != nil {
		t.Fatal(err)
	}
	conn := broker.NewConnector(testConnectorOptions(h.broker.URI()))
	if err := mgr.Add(conn); err != nil {
		t.Fatal(err)
	}
	rec := recorder.New(mgr.GetClient(), mgr.GetScheme(), recorder.Options{Controller: "fluxjob-controller"})
	if err := mgr.Add(rec); err != nil {
		t.Fatal(err)
	}
	r := &FluxJobReconciler{Client: mgr.GetClient(), Scheme: mgr.GetScheme(), Recorder: rec, Flux: conn,
		Options: Options{CancelTimeout: 20 * time.Second}}
	if err := r.SetupWithManager(mgr); err != nil {
		t.Fatal(err)
	}
	mctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- mgr.Start(mctx) }()
	defer func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("manager: %v", err)
			}
		case <-time.After(60 * time.Second):
			t.Error("manager did not stop within 60s")
		}
	}()

	// One job from creation to deletion after success.
	h.create("ok", cmdSpec("sleep", "20")) // 0.2s with TimeScale 0.01
	h.waitFor("ok", 30*time.Second, "Running or later, with the finalizer", func(o *fluxjobv1.FluxJob) bool {
		return hasFinalizer(o) && (o.Status.Phase == fluxjobv1.PhaseRunning || o.Status.Phase.IsTerminal())
	})
	obj := h.waitPhase("ok", fluxjobv1.PhaseSucceeded, 30*time.Second)
	h.waitEvent("ok", "Succeeded", 30*time.Second)
	if err := h.c.Delete(ctx, obj); err != nil {
		t.Fatal(err)
	}
	h.waitGone("ok", 30*time.Second)

	// One deleted while it runs: the finalizer cancels its Flux job.
	h.create("long", cmdSpec("sleep", "30000"))
	obj = h.waitPhase("long", fluxjobv1.PhaseRunning, 30*time.Second)
	if err := h.c.Delete(ctx, obj); err != nil {
		t.Fatal(err)
	}
	h.waitGone("long", 30*time.Second)
	if !slices.ContainsFunc(h.brokerEvents(job.ID(obj.Status.JobID)), func(e job.Event) bool {
		return e.Name == "exception" && fmt.Sprint(e.Context["type"]) == "cancel"
	}) {
		t.Errorf("deleting the running FluxJob did not cancel Flux job %s", job.ID(obj.Status.JobID))
	}
	if holder := h.leaseHolder(); holder == "" {
		t.Error("the manager never held the leader-election Lease")
	}
	if f := forbidden.list(); len(f) > 0 {
		t.Errorf("the API server refused the manager (a verb missing from the +kubebuilder:rbac markers?):\n%s", strings.Join(f, "\n"))
	}
}

// managerUser creates an API user with what an install grants the
// manager's ServiceAccount: the generated ClusterRole of role.yaml, bound
// cluster-wide, and, for each namespace of execNamespaces, the ClusterRole
// of config/components/pod-exec bound there by a RoleBinding (as its
// rolebindings.yaml does). It waits until the bindings are in force and
// returns the user's config, whose refused requests are recorded.
func managerUser(t *testing.T, h *harness, name string, execNamespaces []string) (*rest.Config, client.Client, *forbiddenLog) {
	t.Helper()
	ctx := context.Background()
	user, err := testEnv.AddUser(envtest.User{Name: name}, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg := rest.CopyConfig(user.Config())
	uc, err := client.New(cfg, client.Options{Scheme: testScheme()})
	if err != nil {
		t.Fatal(err)
	}
	subject := rbacv1.Subject{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: name}
	role := readRole[rbacv1.ClusterRole](t, "role.yaml")
	role.Name = name
	binding := readRole[rbacv1.ClusterRoleBinding](t, "role_binding.yaml")
	binding.Name, binding.RoleRef.Name, binding.Subjects = name, role.Name, []rbacv1.Subject{subject}
	objs := []client.Object{role, binding}
	if len(execNamespaces) > 0 {
		b, err := os.ReadFile(filepath.Join("..", "config", "components", "pod-exec", "role.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		execRole := &rbacv1.ClusterRole{}
		if err := yaml.UnmarshalStrict(b, execRole); err != nil {
			t.Fatalf("decoding config/components/pod-exec/role.yaml: %v", err)
		}
		execRole.Name = name + "-pod-exec"
		objs = append(objs, execRole)
		for _, ns := range execNamespaces {
			objs = append(objs, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: execRole.Name},
				RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: execRole.Name},
				Subjects: []rbacv1.Subject{subject}})
		}
	}
	for _, o := range objs {
		if err := h.c.Create(ctx, o); err != nil {
			t.Fatalf("creating %T %s: %v", o, o.GetName(), err)
		}
	}
	t.Cleanup(func() {
		for _, o := range objs {
			_ = h.c.Delete(context.Background(), o)
		}
	})
	if err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		if uc.List(ctx, &fluxjobv1.FluxEndpointList{}) != nil {
			return false, nil
		}
		for _, ns := range execNamespaces {
			if uc.List(ctx, &corev1.PodList{}, client.InNamespace(ns)) != nil {
				return false, nil
			}
		}
		return true, nil
	}); err != nil {
		t.Fatalf("the bindings of %s are not in force after 30s: %v", name, err)
	}
	forbidden := &forbiddenLog{}
	cfg.WrapTransport = forbidden.wrap
	return cfg, uc, forbidden
}

// startInstanceManager runs the FluxEndpoint controller as cfg's user,
// with exec namespaces execNS and the real pods/exec transport, until the
// test ends.
func startInstanceManager(t *testing.T, cfg *rest.Config, execNS []string) {
	t.Helper()
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme: testScheme(), Metrics: metricsserver.Options{BindAddress: "0"}, HealthProbeBindAddress: "0",
		Controller: config.Controller{SkipNameValidation: ptrTo(true)},
	})
	if err != nil {
		t.Fatal(err)
	}
	reg := broker.NewRegistry(testConnectorOptions(""))
	if err := mgr.Add(reg); err != nil {
		t.Fatal(err)
	}
	rec := recorder.New(mgr.GetClient(), mgr.GetScheme(), recorder.Options{Controller: "fluxendpoint-controller"})
	if err := mgr.Add(rec); err != nil {
		t.Fatal(err)
	}
	ir := &FluxEndpointReconciler{Client: mgr.GetClient(), Registry: reg, Recorder: rec, Transports: broker.DefaultTransports(cfg),
		ExecNamespaces: execNS, StatusInterval: time.Second, RetryInterval: 200 * time.Millisecond}
	if err := ir.SetupWithManager(mgr); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("manager: %v", err)
			}
		case <-time.After(60 * time.Second):
			t.Error("manager did not stop within 60s")
		}
	})
}

// TestRBACPodExec runs the FluxEndpoint controller as an ordinary API
// user with each install's RBAC, against MiniClusters whose lead broker
// pod runs on a test kubelet (podexectest) that execs the relay to the
// test broker, through envtest's API server, which authorises the exec:
//
//   - the default install (role.yaml only, no --exec-namespaces): the
//     manager may not even list pods, and a MiniCluster FluxEndpoint is
//     refused with reason ExecNamespaceNotAllowed and a Warning event,
//     without a request the API server refuses;
//   - with config/components/pod-exec bound in one namespace and
//     --exec-namespaces naming it: the MiniCluster there is Ready through
//     a real pods/exec; the one in another namespace is refused with
//     ExecNamespaceNotAllowed, and the manager's RBAC does not reach that
//     namespace either.
//
// A permission missing from the component's role (brokerpod.Rules) fails
// it: the API server's refusals are recorded.
func TestRBACPodExec(t *testing.T) {
	h := newHarness(t, testbroker.Options{}, Options{})
	ctx := context.Background()
	execNS, otherNS := h.newNamespace("exec", nil), h.newNamespace("other", nil)
	sock, err := fluxtest.SocketPath(h.broker.URI())
	if err != nil {
		t.Fatal(err)
	}
	shim := t.TempDir()
	if err := fluxtest.WriteRelayShim(shim); err != nil {
		t.Fatal(err)
	}
	rt := &podexectest.Runtime{Env: []string{podexectest.PathWith(shim)}}
	k, err := podexectest.StartKubelet(rt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Close)
	for _, ns := range []string{execNS, otherNS} {
		jobUID := h.createMiniCluster(ns, "flux-sample")
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "flux-sample-0-abcde",
			Labels: map[string]string{"job-name": "flux-sample", "job-index": "0"}, OwnerReferences: controllerRef("batch/v1", "Job", "flux-sample", jobUID)},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "flux-sample", Image: "ghcr.io/example/flux:latest"}}}}
		if err := k.RunPod(ctx, h.c, ns+"-node", pod); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = h.c.Delete(context.Background(), &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: ns + "-node"}})
		})
	}
	mcIn := func(ns string) fluxjobv1.FluxEndpointConnection {
		return fluxjobv1.FluxEndpointConnection{MiniCluster: &fluxjobv1.MiniClusterConnection{Namespace: ns, Name: "flux-sample", SocketPath: sock}}
	}
	refused := func(name, ns string) {
		t.Helper()
		fi := h.waitInstance(name, 30*time.Second, "ExecNamespaceNotAllowed", func(fi *fluxjobv1.FluxEndpoint) bool {
			s, r := instanceCondition(fi, fluxjobv1.InstanceConditionReady)
			return s == metav1.ConditionFalse && r == fluxjobv1.ReasonExecNamespaceNotAllowed
		})
		if c := meta.FindStatusCondition(fi.Status.Conditions, fluxjobv1.InstanceConditionReady); !strings.Contains(c.Message, `namespace "`+ns+`"`) {
			t.Errorf("%s: message %q does not name namespace %s", name, c.Message, ns)
		}
		h.waitInstanceEvent(name, fluxjobv1.ReasonExecNamespaceNotAllowed, 30*time.Second)
	}

	t.Run("default install", func(t *testing.T) {
		cfg, uc, forbidden := managerUser(t, h, "fluxjob-manager-default-"+h.ns, nil)
		if err := uc.List(ctx, &corev1.PodList{}, client.InNamespace(execNS)); !apierrors.IsForbidden(err) {
			t.Fatalf("the default install's manager lists pods: %v, want Forbidden", err)
		}
		startInstanceManager(t, cfg, nil)
		name := h.createInstanceWith("default-mc", mcIn(execNS), &metav1.LabelSelector{}, false)
		refused(name, execNS)
		if n := len(rt.Execs()); n != 0 {
			t.Errorf("%d execs with the default install", n)
		}
		if f := forbidden.list(); len(f) > 0 {
			t.Errorf("the API server refused the manager:\n%s", strings.Join(f, "\n"))
		}
	})

	t.Run("with the pod-exec component", func(t *testing.T) {
		cfg, uc, forbidden := managerUser(t, h, "fluxjob-manager-exec-"+h.ns, []string{execNS})
		if err := uc.List(ctx, &corev1.PodList{}, client.InNamespace(otherNS)); !apierrors.IsForbidden(err) {
			t.Fatalf("the component's manager lists pods outside its namespaces: %v, want Forbidden", err)
		}
		startInstanceManager(t, cfg, []string{execNS})
		in := h.createInstanceWith("exec-mc", mcIn(execNS), &metav1.LabelSelector{}, false)
		out := h.createInstanceWith("other-mc", mcIn(otherNS), &metav1.LabelSelector{}, false)
		fi := h.waitInstance(in, 60*time.Second, "Ready through pods/exec", instanceReady)
		if want := execNS + "/flux-sample-0-abcde/flux-sample:" + sock; fi.Status.Endpoint != want || fi.Status.Version != testbroker.SimulatedVersion {
			t.Errorf("status endpoint %q version %q, want %q and the test broker's", fi.Status.Endpoint, fi.Status.Version, want)
		}
		refused(out, otherNS)
		for _, e := range rt.Execs() {
			if e.Pod != execNS+"/flux-sample-0-abcde" || e.Container != "flux-sample" {
				t.Errorf("exec %+v outside %s", e, execNS)
			}
		}
		if f := forbidden.list(); len(f) > 0 {
			t.Errorf("the API server refused the manager (a permission missing from config/components/pod-exec/role.yaml?):\n%s", strings.Join(f, "\n"))
		}
	})
}
