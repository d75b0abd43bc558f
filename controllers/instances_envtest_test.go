package controllers

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux/fluxtest"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/testbroker"
	"github.com/fluxjob/fluxjob-operator/internal/broker"
	"github.com/fluxjob/fluxjob-operator/internal/recorder"
	"github.com/fluxjob/fluxjob-operator/podexec"
)

// These tests run the manager as main.go does with FluxEndpoint objects:
// the broker.Registry, the FluxEndpoint reconciler and the FluxJob
// reconciler routing by instance, against two test brokers, each with its
// own unix socket (local:// instances). FluxEndpoints are cluster-scoped:
// their names carry the test's namespace so that tests do not meet.

// startWithInstances runs a manager with no implicit instance: every
// FluxJob runs on a FluxEndpoint object. tune adjusts the FluxEndpoint
// reconciler (transports, namespace).
func (h *harness) startWithInstances(tune ...func(*FluxEndpointReconciler)) {
	h.t.Helper()
	if h.cancel != nil {
		h.t.Fatal("manager already running")
	}
	mgr := h.newManager()
	reg := broker.NewRegistry(testConnectorOptions(""))
	h.reg = reg
	if err := mgr.Add(reg); err != nil {
		h.t.Fatal(err)
	}
	h.run(mgr, &FluxJobReconciler{Instances: reg, Options: h.opts}, func(mgr ctrl.Manager, rec *recorder.Recorder) {
		ir := &FluxEndpointReconciler{Client: mgr.GetClient(), Registry: reg, Recorder: rec,
			StatusInterval: time.Second, RetryInterval: 200 * time.Millisecond}
		for _, fn := range tune {
			fn(ir)
		}
		if err := ir.SetupWithManager(mgr); err != nil {
			h.t.Fatal(err)
		}
	})
}

// newBroker starts another test broker for the test.
func (h *harness) newBroker(opts testbroker.Options) *testbroker.Server {
	h.t.Helper()
	b := testbroker.New(opts)
	if err := b.Start(context.Background()); err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { _ = b.Close() })
	return b
}

// newNamespace creates a namespace with labels, cached by the manager.
func (h *harness) newNamespace(suffix string, labels map[string]string) string {
	h.t.Helper()
	ns := h.ns + "-" + suffix
	if err := h.c.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: labels}}); err != nil {
		h.t.Fatal(err)
	}
	h.extraNS = append(h.extraNS, ns)
	return ns
}

// createInstance creates a local:// FluxEndpoint for broker b, named
// <test namespace>-<suffix>, deleted when the test ends.
func (h *harness) createInstance(suffix string, b *testbroker.Server, sel *metav1.LabelSelector, isDefault bool) string {
	h.t.Helper()
	return h.createInstanceWith(suffix, fluxjobv1.FluxEndpointConnection{URI: b.URI()}, sel, isDefault)
}

// createInstanceWith creates a FluxEndpoint with connection c.
func (h *harness) createInstanceWith(suffix string, c fluxjobv1.FluxEndpointConnection, sel *metav1.LabelSelector, isDefault bool) string {
	h.t.Helper()
	name := h.ns + "-" + suffix
	fi := &fluxjobv1.FluxEndpoint{ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: fluxjobv1.FluxEndpointSpec{Connection: c, NamespaceSelector: sel}}
	if isDefault {
		fi.Annotations = map[string]string{fluxjobv1.DefaultInstanceAnnotation: "true"}
	}
	if err := h.c.Create(context.Background(), fi); err != nil {
		h.t.Fatalf("creating FluxEndpoint %s: %v", name, err)
	}
	h.t.Cleanup(func() {
		_ = h.c.Delete(context.Background(), &fluxjobv1.FluxEndpoint{ObjectMeta: metav1.ObjectMeta{Name: name}})
	})
	return name
}

// waitInstance polls the FluxEndpoint until cond holds.
func (h *harness) waitInstance(name string, timeout time.Duration, what string, cond func(*fluxjobv1.FluxEndpoint) bool) *fluxjobv1.FluxEndpoint {
	h.t.Helper()
	var last fluxjobv1.FluxEndpoint
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if err := h.c.Get(context.Background(), client.ObjectKey{Name: name}, &last); err == nil && cond(&last) {
			return &last
		}
		time.Sleep(50 * time.Millisecond)
	}
	h.t.Fatalf("FluxEndpoint %s: timed out after %s waiting for %s; status %+v", name, timeout, what, last.Status)
	return nil
}

func instanceCondition(fi *fluxjobv1.FluxEndpoint, typ string) (metav1.ConditionStatus, string) {
	c := meta.FindStatusCondition(fi.Status.Conditions, typ)
	if c == nil {
		return "", ""
	}
	return c.Status, c.Reason
}

func instanceReady(fi *fluxjobv1.FluxEndpoint) bool {
	s, _ := instanceCondition(fi, fluxjobv1.InstanceConditionReady)
	return s == metav1.ConditionTrue
}

