package controllers

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
	"github.com/fluxjob/fluxjob-operator/fluxbridge"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/testbroker"
	"github.com/fluxjob/fluxjob-operator/internal/broker"
	"github.com/fluxjob/fluxjob-operator/internal/jobspec"
)

// The tests in this file inject faults (issue 8): the broker connection
// lost, the broker restarted with and without its jobs, the API server
// refusing status writes. They run against envtest and the test broker,
// like envtest_test.go, and share its harness.

// faultTruth is what a FluxJob must end as, read from its Flux job's
// eventlog at the broker: the broker is the truth the controller follows.
type faultTruth struct {
	phase fluxjobv1.FluxJobPhase
	exit  *int32
	ended bool
}

// brokerTruth reads the final state of Flux job id from the broker.
func (h *harness) brokerTruth(id job.ID) faultTruth {
	h.t.Helper()
	var tr faultTruth
	var fatal string
	for _, ev := range h.brokerEvents(id) {
		switch ev.Name {
		case "exception":
			if sev, ok := job.ContextInt(ev.Context, "severity"); ok && sev == 0 && fatal == "" {
				fatal, _ = ev.Context["type"].(string)
			}
		case "finish":
			tr.ended = true
			if s, ok := job.ContextInt(ev.Context, "status"); ok {
				tr.exit = int32Ptr(job.WaitStatus(s).Result())
			}
		case "clean":
			tr.ended = true
		}
	}
	switch {
	case !tr.ended:
	case fatal == "cancel":
		tr.phase = fluxjobv1.PhaseCancelled
	case fatal != "" || tr.exit == nil || *tr.exit != 0:
		tr.phase = fluxjobv1.PhaseFailed
	default:
		tr.phase = fluxjobv1.PhaseSucceeded
	}
	return tr
}

// checkMatchesBroker fails unless every FluxJob in names is terminal,
// names exactly one Flux job, the one named after its UID, and its phase
// and exit status are the Flux job's. It also checks that the broker
// holds exactly one job per FluxJob (no duplicate submission) and that
// the status kept every event of the Flux job up to its end.
func (h *harness) checkMatchesBroker(names []string) {
	h.t.Helper()
	byName := h.brokerJobsByName()
	total := 0
	for _, ids := range byName {
		total += len(ids)
	}
	for _, name := range names {
		obj, err := h.get(name)
		if err != nil {
			h.t.Errorf("FluxJob %s: %v", name, err)
			continue
		}
		ids := byName[jobspec.Name(obj)]
		if len(ids) != 1 {
			h.t.Errorf("FluxJob %s: %d Flux jobs named %s at the broker (%v), want exactly 1", name, len(ids), jobspec.Name(obj), ids)
			continue
		}
		if job.ID(obj.Status.JobID) != ids[0] {
			h.t.Errorf("FluxJob %s: status.jobID %d, the broker's job is %d", name, obj.Status.JobID, ids[0])
			continue
		}
		tr := h.brokerTruth(ids[0])
		if !tr.ended {
			h.t.Errorf("FluxJob %s: Flux job %s has not ended", name, ids[0])
			continue
		}
		if obj.Status.Phase != tr.phase {
			h.t.Errorf("FluxJob %s: phase %s, the Flux job ended %s (message %q, conditions %s)", name, obj.Status.Phase, tr.phase, obj.Status.Message, conditionSummary(obj))
		}
		if (tr.exit == nil) != (obj.Status.ExitStatus == nil) || (tr.exit != nil && *tr.exit != *obj.Status.ExitStatus) {
			h.t.Errorf("FluxJob %s: exitStatus %v, the Flux job's is %v", name, faultDeref(obj.Status.ExitStatus), faultDeref(tr.exit))
		}
		h.checkEventsKept(obj, ids[0])
	}
	if total != len(names) {
		h.t.Errorf("the broker holds %d jobs for %d FluxJobs: %v", total, len(names), byName)
	}
}

