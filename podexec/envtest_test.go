package podexec

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/fluxjob/fluxjob-operator/fluxbridge"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
	"github.com/fluxjob/fluxjob-operator/podexec/podexectest"
)

// TestExecThroughAPIServer runs the exec as in a cluster: through a real
// kube-apiserver (envtest), whose pods/exec subresource authorises the
// request (RBAC), finds the Pod's Node and connects, over TLS, to the
// kubelet endpoint the Node's status names (here 127.0.0.1 and the port
// of podexectest.Kubelet, which serves the exec with ServeExec). The
// API server speaks WebSocket v5 to client-go and SPDY to the kubelet.
func TestExecThroughAPIServer(t *testing.T) {
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		t.Skip("KUBEBUILDER_ASSETS is not set: this test needs kube-apiserver and etcd (make envtest; bin/k8s)")
	}
	tenv := &envtest.Environment{}
	cfg, err := tenv.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tenv.Stop() })
	ctx := testCtx(t)
	c, err := client.New(cfg, client.Options{Scheme: scheme.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t)
	k, err := podexectest.StartKubelet(e.rt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Close)

	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "flux-node"}}
	must(t, c.Create(ctx, node))
	node.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "127.0.0.1"}}
	node.Status.DaemonEndpoints.KubeletEndpoint.Port = int32(k.Port)
	must(t, c.Status().Update(ctx, node))
	must(t, c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "hpc"}}))
	for _, p := range []struct{ name, node string }{{"flux-sample-0", "flux-node"}, {"unscheduled", ""}} {
		must(t, c.Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: "hpc", Name: p.name},
			Spec: corev1.PodSpec{NodeName: p.node, Containers: []corev1.Container{
				{Name: "flux-sample", Image: "ghcr.io/converged-computing/flux-view-rocky:tag-9"},
				{Name: "sidecar", Image: "busybox"},
			}},
		}))
	}
	// RBAC: the manager's rule for the pod transport, and a user without it
	must(t, c.Create(ctx, &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Namespace: "hpc", Name: "flux-exec"},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get"}},
			{APIGroups: []string{""}, Resources: []string{"pods/exec"}, Verbs: []string{"create", "get"}},
		},
	}))
	must(t, c.Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Namespace: "hpc", Name: "flux-exec"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "flux-exec"},
		Subjects:   []rbacv1.Subject{{Kind: "User", Name: "fluxjob-manager", APIGroup: "rbac.authorization.k8s.io"}},
	}))
	// pods/exec with get alone (no create)
	must(t, c.Create(ctx, &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Namespace: "hpc", Name: "exec-get-only"},
		Rules:      []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"pods", "pods/exec"}, Verbs: []string{"get"}}},
	}))
	must(t, c.Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Namespace: "hpc", Name: "exec-get-only"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "exec-get-only"},
		Subjects:   []rbacv1.Subject{{Kind: "User", Name: "getter", APIGroup: "rbac.authorization.k8s.io"}},
	}))
	userCfg := func(name string) *rest.Config {
		u, err := tenv.AddUser(envtest.User{Name: name}, cfg)
		if err != nil {
			t.Fatal(err)
		}
		return u.Config()
	}
	manager, nobody, getter := userCfg("fluxjob-manager"), userCfg("nobody"), userCfg("getter")

	t.Run("executor through the API server", func(t *testing.T) {
		o := Target{Namespace: "hpc", Pod: "flux-sample-0", Container: "flux-sample", SocketPath: e.sock}
		var (
			mu   sync.Mutex
			sent []string
		)
		recording := rest.CopyConfig(manager)
		recording.WrapTransport = func(rt http.RoundTripper) http.RoundTripper {
			return roundTripFunc(func(r *http.Request) (*http.Response, error) {
				resp, err := rt.RoundTrip(r)
				status, proto := 0, ""
				if resp != nil {
					status, proto = resp.StatusCode, resp.Header.Get("Sec-Websocket-Protocol")
				}
				mu.Lock()
				sent = append(sent, fmt.Sprintf("%s %d %s", r.Method, status, proto))
				mu.Unlock()
				return resp, err
			})
		}
		d, err := Dialer(recording, o)
		if err != nil {
			t.Fatal(err)
		}
		ex, err := fluxbridge.NewExecutor(ctx, fluxbridge.ExecutorOptions{Workers: 2, URI: o.URI(), DialOptions: []flux.Option{flux.WithDialer(d)}})
		if err != nil {
			t.Fatal(err)
		}
		defer ex.Close()
		spec, _ := job.FromCommand([]string{"exit", "3"}, job.CommandOptions{})
		f, err := ex.Submit(ctx, spec, job.SubmitOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got, err := f.Result(ctx); err != nil || got != 3 {
			t.Fatalf("Result = %d, %v; want 3", got, err)
		}
		execs := e.rt.Execs()
		if len(execs) != 2 || execs[0].Pod != "hpc/flux-sample-0" || execs[0].Container != "flux-sample" {
			t.Errorf("execs %+v, want 2 in hpc/flux-sample-0 container flux-sample", execs)
		}
		ex.Shutdown(true, false)
		// client-go spoke WebSocket v5 to the API server, which spoke
		// SPDY to the kubelet (its stream translator)
		mu.Lock()
		defer mu.Unlock()
		for _, r := range sent {
			if r != "GET 101 v5.channel.k8s.io" {
				t.Errorf("client requests %q, want WebSocket v5 only, each switching protocols", sent)
				break
			}
		}
		for _, r := range k.Requests() {
			if r != "POST SPDY/3.1" {
				t.Errorf("kubelet requests %q, want SPDY from the API server", k.Requests())
				break
			}
		}
	})
	tests := []struct {
		name string
		cfg  *rest.Config
		o    Target
		want string
	}{
		{"no RBAC for pods/exec", nobody, Target{Namespace: "hpc", Pod: "flux-sample-0", Container: "flux-sample"}, "forbidden"},
		{"pods/exec get without create", getter, Target{Namespace: "hpc", Pod: "flux-sample-0", Container: "flux-sample"}, "forbidden"},
		{"no such pod", manager, Target{Namespace: "hpc", Pod: "flux-sample-9", Container: "flux-sample"}, "not found"},
		{"no such container", manager, Target{Namespace: "hpc", Pod: "flux-sample-0", Container: "nope"}, "not valid for pod"},
		{"pod not scheduled", manager, Target{Namespace: "hpc", Pod: "unscheduled", Container: "flux-sample"}, "does not have a host assigned"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.o.SocketPath = e.sock
			d, err := Dialer(tt.cfg, tt.o)
			if err != nil {
				t.Fatal(err)
			}
			before := len(e.rt.Execs())
			_, err = flux.Dial(ctx, tt.o.URI(), flux.WithDialer(d))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Dial = %v, want an error mentioning %q", err, tt.want)
			}
			var re *flux.RelayError
			if errors.As(err, &re) && re.Stderr != "" {
				t.Errorf("stderr %q from a refused exec", re.Stderr)
			}
			if n := len(e.rt.Execs()); n != before {
				t.Errorf("a refused exec ran a command")
			}
		})
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
