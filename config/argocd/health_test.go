package argocd

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"go.uber.org/goleak"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// healthStatus is what Argo CD reads from the table the script returns.
type healthStatus struct {
	Status  string
	Message string
}

// validStatuses are the health codes Argo CD accepts; anything else becomes
// Unknown with "Lua returned an invalid health status".
var validStatuses = map[string]bool{
	"Healthy": true, "Progressing": true, "Degraded": true,
	"Suspended": true, "Missing": true, "Unknown": true,
}

func readScript(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("health.lua")
	if err != nil {
		t.Fatalf("read health.lua: %v", err)
	}
	return string(b)
}

// runHealth runs script on obj with Evaluate, as Argo CD runs a custom
// health check from argocd-cm, and fails the test on an error or a status
// Argo CD would turn into Unknown.
func runHealth(t *testing.T, script string, obj *unstructured.Unstructured) healthStatus {
	t.Helper()
	hs, err := Evaluate(script, obj.Object)
	if err != nil {
		t.Fatal(err)
	}
	if !validStatuses[hs.Status] {
		t.Fatalf("health.lua returned status %q, which Argo CD turns into Unknown", hs.Status)
	}
	return healthStatus(hs)
}

// fluxJob builds a FluxJob the way the API server returns it (integers as
// int64) from a YAML document.
func fluxJob(t *testing.T, doc string) *unstructured.Unstructured {
	t.Helper()
	j, err := yaml.YAMLToJSON([]byte(doc))
	if err != nil {
		t.Fatalf("bad test YAML: %v", err)
	}
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(j); err != nil {
		t.Fatalf("bad test object: %v", err)
	}
	return u
}

const header = `
apiVersion: fluxjob.io/v1alpha1
kind: FluxJob
metadata:
  name: hello
  namespace: default
  generation: %d
  uid: 0b7f6a52-2f0e-4d4c-9d6e-1f1b7e6f4a10
spec:
  command: ["echo", "hello"]
  urgency: %d
`

func withStatus(generation, urgency int, status string) string {
	return fmt.Sprintf(header, generation, urgency) + status
}

func cond(typ, status, reason, message string) string {
	return fmt.Sprintf(`
  - type: %s
    status: "%s"
    reason: %s
    message: %q
    observedGeneration: 1
    lastTransitionTime: "2026-11-25T19:40:00Z"`, typ, status, reason, message)
}

