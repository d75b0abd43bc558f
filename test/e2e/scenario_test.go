package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
	"github.com/fluxjob/fluxjob-operator/test/e2e/cluster"
)

// target is where a scenario runs: the local cluster with the test broker,
// or a kind cluster with the Flux sidecar. Both are driven through kubectl
// only, as a user would; the Flux side is checked through the target.
type target interface {
	// kubectl runs kubectl against the cluster.
	kubectl(ctx context.Context, args ...string) ([]byte, error)
	// kubectlInput runs kubectl with stdin.
	kubectlInput(ctx context.Context, stdin io.Reader, args ...string) ([]byte, error)
	// fluxEvents returns the names and contexts of the events in the
	// eventlog of Flux job id, as the Flux instance has them.
	fluxEvents(ctx context.Context, id job.ID) ([]job.Event, error)
	// fluxJobCount returns how many jobs the Flux instance holds.
	fluxJobCount(ctx context.Context) (int, error)
	// hasQueue reports whether the Flux instance has the named queue.
	hasQueue(name string) bool
}

// want is what a sample must end as.
type want struct {
	name      string
	condition string
	phase     fluxjobv1.FluxJobPhase
	exit      int32
	// queue, if set, is the sample's spec.queue: on a target without it
	// the sample ends Failed with reason QueueRejected and no Flux job.
	queue string
}

// samples is what config/samples must do when applied as they are.
var samples = []want{
	{"hello", fluxjobv1.ConditionSucceeded, fluxjobv1.PhaseSucceeded, 0, ""},
	{"fail", fluxjobv1.ConditionFailed, fluxjobv1.PhaseFailed, 1, ""},
	{"multitask", fluxjobv1.ConditionSucceeded, fluxjobv1.PhaseSucceeded, 0, ""},
	{"jobspec", fluxjobv1.ConditionSucceeded, fluxjobv1.PhaseSucceeded, 0, ""},
	{"env", fluxjobv1.ConditionSucceeded, fluxjobv1.PhaseSucceeded, 0, ""},
	{"pipeline-prepare", fluxjobv1.ConditionSucceeded, fluxjobv1.PhaseSucceeded, 0, ""},
	{"pipeline-report", fluxjobv1.ConditionSucceeded, fluxjobv1.PhaseSucceeded, 0, ""},
	{"queued", fluxjobv1.ConditionSucceeded, fluxjobv1.PhaseSucceeded, 0, "batch"},
}

// longJob is a FluxJob that runs until it is deleted.
const longJob = `apiVersion: fluxjob.io/v1alpha1
kind: FluxJob
metadata:
  name: long
spec:
  command: ["sleep", "3600"]
`

