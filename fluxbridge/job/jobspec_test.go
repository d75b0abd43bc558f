package job

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/wire/wiretest"
)

// readWire reads a file of the flux-core 0.88.0 transcripts
// (../shared/flux-wire, found by wiretest.Dir); a missing file fails.
func readWire(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(wiretest.Dir(), name))
	if err != nil {
		t.Fatalf("reading the flux-core transcript %s (it must exist): %v", name, err)
	}
	return b
}

func decodeAny(t *testing.T, b []byte) any {
	t.Helper()
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("decoding %s: %v", b, err)
	}
	return v
}

// FromCommand("true") with the options `flux run --dry-run` had must give
// the structure of the jobspec flux-core 0.88.0 produced
// (../shared/flux-wire/jobspec-true.json).
func TestFromCommandMatchesFluxRun(t *testing.T) {
	for _, tc := range []struct {
		file string
		cmd  []string
	}{{"jobspec-true.json", []string{"true"}}, {"jobspec-sleep.json", []string{"sleep", "300"}}} {
		js, err := FromCommand(tc.cmd, CommandOptions{
			Cwd:         "/",
			Environment: map[string]string{},
			Rlimits: map[string]int64{"cpu": -1, "fsize": -1, "data": -1, "stack": 8388608, "core": 0,
				"nofile": 20000, "as": -1, "rss": -1, "nproc": 96365},
		})
		if err != nil {
			t.Fatal(err)
		}
		got, err := json.Marshal(js)
		if err != nil {
			t.Fatal(err)
		}
		want := readWire(t, tc.file)
		if g, w := decodeAny(t, got), decodeAny(t, want); !reflect.DeepEqual(g, w) {
			t.Errorf("%s:\n got %s\nwant %s", tc.file, got, want)
		}
		// And flux-core's jobspec parses and re-encodes to the same structure.
		parsed, err := Parse(want)
		if err != nil {
			t.Fatalf("Parse(%s): %v", tc.file, err)
		}
		again, _ := json.Marshal(parsed)
		if g, w := decodeAny(t, again), decodeAny(t, want); !reflect.DeepEqual(g, w) {
			t.Errorf("Parse+Marshal %s:\n got %s\nwant %s", tc.file, again, want)
		}
	}
}

// Resource shapes from JobspecV1.from_command
// (flux-core src/bindings/python/flux/job/Jobspec.py).
func TestFromCommandShapes(t *testing.T) {
	tests := []struct {
		name string
		opts CommandOptions
		res  string
		task string
	}{
		{"defaults", CommandOptions{},
			`[{"type":"slot","count":1,"with":[{"type":"core","count":1}],"label":"task"}]`, `{"per_slot":1}`},
		{"tasks and cores", CommandOptions{NumTasks: 4, CoresPerTask: 2},
			`[{"type":"slot","count":4,"with":[{"type":"core","count":2}],"label":"task"}]`, `{"per_slot":1}`},
		{"gpus", CommandOptions{NumTasks: 2, GPUsPerTask: 1},
			`[{"type":"slot","count":2,"with":[{"type":"core","count":1},{"type":"gpu","count":1}],"label":"task"}]`, `{"per_slot":1}`},
		{"even nodes", CommandOptions{NumTasks: 4, NumNodes: 2},
			`[{"type":"node","count":2,"with":[{"type":"slot","count":2,"with":[{"type":"core","count":1}],"label":"task"}]}]`, `{"per_slot":1}`},
		{"uneven nodes", CommandOptions{NumTasks: 3, NumNodes: 2},
			`[{"type":"node","count":2,"with":[{"type":"slot","count":2,"with":[{"type":"core","count":1}],"label":"task"}]}]`, `{"total":3}`},
		{"exclusive", CommandOptions{NumTasks: 2, NumNodes: 2, Exclusive: true},
			`[{"type":"node","count":2,"exclusive":true,"with":[{"type":"slot","count":1,"with":[{"type":"core","count":1}],"label":"task"}]}]`, `{"per_slot":1}`},
	}
	for _, tc := range tests {
		js, err := FromCommand([]string{"hostname"}, tc.opts)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		res, _ := json.Marshal(js.Resources)
		cnt, _ := json.Marshal(js.Tasks[0].Count)
		if string(res) != tc.res || string(cnt) != tc.task {
			t.Errorf("%s: resources %s count %s\nwant resources %s count %s", tc.name, res, cnt, tc.res, tc.task)
		}
	}
}