func TestHealthLua(t *testing.T) {
	script := readScript(t)
	tests := []struct {
		name        string
		obj         string
		wantStatus  string
		wantMessage []string // substrings
	}{
		{
			name:        "new object without status",
			obj:         fmt.Sprintf(header, 1, 16),
			wantStatus:  "Progressing",
			wantMessage: []string{"Waiting for the controller"},
		},
		{
			name: "pending",
			obj: withStatus(1, 16, `status:
  phase: Pending
  observedGeneration: 1
  conditions:`+cond("Submitted", "Unknown", "Submitting", "submitting to Flux")+
				cond("Ready", "False", "Pending", "not finished")+
				cond("Reconciling", "True", "InProgress", "job in progress")),
			wantStatus:  "Progressing",
			wantMessage: []string{"FluxJob is Pending"},
		},
		{
			name: "submitted",
			obj: withStatus(1, 16, `status:
  phase: Submitted
  jobID: 1234567890
  jobIDF58: ƒ2Q6Jf8Y3
  observedGeneration: 1
  conditions:`+cond("Submitted", "True", "Submitted", "Flux job ƒ2Q6Jf8Y3")+
				cond("Ready", "False", "Pending", "not finished")+
				cond("Reconciling", "True", "InProgress", "job in progress")),
			wantStatus:  "Progressing",
			wantMessage: []string{"Flux job ƒ2Q6Jf8Y3 is submitted"},
		},
		{
			name: "running",
			obj: withStatus(1, 16, `status:
  phase: Running
  jobID: 1234567890
  jobIDF58: ƒ2Q6Jf8Y3
  observedGeneration: 1
  startTime: "2026-11-25T19:40:01Z"
  conditions:`+cond("Running", "True", "Started", "running")+
				cond("Reconciling", "True", "InProgress", "job in progress")),
			wantStatus:  "Progressing",
			wantMessage: []string{"Flux job ƒ2Q6Jf8Y3 is running"},
		},
		{
			name: "succeeded",
			obj: withStatus(1, 16, `status:
  phase: Succeeded
  jobID: 1234567890
  jobIDF58: ƒ2Q6Jf8Y3
  exitStatus: 0
  observedGeneration: 1
  conditions:`+cond("Succeeded", "True", "Completed", "exit status 0")+
				cond("Ready", "True", "Completed", "job succeeded")+
				cond("Reconciling", "False", "Finished", "job finished")),
			wantStatus:  "Healthy",
			wantMessage: []string{"Flux job ƒ2Q6Jf8Y3 succeeded", "(exit status 0)"},
		},
		{
			name: "failed with non-zero exit",
			obj: withStatus(1, 16, `status:
  phase: Failed
  jobID: 1234567891
  jobIDF58: ƒ2Q6Jf8Y4
  exitStatus: 1
  message: job exited with status 1
  observedGeneration: 1
  conditions:`+cond("Failed", "True", "NonZeroExit", "exit status 1")+
				cond("Ready", "False", "NonZeroExit", "job failed")+
				cond("Stalled", "True", "NonZeroExit", "job failed")),
			wantStatus:  "Degraded",
			wantMessage: []string{"Flux job ƒ2Q6Jf8Y4 Failed (exit status 1)", "job exited with status 1"},
		},
		{
			name: "failed: broker rejected the jobspec, no job ID",
			obj: withStatus(1, 16, `status:
  phase: Failed
  observedGeneration: 1
  conditions:`+cond("Submitted", "False", "InvalidJobspec", "job-ingest: jobspec: invalid")+
				cond("Failed", "True", "InvalidJobspec", "job-ingest: jobspec: invalid")+
				cond("Stalled", "True", "InvalidJobspec", "job-ingest: jobspec: invalid")),
			wantStatus:  "Degraded",
			wantMessage: []string{"FluxJob Failed: job-ingest: jobspec: invalid"},
		},
		{
			name: "cancelled",
			obj: withStatus(1, 16, `status:
  phase: Cancelled
  jobID: 1234567892
  jobIDF58: ƒ2Q6Jf8Y5
  exception:
    type: cancel
    severity: 0
    note: cancelled by user
  observedGeneration: 1
  conditions:`+cond("Failed", "True", "Cancelled", "cancelled by user")),
			wantStatus:  "Degraded",
			wantMessage: []string{"Flux job ƒ2Q6Jf8Y5 Cancelled", "cancelled by user"},
		},
		{
			name: "stalled before submission: namespace not allowed",
			obj: withStatus(1, 16, `status:
  phase: Pending
  observedGeneration: 1
  conditions:`+cond("Stalled", "True", "NamespaceNotAllowed", "namespace default may not run jobs on this Flux instance")),
			wantStatus:  "Degraded",
			wantMessage: []string{"FluxJob stalled", "namespace default may not run jobs"},
		},
		{
			name: "held by urgency 0",
			obj: withStatus(1, 0, `status:
  phase: Submitted
  jobIDF58: ƒ2Q6Jf8Y6
  observedGeneration: 1
  conditions:`+cond("Submitted", "True", "Submitted", "Flux job ƒ2Q6Jf8Y6")),
			wantStatus:  "Suspended",
			wantMessage: []string{"held by Flux"},
		},
		{
			name: "suspended before submission",
			obj: withStatus(1, 16, `status:
  phase: Suspended
  observedGeneration: 1
  conditions:`+cond("Suspended", "True", "Suspended", "Suspended (spec.suspend): not submitted to Flux")),
			wantStatus:  "Suspended",
			wantMessage: []string{"FluxJob is suspended"},
		},
		{
			name: "Flux unreachable is not a failure",
			obj: withStatus(1, 16, `status:
  phase: Running
  jobIDF58: ƒ2Q6Jf8Y7
  observedGeneration: 1
  conditions:`+cond("FluxReachable", "False", "FluxUnreachable", "dial local:///run/flux/broker/local: connection refused")),
			wantStatus:  "Progressing",
			wantMessage: []string{"Flux is unreachable", "connection refused"},
		},
		{
			name: "status older than the spec (urgency changed)",
			obj: withStatus(2, 20, `status:
  phase: Succeeded
  jobIDF58: ƒ2Q6Jf8Y8
  exitStatus: 0
  observedGeneration: 1`),
			wantStatus:  "Progressing",
			wantMessage: []string{"observe generation 2"},
		},
		{
			name: "killed by a signal",
			obj: withStatus(1, 16, `status:
  phase: Failed
  jobIDF58: ƒ2Q6Jf8Y9
  exitStatus: -9
  observedGeneration: 1
  conditions:`+cond("Failed", "True", "Signaled", "killed by signal 9")),
			wantStatus:  "Degraded",
			wantMessage: []string{"(exit status -9)", "killed by signal 9"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := runHealth(t, script, fluxJob(t, tc.obj))
			if got.Status != tc.wantStatus {
				t.Errorf("status = %q, want %q (message %q)", got.Status, tc.wantStatus, got.Message)
			}
			for _, want := range tc.wantMessage {
				if !strings.Contains(got.Message, want) {
					t.Errorf("message = %q, want it to contain %q", got.Message, want)
				}
			}
		})
	}
}