// runScenario applies the samples in namespace ns, waits for each to end
// as it must, checks its status against Flux, then deletes a running job
// and checks that Flux cancelled it.
func runScenario(ctx context.Context, t *testing.T, tg target, ns string) {
	t.Helper()
	root, err := cluster.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	// Applied, not created: on a reused kind cluster it may exist already.
	nsYAML := "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: " + ns + "\n"
	if _, err := tg.kubectlInput(ctx, strings.NewReader(nsYAML), "apply", "-f", "-"); err != nil {
		t.Fatal(err)
	}
	mustKubectl(ctx, t, tg, "apply", "-n", ns, "-k", filepath.Join(root, "config", "samples"))

	// One condition for "finished, either way": every sample, the failing
	// one included.
	mustKubectl(ctx, t, tg, "wait", "-n", ns, "fluxjob", "--all", "--for=condition=Finished", "--timeout=180s")
	fluxJobs := 0
	for _, w := range samples {
		if w.queue != "" && !tg.hasQueue(w.queue) {
			// Flux refuses the queue: Failed with its message, no job.
			mustKubectl(ctx, t, tg, "wait", "-n", ns, "fluxjob/"+w.name, "--for=condition=Failed", "--timeout=120s")
			fj := getFluxJob(ctx, t, tg, ns, w.name)
			if c := findCondition(fj, fluxjobv1.ConditionFailed); c == nil || c.Reason != fluxjobv1.ReasonQueueRejected || fj.Status.JobID != 0 {
				t.Errorf("%s: Failed condition %+v, jobID %d: want QueueRejected and no Flux job", w.name, c, fj.Status.JobID)
			}
			continue
		}
		fluxJobs++
		mustKubectl(ctx, t, tg, "wait", "-n", ns, "fluxjob/"+w.name, "--for=condition="+w.condition, "--timeout=120s")
		fj := getFluxJob(ctx, t, tg, ns, w.name)
		st := fj.Status
		if st.Phase != w.phase {
			t.Errorf("%s: phase %q, want %q (message %q)", w.name, st.Phase, w.phase, st.Message)
		}
		if st.ExitStatus == nil || *st.ExitStatus != w.exit {
			t.Errorf("%s: exitStatus %v, want %d", w.name, st.ExitStatus, w.exit)
		}
		if st.JobID <= 0 || st.JobIDF58 != job.ID(st.JobID).String() {
			t.Errorf("%s: jobID %d / jobIDF58 %q do not agree", w.name, st.JobID, st.JobIDF58)
		}
		if st.SubmitTime == nil || st.StartTime == nil || st.CompletionTime == nil {
			t.Errorf("%s: submit/start/completion times missing: %+v", w.name, st)
		}
		if st.ObservedGeneration != fj.Generation {
			t.Errorf("%s: observedGeneration %d, generation %d", w.name, st.ObservedGeneration, fj.Generation)
		}
		// The status's events must be the Flux job's own events.
		evs, err := tg.fluxEvents(ctx, job.ID(st.JobID))
		if err != nil {
			t.Errorf("%s: reading the Flux eventlog of %s: %v", w.name, job.ID(st.JobID), err)
			continue
		}
		if !hasEvent(evs, "finish") || !hasEvent(evs, "clean") {
			t.Errorf("%s: Flux eventlog of %s lacks finish/clean: %v", w.name, job.ID(st.JobID), eventNames(evs))
		}
		for _, e := range st.Events {
			if !hasEvent(evs, e.Name) {
				t.Errorf("%s: status event %q is not in the Flux eventlog %v", w.name, e.Name, eventNames(evs))
			}
		}
	}
	if n, err := tg.fluxJobCount(ctx); err != nil {
		t.Errorf("counting Flux jobs: %v", err)
	} else if n != fluxJobs {
		t.Errorf("Flux holds %d jobs after %d samples: want exactly one Flux job per FluxJob", n, fluxJobs)
	}
	checkPipeline(ctx, t, tg, ns)
	batchScenario(ctx, t, tg, ns)

	// A running job deleted by the user is cancelled in Flux, and the
	// finalizer lets the object go.
	if _, err := tg.kubectlInput(ctx, strings.NewReader(longJob), "apply", "-n", ns, "-f", "-"); err != nil {
		t.Fatal(err)
	}
	mustKubectl(ctx, t, tg, "wait", "-n", ns, "fluxjob/long", "--for=condition=Running", "--timeout=120s")
	long := getFluxJob(ctx, t, tg, ns, "long")
	mustKubectl(ctx, t, tg, "delete", "-n", ns, "fluxjob/long", "--timeout=120s")
	if out, err := tg.kubectl(ctx, "get", "-n", ns, "fluxjob/long", "--ignore-not-found", "-o", "name"); err != nil || len(strings.TrimSpace(string(out))) != 0 {
		t.Errorf("fluxjob/long still exists after delete: %q %v", out, err)
	}
	evs, err := tg.fluxEvents(ctx, job.ID(long.Status.JobID))
	if err != nil {
		t.Fatalf("reading the eventlog of the deleted job: %v", err)
	}
	if !hasException(evs, "cancel") {
		t.Errorf("deleting fluxjob/long did not cancel Flux job %s: events %v", job.ID(long.Status.JobID), eventNames(evs))
	}

	out, _ := tg.kubectl(ctx, "get", "-n", ns, "fluxjobs", "-o", "wide")
	t.Logf("kubectl get fluxjobs:\n%s", out)
}

func mustKubectl(ctx context.Context, t *testing.T, tg target, args ...string) []byte {
	t.Helper()
	out, err := tg.kubectl(ctx, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func getFluxJob(ctx context.Context, t *testing.T, tg target, ns, name string) *fluxjobv1.FluxJob {
	t.Helper()
	out := mustKubectl(ctx, t, tg, "get", "-n", ns, "fluxjob/"+name, "-o", "json")
	var fj fluxjobv1.FluxJob
	if err := json.Unmarshal(out, &fj); err != nil {
		t.Fatalf("decoding fluxjob/%s: %v", name, err)
	}
	return &fj
}

func hasEvent(evs []job.Event, name string) bool {
	for _, e := range evs {
		if e.Name == name {
			return true
		}
	}
	return false
}

func hasException(evs []job.Event, typ string) bool {
	for _, e := range evs {
		if e.Name == "exception" && fmt.Sprint(e.Context["type"]) == typ {
			return true
		}
	}
	return false
}

func eventNames(evs []job.Event) []string {
	names := make([]string, len(evs))
	for i, e := range evs {
		names[i] = e.Name
	}
	return names
}

// requireRealParts skips (or, in CI, fails) a test whose real parts are
// missing, with the reason.
func requireRealParts(t *testing.T, err error) {
	t.Helper()
	if err == nil {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("CI=true and a real part is missing: %v", err)
	}
	t.Skipf("skipped: %v", err)
}

// deadline bounds a whole scenario.
func deadline(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
