package jobspec

import (
	"encoding/json"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
)

func TestIndexName(t *testing.T) {
	obj := &fluxjobv1.FluxJob{ObjectMeta: metav1.ObjectMeta{UID: "u1"}}
	for _, tc := range []struct {
		index, attempt int
		want           string
	}{
		{-1, 0, "fluxjob-u1"}, {7, 0, "fluxjob-u1-7"}, {7, 2, "fluxjob-u1-7.2"}, {-1, 1, "fluxjob-u1.1"},
	} {
		if got := IndexName(obj, tc.index, tc.attempt); got != tc.want {
			t.Errorf("IndexName(%d, %d) = %q, want %q", tc.index, tc.attempt, got, tc.want)
		}
	}
}

// rendered decodes the jobspec of index/attempt.
func rendered(t *testing.T, tpl *Template, index, attempt int) map[string]any {
	t.Helper()
	var doc map[string]any
	if err := json.Unmarshal(tpl.Render(index, attempt), &doc); err != nil {
		t.Fatalf("index %d: %v", index, err)
	}
	return doc
}

func TestTemplateCommand(t *testing.T) {
	obj := &fluxjobv1.FluxJob{ObjectMeta: metav1.ObjectMeta{UID: "u1", Name: "a", Namespace: "ns"}, Spec: fluxjobv1.FluxJobSpec{
		Command:    []string{"echo", "{cc}", "x{cc:03d}", "{{cc}}", "{cc:4}", "{other}", "{cc"},
		WorkingDir: "/w/{cc}",
		Env:        []fluxjobv1.EnvVar{{Name: "IN", Value: "in.{cc}"}},
	}}
	tpl, jerr := BuildTemplate(obj)
	if jerr != nil {
		t.Fatal(jerr)
	}
	doc := rendered(t, tpl, 7, 2)
	tasks := doc["tasks"].([]any)[0].(map[string]any)
	cmd := tasks["command"].([]any)
	want := []string{"echo", "7", "x007", "{{cc}}", "   7", "{other}", "{cc"}
	for i, w := range want {
		if cmd[i] != w {
			t.Errorf("command[%d] = %q, want %q", i, cmd[i], w)
		}
	}
	sys := doc["attributes"].(map[string]any)["system"].(map[string]any)
	if sys["cwd"] != "/w/7" {
		t.Errorf("cwd = %v", sys["cwd"])
	}
	env := sys["environment"].(map[string]any)
	if env["FLUX_JOB_CC"] != "7" || env["IN"] != "in.7" {
		t.Errorf("environment = %v", env)
	}
	if n := sys["job"].(map[string]any)["name"]; n != "fluxjob-u1-7.2" {
		t.Errorf("name = %v", n)
	}
	if n := rendered(t, tpl, 0, 0)["attributes"].(map[string]any)["system"].(map[string]any)["job"].(map[string]any)["name"]; n != "fluxjob-u1-0" {
		t.Errorf("name of index 0 = %v", n)
	}
}

func TestTemplateJobspec(t *testing.T) {
	raw := `{"version":1,"resources":[{"type":"slot","count":1,"label":"task","with":[{"type":"core","count":1}]}],
	"tasks":[{"command":["sh","-c","echo {cc}"],"slot":"task","count":{"per_slot":1}}],
	"attributes":{"system":{"duration":0}}}`
	obj := &fluxjobv1.FluxJob{ObjectMeta: metav1.ObjectMeta{UID: "u2"}, Spec: fluxjobv1.FluxJobSpec{Jobspec: &runtime.RawExtension{Raw: []byte(raw)}}}
	tpl, jerr := BuildTemplate(obj)
	if jerr != nil {
		t.Fatal(jerr)
	}
	doc := rendered(t, tpl, 42, 0)
	if c := doc["tasks"].([]any)[0].(map[string]any)["command"].([]any)[2]; c != "echo 42" {
		t.Errorf("command = %v", c)
	}
	sys := doc["attributes"].(map[string]any)["system"].(map[string]any)
	if sys["environment"].(map[string]any)["FLUX_JOB_CC"] != "42" || sys["job"].(map[string]any)["name"] != "fluxjob-u2-42" {
		t.Errorf("system = %v", sys)
	}
}
