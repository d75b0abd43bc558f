package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	appsv1 "k8s.io/api/apps/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/yaml"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux/fluxtest"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/testbroker"
	"github.com/fluxjob/fluxjob-operator/internal/brokerpod"
	"github.com/fluxjob/fluxjob-operator/podexec"
)

func TestInstanceOf(t *testing.T) {
	tests := []struct {
		spec, status string
		name, field  string
	}{
		{"", "", "", ""},
		{"a", "", "a", "spec.instance"},
		{"", "b", "b", "status.instance"},
		{"a", "b", "b", "status.instance"}, // the instance it was submitted to wins
	}
	for _, tc := range tests {
		obj := &fluxjobv1.FluxJob{Spec: fluxjobv1.FluxJobSpec{Instance: tc.spec}, Status: fluxjobv1.FluxJobStatus{Instance: tc.status}}
		if name, field := instanceOf(obj); name != tc.name || field != tc.field {
			t.Errorf("spec %q status %q: %q %q, want %q %q", tc.spec, tc.status, name, field, tc.name, tc.field)
		}
	}
}

// TestBrokerOf resolves each kind of connection against pods in a fake
// client (the pod lookup is package brokerpod's, shared with the manager).
// Decoys — pods with the broker's labels (or selector) that sort first and
// are Running, but have no owner, another owner, or an ownerReference with
// the right name and a made-up UID — are never chosen: before ownership
// was checked, "mc-0-aaa-decoy" was the MiniCluster's lead broker and
// "a-decoy" the selector's pod.
func TestBrokerOf(t *testing.T) {
	s, err := scheme()
	if err != nil {
		t.Fatal(err)
	}
	ctrlRef := func(apiVersion, kind, name, uid string) []metav1.OwnerReference {
		yes := true
		return []metav1.OwnerReference{{APIVersion: apiVersion, Kind: kind, Name: name, UID: types.UID(uid), Controller: &yes}}
	}
	pod := func(name string, labels map[string]string, owners []metav1.OwnerReference, phase corev1.PodPhase, containers ...string) *corev1.Pod {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "hpc", Name: name, Labels: labels, OwnerReferences: owners}, Status: corev1.PodStatus{Phase: phase}}
		for _, c := range containers {
			p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: c})
		}
		return p
	}
	mcLabels := func(index string) map[string]string { return map[string]string{"job-name": "mc", "job-index": index} }
	miniCluster := &unstructured.Unstructured{}
	miniCluster.SetAPIVersion("flux-framework.org/v1alpha2")
	miniCluster.SetKind("MiniCluster")
	miniCluster.SetNamespace("hpc")
	miniCluster.SetName("mc")
	miniCluster.SetUID("mc-uid")
	mcJob := &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Namespace: "hpc", Name: "mc", UID: "job-uid",
		OwnerReferences: ctrlRef("flux-framework.org/v1alpha2", "MiniCluster", "mc", "mc-uid")}}
	// A Job named like the MiniCluster's that the MiniCluster does not control.
	fakeJob := &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Namespace: "hpc", Name: "mc2", UID: "fake-job-uid"}}
	sts := &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Namespace: "hpc", Name: "flux", UID: "sts-uid"}}
	mapper := meta.NewDefaultRESTMapper(nil)
	for _, gvk := range []schema.GroupVersionKind{miniCluster.GroupVersionKind(), batchv1.SchemeGroupVersion.WithKind("Job"),
		appsv1.SchemeGroupVersion.WithKind("StatefulSet"), corev1.SchemeGroupVersion.WithKind("Pod"), fluxjobv1.GroupVersion.WithKind("FluxEndpoint")} {
		scope := meta.RESTScopeNamespace
		if gvk.Kind == "FluxEndpoint" {
			scope = meta.RESTScopeRoot
		}
		mapper.Add(gvk, scope)
	}
	c := fake.NewClientBuilder().WithScheme(s).WithRESTMapper(mapper).WithObjects(
		miniCluster, mcJob, fakeJob, sts,
		pod("mc-0-aaa-decoy", mcLabels("0"), nil, corev1.PodRunning, "mc"),
		pod("mc-0-aab-decoy", mcLabels("0"), ctrlRef("batch/v1", "Job", "mc", "made-up"), corev1.PodRunning, "mc"),
		pod("mc-0-aac-decoy", mcLabels("0"), ctrlRef("batch/v1", "Job", "mc2", "fake-job-uid"), corev1.PodRunning, "mc"),
		pod("mc-0-abc", mcLabels("0"), ctrlRef("batch/v1", "Job", "mc", "job-uid"), corev1.PodRunning, "mc"),
		pod("mc-1-abc", mcLabels("1"), ctrlRef("batch/v1", "Job", "mc", "job-uid"), corev1.PodRunning, "mc"),
		pod("a-decoy", map[string]string{"app": "flux"}, nil, corev1.PodRunning, "side", "flux"),
		pod("a-decoy2", map[string]string{"app": "flux"}, ctrlRef("apps/v1", "StatefulSet", "flux", "made-up"), corev1.PodRunning, "side", "flux"),
		pod("b-pending", map[string]string{"app": "flux"}, ctrlRef("apps/v1", "StatefulSet", "flux", "sts-uid"), corev1.PodPending, "flux"),
		pod("b-running", map[string]string{"app": "flux"}, ctrlRef("apps/v1", "StatefulSet", "flux", "sts-uid"), corev1.PodRunning, "side", "flux"),
		pod("lone", nil, nil, corev1.PodRunning, "main"),
	).Build()
	// Only decoys for MiniCluster "decoyed": none is owned.
	c2 := fake.NewClientBuilder().WithScheme(s).WithRESTMapper(mapper).WithObjects(
		pod("decoyed-0-abc", map[string]string{"job-name": "decoyed", "job-index": "0"}, nil, corev1.PodRunning, "decoyed"),
	).Build()
	fluxSel := &metav1.LabelSelector{MatchLabels: map[string]string{"app": "flux"}}
	stsOwner := &fluxjobv1.PodOwner{Kind: "StatefulSet", Name: "flux"}
	if fi := (&fluxjobv1.FluxEndpoint{ObjectMeta: metav1.ObjectMeta{Name: "fi"}, Spec: fluxjobv1.FluxEndpointSpec{Connection: fluxjobv1.FluxEndpointConnection{
		MiniCluster: &fluxjobv1.MiniClusterConnection{Namespace: "hpc", Name: "decoyed"}}}}); true {
		_, err := brokerOf(context.Background(), c2, fi)
		if err == nil || !errors.Is(err, brokerpod.ErrNotOwned) || !strings.Contains(err.Error(), "decoyed-0-abc") {
			t.Fatalf("a MiniCluster with only a decoy pod: %v, want ErrNotOwned naming the decoy", err)
		}
	}
	tests := []struct {
		name string
		conn fluxjobv1.FluxEndpointConnection
		want broker
		err  string
	}{
		{"local uri", fluxjobv1.FluxEndpointConnection{URI: "local:///run/flux/local"},
			broker{uri: "local:///run/flux/local", via: " (FluxEndpoint fi)"}, ""},
		{"ssh uri: the Secret is not read", fluxjobv1.FluxEndpointConnection{URI: "ssh://flux@host/run/flux/local", SecretRef: &fluxjobv1.SecretReference{Name: "manager-key"}},
			broker{uri: "ssh://flux@host/run/flux/local", via: " (FluxEndpoint fi)"}, ""},
		{"minicluster lead broker", fluxjobv1.FluxEndpointConnection{MiniCluster: &fluxjobv1.MiniClusterConnection{Namespace: "hpc", Name: "mc"}},
			broker{pod: podexec.Target{Namespace: "hpc", Pod: "mc-0-abc", Container: "mc", SocketPath: fluxjobv1.DefaultMiniClusterSocket}, via: " (FluxEndpoint fi)"}, ""},
		{"pod by selector: the running one of the owner", fluxjobv1.FluxEndpointConnection{Pod: &fluxjobv1.PodConnection{Namespace: "hpc",
			Selector: fluxSel, Owner: stsOwner, Container: "flux", SocketPath: "/s", Command: []string{"flux", "relay"}}},
			broker{pod: podexec.Target{Namespace: "hpc", Pod: "b-running", Container: "flux", SocketPath: "/s", Command: []string{"flux", "relay"}}, via: " (FluxEndpoint fi)"}, ""},
		{"pod by name, first container", fluxjobv1.FluxEndpointConnection{Pod: &fluxjobv1.PodConnection{Namespace: "hpc", Name: "lone", SocketPath: "/s"}},
			broker{pod: podexec.Target{Namespace: "hpc", Pod: "lone", Container: "main", SocketPath: "/s"}, via: " (FluxEndpoint fi)"}, ""},
		{"pod not running", fluxjobv1.FluxEndpointConnection{Pod: &fluxjobv1.PodConnection{Namespace: "hpc", Name: "b-pending", SocketPath: "/s"}},
			broker{}, "pod hpc/b-pending is Pending, not Running"},
		{"no such pod", fluxjobv1.FluxEndpointConnection{Pod: &fluxjobv1.PodConnection{Namespace: "hpc", Name: "gone", SocketPath: "/s"}},
			broker{}, "reading pod hpc/gone"},
		{"no such container", fluxjobv1.FluxEndpointConnection{Pod: &fluxjobv1.PodConnection{Namespace: "hpc", Name: "lone", Container: "flux", SocketPath: "/s"}},
			broker{}, `pod hpc/lone has no container "flux"`},
		{"pod by selector without owner", fluxjobv1.FluxEndpointConnection{Pod: &fluxjobv1.PodConnection{Namespace: "hpc", Selector: fluxSel, SocketPath: "/s"}},
			broker{}, "needs spec.connection.pod.owner"},
		{"pod by selector, another owner", fluxjobv1.FluxEndpointConnection{Pod: &fluxjobv1.PodConnection{Namespace: "hpc", Selector: fluxSel,
			Owner: &fluxjobv1.PodOwner{Kind: "StatefulSet", Name: "other"}, SocketPath: "/s"}},
			broker{}, "its controller is StatefulSet flux"},
		{"pod by name, owner checked", fluxjobv1.FluxEndpointConnection{Pod: &fluxjobv1.PodConnection{Namespace: "hpc", Name: "a-decoy2", Owner: stsOwner, SocketPath: "/s"}},
			broker{}, "UID made-up"},
		{"minicluster without pods", fluxjobv1.FluxEndpointConnection{MiniCluster: &fluxjobv1.MiniClusterConnection{Namespace: "hpc", Name: "other"}},
			broker{}, "no Running pod found: the lead broker pod of MiniCluster hpc/other"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fi := &fluxjobv1.FluxEndpoint{ObjectMeta: metav1.ObjectMeta{Name: "fi"}, Spec: fluxjobv1.FluxEndpointSpec{Connection: tc.conn}}
			b, err := brokerOf(context.Background(), c, fi)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(b, tc.want) {
				t.Fatalf("%+v %v, want %+v", b, err, tc.want)
			}
		})
	}
}