// checkEventsKept fails unless status.events holds, in order, every event
// of the Flux job's eventlog up to and including finish (later events may
// arrive after the status is final and are not kept), none lost.
func (h *harness) checkEventsKept(obj *fluxjobv1.FluxJob, id job.ID) {
	h.t.Helper()
	var want []string
	for _, ev := range h.brokerEvents(id) {
		// Only the events the executor records (fluxbridge.Events, those
		// of flux-core's Python FluxExecutor, and WaitEvents) can be kept.
		if fluxbridge.IsDelivered(ev.Name) {
			want = append(want, ev.Name)
		}
		if ev.Name == "finish" {
			break
		}
	}
	got := eventNames(obj.Status.Events)
	if len(want) > fluxjobv1.MaxStatusEvents {
		want = want[len(want)-fluxjobv1.MaxStatusEvents:]
	}
	// A re-attach replays the eventlog from the start; status.events is
	// the tracker's list for the latest future, so it must start with the
	// eventlog's events, in order.
	if len(got) < len(want) || strings.Join(got[:len(want)], ",") != strings.Join(want, ",") {
		h.t.Errorf("FluxJob %s: status.events %v do not hold the Flux job's events %v", obj.Name, got, want)
	}
}

// brokerJobsByName lists every job at the broker by its job name, through
// the production client's job-list RPC.
func (h *harness) brokerJobsByName() map[string][]job.ID {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn := dialBroker(ctx, h.t, h.broker.URI())
	defer conn.Close()
	jobs, err := job.List(ctx, conn, job.ListOptions{Attrs: []string{"name"}})
	if err != nil {
		h.t.Fatalf("listing the broker's jobs: %v", err)
	}
	out := map[string][]job.ID{}
	for _, j := range jobs {
		out[j.Name] = append(out[j.Name], j.ID)
	}
	if n := len(h.broker.Jobs()); n != len(jobs) {
		h.t.Fatalf("job-list lists %d jobs, the broker holds %d", len(jobs), n)
	}
	return out
}

func faultDeref(p *int32) any {
	if p == nil {
		return nil
	}
	return *p
}

// waitAll waits until every FluxJob in names satisfies cond.
func (h *harness) waitAll(names []string, timeout time.Duration, what string, cond func(*fluxjobv1.FluxJob) bool) {
	h.t.Helper()
	for _, n := range names {
		h.waitFor(n, timeout, what, cond)
	}
}

func terminal(o *fluxjobv1.FluxJob) bool { return o.Status.Phase.IsTerminal() }

func fluxReachable(o *fluxjobv1.FluxJob) metav1.ConditionStatus {
	if c := meta.FindStatusCondition(o.Status.Conditions, fluxjobv1.ConditionFluxReachable); c != nil {
		return c.Status
	}
	return ""
}

