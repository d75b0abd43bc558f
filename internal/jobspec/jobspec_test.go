package jobspec

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
)

func specObj(spec fluxjobv1.FluxJobSpec) *fluxjobv1.FluxJob {
	return &fluxjobv1.FluxJob{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "a", UID: "1234-abcd"}, Spec: spec}
}

func TestBuildJobspecFromCommand(t *testing.T) {
	obj := specObj(fluxjobv1.FluxJobSpec{
		Command:      []string{"hostname"},
		Tasks:        ptrTo(int32(4)),
		CoresPerTask: ptrTo(int32(2)),
		Duration:     &metav1.Duration{Duration: 90 * time.Second},
		WorkingDir:   "/tmp",
		Env:          []fluxjobv1.EnvVar{{Name: "A", Value: "1"}},
		Attributes:   &runtime.RawExtension{Raw: []byte(`{"team":"x","n":3}`)},
	})
	b, fail := Build(obj)
	if fail != nil {
		t.Fatalf("failure %+v", fail)
	}
	js, err := job.Parse(b)
	if err != nil {
		t.Fatalf("built jobspec does not parse: %v\n%s", err, b)
	}
	if js.JobName() != "fluxjob-1234-abcd" {
		t.Errorf("job name %q", js.JobName())
	}
	sys := js.Attributes.System
	if sys.Duration != 90 || sys.Cwd != "/tmp" || sys.Environment["A"] != "1" || len(sys.Environment) != 1 {
		t.Errorf("system attributes %+v", sys)
	}
	owner, _ := js.Attributes.User["fluxjob"].(map[string]any)
	if owner["namespace"] != "ns" || owner["name"] != "a" || owner["uid"] != "1234-abcd" || js.Attributes.User["team"] != "x" {
		t.Errorf("user attributes %v", js.Attributes.User)
	}
}

func TestBuildJobspecFromFullJobspec(t *testing.T) {
	raw := `{"version":1,"resources":[{"type":"slot","count":1,"label":"task","with":[{"type":"core","count":1}]}],
	"tasks":[{"command":["true"],"slot":"task","count":{"per_slot":1}}],
	"attributes":{"system":{"duration":0,"job":{"name":"mine"},"x-custom":{"keep":true}},"user":{"u":1}}}`
	b, fail := Build(specObj(fluxjobv1.FluxJobSpec{Jobspec: &runtime.RawExtension{Raw: []byte(raw)}}))
	if fail != nil {
		t.Fatalf("failure %+v", fail)
	}
	var doc map[string]any
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	sys := doc["attributes"].(map[string]any)["system"].(map[string]any)
	user := doc["attributes"].(map[string]any)["user"].(map[string]any)
	if sys["job"].(map[string]any)["name"] != "fluxjob-1234-abcd" {
		t.Errorf("job name not replaced: %v", sys["job"])
	}
	if sys["x-custom"] == nil || user["u"] != 1.0 || user["fluxjob"] == nil {
		t.Errorf("fields lost or owner missing: %s", b)
	}
	if strings.Contains(string(b), `"count":1.0`) {
		t.Errorf("integers became floats: %s", b)
	}
}

func TestBuildJobspecFailures(t *testing.T) {
	big := `{"version":1,"resources":[],"tasks":[],"attributes":{"system":{"pad":"` + strings.Repeat("x", fluxjobv1.MaxJobspecBytes) + `"}}}`
	tests := []struct {
		name   string
		spec   fluxjobv1.FluxJobSpec
		reason string
	}{
		{"too large", fluxjobv1.FluxJobSpec{Jobspec: &runtime.RawExtension{Raw: []byte(big)}}, fluxjobv1.ReasonJobspecTooLarge},
		{"system not an object", fluxjobv1.FluxJobSpec{Jobspec: &runtime.RawExtension{Raw: []byte(`{"version":1,"attributes":{"system":3}}`)}}, fluxjobv1.ReasonInvalidJobspec},
		{"not an object", fluxjobv1.FluxJobSpec{Jobspec: &runtime.RawExtension{Raw: []byte(`[1]`)}}, fluxjobv1.ReasonInvalidJobspec},
		{"valid but not runnable", fluxjobv1.FluxJobSpec{Jobspec: &runtime.RawExtension{Raw: []byte(`{"version":1,"resources":[],"tasks":[],"attributes":{"system":{"duration":0}}}`)}}, fluxjobv1.ReasonInvalidJobspec},
		{"empty command", fluxjobv1.FluxJobSpec{Command: []string{}}, fluxjobv1.ReasonInvalidJobspec},
		{"bad attributes", fluxjobv1.FluxJobSpec{Command: []string{"true"}, Attributes: &runtime.RawExtension{Raw: []byte(`"str"`)}}, fluxjobv1.ReasonInvalidJobspec},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, fail := Build(specObj(tc.spec))
			if fail == nil || fail.Reason != tc.reason {
				t.Fatalf("failure = %+v, want reason %s", fail, tc.reason)
			}
			if fail.Message == "" {
				t.Fatal("empty message")
			}
		})
	}
}

func ptrTo[T any](v T) *T { return &v }