func conditionIs(typ string, status metav1.ConditionStatus, reason string) func(*fluxjobv1.FluxJob) bool {
	return func(o *fluxjobv1.FluxJob) bool {
		c := meta.FindStatusCondition(o.Status.Conditions, typ)
		return c != nil && c.Status == status && (reason == "" || c.Reason == reason)
	}
}

func (h *harness) createIn(ns, name string, spec fluxjobv1.FluxJobSpec) {
	h.t.Helper()
	if err := h.c.Create(context.Background(), &fluxjobv1.FluxJob{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: spec}); err != nil {
		h.t.Fatalf("creating FluxJob %s/%s: %v", ns, name, err)
	}
}

func onInstance(instance string, cmd ...string) fluxjobv1.FluxJobSpec {
	return fluxjobv1.FluxJobSpec{Command: cmd, Instance: instance}
}

// brokerHasJob reports whether b holds a job with that ID.
func brokerHasJob(b *testbroker.Server, id int64) bool {
	for _, j := range b.Jobs() {
		if int64(j) == id {
			return true
		}
	}
	return false
}

// TestEnvtestInstancesRouting: two FluxEndpoints, each on its own test
// broker; FluxJobs go where spec.instance says, or to the default one;
// the namespaceSelector keeps other namespaces out until it admits them;
// a FluxJob naming an unknown instance waits and never submits, until the
// instance appears; two defaults are refused as ambiguous.
func TestEnvtestInstancesRouting(t *testing.T) {
	h := newHarness(t, testbroker.Options{}, Options{})
	brokerA, brokerB := h.broker, h.newBroker(testbroker.Options{})
	team := h.newNamespace("team", map[string]string{"flux-team": h.ns})
	a := h.createInstance("a", brokerA, &metav1.LabelSelector{}, true)
	b := h.createInstance("b", brokerB, &metav1.LabelSelector{MatchLabels: map[string]string{"flux-team": h.ns}}, false)
	h.startWithInstances()

	for _, name := range []string{a, b} {
		fi := h.waitInstance(name, 30*time.Second, "Ready and its status read from the broker", func(fi *fluxjobv1.FluxEndpoint) bool {
			return instanceReady(fi) && fi.Status.Version != "" && fi.Status.LastContactTime != nil
		})
		if fi.Status.Version != testbroker.SimulatedVersion || fi.Status.Size != 1 || fi.Status.Jobs == nil {
			t.Fatalf("FluxEndpoint %s status %+v: want version %s, size 1, job counts", name, fi.Status, testbroker.SimulatedVersion)
		}
		if s, r := instanceCondition(fi, fluxjobv1.InstanceConditionConnected); s != metav1.ConditionTrue || r != fluxjobv1.ReasonConnected {
			t.Fatalf("FluxEndpoint %s Connected = %s/%s", name, s, r)
		}
		if v, err := gaugeValue("fluxjob_executor_connected", "instance", name); err != nil || v != 1 {
			t.Fatalf("fluxjob_executor_connected{instance=%q} = %v (%v), want 1", name, v, err)
		}
	}

	// By default: instance a, recorded in status (spec untouched).
	h.create("to-default", cmdSpec("true"))
	obj := h.waitPhase("to-default", fluxjobv1.PhaseSucceeded, 30*time.Second)
	if obj.Status.Instance != a || obj.Spec.Instance != "" || !brokerHasJob(brokerA, obj.Status.JobID) {
		t.Fatalf("to-default: status.instance %q spec.instance %q, job %d on A: %v", obj.Status.Instance, obj.Spec.Instance, obj.Status.JobID, brokerA.Jobs())
	}
	requireCondition(t, obj, fluxjobv1.ConditionInstanceAdmitted, metav1.ConditionTrue, fluxjobv1.ReasonAdmitted)

	// By spec.instance, from a namespace b's selector admits.
	h.createIn(team, "to-b", onInstance(b, "true"))
	obj = h.waitForIn(team, "to-b", 30*time.Second, "Succeeded", func(o *fluxjobv1.FluxJob) bool { return o.Status.Phase == fluxjobv1.PhaseSucceeded })
	if obj.Status.Instance != b || !brokerHasJob(brokerB, obj.Status.JobID) || len(brokerB.Jobs()) != 1 {
		t.Fatalf("to-b: status.instance %q, job %d, broker B jobs %v", obj.Status.Instance, obj.Status.JobID, brokerB.Jobs())
	}

	// From a namespace b does not admit: waits, nothing submitted.
	h.create("refused", onInstance(b, "true"))
	obj = h.waitFor("refused", 30*time.Second, "InstanceAdmitted=False/NamespaceNotAdmitted",
		conditionIs(fluxjobv1.ConditionInstanceAdmitted, metav1.ConditionFalse, fluxjobv1.ReasonNamespaceNotAdmitted))
	if obj.Status.Phase != fluxjobv1.PhasePending || obj.Status.Instance != "" || hasFinalizer(obj) {
		t.Fatalf("refused: phase %s, status.instance %q, finalizers %v", obj.Status.Phase, obj.Status.Instance, obj.Finalizers)
	}
	h.waitEvent("refused", fluxjobv1.ReasonNamespaceNotAdmitted, 10*time.Second)
	if n := len(brokerB.Jobs()); n != 1 {
		t.Fatalf("broker B has %d jobs after a refused FluxJob, want 1", n)
	}
	// b admits every namespace now: the waiting FluxJob proceeds.
	var fiB fluxjobv1.FluxEndpoint
	if err := h.c.Get(context.Background(), client.ObjectKey{Name: b}, &fiB); err != nil {
		t.Fatal(err)
	}
	base := fiB.DeepCopy()
	fiB.Spec.NamespaceSelector = &metav1.LabelSelector{}
	if err := h.c.Patch(context.Background(), &fiB, client.MergeFrom(base)); err != nil {
		t.Fatal(err)
	}
	obj = h.waitPhase("refused", fluxjobv1.PhaseSucceeded, 30*time.Second)
	if obj.Status.Instance != b || !brokerHasJob(brokerB, obj.Status.JobID) {
		t.Fatalf("refused, then admitted: status.instance %q, job %d, broker B %v", obj.Status.Instance, obj.Status.JobID, brokerB.Jobs())
	}

	// An instance that does not exist: waits, never submits, until it exists.
	ghost := h.ns + "-ghost"
	h.create("ghost", onInstance(ghost, "true"))
	obj = h.waitFor("ghost", 30*time.Second, "InstanceAdmitted=False/InstanceNotFound",
		conditionIs(fluxjobv1.ConditionInstanceAdmitted, metav1.ConditionFalse, fluxjobv1.ReasonInstanceNotFound))
	if obj.Status.Phase != fluxjobv1.PhasePending || submitAttempt(obj) != nil {
		t.Fatalf("ghost: phase %s, submission marker %v", obj.Status.Phase, submitAttempt(obj))
	}
	h.waitEvent("ghost", fluxjobv1.ReasonInstanceNotFound, 10*time.Second)
	if na, nb := len(brokerA.Jobs()), len(brokerB.Jobs()); na != 1 || nb != 2 {
		t.Fatalf("brokers hold %d and %d jobs with a FluxJob on an unknown instance, want 1 and 2", na, nb)
	}
	brokerC := h.newBroker(testbroker.Options{})
	if got := h.createInstance("ghost", brokerC, &metav1.LabelSelector{}, false); got != ghost {
		t.Fatal(got)
	}
	obj = h.waitPhase("ghost", fluxjobv1.PhaseSucceeded, 30*time.Second)
	if ids := brokerC.Jobs(); len(ids) != 1 || int64(ids[0]) != obj.Status.JobID {
		t.Fatalf("ghost: job %d, broker C jobs %v", obj.Status.JobID, ids)
	}

	// Two defaults: a FluxJob without spec.instance is refused as
	// ambiguous until one is unmarked.
	if err := h.c.Get(context.Background(), client.ObjectKey{Name: b}, &fiB); err != nil {
		t.Fatal(err)
	}
	base = fiB.DeepCopy()
	fiB.Annotations = map[string]string{fluxjobv1.DefaultInstanceAnnotation: "true"}
	if err := h.c.Patch(context.Background(), &fiB, client.MergeFrom(base)); err != nil {
		t.Fatal(err)
	}
	// The manager resolves the default from its registry, which the
	// FluxEndpoint reconciler updates after its informer cache: create the
	// FluxJob only once the registry knows the second default, or it may
	// (rightly) be routed to the one default the registry still knows.
	if err := wait.PollUntilContextTimeout(context.Background(), 10*time.Millisecond, 30*time.Second, true,
		func(context.Context) (bool, error) {
			_, reason, _ := h.reg.Default()
			return reason == fluxjobv1.ReasonAmbiguousDefaultInstance, nil
		}); err != nil {
		t.Fatalf("the manager's registry never showed %s as a second default: %v", b, err)
	}
	h.create("ambiguous", cmdSpec("true"))
	h.waitFor("ambiguous", 30*time.Second, "InstanceAdmitted=False/AmbiguousDefaultInstance",
		conditionIs(fluxjobv1.ConditionInstanceAdmitted, metav1.ConditionFalse, fluxjobv1.ReasonAmbiguousDefaultInstance))
	if err := h.c.Get(context.Background(), client.ObjectKey{Name: b}, &fiB); err != nil {
		t.Fatal(err)
	}
	fiB.Annotations = nil
	if err := h.c.Update(context.Background(), &fiB); err != nil {
		t.Fatal(err)
	}
	obj = h.waitPhase("ambiguous", fluxjobv1.PhaseSucceeded, 30*time.Second)
	if obj.Status.Instance != a {
		t.Fatalf("ambiguous, then one default: status.instance %q, want %q", obj.Status.Instance, a)
	}
	// The instance's job counts come from the broker.
	h.waitInstance(a, 30*time.Second, "2 successful jobs in status.jobs", func(fi *fluxjobv1.FluxEndpoint) bool {
		return fi.Status.Jobs != nil && fi.Status.Jobs.Successful == 2 && fi.Status.Jobs.Total == 2
	})
}

