package controllers

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/testbroker"
	"github.com/fluxjob/fluxjob-operator/internal/jobspec"
)

// pendingIs waits for status.pending.reason to be reason (with a message
// containing msg).
func (h *harness) pendingIs(name, reason, msg string) *fluxjobv1.FluxJob {
	h.t.Helper()
	return h.waitFor(name, 30*time.Second, "pending "+reason, func(o *fluxjobv1.FluxJob) bool {
		return o.Status.Pending != nil && o.Status.Pending.Reason == reason && strings.Contains(o.Status.Pending.Message, msg)
	})
}

// queueStart starts or stops a queue of the harness's broker, as
// `flux queue start|stop -m reason QUEUE` does.
func (h *harness) queueStart(queue string, start bool, reason string) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := flux.Dial(ctx, h.broker.URI())
	if err != nil {
		h.t.Fatal(err)
	}
	defer c.Close()
	req := map[string]any{"name": queue, "start": start, "all": false}
	if reason != "" {
		req["reason"] = reason
	}
	if err := c.RPC(ctx, "job-manager.queue-start", req, nil); err != nil {
		h.t.Fatal(err)
	}
}

// TestEnvtestPendingReasons: a FluxJob that waits says why in
// status.pending, for each way to wait, from what the (test) broker sends
// as flux-core 0.88 does (test/realflux TestPendingReasons compares the
// two), and the reason goes away once the job starts.
func TestEnvtestPendingReasons(t *testing.T) {
	h := newHarness(t, testbroker.Options{TimeScale: 0.01, Cores: 1, Queues: []string{"batch", "debug"}, DefaultQueue: "batch"}, Options{})
	h.start()

	t.Run("before submission", func(t *testing.T) {
		h.create("suspended", fluxjobv1.FluxJobSpec{Command: []string{"true"}, Suspend: true})
		o := h.pendingIs("suspended", fluxjobv1.PendingSuspended, "spec.suspend")
		if o.Status.Pending.Since == nil {
			t.Error("no since")
		}
		h.create("after-missing", dependsOn("missing", "", "true"))
		h.pendingIs("after-missing", fluxjobv1.PendingWaitingForDependency, `"missing"`)
	})

	t.Run("held", func(t *testing.T) {
		h.create("held", fluxjobv1.FluxJobSpec{Command: []string{"true"}, Urgency: ptrTo(int32(0))})
		o := h.pendingIs("held", fluxjobv1.PendingHeld, "urgency 0")
		if o.Status.Phase != fluxjobv1.PhaseSubmitted {
			t.Errorf("phase %s, want Submitted", o.Status.Phase)
		}
		h.patchSpec("held", func(s *fluxjobv1.FluxJobSpec) { s.Urgency = ptrTo(int32(16)) })
		o = h.waitPhase("held", fluxjobv1.PhaseSucceeded, 30*time.Second)
		if o.Status.Pending != nil {
			t.Errorf("succeeded with pending %+v", o.Status.Pending)
		}
	})

	t.Run("begin time", func(t *testing.T) {
		at := metav1.NewTime(time.Now().Add(time.Hour).Truncate(time.Second))
		h.create("later", fluxjobv1.FluxJobSpec{Command: []string{"true"}, BeginTime: &at})
		h.pendingIs("later", fluxjobv1.PendingBeginTime, at.UTC().Format(time.RFC3339))
	})

	// One core: "busy" holds it while the others wait.
	h.create("busy", cmdSpec("sleep", "3000"))
	h.waitPhase("busy", fluxjobv1.PhaseRunning, 30*time.Second)

	t.Run("dependency", func(t *testing.T) {
		h.create("after-busy", dependsOn("busy", fluxjobv1.DependAfterAny, "true"))
		busy, _ := h.get("busy")
		o := h.pendingIs("after-busy", fluxjobv1.PendingDependency, "after-finish="+busy.Status.JobIDF58)
		if o.Status.Pending.Since == nil || o.Status.Pending.Since.Before(o.Status.SubmitTime) {
			t.Errorf("since %v before the submission %v", o.Status.Pending.Since, o.Status.SubmitTime)
		}
	})

	t.Run("scheduling, then the queue stops and starts", func(t *testing.T) {
		h.create("waits", cmdSpec("true"))
		h.pendingIs("waits", fluxjobv1.PendingScheduling, "SCHED")
		// Nothing happens to the job: the instance's read, at the pace,
		// tells the controller.
		h.queueStart("batch", false, "maintenance window")
		h.pendingIs("waits", fluxjobv1.PendingQueueStopped, `"batch" is stopped: maintenance window`)
		h.queueStart("batch", true, "")
		h.pendingIs("waits", fluxjobv1.PendingScheduling, "SCHED")
	})

	t.Run("stopped queue", func(t *testing.T) {
		h.queueStart("debug", false, "")
		h.create("in-debug", fluxjobv1.FluxJobSpec{Command: []string{"true"}, Queue: "debug"})
		h.pendingIs("in-debug", fluxjobv1.PendingQueueStopped, `Flux queue "debug" is stopped`)
	})

	// The end of busy lets the dependant and the waiting job run; their
	// reasons go.
	if err := h.c.Delete(context.Background(), mustGet(t, h, "busy")); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"after-busy", "waits"} {
		if o := h.waitPhase(n, fluxjobv1.PhaseSucceeded, 30*time.Second); o.Status.Pending != nil {
			t.Errorf("%s succeeded with pending %+v", n, o.Status.Pending)
		}
	}
	h.queueStart("debug", true, "")
	if o := h.waitPhase("in-debug", fluxjobv1.PhaseSucceeded, 30*time.Second); o.Status.Pending != nil {
		t.Errorf("in-debug succeeded with pending %+v", o.Status.Pending)
	}
}