func TestFromCommandAttributes(t *testing.T) {
	js, err := FromCommand([]string{"sleep", "1"}, CommandOptions{
		Duration:       90 * time.Second,
		Cwd:            "/tmp",
		Environment:    map[string]string{"A": "1"},
		UserAttributes: map[string]any{"k8s": map[string]any{"name": "x"}},
		Name:           "myjob",
		Queue:          "batch",
	})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(js.Attributes)
	want := `{"system":{"duration":90,"environment":{"A":"1"},"cwd":"/tmp","job":{"name":"myjob"},"queue":"batch"},"user":{"k8s":{"name":"x"}}}`
	if string(b) != want {
		t.Errorf("attributes %s\nwant %s", b, want)
	}
	if js.JobName() != "myjob" {
		t.Errorf("JobName() = %q", js.JobName())
	}
	js.SetJobName("other")
	if js.JobName() != "other" {
		t.Errorf("after SetJobName, JobName() = %q", js.JobName())
	}
	js2, _ := FromCommand([]string{"x"}, CommandOptions{Duration: 1500 * time.Millisecond})
	if js2.Attributes.System.Duration != 1.5 {
		t.Errorf("duration %v, want 1.5 seconds", js2.Attributes.System.Duration)
	}
}

func TestFromCommandErrors(t *testing.T) {
	tests := []struct {
		cmd  []string
		opts CommandOptions
		msg  string
	}{
		{nil, CommandOptions{}, "command array cannot have length of zero"},
		{[]string{"x"}, CommandOptions{NumTasks: -1}, "task count must be a integer >= 1"},
		{[]string{"x"}, CommandOptions{CoresPerTask: -2}, "cores per task must be an integer >= 1"},
		{[]string{"x"}, CommandOptions{GPUsPerTask: -1}, "gpus per task must be an integer >= 0"},
		{[]string{"x"}, CommandOptions{NumNodes: -1}, "node count must be an integer >= 1 (if set)"},
		{[]string{"x"}, CommandOptions{NumTasks: 2, NumNodes: 3}, "node count must not be greater than task count"},
		{[]string{"x"}, CommandOptions{Exclusive: true}, "exclusive can only be set with a node count"},
		{[]string{"x"}, CommandOptions{Duration: -time.Second}, "duration must not be negative"},
	}
	for _, tc := range tests {
		_, err := FromCommand(tc.cmd, tc.opts)
		var je *JobspecError
		if !errors.Is(err, ErrInvalidJobspec) || !errors.As(err, &je) || je.Message != tc.msg {
			t.Errorf("FromCommand(%v, %+v) = %v, want %q", tc.cmd, tc.opts, err, tc.msg)
		}
	}
}

const yamlSpec = `
version: 1
resources:
  - type: node
    count: 1
    with:
      - type: slot
        count: 2
        label: default
        with:
          - type: core
            count: 1
tasks:
  - command: ["app", "--flag"]
    slot: default
    count:
      per_slot: 1
attributes:
  system:
    duration: 3600
    cwd: /home/u
    custom: {nested: [1, 2]}
    dependencies:
      - scheme: afterok
        value: "ƒ2"
  user:
    team: x
`