// TestEnvtestInstanceUnreachableAndDeleted: one instance's broker becomes
// unreachable, then the other instance is deleted; each time only the
// FluxJobs of that instance are flagged (FluxReachable=False, and
// InstanceAdmitted=False for the deleted one) while the other instance's
// FluxJobs run to the end; when the instance is back, its FluxJobs are
// re-attached to their Flux jobs, never submitted a second time.
func TestEnvtestInstanceUnreachableAndDeleted(t *testing.T) {
	h := newHarness(t, testbroker.Options{TimeScale: 0.01}, Options{UnreachableRetry: 200 * time.Millisecond})
	brokerA, brokerB := h.broker, h.newBroker(testbroker.Options{TimeScale: 0.01})
	a := h.createInstance("a", brokerA, &metav1.LabelSelector{}, true)
	b := h.createInstance("b", brokerB, &metav1.LabelSelector{}, false)
	h.startWithInstances()

	// Unreachable: instance a's broker refuses connections.
	h.create("on-a", cmdSpec("sleep", "400")) // 4s
	h.waitPhase("on-a", fluxjobv1.PhaseRunning, 30*time.Second)
	brokerA.SetConnectError(111) // ECONNREFUSED accept byte
	if err := brokerA.DropConnections(); err != nil {
		t.Fatal(err)
	}
	h.create("on-b", onInstance(b, "sleep", "100"))
	obj := h.waitFor("on-a", 30*time.Second, "FluxReachable=False",
		conditionIs(fluxjobv1.ConditionFluxReachable, metav1.ConditionFalse, fluxjobv1.ReasonFluxUnreachable))
	if obj.Status.Phase != fluxjobv1.PhaseRunning {
		t.Fatalf("on-a: phase %s while its instance is unreachable, want Running", obj.Status.Phase)
	}
	fi := h.waitInstance(a, 30*time.Second, "Connected=False", func(fi *fluxjobv1.FluxEndpoint) bool {
		s, r := instanceCondition(fi, fluxjobv1.InstanceConditionConnected)
		return s == metav1.ConditionFalse && r == fluxjobv1.ReasonConnectFailed
	})
	if s, _ := instanceCondition(fi, fluxjobv1.InstanceConditionReady); s != metav1.ConditionFalse {
		t.Fatalf("FluxEndpoint a Ready = %s while unreachable", s)
	}
	// Instance b is untouched: its FluxJob runs to the end meanwhile.
	obj = h.waitPhase("on-b", fluxjobv1.PhaseSucceeded, 30*time.Second)
	requireCondition(t, obj, fluxjobv1.ConditionFluxReachable, metav1.ConditionTrue, fluxjobv1.ReasonFluxReachable)
	if fi := h.waitInstance(b, time.Second, "Ready", instanceReady); fi == nil {
		t.Fatal("b not ready")
	}
	if obj, _ := h.get("on-a"); obj.Status.Phase != fluxjobv1.PhaseRunning {
		t.Fatalf("on-a: phase %s before a is back", obj.Status.Phase)
	}
	brokerA.SetConnectError(0)
	obj = h.waitPhase("on-a", fluxjobv1.PhaseSucceeded, 30*time.Second)
	requireCondition(t, obj, fluxjobv1.ConditionFluxReachable, metav1.ConditionTrue, fluxjobv1.ReasonFluxReachable)
	if ids := brokerA.Jobs(); len(ids) != 1 || int64(ids[0]) != obj.Status.JobID {
		t.Fatalf("broker A jobs %v, want only %d: re-attached, not submitted again", ids, obj.Status.JobID)
	}

	// Deleted: instance b goes away while a job runs on it.
	h.create("on-b2", onInstance(b, "sleep", "400"))
	running := h.waitPhase("on-b2", fluxjobv1.PhaseRunning, 30*time.Second)
	if err := h.c.Delete(context.Background(), &fluxjobv1.FluxEndpoint{ObjectMeta: metav1.ObjectMeta{Name: b}}); err != nil {
		t.Fatal(err)
	}
	obj = h.waitFor("on-b2", 30*time.Second, "InstanceAdmitted=False/InstanceNotFound and FluxReachable=False", func(o *fluxjobv1.FluxJob) bool {
		return conditionIs(fluxjobv1.ConditionInstanceAdmitted, metav1.ConditionFalse, fluxjobv1.ReasonInstanceNotFound)(o) &&
			conditionIs(fluxjobv1.ConditionFluxReachable, metav1.ConditionFalse, "")(o)
	})
	if obj.Status.Phase != fluxjobv1.PhaseRunning || obj.Status.JobID != running.Status.JobID {
		t.Fatalf("on-b2 after its instance was deleted: phase %s job %d, want Running with job %d", obj.Status.Phase, obj.Status.JobID, running.Status.JobID)
	}
	h.create("on-a2", cmdSpec("true"))
	obj = h.waitPhase("on-a2", fluxjobv1.PhaseSucceeded, 30*time.Second)
	if obj.Status.Instance != a {
		t.Fatalf("on-a2 ran on %q", obj.Status.Instance)
	}
	if err := wait4Gone(h, b); err != nil {
		t.Fatal(err)
	}
	h.createInstance("b", brokerB, &metav1.LabelSelector{}, false)
	obj = h.waitPhase("on-b2", fluxjobv1.PhaseSucceeded, 30*time.Second)
	if obj.Status.JobID != running.Status.JobID || len(brokerB.Jobs()) != 2 {
		t.Fatalf("on-b2: job %d (was %d), broker B jobs %v: want the same job, re-attached", obj.Status.JobID, running.Status.JobID, brokerB.Jobs())
	}
	log, _ := brokerB.Eventlog(job.ID(obj.Status.JobID))
	if evs, err := job.ParseEventlog([]byte(log)); err != nil || len(evs) == 0 || evs[len(evs)-1].Name != "clean" {
		t.Fatalf("on-b2's Flux job did not end cleanly: %v %v", evs, err)
	}
}

