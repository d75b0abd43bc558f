package e2e

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
)

// podInstanceNamespace holds the Flux broker the pod-instance scenario
// reaches through pods/exec; podInstanceSocket is its local:// socket.
const (
	podInstanceNamespace = "flux-remote"
	podInstanceSocket    = "/run/flux/remote/local"
)

// podInstanceBroker is a Flux broker in a pod of its own (the sidecar's
// image, replaced as the target's images() say, and start-up,
// config/manager/manager.yaml), not the manager's
// sidecar: the manager can reach it only through pods/exec.
const podInstanceBroker = `
apiVersion: v1
kind: Namespace
metadata:
  name: flux-remote
---
apiVersion: v1
kind: Pod
metadata:
  name: flux-remote
  namespace: flux-remote
  labels:
    app: flux-remote
spec:
  securityContext:
    runAsNonRoot: true
    runAsUser: 65532
    runAsGroup: 65532
    fsGroup: 65532
  containers:
  - name: flux
    image: fluxrm/flux-core:bookworm-v0.88.0
    imagePullPolicy: IfNotPresent
    command: [flux, start]
    args:
    - -Srundir=/run/flux/remote
    - -Slocal-uri=local:///run/flux/remote/local
    - -Sbroker.rc2_none
    - -Slog-stderr-level=6
    - -Slog-stderr-mode=local
    env:
    - {name: FLUX_URI, value: "local:///run/flux/remote/local"}
    - {name: HOME, value: /tmp}
    - {name: TMPDIR, value: /tmp}
    workingDir: /tmp
    readinessProbe:
      exec:
        command: [flux, python, -c, 'import flux; flux.Flux().rpc("state-machine.wait").get()']
      periodSeconds: 2
      timeoutSeconds: 10
    volumeMounts:
    - {name: run, mountPath: /run/flux}
    - {name: tmp, mountPath: /tmp}
  volumes:
  - {name: run, emptyDir: {}}
  - {name: tmp, emptyDir: {}}
`

// podInstance is a FluxEndpoint of kind pod (the FluxEndpoint API of issue
// 12: spec.connection.pod {namespace, name, container, socketPath}) for
// the broker above, admitting the scenario's namespace only. NAMESPACE is
// replaced.
const podInstance = `
apiVersion: fluxjob.io/v1alpha1
kind: FluxEndpoint
metadata:
  name: remote-pod
spec:
  connection:
    pod:
      namespace: flux-remote
      name: flux-remote
      container: flux
      socketPath: /run/flux/remote/local
  namespaceSelector:
    matchLabels:
      kubernetes.io/metadata.name: NAMESPACE
  executor:
    workers: 1
---
apiVersion: fluxjob.io/v1alpha1
kind: FluxJob
metadata:
  name: on-remote-pod
  namespace: NAMESPACE
spec:
  instance: remote-pod
  command: ["sh", "-c", "echo on the remote pod; exit 4"]
`

// runPodInstanceScenario deploys a Flux broker in its own pod and a
// FluxEndpoint of kind pod pointing at it, then a FluxJob naming that
// instance: the manager connects with `flux relay` through pods/exec
// (package podexec), the instance becomes Ready, the FluxJob runs on that
// broker (not the sidecar) and ends with its exit status.
func runPodInstanceScenario(ctx context.Context, t *testing.T, k deployed, ns string) {
	t.Helper()
	if out, err := k.kubectl(ctx, "get", "crd", "fluxendpoints.fluxjob.io", "-o", "name"); err != nil || len(out) == 0 {
		t.Skipf("the FluxEndpoint CRD is not installed by config/default (%v): the pod-instance scenario needs the FluxEndpoint API", err)
	}
	broker := podInstanceBroker
	if img, ok := k.images()[upstreamFluxImage]; ok {
		broker = strings.ReplaceAll(broker, "image: "+upstreamFluxImage, "image: "+img)
	}
	if _, err := k.kubectlInput(ctx, strings.NewReader(broker), "apply", "-f", "-"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = k.kubectl(context.Background(), "delete", "namespace", podInstanceNamespace, "--wait=false")
	})
	if _, err := k.kubectl(ctx, "wait", "-n", podInstanceNamespace, "pod/flux-remote", "--for=condition=Ready", "--timeout=300s"); err != nil {
		t.Fatal(err)
	}
	if _, err := k.kubectl(ctx, "create", "namespace", ns); err != nil {
		t.Fatal(err)
	}
	manifests := strings.ReplaceAll(podInstance, "NAMESPACE", ns)
	if _, err := k.kubectlInput(ctx, strings.NewReader(manifests), "apply", "-f", "-"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = k.kubectl(context.Background(), "delete", "fluxendpoint/remote-pod", "--wait=false") })
	if _, err := k.kubectl(ctx, "wait", "fluxendpoint/remote-pod", "--for=condition=Ready", "--timeout=180s"); err != nil {
		out, _ := k.kubectl(ctx, "get", "fluxendpoint/remote-pod", "-o", "yaml")
		t.Fatalf("%v\n%s", err, out)
	}
	if _, err := k.kubectl(ctx, "wait", "-n", ns, "fluxjob/on-remote-pod", "--for=condition="+fluxjobv1.ConditionFailed, "--timeout=180s"); err != nil {
		out, _ := k.kubectl(ctx, "get", "-n", ns, "fluxjob/on-remote-pod", "-o", "yaml")
		t.Fatalf("%v\n%s", err, out)
	}
	out, err := k.kubectl(ctx, "get", "-n", ns, "fluxjob/on-remote-pod", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var fj struct {
		Status struct {
			JobID      int64  `json:"jobID"`
			ExitStatus *int   `json:"exitStatus"`
			Instance   string `json:"instance"`
		} `json:"status"`
	}
	if err := json.Unmarshal(out, &fj); err != nil {
		t.Fatal(err)
	}
	if fj.Status.ExitStatus == nil || *fj.Status.ExitStatus != 4 || fj.Status.Instance != "remote-pod" {
		t.Errorf("status %+v, want exit status 4 on instance remote-pod", fj.Status)
	}
	// The job is in the remote broker, and only there.
	id := job.ID(fj.Status.JobID).String()
	remote, err := k.kubectl(ctx, "exec", "-n", podInstanceNamespace, "flux-remote", "-c", "flux", "--", "flux", "jobs", "-a", "-n", "-o", "{id}")
	if err != nil || !strings.Contains(string(remote), id) {
		t.Errorf("the remote broker's jobs %q (%v) do not include %s", remote, err, id)
	}
	if local, err := k.flux(ctx, "jobs", "-a", "-n", "-o", "{id}"); err == nil && strings.Contains(string(local), id) {
		t.Errorf("job %s also ran in the manager's sidecar", id)
	}
}