// TestFaultBrokerConnectionLost drops every broker connection and refuses
// new ones for a while, with FluxJobs running, pending in the broker's
// queue, finishing during the outage, and created during it. Meanwhile
// every unfinished FluxJob must say Flux is unreachable without failing;
// afterwards every one must end as its Flux job did, with one Flux job
// each.
func TestFaultBrokerConnectionLost(t *testing.T) {
	h := newHarness(t, testbroker.Options{TimeScale: 0.01, Cores: 4}, Options{UnreachableRetry: 200 * time.Millisecond})
	h.start()
	var names []string
	add := func(name string, cmd ...string) {
		h.create(name, cmdSpec(cmd...))
		names = append(names, name)
	}
	// 4 cores: four sleeps run, the rest queue behind them.
	for i := range 6 {
		add(fmt.Sprintf("sleep-%d", i), "sleep", "150") // 1.5s each
	}
	add("fails", "exit", "3")
	h.waitFor("sleep-0", 30*time.Second, "Running", func(o *fluxjobv1.FluxJob) bool { return o.Status.Phase == fluxjobv1.PhaseRunning })
	h.waitFor("sleep-5", 30*time.Second, "a job ID", func(o *fluxjobv1.FluxJob) bool { return o.Status.JobID != 0 })
	h.waitPhase("fails", fluxjobv1.PhaseFailed, 30*time.Second)

	h.broker.SetConnectError(syscall.ECONNREFUSED)
	if err := h.broker.DropConnections(); err != nil {
		t.Fatal(err)
	}
	// Created while Flux cannot be reached: nothing can be submitted.
	add("during-true", "true")
	add("during-false", "false")
	h.waitFor("during-true", 30*time.Second, "FluxReachable=False", func(o *fluxjobv1.FluxJob) bool {
		return fluxReachable(o) == metav1.ConditionFalse
	})
	for _, n := range names {
		obj, err := h.get(n)
		if err != nil {
			t.Fatal(err)
		}
		if obj.Status.Phase.IsTerminal() {
			continue // ended before the connection went
		}
		obj = h.waitFor(n, 30*time.Second, "FluxReachable=False", func(o *fluxjobv1.FluxJob) bool {
			return fluxReachable(o) == metav1.ConditionFalse || terminal(o)
		})
		if obj.Status.Phase == fluxjobv1.PhaseFailed || obj.Status.Phase == fluxjobv1.PhaseCancelled {
			t.Fatalf("FluxJob %s is %s while Flux is unreachable (%s): unreachable must not fail a job", n, obj.Status.Phase, obj.Status.Message)
		}
		if !obj.Status.Phase.IsTerminal() {
			requireCondition(t, obj, fluxjobv1.ConditionFluxReachable, metav1.ConditionFalse, fluxjobv1.ReasonFluxUnreachable)
		}
	}
	for _, n := range []string{"during-true", "during-false"} {
		if obj, _ := h.get(n); obj.Status.Phase != fluxjobv1.PhasePending || obj.Status.JobID != 0 {
			t.Fatalf("FluxJob %s created during the outage is %s (job %d), want Pending without a job", n, obj.Status.Phase, obj.Status.JobID)
		}
	}
	if n := h.broker.ConnCount(); n != 0 {
		t.Fatalf("%d broker connections while refusing connections", n)
	}
	// Let the running sleeps end during the outage (the broker's eventlog
	// says so): their end must still reach the status after the reconnect.
	h.waitBrokerFinished(names, 4, 30*time.Second)
	h.broker.SetConnectError(0)

	h.waitAll(names, 60*time.Second, "a final phase", terminal)
	h.checkMatchesBroker(names)
	for _, n := range names {
		obj, _ := h.get(n)
		if s := fluxReachable(obj); s != metav1.ConditionTrue {
			t.Errorf("FluxJob %s ended with FluxReachable=%q, want True", n, s)
		}
	}
}

// TestFaultBrokerRestartKeepsJobs restarts the broker twice (connections
// dropped, the socket re-created, every job kept) while FluxJobs are
// queued and running: every FluxJob must re-attach and end as its Flux
// job did, none submitted twice.
func TestFaultBrokerRestartKeepsJobs(t *testing.T) {
	h := newHarness(t, testbroker.Options{TimeScale: 0.01, Delays: testbroker.RealisticDelays()}, Options{UnreachableRetry: 200 * time.Millisecond})
	h.start()
	var names []string
	for i, cmd := range [][]string{{"sleep", "100"}, {"sleep", "200"}, {"true"}, {"false"}, {"exit", "7"}, {"sleep", "50"}} {
		name := fmt.Sprintf("keep-%d", i)
		h.create(name, cmdSpec(cmd...))
		names = append(names, name)
	}
	h.waitPhase("keep-1", fluxjobv1.PhaseRunning, 30*time.Second)
	// Queue some jobs in the broker, then restart under them.
	h.broker.PauseScheduling(true)
	for i := range 3 {
		name := fmt.Sprintf("queued-%d", i)
		h.create(name, cmdSpec("sleep", "30"))
		names = append(names, name)
		h.waitFor(name, 30*time.Second, "Submitted", func(o *fluxjobv1.FluxJob) bool { return o.Status.Phase == fluxjobv1.PhaseSubmitted })
	}
	if err := h.broker.Restart(true); err != nil {
		t.Fatal(err)
	}
	// Restart again once the controller is back on the restarted broker.
	for deadline := time.Now().Add(30 * time.Second); h.broker.ConnCount() == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the controller did not reconnect to the restarted broker within 30s")
		}
	}
	if err := h.broker.Restart(true); err != nil {
		t.Fatal(err)
	}
	h.broker.PauseScheduling(false)
	h.waitAll(names, 60*time.Second, "a final phase", terminal)
	h.checkMatchesBroker(names)
}