// wait4Gone waits until the FluxEndpoint name is deleted from the API.
func wait4Gone(h *harness, name string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		err := h.c.Get(ctx, client.ObjectKey{Name: name}, &fluxjobv1.FluxEndpoint{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// TestEnvtestInstanceTransports: an ssh:// FluxEndpoint whose key and
// known_hosts come from a Secret in the manager's namespace reaches its
// broker through an SSH server (x/crypto/ssh's server side, running the
// relay in-process); a missing Secret and a wrong host key are reported in
// the FluxEndpoint's status; a miniCluster FluxEndpoint finds the lead
// broker pod by flux-operator's labels once it runs, and execs into the
// container named after the MiniCluster (the exec itself is a stand-in
// here that dials the test broker; package podexec has its own tests
// against the real exec server side).
func TestEnvtestInstanceTransports(t *testing.T) {
	h := newHarness(t, testbroker.Options{}, Options{})
	brokerSSH, brokerMC := h.broker, h.newBroker(testbroker.Options{})
	signer, pemKey, err := fluxtest.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	srv, err := fluxtest.StartSSHServer(fluxtest.SSHServerOptions{AuthorizedKeys: []ssh.PublicKey{signer.PublicKey()}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	other, err := fluxtest.StartSSHServer(fluxtest.SSHServerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	other.Close() // only its host key is used: a known_hosts line that does not match srv's
	for name, kh := range map[string][]byte{"ssh-ok": srv.KnownHosts, "ssh-wrong-host": []byte(knownhosts.Line([]string{knownhosts.Normalize(srv.Addr)}, other.HostKey.PublicKey()) + "\n")} {
		sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: h.ns, Name: name}, Type: corev1.SecretTypeSSHAuth,
			Data: map[string][]byte{fluxjobv1.SSHPrivateKeyKey: pemKey, fluxjobv1.SSHKnownHostsKey: kh}}
		if err := h.c.Create(context.Background(), sec); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	var targets []podexec.Target
	h.startWithInstances(func(ir *FluxEndpointReconciler) {
		ir.Namespace = h.ns // the manager's namespace: Secrets are read there only
		ir.ExecNamespaces = []string{h.ns}
		ir.Transports = broker.DefaultTransports(h.cfg)
		ir.Transports.Exec = func(tg podexec.Target) (string, []flux.Option, error) {
			mu.Lock()
			targets = append(targets, tg)
			mu.Unlock()
			return brokerMC.URI(), nil, nil
		}
	})
	uri := srv.URI("fluxbot", brokerSSH.SocketPath())
	viaSSH := h.createInstanceWith("ssh", fluxjobv1.FluxEndpointConnection{URI: uri, SecretRef: &fluxjobv1.SecretReference{Name: "ssh-ok"}}, &metav1.LabelSelector{}, false)
	noSecret := h.createInstanceWith("no-secret", fluxjobv1.FluxEndpointConnection{URI: uri, SecretRef: &fluxjobv1.SecretReference{Name: "nope"}}, &metav1.LabelSelector{}, false)
	wrongHost := h.createInstanceWith("wrong-host", fluxjobv1.FluxEndpointConnection{URI: uri, SecretRef: &fluxjobv1.SecretReference{Name: "ssh-wrong-host"}}, &metav1.LabelSelector{}, false)
	mc := h.createInstanceWith("mc", fluxjobv1.FluxEndpointConnection{MiniCluster: &fluxjobv1.MiniClusterConnection{Namespace: h.ns, Name: "flux-sample"}}, &metav1.LabelSelector{}, false)
	// Refused by the exec policy: a namespace not in ExecNamespaces, and
	// a command of the FluxEndpoint's own (AllowExecCommand is off).
	otherNS := h.createInstanceWith("mc-other-ns", fluxjobv1.FluxEndpointConnection{MiniCluster: &fluxjobv1.MiniClusterConnection{Namespace: "kube-system", Name: "flux-sample"}}, &metav1.LabelSelector{}, false)
	withCommand := h.createInstanceWith("pod-command", fluxjobv1.FluxEndpointConnection{Pod: &fluxjobv1.PodConnection{Namespace: h.ns, Name: "flux-sample-0-abcde",
		SocketPath: "/s", Command: []string{"/bin/sh", "-c", "cat /var/run/secrets/kubernetes.io/serviceaccount/token >&2"}}}, &metav1.LabelSelector{}, false)

	fi := h.waitInstance(viaSSH, 30*time.Second, "Ready over ssh", instanceReady)
	if fi.Status.Endpoint != uri || fi.Status.Version != testbroker.SimulatedVersion {
		t.Fatalf("ssh instance status %+v", fi.Status)
	}
	h.create("over-ssh", onInstance(viaSSH, "true"))
	obj := h.waitPhase("over-ssh", fluxjobv1.PhaseSucceeded, 30*time.Second)
	if !brokerHasJob(brokerSSH, obj.Status.JobID) {
		t.Fatalf("over-ssh: job %d not at the broker behind the SSH server (%v)", obj.Status.JobID, brokerSSH.Jobs())
	}
	if cmds := srv.Commands(); len(cmds) == 0 || !strings.Contains(cmds[0], "relay") || !strings.Contains(cmds[0], brokerSSH.SocketPath()) {
		t.Fatalf("commands run over ssh: %q", cmds)
	}

	fi = h.waitInstance(noSecret, 30*time.Second, "InvalidConnection", func(fi *fluxjobv1.FluxEndpoint) bool {
		s, r := instanceCondition(fi, fluxjobv1.InstanceConditionReady)
		return s == metav1.ConditionFalse && r == fluxjobv1.ReasonInvalidConnection
	})
	if c := meta.FindStatusCondition(fi.Status.Conditions, fluxjobv1.InstanceConditionReady); !strings.Contains(c.Message, "Secret "+h.ns+"/nope") {
		t.Fatalf("missing Secret: message %q", c.Message)
	}
	h.waitInstance(wrongHost, 30*time.Second, "ConnectFailed (host key mismatch)", func(fi *fluxjobv1.FluxEndpoint) bool {
		s, r := instanceCondition(fi, fluxjobv1.InstanceConditionConnected)
		return s == metav1.ConditionFalse && r == fluxjobv1.ReasonConnectFailed
	})
	// A FluxJob on an instance that cannot connect waits, unsubmitted.
	h.create("on-wrong-host", onInstance(wrongHost, "true"))
	h.waitFor("on-wrong-host", 30*time.Second, "FluxReachable=False", conditionIs(fluxjobv1.ConditionFluxReachable, metav1.ConditionFalse, fluxjobv1.ReasonFluxUnreachable))

	// MiniCluster: no lead broker pod yet; then a decoy with the lead
	// broker's labels and no owner (it sorts first: a lookup by labels
	// took it), which is refused; then the MiniCluster, its Job and the
	// Job's pod.
	h.waitInstance(mc, 30*time.Second, "InvalidConnection (no pod)", func(fi *fluxjobv1.FluxEndpoint) bool {
		s, r := instanceCondition(fi, fluxjobv1.InstanceConditionReady)
		return s == metav1.ConditionFalse && r == fluxjobv1.ReasonInvalidConnection
	})
	decoy := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: h.ns, Name: "flux-sample-0-aaaaa",
		Labels: map[string]string{"job-name": "flux-sample", "job-index": "0"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "flux-sample", Image: "ghcr.io/example/flux:latest"}}}}
	h.createRunningPod(decoy)
	h.waitInstance(mc, 30*time.Second, "InvalidConnection naming the decoy as not owned", func(fi *fluxjobv1.FluxEndpoint) bool {
		c := meta.FindStatusCondition(fi.Status.Conditions, fluxjobv1.InstanceConditionReady)
		return c != nil && c.Status == metav1.ConditionFalse && c.Reason == fluxjobv1.ReasonInvalidConnection &&
			strings.Contains(c.Message, "pod "+decoy.Name+": it has no controller ownerReference")
	})
	mu.Lock()
	for _, tg := range targets {
		if tg.Pod == decoy.Name {
			t.Fatalf("the manager execs into the decoy pod %s", decoy.Name)
		}
	}
	mu.Unlock()
	jobUID := h.createMiniCluster(h.ns, "flux-sample")
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: h.ns, Name: "flux-sample-0-abcde",
		Labels: map[string]string{"job-name": "flux-sample", "job-index": "0"}, OwnerReferences: controllerRef("batch/v1", "Job", "flux-sample", jobUID)},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "flux-sample", Image: "ghcr.io/example/flux:latest"}}}}
	h.createRunningPod(pod)
	h.waitInstance(mc, 30*time.Second, "Ready through the lead broker pod", instanceReady)
	mu.Lock()
	got := targets[len(targets)-1]
	mu.Unlock()
	want := podexec.Target{Namespace: h.ns, Pod: pod.Name, Container: "flux-sample", SocketPath: fluxjobv1.DefaultMiniClusterSocket}
	if got.Namespace != want.Namespace || got.Pod != want.Pod || got.Container != want.Container || got.SocketPath != want.SocketPath || len(got.Command) != 0 {
		t.Fatalf("exec target %+v, want %+v", got, want)
	}
	for _, tc := range []struct{ name, reason, msg string }{
		{otherNS, fluxjobv1.ReasonExecNamespaceNotAllowed, `spec.connection.miniCluster.namespace "kube-system" is not one of this manager's exec namespaces`},
		{withCommand, fluxjobv1.ReasonExecCommandNotAllowed, "spec.connection.pod.command is set"},
	} {
		fi := h.waitInstance(tc.name, 30*time.Second, tc.reason, func(fi *fluxjobv1.FluxEndpoint) bool {
			s, r := instanceCondition(fi, fluxjobv1.InstanceConditionReady)
			return s == metav1.ConditionFalse && r == tc.reason
		})
		if c := meta.FindStatusCondition(fi.Status.Conditions, fluxjobv1.InstanceConditionReady); !strings.Contains(c.Message, tc.msg) || fi.Status.Endpoint != "" {
			t.Errorf("%s: message %q endpoint %q, want %q and no endpoint", tc.name, c.Message, fi.Status.Endpoint, tc.msg)
		}
		h.waitInstanceEvent(tc.name, tc.reason, 30*time.Second)
	}
	mu.Lock()
	for _, tg := range targets {
		if tg.Namespace != h.ns || len(tg.Command) > 0 {
			t.Errorf("an exec target outside the policy was dialled: %+v", tg)
		}
	}
	mu.Unlock()
	h.create("on-minicluster", onInstance(mc, "true"))
	obj = h.waitPhase("on-minicluster", fluxjobv1.PhaseSucceeded, 30*time.Second)
	if !brokerHasJob(brokerMC, obj.Status.JobID) {
		t.Fatalf("on-minicluster: job %d not on the MiniCluster's broker", obj.Status.JobID)
	}
	if n := len(brokerSSH.Jobs()); n != 1 {
		t.Fatalf("the ssh broker has %d jobs, want 1 (the FluxJob on the unreachable instance must not be submitted)", n)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, tg := range targets {
		if tg.Pod == decoy.Name {
			t.Fatalf("the manager exec'd into the decoy pod %s", decoy.Name)
		}
	}
}

