package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
)

// saTokenFile is where client libraries look for in-cluster credentials.
const saTokenFile = "/var/run/secrets/kubernetes.io/serviceaccount/token"

// tokenProbe is a FluxJob whose command looks for the credentials a job
// could use to reach the Kubernetes API as the manager: the service-account
// token file (and its directory), and an API server address in its
// environment. It exits 0 only if it finds none. On kind it runs for real,
// in the flux sidecar; the test broker of the local e2e runs nothing, so
// there the check is on what the controller hands Flux (checkJobEnv).
const tokenProbe = `apiVersion: fluxjob.io/v1alpha1
kind: FluxJob
metadata:
  name: token-probe
spec:
  command:
  - sh
  - -c
  - 'for f in ` + saTokenFile + ` /var/run/secrets/kubernetes.io/serviceaccount; do if [ -e "$f" ]; then echo "found $f"; exit 1; fi; done; if [ -n "$KUBERNETES_SERVICE_HOST" ]; then echo "KUBERNETES_SERVICE_HOST=$KUBERNETES_SERVICE_HOST"; exit 2; fi; echo no credentials'
  env:
  - name: PROBE
    value: token
`

// managerCanaryEnv is the environment the local e2e gives the manager
// process besides KUBECONFIG and FLUX_URI: what a pod's manager container
// has (the API server address the kubelet injects) and a canary. None of it
// may reach a Flux job.
var managerCanaryEnv = map[string]string{
	"KUBERNETES_SERVICE_HOST": "10.96.0.1",
	"KUBERNETES_SERVICE_PORT": "443",
	"FLUXJOB_MANAGER_CANARY":  "manager-only-d41d8cd9",
}

// checkJobEnv reads the jobspec the broker holds for Flux job id (through
// job-info.lookup, with the production client) and fails the test unless
// its environment is exactly want, and unless no value of the manager's
// environment (managerEnv: name=value pairs) appears anywhere in it.
func checkJobEnv(ctx context.Context, t *testing.T, uri string, id job.ID, want map[string]string, managerEnv []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	c, err := flux.Dial(ctx, uri)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var resp struct {
		Jobspec json.RawMessage `json:"jobspec"`
	}
	req := map[string]any{"id": id, "keys": []string{"jobspec"}, "flags": 1} // 1: the jobspec as an object
	if err := c.RPC(ctx, "job-info.lookup", req, &resp); err != nil {
		t.Fatalf("job-info.lookup jobspec of %s: %v", id, err)
	}
	var js struct {
		Attributes struct {
			System struct {
				Environment map[string]string `json:"environment"`
			} `json:"system"`
		} `json:"attributes"`
	}
	if err := json.Unmarshal(resp.Jobspec, &js); err != nil {
		t.Fatalf("decoding the jobspec of %s: %v\n%s", id, err, resp.Jobspec)
	}
	if got := js.Attributes.System.Environment; !maps.Equal(got, want) {
		t.Errorf("Flux job %s has environment %v, want exactly the FluxJob's spec.env %v", id, got, want)
	}
	for _, kv := range managerEnv {
		name, value, _ := strings.Cut(kv, "=")
		if len(value) >= 4 && strings.Contains(string(resp.Jobspec), value) {
			t.Errorf("the jobspec of Flux job %s carries the value of the manager's %s", id, name)
		}
		if strings.Contains(string(resp.Jobspec), `"`+name+`"`) {
			t.Errorf("the jobspec of Flux job %s names the manager's variable %s", id, name)
		}
	}
}

// canaryEnv returns managerCanaryEnv as name=value pairs.
func canaryEnv() []string {
	var out []string
	for k, v := range managerCanaryEnv {
		out = append(out, fmt.Sprintf("%s=%s", k, v))
	}
	return out
}

// waitJobID waits until FluxJob ns/name has a Flux job ID and returns it.
func waitJobID(ctx context.Context, t *testing.T, tg target, ns, name string) *fluxjobv1.FluxJob {
	t.Helper()
	for {
		fj := getFluxJob(ctx, t, tg, ns, name)
		if fj.Status.JobID != 0 {
			return fj
		}
		select {
		case <-ctx.Done():
			t.Fatalf("FluxJob %s/%s got no Flux job ID: phase %q, %s", ns, name, fj.Status.Phase, fj.Status.Message)
		case <-time.After(200 * time.Millisecond):
		}
	}
}