// TestFaultBrokerRestartLosesJobs replaces the instance by a fresh one:
// every FluxJob whose Flux job was lost ends Failed with reason
// InstanceReplaced and a message that says the job is gone; none is submitted
// again; a FluxJob that had finished before keeps its status.
func TestFaultBrokerRestartLosesJobs(t *testing.T) {
	h := newHarness(t, testbroker.Options{Cores: 2}, Options{UnreachableRetry: 200 * time.Millisecond})
	h.start()
	h.create("done", cmdSpec("true"))
	h.waitPhase("done", fluxjobv1.PhaseSucceeded, 30*time.Second)
	lost := []string{"running-0", "running-1", "queued-0", "queued-1"}
	for _, n := range lost {
		h.create(n, cmdSpec("sleep", "300"))
	}
	h.waitPhase("running-0", fluxjobv1.PhaseRunning, 30*time.Second)
	h.waitPhase("running-1", fluxjobv1.PhaseRunning, 30*time.Second)
	h.waitFor("queued-1", 30*time.Second, "Submitted", func(o *fluxjobv1.FluxJob) bool { return o.Status.Phase == fluxjobv1.PhaseSubmitted })
	before, _, _ := h.counts.writes("done")

	if err := h.broker.Restart(false); err != nil {
		t.Fatal(err)
	}
	for _, n := range lost {
		obj := h.waitPhase(n, fluxjobv1.PhaseFailed, 30*time.Second)
		requireCondition(t, obj, fluxjobv1.ConditionFailed, metav1.ConditionTrue, fluxjobv1.ReasonInstanceReplaced)
		if !strings.Contains(obj.Status.Message, "gone") || !strings.Contains(obj.Status.Message, obj.Status.JobIDF58) {
			t.Errorf("FluxJob %s: message %q does not say its Flux job %s was lost", n, obj.Status.Message, obj.Status.JobIDF58)
		}
	}
	// Lost jobs are not submitted again: a re-run is the user's decision.
	// A restarted controller reconciles every FluxJob once more, and
	// still submits nothing.
	h.restartAndSettle(len(lost) + 1)
	if ids := h.broker.Jobs(); len(ids) != 0 {
		t.Fatalf("the restarted broker has jobs %v: a lost job was submitted again", ids)
	}
	obj, err := h.get("done")
	if err != nil {
		t.Fatal(err)
	}
	if obj.Status.Phase != fluxjobv1.PhaseSucceeded {
		t.Fatalf("a FluxJob finished before the restart is now %s", obj.Status.Phase)
	}
	if after, _, _ := h.counts.writes("done"); after != before {
		t.Fatalf("the finished FluxJob's status was rewritten after the restart (%d -> %d writes)", before, after)
	}
}

