package realflux

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"sort"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
	"github.com/fluxjob/fluxjob-operator/internal/jobspec"
)

// TestArrayTemplateMatchesSubmitCC: an array index's jobspec
// (jobspec.Template) has what flux-core 0.88's `flux submit --cc=I`
// writes (its --dry-run output): {cc} and {cc:FORMAT} formatted in the
// command, the environment and the working directory, {{cc}} kept, and
// FLUX_JOB_CC=I in the environment.
func TestArrayTemplateMatchesSubmitCC(t *testing.T) {
	needFlux(t)
	cmd := []string{"sh", "-c", "echo {cc} x{cc:03d} {{cc}} [{cc:4}]"}
	obj := &fluxjobv1.FluxJob{ObjectMeta: metav1.ObjectMeta{UID: "u", Name: "a", Namespace: "n"}, Spec: fluxjobv1.FluxJobSpec{
		Command: cmd, WorkingDir: "/w/{cc}", Env: []fluxjobv1.EnvVar{{Name: "IN", Value: "in.{cc}"}},
		Array: &fluxjobv1.ArraySpec{Indexes: "0-20"}}}
	tpl, jerr := jobspec.BuildTemplate(obj)
	if jerr != nil {
		t.Fatal(jerr)
	}
	for _, i := range []int{0, 7, 20} {
		args := append([]string{"submit", "--dry-run", fmt.Sprintf("--cc=%d", i), "--env=-*", "--env=IN=in.{cc}", "--cwd=/w/{cc}"}, cmd...)
		out, err := exec.CommandContext(ctxT(t), "flux", args...).Output()
		if err != nil {
			t.Fatalf("flux %v: %v", args, err)
		}
		want, got := arrayFields(t, out), arrayFields(t, tpl.Render(i, 0))
		if want != got {
			t.Errorf("index %d:\n  flux submit --cc: %s\n  Template:         %s", i, want, got)
		}
	}
}

// arrayFields is what {cc} and --cc touch in a jobspec: the command, the
// working directory and the environment's IN and FLUX_JOB_CC.
func arrayFields(t *testing.T, b []byte) string {
	t.Helper()
	var js struct {
		Tasks []struct {
			Command []string `json:"command"`
		} `json:"tasks"`
		Attributes struct {
			System struct {
				Cwd         string            `json:"cwd"`
				Environment map[string]string `json:"environment"`
			} `json:"system"`
		} `json:"attributes"`
	}
	if err := json.Unmarshal(b, &js); err != nil {
		t.Fatalf("%v: %s", err, b)
	}
	env := js.Attributes.System.Environment
	return fmt.Sprintf("command=%q cwd=%q IN=%q FLUX_JOB_CC=%q", js.Tasks[0].Command, js.Attributes.System.Cwd, env["IN"], env["FLUX_JOB_CC"])
}

// TestListNames: job-list's name constraint with a list of names (the
// array's lookup by name, 256 names a request) finds exactly the jobs
// named, on flux-core as on the test broker.
func TestListNames(t *testing.T) {
	obs := map[string][]string{}
	for _, tg := range targets(t) {
		c := dial(t, tg.uri)
		ctx := ctxT(t)
		var names []string
		for i := range 300 {
			name := fmt.Sprintf("fluxjob-listnames-%d", i)
			names = append(names, name)
			if i%3 == 0 {
				continue // not submitted: must not be found
			}
			js := fromCommand(t, "true")
			js.SetJobName(name)
			if _, err := job.SubmitJobspec(ctx, c, js, job.SubmitOptions{Urgency: job.Urgency(0)}); err != nil {
				t.Fatal(err)
			}
		}
		jobs, err := job.List(ctx, c, job.ListOptions{Attrs: []string{"name"}, Constraint: job.Name(names[:256]...), MaxEntries: 512})
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, j := range jobs {
			got = append(got, j.Name)
			if err := job.Cancel(ctx, c, j.ID, "done"); err != nil {
				t.Fatal(err)
			}
		}
		sort.Strings(got)
		obs[tg.name] = []string{fmt.Sprintf("%d found: first %s, last %s", len(got), got[0], got[len(got)-1])}
	}
	compare(t, "job-list name list", obs)
	if want := "170 found: first fluxjob-listnames-1, last fluxjob-listnames-98"; obs["real"][0] != want {
		t.Errorf("flux-core: %s, want %s", obs["real"][0], want)
	}
}
