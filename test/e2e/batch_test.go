package e2e

import (
	"context"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
)

// The batch options, driven through kubectl as a user would.

func findCondition(fj *fluxjobv1.FluxJob, typ string) *metav1.Condition {
	return meta.FindStatusCondition(fj.Status.Conditions, typ)
}

// checkPipeline checks the two-step sample pipeline against Flux: the
// second step's Flux job carries the afterok dependency on the first's and
// started only after the first finished.
func checkPipeline(ctx context.Context, t *testing.T, tg target, ns string) {
	t.Helper()
	first := getFluxJob(ctx, t, tg, ns, "pipeline-prepare")
	second := getFluxJob(ctx, t, tg, ns, "pipeline-report")
	if c := findCondition(second, fluxjobv1.ConditionDependenciesReady); c == nil || c.Status != metav1.ConditionTrue {
		t.Errorf("pipeline-report: DependenciesReady %+v", c)
	}
	evs1, err1 := tg.fluxEvents(ctx, job.ID(first.Status.JobID))
	evs2, err2 := tg.fluxEvents(ctx, job.ID(second.Status.JobID))
	if err1 != nil || err2 != nil {
		t.Errorf("reading the pipeline's eventlogs: %v %v", err1, err2)
		return
	}
	var finished, started float64
	var dep bool
	for _, e := range evs1 {
		if e.Name == "finish" {
			finished = e.Timestamp
		}
	}
	for _, e := range evs2 {
		switch {
		case e.Name == "dependency-add" && e.Context["description"] == "after-success="+first.Status.JobIDF58:
			dep = true
		case e.Name == "start":
			started = e.Timestamp
		}
	}
	if !dep || started < finished {
		t.Errorf("pipeline-report: dependency on %s %v, started %f, pipeline-prepare finished %f (events %v)",
			first.Status.JobIDF58, dep, started, finished, eventNames(evs2))
	}
}

// batchScenario: suspend before submission and resume; deletion after
// ttlSecondsAfterFinished; `kubectl wait` for success, failure and either.
func batchScenario(ctx context.Context, t *testing.T, tg target, ns string) {
	t.Helper()
	const manifests = `apiVersion: fluxjob.io/v1alpha1
kind: FluxJob
metadata:
  name: suspended
spec:
  command: ["true"]
  suspend: true
---
apiVersion: fluxjob.io/v1alpha1
kind: FluxJob
metadata:
  name: short-lived
spec:
  command: ["true"]
  ttlSecondsAfterFinished: 0
---
apiVersion: fluxjob.io/v1alpha1
kind: FluxJob
metadata:
  name: fails-too
spec:
  command: ["false"]
`
	if out, err := tg.kubectlInput(ctx, strings.NewReader(manifests), "apply", "-n", ns, "-f", "-"); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	mustKubectl(ctx, t, tg, "wait", "-n", ns, "fluxjob/suspended", "--for=jsonpath={.status.phase}=Suspended", "--timeout=120s")
	if fj := getFluxJob(ctx, t, tg, ns, "suspended"); fj.Status.JobID != 0 || fj.Status.SubmitAttemptTime != nil {
		t.Errorf("suspended: submitted while suspended (job %d)", fj.Status.JobID)
	}
	mustKubectl(ctx, t, tg, "patch", "-n", ns, "fluxjob/suspended", "--type=merge", "-p", `{"spec":{"suspend":false}}`)
	// Success, failure, either: one kubectl wait each.
	mustKubectl(ctx, t, tg, "wait", "-n", ns, "fluxjob/suspended", "--for=condition=Succeeded", "--timeout=120s")
	mustKubectl(ctx, t, tg, "wait", "-n", ns, "fluxjob/fails-too", "--for=condition=Failed", "--timeout=120s")
	mustKubectl(ctx, t, tg, "wait", "-n", ns, "fluxjob/suspended", "fluxjob/fails-too", "--for=condition=Finished", "--timeout=120s")
	// Deleted by the controller once finished (TTL 0).
	mustKubectl(ctx, t, tg, "wait", "-n", ns, "fluxjob/short-lived", "--for=delete", "--timeout=120s")
}