// TestConfigMapPatchMatchesScript keeps argocd-cm-patch.yaml in step with
// health.lua: the ConfigMap must carry the script byte for byte under the key
// Argo CD looks up for group fluxjob.io, kind FluxJob.
func TestConfigMapPatchMatchesScript(t *testing.T) {
	b, err := os.ReadFile("argocd-cm-patch.yaml")
	if err != nil {
		t.Fatalf("read argocd-cm-patch.yaml: %v", err)
	}
	var cm struct {
		Kind     string
		Metadata struct{ Name, Namespace string }
		Data     map[string]string
	}
	if err := yaml.Unmarshal(b, &cm); err != nil {
		t.Fatalf("parse argocd-cm-patch.yaml: %v", err)
	}
	if cm.Kind != "ConfigMap" || cm.Metadata.Name != "argocd-cm" {
		t.Fatalf("argocd-cm-patch.yaml is a %s named %q, want the ConfigMap argocd-cm", cm.Kind, cm.Metadata.Name)
	}
	const key = "resource.customizations.health.fluxjob.io_FluxJob"
	got, ok := cm.Data[key]
	if !ok {
		t.Fatalf("argocd-cm-patch.yaml has no data key %q (keys: %v)", key, cm.Data)
	}
	if want := readScript(t); got != want {
		t.Errorf("the script in argocd-cm-patch.yaml differs from health.lua; regenerate it")
	}
	// The embedded copy must behave the same as the file.
	obj := fluxJob(t, withStatus(1, 16, "status:\n  phase: Succeeded\n  observedGeneration: 1\n"))
	if hs := runHealth(t, got, obj); hs.Status != "Healthy" {
		t.Errorf("embedded script: status = %q, want Healthy", hs.Status)
	}
}

// TestHealthLuaWithoutStandardLibraries proves the harness is as strict as
// Argo CD: a script that calls string.format fails, so health.lua passing
// above means it does not depend on the string library.
func TestHealthLuaWithoutStandardLibraries(t *testing.T) {
	if _, err := Evaluate(`return {status = string.format("%s", "Healthy")}`, map[string]any{}); err == nil {
		t.Fatal("string.format worked without the string library; Evaluate would not catch its use")
	}
	if HealthLua != readScript(t) {
		t.Error("the embedded HealthLua differs from health.lua")
	}
}
