package realflux

import (
	"context"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
	"github.com/fluxjob/fluxjob-operator/controllers"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
	"github.com/fluxjob/fluxjob-operator/internal/broker"
	"github.com/fluxjob/fluxjob-operator/internal/jobspec"
)

// TestRetriesOnFluxCore runs FluxJobs with retries and failure policies
// through the FluxJob controller (in process, on an envtest API server)
// on a real flux-core instance: every attempt is a real Flux job, each
// ends as flux-core ends it (exit codes, the timeout and exec exceptions),
// the policy acts on that, and each attempt's job is submitted once under
// its attempt's name.
func TestRetriesOnFluxCore(t *testing.T) {
	uri := realURI(t)
	pc := startPluginCluster(t)
	startManager(t, pc, uri)
	dir := t.TempDir() // the jobs run as this user, here: a file tells an attempt it is not the first
	first := func(name, then string) []string {
		m := filepath.Join(dir, name)
		return []string{"sh", "-c", fmt.Sprintf("test -e %s && exit 0; touch %s; %s", m, m, then)}
	}
	limit := func(n int32) *int32 { return &n }
	rules := func(r ...fluxjobv1.FailurePolicyRule) *fluxjobv1.FailurePolicy {
		return &fluxjobv1.FailurePolicy{Rules: r}
	}
	onExc := func(a fluxjobv1.FailurePolicyAction, typ string) fluxjobv1.FailurePolicyRule {
		return fluxjobv1.FailurePolicyRule{Action: a, OnExceptions: []fluxjobv1.FailurePolicyOnException{{Type: typ}}}
	}
	cases := []struct {
		name    string
		spec    fluxjobv1.FluxJobSpec
		phase   fluxjobv1.FluxJobPhase
		reason  string
		history []string
	}{
		{name: "always-exit-3", spec: fluxjobv1.FluxJobSpec{Command: []string{"sh", "-c", "exit 3"}, BackoffLimit: limit(2)},
			phase: fluxjobv1.PhaseFailed, reason: fluxjobv1.ReasonBackoffLimitExceeded,
			history: []string{"FAILED/NonZeroExit/Retry exit=3", "FAILED/NonZeroExit/Retry exit=3", "FAILED/NonZeroExit/Retry exit=3"}},
		{name: "killed-once", spec: fluxjobv1.FluxJobSpec{Command: first("killed", "kill -9 $$"), BackoffLimit: limit(1)},
			phase: fluxjobv1.PhaseSucceeded, history: []string{"FAILED/NonZeroExit/Retry exit=137"}},
		{name: "timeout-ignored", spec: fluxjobv1.FluxJobSpec{Command: first("timeout", "sleep 60"), Duration: &metav1.Duration{Duration: time.Second},
			FailurePolicy: rules(onExc(fluxjobv1.ActionIgnore, "timeout"))},
			phase: fluxjobv1.PhaseSucceeded, history: []string{"TIMEOUT/Exception/Ignore/rule0 exit=142 exc=timeout/0"}},
		{name: "exec-failjob", spec: fluxjobv1.FluxJobSpec{Command: []string{"/nonexistent/binary"}, BackoffLimit: limit(3),
			FailurePolicy: rules(onExc(fluxjobv1.ActionFailJob, "exec"))},
			phase: fluxjobv1.PhaseFailed, reason: fluxjobv1.ReasonFailurePolicy, history: []string{"FAILED/Exception/FailJob/rule0 exit=127 exc=exec/0"}},
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
			if obj.Status.Phase != tc.phase {
				t.Fatalf("phase %s (%s), want %s", obj.Status.Phase, obj.Status.Message, tc.phase)
			}
			for _, cd := range obj.Status.Conditions {
				if cd.Type == fluxjobv1.ConditionFailed && tc.reason != "" && (cd.Status != metav1.ConditionTrue || cd.Reason != tc.reason) {
					t.Errorf("Failed condition %s/%s, want True/%s", cd.Status, cd.Reason, tc.reason)
				}
			}
			var got []string
			for _, a := range obj.Status.Retry.History {
				s := fmt.Sprintf("%s/%s/%s", a.Result, a.Reason, a.Action)
				if a.Rule != nil {
					s += fmt.Sprintf("/rule%d", *a.Rule)
				}
				if a.ExitCode != nil {
					s += fmt.Sprintf(" exit=%d", *a.ExitCode)
				}
				if a.Exception != nil {
					s += fmt.Sprintf(" exc=%s/%d", a.Exception.Type, a.Exception.Severity)
				}
				got = append(got, s)
			}
			if strings.Join(got, "; ") != strings.Join(tc.history, "; ") {
				t.Errorf("history\n got %q\nwant %q", got, tc.history)
			}
			// One Flux job per attempt, under the attempt's name, and
			// the history's job IDs are those jobs.
			attempts := int(obj.Status.Retry.Attempt) + 1
			var want, ids []string
			for k := range attempts {
				name := jobspec.IndexName(&obj, -1, k)
				found, err := broker.Lookup(ctx, c, name, 0, 10*time.Second)
				if err != nil || len(found) != 1 {
					t.Fatalf("Flux jobs named %s: %v %v, want one", name, found, err)
				}
				ids = append(ids, found[0].F58())
				want = append(want, name)
			}
			var hist []string
			for _, a := range obj.Status.Retry.History {
				hist = append(hist, a.JobID)
			}
			if tc.phase == fluxjobv1.PhaseSucceeded {
				hist = append(hist, obj.Status.JobIDF58)
			}
			sort.Strings(ids)
			sort.Strings(hist)
			if strings.Join(ids, ",") != strings.Join(hist, ",") {
				t.Errorf("jobs %v (%v), history and status name %v", ids, want, hist)
			}
			if tc.phase == fluxjobv1.PhaseSucceeded {
				if id, err := job.ParseID(obj.Status.JobIDF58); err != nil || id != job.ID(obj.Status.JobID) {
					t.Errorf("status job ID %d / %s", obj.Status.JobID, obj.Status.JobIDF58)
				}
			}
		})
	}
}

// startManager runs the FluxJob controller on pc's API server with the
// Flux instance at uri as its implicit instance "default".
func startManager(t *testing.T, pc *pluginCluster, uri string) {
	t.Helper()
	mgr, err := ctrl.NewManager(pc.cfg, ctrl.Options{
		Scheme:                 pc.c.Scheme(),
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Cache:                  cache.Options{DefaultNamespaces: map[string]cache.Config{pc.ns: {}}},
		Controller:             config.Controller{SkipNameValidation: func() *bool { b := true; return &b }()},
	})
	if err != nil {
		t.Fatal(err)
	}
	bo := wait.Backoff{Duration: 50 * time.Millisecond, Factor: 2, Steps: 1 << 20, Cap: time.Second}
	conn := broker.NewConnector(broker.ConnectorOptions{URI: uri, Workers: 2, Backoff: bo,
		CheckInterval: 50 * time.Millisecond, ShutdownTimeout: 500 * time.Millisecond})
	if err := mgr.Add(conn); err != nil {
		t.Fatal(err)
	}
	r := &controllers.FluxJobReconciler{Client: mgr.GetClient(), Scheme: mgr.GetScheme(), Flux: conn}
	if err := r.SetupWithManager(mgr); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
}
