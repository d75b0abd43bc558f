package realflux

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
	"github.com/fluxjob/fluxjob-operator/internal/jobspec"
)

// TestArrayRetriesOnFluxCore runs arrays with per-index retries through
// the FluxJob controller on a real flux-core instance: each attempt of
// each index is a real Flux job named fluxjob-<uid>-<index>.<attempt>,
// judged from how flux-core ended it (exit codes, its timeout exception,
// the cancel exceptions of an array that fails).
//
// "retries": index 0 succeeds; 1 fails once (retried, counted); 2 exits 3
// (FailIndex: no retry although one is left); 3 always exits 7 (failed
// after backoffLimitPerIndex 1); 4 outlives its time limit once (timeout
// exception: Ignore, retried). "maxfailed": index 0 exits 1 with
// maxFailedIndexes 0: the array fails, flux-core cancels index 1 (which
// would sleep past the test's deadline) and 2-3 are never submitted.
// Parallelism 2 keeps index 0 from waiting for a core behind sleepers of
// its own array, whatever order the scheduler starts them in.
func TestArrayRetriesOnFluxCore(t *testing.T) {
	uri := realURI(t)
	pc := startPluginCluster(t)
	startManager(t, pc, uri)
	dir := t.TempDir() // a file per index tells an attempt it is not the first
	script := fmt.Sprintf(`m=%s/m$FLUX_JOB_CC; first=1; test -e $m && first=0; touch $m
case $FLUX_JOB_CC in
0) exit 0;;
1) test $first = 1 && exit 1; exit 0;;
2) exit 3;;
3) exit 7;;
4) test $first = 1 && sleep 60; exit 0;;
esac`, dir)
	i32 := func(n int32) *int32 { return &n }
	retries := fluxjobv1.FluxJobSpec{Command: []string{"sh", "-c", script}, Duration: &metav1.Duration{Duration: 2 * time.Second},
		Array: &fluxjobv1.ArraySpec{Indexes: "0-4", BackoffLimitPerIndex: i32(1)},
		FailurePolicy: &fluxjobv1.FailurePolicy{Rules: []fluxjobv1.FailurePolicyRule{
			{Action: fluxjobv1.ActionFailIndex, OnExitCodes: &fluxjobv1.FailurePolicyOnExitCodes{Operator: fluxjobv1.ExitCodeIn, Values: []int32{3}}},
			{Action: fluxjobv1.ActionIgnore, OnExceptions: []fluxjobv1.FailurePolicyOnException{{Type: "timeout"}}},
		}}}
	maxFailed := fluxjobv1.FluxJobSpec{Command: []string{"sh", "-c", `test $FLUX_JOB_CC = 0 && exit 1; sleep 600`},
		Array: &fluxjobv1.ArraySpec{Indexes: "0-3", Parallelism: i32(2), BackoffLimitPerIndex: i32(0), MaxFailedIndexes: i32(0)}}
	cases := []struct {
		name   string
		spec   fluxjobv1.FluxJobSpec
		reason string
		want   fluxjobv1.ArrayStatus
		// attempts is how many Flux jobs each index ran.
		attempts []int
	}{
		{name: "retries", spec: retries, reason: fluxjobv1.ReasonIndexesFailed,
			want:     fluxjobv1.ArrayStatus{Indexes: 5, Succeeded: 3, Failed: 2, SucceededIndexes: "0-1,4", FailedIndexes: "2-3", Retries: 3},
			attempts: []int{1, 2, 1, 2, 2}},
		{name: "maxfailed", spec: maxFailed, reason: fluxjobv1.ReasonMaxFailedIndexesExceeded,
			want:     fluxjobv1.ArrayStatus{Indexes: 4, Failed: 1, Cancelled: 3, FailedIndexes: "0"},
			attempts: []int{1, 1, 0, 0}},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	for _, tc := range cases {
		obj := &fluxjobv1.FluxJob{ObjectMeta: metav1.ObjectMeta{Namespace: pc.ns, Name: tc.name}, Spec: tc.spec}
		obj.Spec.WorkingDir = dir
		if err := pc.c.Create(ctx, obj); err != nil {
			t.Fatal(err)
		}
	}
	c := dial(t, uri)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			obj := pc.waitFinished(ctx, t, tc.name)
			if obj.Status.Phase != fluxjobv1.PhaseFailed {
				t.Fatalf("phase %s (%s), want Failed", obj.Status.Phase, obj.Status.Message)
			}
			for _, cd := range obj.Status.Conditions {
				if cd.Type == fluxjobv1.ConditionFailed && (cd.Status != metav1.ConditionTrue || cd.Reason != tc.reason) {
					t.Errorf("Failed condition %s/%s, want True/%s", cd.Status, cd.Reason, tc.reason)
				}
			}
			st := *obj.Status.Array
			// Every index was submitted at the default urgency.
			if st.Urgency == nil || *st.Urgency != 16 {
				t.Errorf("status.array.urgency %v, want 16", st.Urgency)
			}
			st.Urgency = nil
			if st != tc.want {
				t.Errorf("status.array\n got %+v\nwant %+v", st, tc.want)
			}
			// Exactly one Flux job per attempt, none beyond: every name
			// an index may have, asked of job-list at once.
			var names, want []string
			for i, n := range tc.attempts {
				for k := 0; k <= 1+fluxjobv1.MaxIgnoredPerIndex; k++ {
					names = append(names, jobspec.IndexName(&obj, i, k))
					if k < n {
						want = append(want, jobspec.IndexName(&obj, i, k))
					}
				}
			}
			jobs, err := job.List(ctx, c, job.ListOptions{Attrs: []string{"name", "state"}, Constraint: job.Name(names...), MaxEntries: 2 * len(names)})
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, j := range jobs {
				got = append(got, j.Name)
				if j.State&job.StateInactive == 0 {
					t.Errorf("%s is still active", j.Name)
				}
			}
			sort.Strings(got)
			sort.Strings(want)
			if strings.Join(got, " ") != strings.Join(want, " ") {
				t.Errorf("Flux jobs\n got %v\nwant %v", got, want)
			}
		})
	}
}