func TestParseYAMLAndJSONRoundTrip(t *testing.T) {
	js, err := Parse([]byte(yamlSpec))
	if err != nil {
		t.Fatal(err)
	}
	if js.Resources[0].With[0].Label != "default" || js.Tasks[0].Command[1] != "--flag" ||
		js.Attributes.System.Duration != 3600 || js.Attributes.System.Dependencies[0].Value != "ƒ2" {
		t.Fatalf("parsed %+v", js)
	}
	if got := js.Attributes.System.Extra["custom"]; !reflect.DeepEqual(got, map[string]any{"nested": []any{1.0, 2.0}}) {
		t.Fatalf("Extra[custom] = %#v", got)
	}
	j, err := js.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	fromJSON, err := Parse(j)
	if err != nil {
		t.Fatalf("Parse(JSON %s): %v", j, err)
	}
	if !reflect.DeepEqual(js, fromJSON) {
		t.Fatalf("JSON round trip:\n%+v\n%+v", js, fromJSON)
	}
	y, err := js.YAML()
	if err != nil {
		t.Fatal(err)
	}
	fromYAML, err := Parse(y)
	if err != nil {
		t.Fatalf("Parse(YAML %s): %v", y, err)
	}
	if !reflect.DeepEqual(js, fromYAML) {
		t.Fatalf("YAML round trip:\n%+v\n%+v", js, fromYAML)
	}
	if !strings.Contains(string(j), `"custom":{"nested":[1,2]}`) {
		t.Errorf("extra system key lost: %s", j)
	}
}