// submitted submits cmd to the world's test broker, as the manager would,
// and creates the FluxJob name with spec, whose status records the Flux
// job (Running) on instance (status.instance; "" leaves it empty).
func (w *world) submitted(name string, spec fluxjobv1.FluxJobSpec, instance string) {
	t := w.t
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := flux.Dial(ctx, w.broker.URI())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	js, err := job.FromCommand(spec.Command, job.CommandOptions{Cwd: "/"})
	if err != nil {
		t.Fatal(err)
	}
	id, err := job.SubmitJobspec(ctx, c, js, job.SubmitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	obj := &fluxjobv1.FluxJob{ObjectMeta: metav1.ObjectMeta{Namespace: w.ns, Name: name}, Spec: spec}
	if err := w.c.Create(ctx, obj); err != nil {
		t.Fatal(err)
	}
	obj.Status = fluxjobv1.FluxJobStatus{JobID: int64(id), JobIDF58: id.F58(), Instance: instance, Phase: fluxjobv1.PhaseRunning}
	if err := w.c.Status().Update(ctx, obj); err != nil {
		t.Fatal(err)
	}
}

// createInstance creates the cluster-scoped FluxEndpoint (deleted at the
// end of the test).
func (w *world) createInstance(name string, conn fluxjobv1.FluxEndpointConnection, isDefault bool) {
	t := w.t
	t.Helper()
	fi := &fluxjobv1.FluxEndpoint{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: fluxjobv1.FluxEndpointSpec{Connection: conn,
		NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": w.ns}}}}
	if isDefault {
		fi.Annotations = map[string]string{fluxjobv1.DefaultInstanceAnnotation: "true"}
	}
	if err := w.c.Create(context.Background(), fi); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.c.Delete(context.Background(), fi) })
}

// kubeconfigAs writes a kubeconfig of the world's that impersonates user.
func (w *world) kubeconfigAs(user string) string {
	t := w.t
	t.Helper()
	kc, err := clientcmd.LoadFromFile(w.kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	kc.AuthInfos["admin"].Impersonate = user
	path := filepath.Join(t.TempDir(), "kubeconfig-"+user)
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// sshHome makes HOME a directory whose ~/.ssh has a key the SSH server
// accepts and the server's host key in known_hosts, with no agent, and
// returns the ssh:// URI of the world's test broker through that server
// (its `flux relay` is the relay shim, named by FLUX_SSH_RCMD).
func (w *world) sshHome() string {
	t := w.t
	t.Helper()
	key, keyPEM, err := fluxtest.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	sshd, err := fluxtest.StartSSHServer(fluxtest.SSHServerOptions{AuthorizedKeys: []ssh.PublicKey{key.PublicKey()}, Exec: fluxtest.ShellExec()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sshd.Close)
	home := t.TempDir()
	if err := os.Mkdir(filepath.Join(home, ".ssh"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(home, ".ssh", "id_ed25519"), keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(home, ".ssh", "known_hosts"), sshd.KnownHosts, 0o600); err != nil {
		t.Fatal(err)
	}
	shim := t.TempDir()
	if err := fluxtest.WriteRelayShim(shim); err != nil {
		t.Fatal(err)
	}
	t.Setenv("HOME", home)
	t.Setenv("SSH_AUTH_SOCK", "")
	t.Setenv("FLUX_SSH_RCMD", filepath.Join(shim, "flux"))
	sock, err := fluxtest.SocketPath(w.broker.URI())
	if err != nil {
		t.Fatal(err)
	}
	return sshd.URI("flux", sock)
}

// TestLogsFollowsInstance: without --flux-* flags, logs goes to the Flux
// instance of the FluxJob, read from its FluxEndpoint with the user's
// credentials: a pod instance through pods/exec of the real
// kube-apiserver (the pod's Node is a test kubelet), a local:// and an
// ssh:// instance dialled from here (ssh with the user's ~/.ssh, not the
// Secret the FluxEndpoint names), the default instance; unknown or
// forbidden instances give a clear error, and flags override.
func TestLogsFollowsInstance(t *testing.T) {
	w := newCluster(t, testbroker.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// The broker pod belongs to the StatefulSet the FluxEndpoint names; a
	// Running decoy with the same labels that sorts first (and has no
	// owner) is never exec'd into (the label-only lookup took it).
	sts := &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Namespace: w.ns, Name: "broker"},
		Spec: appsv1.StatefulSetSpec{ServiceName: "broker", Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "flux"}},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "flux"}},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "flux", Image: "fluxrm/flux-core:bookworm-v0.88.0"}}}}}}
	if err := w.c.Create(ctx, sts); err != nil {
		t.Fatal(err)
	}
	yes := true
	bp := w.brokerPod(ctx, "broker-0", map[string]string{"app": "flux"},
		metav1.OwnerReference{APIVersion: "apps/v1", Kind: "StatefulSet", Name: sts.Name, UID: sts.UID, Controller: &yes})
	decoy := w.brokerPod(ctx, "a-decoy", map[string]string{"app": "flux"})
	w.createInstance("pod-"+w.ns, fluxjobv1.FluxEndpointConnection{Pod: &fluxjobv1.PodConnection{
		Namespace: w.ns, Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "flux"}},
		Owner: &fluxjobv1.PodOwner{Kind: "StatefulSet", Name: sts.Name}, Container: "flux", SocketPath: bp.sock,
		// the test runtime runs the command without a shell
		Command: []string{filepath.Join(bp.shim, "flux"), "relay"},
	}}, false)
	w.createInstance("uri-"+w.ns, fluxjobv1.FluxEndpointConnection{URI: w.broker.URI()}, false)
	w.createInstance("ssh-"+w.ns, fluxjobv1.FluxEndpointConnection{URI: w.sshHome(),
		SecretRef: &fluxjobv1.SecretReference{Name: "the-managers-key-never-read"}}, false)

	// alice may read FluxJobs in the namespace, and nothing else
	role := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Namespace: w.ns, Name: "fluxjob-reader"},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{"fluxjob.io"}, Resources: []string{"fluxjobs"}, Verbs: []string{"get", "list", "watch"}}}}
	binding := &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: w.ns, Name: "alice"},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: role.Name},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: "alice"}}}
	for _, o := range []client.Object{role, binding} {
		if err := w.c.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	alice := w.kubeconfigAs("alice")
	// bob has what the README says the plugin needs: the committed
	// viewer-role in the namespace and fluxendpoint-viewer-role
	bob := w.kubeconfigAs("bob")
	for _, f := range []string{"fluxjob_viewer_role.yaml", "fluxendpoint_viewer_role.yaml"} {
		b, err := os.ReadFile(filepath.Join("..", "..", "config", "rbac", f))
		if err != nil {
			t.Fatal(err)
		}
		var cr rbacv1.ClusterRole
		if err := yaml.UnmarshalStrict(b, &cr); err != nil {
			t.Fatalf("config/rbac/%s: %v", f, err)
		}
		cr.Name = w.ns + "-" + cr.Name
		if err := w.c.Create(ctx, &cr); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = w.c.Delete(context.Background(), &cr) })
		subjects := []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: "bob"}}
		ref := rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: cr.Name}
		var binding client.Object = &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: w.ns, Name: cr.Name}, RoleRef: ref, Subjects: subjects}
		if f == "fluxendpoint_viewer_role.yaml" {
			binding = &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: cr.Name}, RoleRef: ref, Subjects: subjects}
		}
		if err := w.c.Create(ctx, binding); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = w.c.Delete(context.Background(), binding) })
	}

	// the API server's RBAC authorizer sees new bindings through its cache
	w.waitAllowed("alice", w.ns, "fluxjobs")
	w.waitAllowed("bob", w.ns, "fluxjobs")
	w.waitAllowed("bob", "", "fluxendpoints")

	hello := []string{"sh", "-c", "echo hello; echo oops >&2"}
	tests := []struct {
		name           string
		specInstance   string // spec.instance
		statusInstance string // status.instance
		args           []string
		err            string // "": logs prints hello/oops
		podExecs       int    // execs into the broker pod
	}{
		{name: "spec.instance: pod", specInstance: "pod-" + w.ns, podExecs: 1},
		{name: "status.instance: local uri", specInstance: "pod-" + w.ns, statusInstance: "uri-" + w.ns},
		{name: "status.instance: ssh with the user's keys", statusInstance: "ssh-" + w.ns},
		{name: "unknown instance", specInstance: "nope", err: `runs on FluxEndpoint "nope" (spec.instance), which does not exist`},
		{name: "flags override", specInstance: "nope", args: []string{"--flux-uri", w.broker.URI()}},
		{name: "forbidden", statusInstance: "uri-" + w.ns, args: []string{"--kubeconfig", alice},
			err: "which you may not read: the plugin needs `get fluxendpoints`"},
		{name: "forbidden default", args: []string{"--kubeconfig", alice}, err: "needs `list fluxendpoints`"},
		{name: "the committed roles suffice", statusInstance: "uri-" + w.ns, args: []string{"--kubeconfig", bob}},
		{name: "implicit instance: the sidecar flags", statusInstance: "sidecar", args: []string{"--default-instance", "sidecar"},
			err: "runs on the manager's implicit instance \"sidecar\" (status.instance): no running pod with labels control-plane=controller-manager in namespace fluxjob-system"},
		// last: it marks a default instance
		{name: "the default FluxEndpoint", podExecs: 1},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if i == len(tests)-1 {
				w.createInstance("default-"+w.ns, fluxjobv1.FluxEndpointConnection{Pod: &fluxjobv1.PodConnection{
					Namespace: w.ns, Name: bp.pod.Name, Container: "flux", SocketPath: bp.sock, Command: []string{filepath.Join(bp.shim, "flux"), "relay"},
				}}, true)
			}
			name := "job-" + string(rune('a'+i))
			w.submitted(name, fluxjobv1.FluxJobSpec{Command: hello, Instance: tc.specInstance}, tc.statusInstance)
			execsBefore := len(bp.rt.Execs())
			args := append([]string{"logs", name, "-f", "--kubeconfig", w.kubeconfig}, tc.args...)
			var out, errb bytes.Buffer
			err := run(ctx, args, env{stdout: &out, stderr: &errb, dialPod: execDialer})
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if out.String() != "hello\n" || errb.String() != "oops\n" {
				t.Fatalf("stdout %q stderr %q", out.String(), errb.String())
			}
			if n := len(bp.rt.Execs()) - execsBefore; n != tc.podExecs {
				t.Fatalf("%d execs into the broker pod, want %d", n, tc.podExecs)
			}
			if n := len(decoy.rt.Execs()); n != 0 {
				t.Fatalf("%d execs into the decoy pod", n)
			}
		})
	}
}