func mustGet(t *testing.T, h *harness, name string) *fluxjobv1.FluxJob {
	t.Helper()
	o, err := h.get(name)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// column returns what `kubectl get fluxjob NAME` shows in column col: the
// API server's Table of the object (the CRD's printer columns).
func (h *harness) column(name, col string) string {
	h.t.Helper()
	hc, err := rest.HTTPClientFor(h.cfg)
	if err != nil {
		h.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	url := strings.TrimSuffix(h.cfg.Host, "/") + "/apis/" + fluxjobv1.GroupVersion.String() + "/namespaces/" + h.ns + "/fluxjobs/" + name
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		h.t.Fatal(err)
	}
	req.Header.Set("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
	resp, err := hc.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	var tbl metav1.Table
	if err := json.NewDecoder(resp.Body).Decode(&tbl); err != nil || resp.StatusCode != http.StatusOK || len(tbl.Rows) != 1 {
		h.t.Fatalf("GET %s as a Table: %s, %v, %d rows", url, resp.Status, err, len(tbl.Rows))
	}
	for i, c := range tbl.ColumnDefinitions {
		if c.Name == col && i < len(tbl.Rows[0].Cells) {
			return fmt.Sprint(tbl.Rows[0].Cells[i])
		}
	}
	h.t.Fatalf("no column %q in %+v", col, tbl.ColumnDefinitions)
	return ""
}

// TestEnvtestArrayPendingReasons: an array whose indexes wait in Flux says
// why in status.pending and the REASON column, from its first waiting
// index (urgency 0 from spec.urgency, a stopped queue, the one core taken
// by index 0 while the others wait), and the reason goes once none waits.
func TestEnvtestArrayPendingReasons(t *testing.T) {
	h := newHarness(t, testbroker.Options{TimeScale: 0.01, Cores: 1, Queues: []string{"batch", "debug"}, DefaultQueue: "batch"}, Options{})
	h.start()

	held := arraySpec("0-4", "true")
	held.Urgency = ptrTo(int32(0))
	h.create("held", held)
	o := h.pendingIs("held", fluxjobv1.PendingHeld, "5 of 5 indexes wait in Flux; the first, index 0 (job ")
	if !strings.Contains(o.Status.Pending.Message, "Held in Flux at urgency 0") || o.Status.Phase != fluxjobv1.PhaseSubmitted || o.Status.Pending.Since == nil {
		t.Errorf("held array: phase %s, pending %+v", o.Status.Phase, o.Status.Pending)
	}
	if got := h.column("held", "Reason"); got != fluxjobv1.PendingHeld {
		t.Errorf("REASON column %q, want %s", got, fluxjobv1.PendingHeld)
	}

	h.queueStart("debug", false, "drain")
	stopped := arraySpec("3,5,7", "true")
	stopped.Queue = "debug"
	h.create("stopped", stopped)
	h.pendingIs("stopped", fluxjobv1.PendingQueueStopped, `3 of 3 indexes wait in Flux; the first, index 3 (job `)
	h.pendingIs("stopped", fluxjobv1.PendingQueueStopped, `Flux queue "debug" is stopped: drain`)
	if got := h.column("stopped", "Reason"); got != fluxjobv1.PendingQueueStopped {
		t.Errorf("REASON column %q, want %s", got, fluxjobv1.PendingQueueStopped)
	}
	h.queueStart("debug", true, "")
	if o := h.waitPhase("stopped", fluxjobv1.PhaseSucceeded, 30*time.Second); o.Status.Pending != nil {
		t.Errorf("succeeded with pending %+v", o.Status.Pending)
	}

	// One core: index 0 runs, the others wait for it; the array is
	// Running and says why the rest waits.
	h.create("busy", arraySpec("0-3", "sleep", "3000"))
	o = h.waitFor("busy", 30*time.Second, "running with waiting indexes", func(o *fluxjobv1.FluxJob) bool {
		return o.Status.Phase == fluxjobv1.PhaseRunning && o.Status.Pending != nil
	})
	// The index that runs is the one the scheduler took first (the
	// submissions race); the first waiting one is the lowest other.
	byName, first := h.brokerJobsByName(), -1
	for i := 0; i < 4 && first < 0; i++ {
		ids := byName[jobspec.IndexName(o, i, 0)]
		if len(ids) != 1 {
			t.Fatalf("index %d: Flux jobs %v", i, ids)
		}
		if h.fluxEventIndex(int64(ids[0]), "alloc", "", nil) < 0 {
			first = i
			want := fmt.Sprintf("3 of 4 indexes wait in Flux; the first, index %d (job %s): Waiting for the scheduler", i, ids[0].F58())
			if p := o.Status.Pending; p.Reason != fluxjobv1.PendingScheduling || !strings.Contains(p.Message, want) {
				t.Errorf("running array: pending %+v, want %q", p, want)
			}
		}
	}
	if first < 0 {
		t.Errorf("no index of busy waits at the broker; pending %+v", o.Status.Pending)
	}
	if got := h.column("busy", "Reason"); got != fluxjobv1.PendingScheduling {
		t.Errorf("REASON column %q, want %s", got, fluxjobv1.PendingScheduling)
	}
	for _, n := range []string{"busy", "held"} {
		if err := h.c.Delete(context.Background(), mustGet(t, h, n)); err != nil {
			t.Fatal(err)
		}
	}
}