// TestFaultFutureFailsWithConnectionError checks the contract the
// controller relies on: when the broker goes away, a future in flight
// fails with an error the controller classifies as a lost connection (not
// a job failure), and the connector reports itself unready.
func TestFaultFutureFailsWithConnectionError(t *testing.T) {
	b := testbroker.New(testbroker.Options{})
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	conn := broker.NewConnector(broker.ConnectorOptions{URI: b.URI(), Workers: 2,
		Backoff:       wait.Backoff{Duration: 50 * time.Millisecond, Factor: 2, Steps: 1 << 20, Cap: 500 * time.Millisecond},
		CheckInterval: 20 * time.Millisecond, ShutdownTimeout: 500 * time.Millisecond})
	defer runConnector(t, conn)()
	exec := waitConnected(t, conn)

	spec, err := job.FromCommand([]string{"sleep", "300"}, job.CommandOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer scancel()
	f, err := exec.Submit(sctx, spec, job.SubmitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.JobID(sctx); err != nil {
		t.Fatal(err)
	}
	b.SetConnectError(syscall.ECONNREFUSED)
	if err := b.DropConnections(); err != nil {
		t.Fatal(err)
	}
	ferr := f.Exception(sctx)
	if ferr == nil {
		t.Fatal("the future of a running job succeeded after the broker went away")
	}
	if !broker.IsConnectionError(ferr) {
		t.Fatalf("future failed with %v (%T), not a connection error", ferr, ferr)
	}
	if out := broker.Classify(0, ferr); out.Kind != broker.OutcomeLost {
		t.Fatalf("classified as %v, want broker.OutcomeLost", out.Kind)
	}
	deadline := time.Now().Add(10 * time.Second)
	for conn.Ready(nil) == nil {
		if time.Now().After(deadline) {
			t.Fatal("connector still ready 10s after the broker went away")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := conn.Ready(nil); !errors.Is(err, broker.ErrUnreachable) {
		t.Fatalf("Ready = %v, want broker.ErrUnreachable", err)
	}
	b.SetConnectError(0)
	waitConnected(t, conn)
}

func waitConnected(t *testing.T, conn *broker.Connector) *fluxbridge.Executor {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		exec, _, err := conn.Get()
		if err == nil {
			return exec
		}
		if time.Now().After(deadline) {
			t.Fatalf("connector not connected after 20s: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestFaultConnectorBacksOff points the connector at a socket that
// refuses every connection (the accept byte ECONNREFUSED) and counts the
// attempts: they must space out (exponential backoff), then the connector
// must connect once a broker listens there.
func TestFaultConnectorBacksOff(t *testing.T) {
	dir, err := os.MkdirTemp("", "fj-backoff-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, testbroker.SocketName)
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu       sync.Mutex
		attempts []time.Time // one dial per attempt: the control connection fails first
	)
	served := make(chan struct{})
	go func() {
		defer close(served)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			attempts = append(attempts, time.Now())
			mu.Unlock()
			_, _ = c.Write([]byte{byte(syscall.ECONNREFUSED)})
			_ = c.Close()
		}
	}()
	conn := broker.NewConnector(broker.ConnectorOptions{URI: "local://" + path, Workers: 1,
		Backoff:     wait.Backoff{Duration: 50 * time.Millisecond, Factor: 2, Steps: 1 << 20, Cap: 400 * time.Millisecond},
		DialTimeout: time.Second, ShutdownTimeout: 500 * time.Millisecond})
	defer runConnector(t, conn)()
	// Five attempts are at least 50+100+200+400 ms apart, first to last
	// (no jitter; a timer never fires early): without backoff they would
	// come within a few milliseconds. A slow machine only widens the gaps.
	var first, fifth time.Time
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		mu.Lock()
		if len(attempts) >= 5 {
			first, fifth = attempts[0], attempts[4]
		}
		mu.Unlock()
		if !fifth.IsZero() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("fewer than 5 connection attempts in 30s")
		}
	}
	if gap := fifth.Sub(first); gap < 750*time.Millisecond {
		t.Fatalf("5 connection attempts within %s with a 50ms..400ms backoff, want at least 750ms", gap)
	}
	if err := conn.Ready(nil); !errors.Is(err, broker.ErrUnreachable) {
		t.Fatalf("Ready = %v while refused, want broker.ErrUnreachable", err)
	}
	_ = ln.Close()
	<-served
	_ = os.Remove(path)
	b := testbroker.New(testbroker.Options{Dir: dir})
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	waitConnected(t, conn)
	if err := conn.Ready(nil); err != nil {
		t.Fatalf("Ready = %v once connected", err)
	}
}

// flip turns a FluxJob's annotation so that its resourceVersion changes
// under the controller (a conflict for its optimistic-lock patches),
// without changing its generation.
func (h *harness) flip(name string, i int) {
	obj, err := h.get(name)
	if err != nil || obj.Status.Phase.IsTerminal() {
		return
	}
	base := obj.DeepCopy()
	if obj.Annotations == nil {
		obj.Annotations = map[string]string{}
	}
	obj.Annotations["test.fluxjob.io/bump"] = fmt.Sprint(i)
	_ = h.c.Patch(context.Background(), obj, client.MergeFrom(base))
}

// dialBroker connects to the broker with the production client.
func dialBroker(ctx context.Context, t *testing.T, uri string) *flux.Conn {
	t.Helper()
	conn, err := flux.Dial(ctx, uri)
	if err != nil {
		t.Fatalf("connecting to the broker: %v", err)
	}
	return conn
}

// runConnector starts conn and returns the function that stops it and
// reports its error.
func runConnector(t *testing.T, conn *broker.Connector) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- conn.Start(ctx) }()
	return func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("connector: %v", err)
		}
	}
}