// waitAllowed waits until the API server lets user get resource (of
// fluxjob.io) in ns ("" for cluster-scoped).
func (w *world) waitAllowed(user, ns, resource string) {
	t := w.t
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{User: user,
			ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: ns, Verb: "get", Group: fluxjobv1.GroupVersion.Group, Resource: resource}}}
		if err := w.c.Create(ctx, sar); err != nil {
			t.Fatal(err)
		}
		if sar.Status.Allowed {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s may not get %s in %q: %v", user, resource, ns, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// TestLogsOnManagedPodInstance: the manager runs a FluxJob on a
// FluxEndpoint of kind pod (its executor execs into the pod through the
// API server), and logs -f, given nothing but the FluxJob's name, follows
// it there: the first line shows while it runs.
func TestLogsOnManagedPodInstance(t *testing.T) {
	w := newWorld(t, testbroker.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	bp := w.brokerPod(ctx, "broker-0", map[string]string{"app": "flux"})
	instance := "managed-" + w.ns
	w.createInstance(instance, fluxjobv1.FluxEndpointConnection{Pod: &fluxjobv1.PodConnection{
		Namespace: w.ns, Name: bp.pod.Name, Container: "flux", SocketPath: bp.sock, // the default relay command: the shim is on the runtime's PATH
	}}, false)
	w.create("slow", fluxjobv1.FluxJobSpec{Command: slowJob, Instance: instance})
	w.followSlow(ctx, func(out, errw io.Writer) error {
		return run(ctx, []string{"logs", "slow", "-f", "--kubeconfig", w.kubeconfig}, env{stdout: out, stderr: errw, dialPod: execDialer})
	})
	obj := w.waitPhase("slow", fluxjobv1.PhaseSucceeded)
	if obj.Status.Instance != instance {
		t.Fatalf("status.instance %q, want %q", obj.Status.Instance, instance)
	}
	if len(w.broker.Jobs()) != 1 {
		t.Fatalf("the test broker has %d jobs, want 1", len(w.broker.Jobs()))
	}
}