// Messages from flux-core's validator (src/bindings/python/flux/job/Jobspec.py);
// the first is the broker's answer in ../shared/flux-wire/submit-invalid.decoded.txt.
func TestParseInvalid(t *testing.T) {
	valid := func(edit func(m map[string]any)) string {
		var m map[string]any
		_ = json.Unmarshal(readWire(t, "jobspec-true.json"), &m)
		edit(m)
		b, _ := json.Marshal(m)
		return string(b)
	}
	res := func(m map[string]any) map[string]any { return m["resources"].([]any)[0].(map[string]any) }
	task := func(m map[string]any) map[string]any { return m["tasks"].([]any)[0].(map[string]any) }
	sys := func(m map[string]any) map[string]any {
		return m["attributes"].(map[string]any)["system"].(map[string]any)
	}
	tests := []struct {
		in, msg string
	}{
		{`{"version": 1}`, "Missing key (tasks)"},
		{valid(func(m map[string]any) { m["extra"] = 1 }), "Extraneous key (extra)"},
		{valid(func(m map[string]any) { m["version"] = 2 }), "version must be 1"},
		{valid(func(m map[string]any) { m["version"] = "1" }), "version must be an integer"},
		{valid(func(m map[string]any) { m["tasks"] = map[string]any{} }), "tasks must be a sequence"},
		{valid(func(m map[string]any) { res(m)["count"] = 1.5 }), "resource count must be an integer for type 'slot' (got 'float')"},
		{valid(func(m map[string]any) { res(m)["count"] = map[string]any{"min": 1} }), "resource count must be an integer for type 'slot' (got 'dict')"},
		{valid(func(m map[string]any) { res(m)["count"] = 0 }), "node, slot, or core count must be > 0"},
		{valid(func(m map[string]any) { delete(res(m), "label") }), "slots must have labels"},
		{valid(func(m map[string]any) { delete(res(m), "type") }), "type is a required key for resources"},
		{valid(func(m map[string]any) { res(m)["exclusive"] = "yes" }), "exclusive must be a boolean"},
		{valid(func(m map[string]any) { task(m)["command"] = []any{} }), "command array cannot have length of zero"},
		{valid(func(m map[string]any) { task(m)["command"] = "true" }), "command must be a list of strings"},
		{valid(func(m map[string]any) { delete(task(m), "slot") }), "Missing key (slot)"},
		{valid(func(m map[string]any) { task(m)["count"] = map[string]any{"per_slot": 0} }), "count per_slot must be > 0"},
		{valid(func(m map[string]any) { task(m)["count"] = map[string]any{"per_resource": 1} }), "count per_slot or total must be set"},
		{valid(func(m map[string]any) { task(m)["count"] = map[string]any{"per_slot": 1, "total": 2} }), "count must have exactly one key set"},
		{valid(func(m map[string]any) { m["attributes"].(map[string]any)["other"] = 1 }), "Extraneous key (other)"},
		{valid(func(m map[string]any) { delete(m["attributes"].(map[string]any), "system") }), "attributes.system is a required key"},
		{valid(func(m map[string]any) { delete(sys(m), "duration") }), "attributes.system.duration is a required key"},
		{valid(func(m map[string]any) { sys(m)["duration"] = "1h" }), "attributes.system.duration must be a number"},
		{valid(func(m map[string]any) { sys(m)["dependencies"] = []any{map[string]any{"scheme": "afterok"}} }), "Missing key (value)"},
		{valid(func(m map[string]any) { sys(m)["constraints"] = map[string]any{"bogus": []any{}} }), "unknown constraint operator 'bogus'"},
		{valid(func(m map[string]any) { sys(m)["constraints"] = map[string]any{"properties": []any{"a|b"}} }), "invalid character in property 'a|b'"},
		{valid(func(m map[string]any) { sys(m)["environment"] = map[string]any{"A": 1} }), "environment variable A must be a string"},
	}
	for _, tc := range tests {
		_, err := Parse([]byte(tc.in))
		var je *JobspecError
		if !errors.Is(err, ErrInvalidJobspec) || !errors.As(err, &je) || je.Message != tc.msg {
			t.Errorf("Parse(%s) = %v, want %q", tc.in, err, tc.msg)
		}
	}
	for _, in := range []string{``, `{`, `[1`, `{} {}`, "a: [b"} {
		if _, err := Parse([]byte(in)); err == nil {
			t.Errorf("Parse(%q) succeeded", in)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add(readWire(f, "jobspec-true.json"))
	f.Add(readWire(f, "jobspec-sleep.json"))
	f.Add([]byte(yamlSpec))
	f.Add([]byte(`{"version": 1}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		js, err := Parse(data)
		if err != nil {
			return
		}
		// Whatever parses must marshal, and parse again to the same value.
		b, err := js.Marshal()
		if err != nil {
			t.Fatalf("Marshal of a parsed jobspec: %v", err)
		}
		again, err := Parse(b)
		if err != nil {
			t.Fatalf("re-Parse(%s): %v", b, err)
		}
		if !reflect.DeepEqual(js, again) {
			t.Fatalf("round trip differs:\n%+v\n%+v", js, again)
		}
	})
}

// What the broker accepts at submission but the job then fails on:
// Parse accepts it, CheckRunnable refuses it.
func TestCheckRunnable(t *testing.T) {
	base := func() *Jobspec {
		js, err := Parse(readWire(t, "jobspec-true.json"))
		if err != nil {
			t.Fatal(err)
		}
		return js
	}
	if err := base().CheckRunnable(); err != nil {
		t.Fatalf("jobspec-true.json: %v", err)
	}
	tests := []struct {
		edit func(js *Jobspec)
		msg  string
	}{
		{func(js *Jobspec) { js.Tasks[0].Slot = "nope" }, `task slot "nope" names no slot label in resources`},
		{func(js *Jobspec) { js.Attributes.System.Duration = -1 }, "duration must not be negative"},
		{func(js *Jobspec) { js.Resources = []Resource{} }, "resources must contain at least one resource"},
		{func(js *Jobspec) { js.Tasks = []Task{} }, "tasks must contain at least one task"},
		{func(js *Jobspec) { js.Version = 2 }, "version must be 1"},
	}
	for _, tc := range tests {
		js := base()
		tc.edit(js)
		b, _ := json.Marshal(js)
		if tc.msg != "version must be 1" {
			if _, err := Parse(b); err != nil {
				t.Errorf("Parse(%s) = %v; the broker's validator accepts it", b, err)
			}
		}
		err := js.CheckRunnable()
		var je *JobspecError
		if !errors.As(err, &je) || je.Message != tc.msg {
			t.Errorf("CheckRunnable(%s) = %v, want %q", b, err, tc.msg)
		}
	}
}