// waitInstanceEvent waits for an event with reason about the FluxEndpoint
// name (cluster-scoped: its events may be in any namespace).
func (h *harness) waitInstanceEvent(name, reason string, timeout time.Duration) {
	h.t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		var list eventsv1.EventList
		if err := h.c.List(context.Background(), &list); err == nil {
			for _, e := range list.Items {
				if e.Regarding.Name == name && e.Regarding.Kind == "FluxEndpoint" && e.Reason == reason && e.Type == corev1.EventTypeWarning {
					return
				}
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	h.t.Fatalf("no Warning event %s for FluxEndpoint %s within %s", reason, name, timeout)
}

// controllerRef is a controller ownerReference.
func controllerRef(apiVersion, kind, name string, uid types.UID) []metav1.OwnerReference {
	return []metav1.OwnerReference{{APIVersion: apiVersion, Kind: kind, Name: name, UID: uid, Controller: ptr.To(true)}}
}

// createRunningPod creates pod and sets its phase to Running (envtest runs
// no kubelet).
func (h *harness) createRunningPod(pod *corev1.Pod) {
	h.t.Helper()
	ctx := context.Background()
	if err := h.c.Create(ctx, pod); err != nil {
		h.t.Fatal(err)
	}
	pod.Status.Phase = corev1.PodRunning
	if err := h.c.Status().Update(ctx, pod); err != nil {
		h.t.Fatal(err)
	}
}

// createMiniCluster creates what flux-operator makes of a MiniCluster
// name in ns, without its pods: the MiniCluster (the stand-in CRD of
// testdata/crd) and its indexed Job, controlled by it. It returns the
// Job's UID, for the pods' ownerReferences.
func (h *harness) createMiniCluster(ns, name string) types.UID {
	h.t.Helper()
	ctx := context.Background()
	mc := &unstructured.Unstructured{}
	mc.SetAPIVersion("flux-framework.org/v1alpha2")
	mc.SetKind("MiniCluster")
	mc.SetNamespace(ns)
	mc.SetName(name)
	if err := h.c.Create(ctx, mc); err != nil {
		h.t.Fatalf("creating MiniCluster %s/%s: %v", ns, name, err)
	}
	job := &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, OwnerReferences: controllerRef("flux-framework.org/v1alpha2", "MiniCluster", name, mc.GetUID())},
		Spec: batchv1.JobSpec{CompletionMode: ptr.To(batchv1.IndexedCompletion), Completions: ptr.To(int32(1)), Parallelism: ptr.To(int32(1)),
			Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever,
				Containers: []corev1.Container{{Name: name, Image: "ghcr.io/example/flux:latest"}}}}}}
	if err := h.c.Create(ctx, job); err != nil {
		h.t.Fatalf("creating Job %s/%s: %v", ns, name, err)
	}
	return job.UID
}

