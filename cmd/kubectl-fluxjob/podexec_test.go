package main

import (
	"context"
	"io"
	"reflect"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux/fluxtest"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/testbroker"
	"github.com/fluxjob/fluxjob-operator/podexec/podexectest"
)

// TestLogsThroughPodExec runs `logs -f` as in a cluster: the plugin finds
// the broker's pod by its labels and runs `flux relay SOCKET` in its flux
// container through the real kube-apiserver's pods/exec, which connects to
// the kubelet endpoint of the pod's Node (podexectest.Kubelet, serving the
// exec with the real remotecommand.ServeExec; the "container" runs the
// relay locally, reaching the test broker). The first line shows while the
// job runs.
func TestLogsThroughPodExec(t *testing.T) {
	w := newWorld(t, testbroker.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	bp := w.brokerPod(ctx, "flux-broker", map[string]string{"control-plane": "controller-manager"})
	shim, rt, sock := bp.shim, bp.rt, bp.sock

	w.create("slow", fluxjobv1.FluxJobSpec{Command: slowJob})
	w.followSlow(ctx, func(out, errw io.Writer) error {
		return run(ctx, []string{"logs", "slow", "-f", "--kubeconfig", w.kubeconfig, "--flux-namespace", w.ns, "--flux-socket", sock,
			// the shim's path: the test runtime runs the command without a
			// shell, so PATH lookup is the test process's own
			"--flux-command", shim + "/flux relay"},
			env{stdout: out, stderr: errw, dialPod: execDialer})
	})
	execs := rt.Execs()
	if len(execs) != 1 || execs[0].Pod != w.ns+"/flux-broker" || execs[0].Container != "flux" || !reflect.DeepEqual(execs[0].Cmd, []string{shim + "/flux", "relay", sock}) {
		t.Fatalf("execs %+v, want one `flux relay %s` in %s/flux-broker container flux", execs, sock, w.ns)
	}
}

// brokerPod is a pod whose "flux" container runs the relay to the world's
// test broker: its Node's kubelet endpoint is a podexectest.Kubelet.
type brokerPod struct {
	pod  *corev1.Pod
	shim string // the directory of the shim `flux` (fluxtest.WriteRelayShim)
	rt   *podexectest.Runtime
	sock string // the test broker's socket
}

// brokerPod creates a Running pod name with labels on a Node served by a
// test kubelet.
func (w *world) brokerPod(ctx context.Context, name string, labels map[string]string, owners ...metav1.OwnerReference) brokerPod {
	t := w.t
	t.Helper()
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
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: w.ns, Name: name, Labels: labels, OwnerReferences: owners},
		Spec: corev1.PodSpec{Containers: []corev1.Container{
			{Name: "manager", Image: "controller"}, {Name: "flux", Image: "fluxrm/flux-core:bookworm-v0.88.0"},
		}},
	}
	if err := k.RunPod(ctx, w.c, "node-"+rand.String(6), pod); err != nil {
		t.Fatal(err)
	}
	sock, err := fluxtest.SocketPath(w.broker.URI())
	if err != nil {
		t.Fatal(err)
	}
	return brokerPod{pod: pod, shim: shim, rt: rt, sock: sock}
}
