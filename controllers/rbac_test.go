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

	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/testbroker"
	"github.com/fluxjob/fluxjob-operator/internal/broker"
	"github.com/fluxjob/fluxjob-operator/internal/recorder"
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