// TestEnvtestInstanceHostileBroker: a broker that turns hostile (issue 19:
// a message over the instance's cap, then bytes that are not Flux messages)
// loses its connection with the reason in the FluxEndpoint's Connected and
// Ready conditions; the FluxJobs on it say FluxReachable=False and keep
// their phase; another instance's FluxJob runs to its end meanwhile; once
// the broker is sane again the instance is Ready and its FluxJob finishes.
func TestEnvtestInstanceHostileBroker(t *testing.T) {
	h := newHarness(t, testbroker.Options{TimeScale: 0.01}, Options{UnreachableRetry: 200 * time.Millisecond})
	brokerA, brokerB := h.broker, h.newBroker(testbroker.Options{TimeScale: 0.01})
	a := h.createInstanceWith("a", fluxjobv1.FluxEndpointConnection{URI: brokerA.URI()}, &metav1.LabelSelector{}, true)
	b := h.createInstance("b", brokerB, &metav1.LabelSelector{}, false)
	var fi fluxjobv1.FluxEndpoint
	if err := h.c.Get(context.Background(), types.NamespacedName{Name: a}, &fi); err != nil {
		t.Fatal(err)
	}
	fi.Spec.Executor.MaxMessageBytes = ptrTo(int32(1 << 20))
	fi.Spec.Executor.Keepalive = &metav1.Duration{Duration: time.Second}
	fi.Spec.Executor.KeepaliveTimeout = &metav1.Duration{Duration: 2 * time.Second}
	if err := h.c.Update(context.Background(), &fi); err != nil {
		t.Fatal(err)
	}
	h.startWithInstances()

	h.create("on-a", cmdSpec("sleep", "600")) // 6s at TimeScale 0.01
	h.waitPhase("on-a", fluxjobv1.PhaseRunning, 30*time.Second)
	for _, tc := range []struct {
		mode   testbroker.Hostile
		reason string
	}{
		{testbroker.HostileOversized, fluxjobv1.ReasonMessageTooLarge},
		{testbroker.HostileGarbage, fluxjobv1.ReasonMalformedMessage},
	} {
		brokerA.SetHostile(tc.mode)
		h.waitInstance(a, 30*time.Second, "Connected=False/"+tc.reason, func(fi *fluxjobv1.FluxEndpoint) bool {
			s, r := instanceCondition(fi, fluxjobv1.InstanceConditionConnected)
			rs, rr := instanceCondition(fi, fluxjobv1.InstanceConditionReady)
			return s == metav1.ConditionFalse && r == tc.reason && rs == metav1.ConditionFalse && rr == tc.reason
		})
		obj := h.waitFor("on-a", 30*time.Second, "FluxReachable=False",
			conditionIs(fluxjobv1.ConditionFluxReachable, metav1.ConditionFalse, fluxjobv1.ReasonFluxUnreachable))
		if obj.Status.Phase != fluxjobv1.PhaseRunning {
			t.Fatalf("%s: on-a is %s while its broker is hostile, want Running", tc.mode, obj.Status.Phase)
		}
		// The other instance is untouched.
		name := "on-b-" + tc.mode.String()
		h.create(name, onInstance(b, "true"))
		h.waitPhase(name, fluxjobv1.PhaseSucceeded, 30*time.Second)
		brokerA.SetHostile(testbroker.HostileNone)
		h.waitInstance(a, 30*time.Second, "Ready again", instanceReady)
	}
	h.waitPhase("on-a", fluxjobv1.PhaseSucceeded, 60*time.Second)
}
