package controllers

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/apimachinery/pkg/util/wait"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/testbroker"
	"github.com/fluxjob/fluxjob-operator/internal/broker"
	"github.com/fluxjob/fluxjob-operator/internal/jobspec"
	"github.com/fluxjob/fluxjob-operator/internal/recorder"
)

// The tests in this file run the controller for real: a kube-apiserver
// and etcd started by envtest (binaries in $KUBEBUILDER_ASSETS, which
// `make test` sets to bin/k8s), the CRD from config/crd/bases, the real
// fluxbridge.Executor, and fluxbridge/testbroker on a temporary unix
// socket.

var (
	envOnce sync.Once
	testEnv *envtest.Environment
	envCfg  *rest.Config
	envErr  error
)

// kubeConfig starts envtest once for the package (stopped in TestMain).
// Without KUBEBUILDER_ASSETS the test is skipped, or fails under CI=true.
func kubeConfig(t *testing.T) *rest.Config {
	t.Helper()
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		msg := "KUBEBUILDER_ASSETS is not set: these tests need the envtest binaries (kube-apiserver, etcd); " +
			"run `make test`, or hack/envtest.sh then KUBEBUILDER_ASSETS=$PWD/bin/k8s go test ./controllers/"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	envOnce.Do(func() {
		ctrl.SetLogger(zap.New(zap.UseDevMode(true), zap.WriteTo(testLogWriter{})))
		testEnv = &envtest.Environment{
			// testdata/crd: a stand-in for flux-operator's MiniCluster CRD.
			CRDDirectoryPaths:     []string{filepath.Join("..", "config", "crd", "bases"), filepath.Join("testdata", "crd")},
			ErrorIfCRDPathMissing: true,
		}
		envCfg, envErr = testEnv.Start()
	})
	if envErr != nil {
		t.Fatalf("starting envtest: %v", envErr)
	}
	return envCfg
}

// stopEnvtest stops envtest if it was started.
func stopEnvtest() error {
	if testEnv == nil || envCfg == nil {
		return nil
	}
	return testEnv.Stop()
}

// testLogWriter sends controller logs to stderr only when asked (-v and
// FLUXJOB_TEST_LOGS=1): they are long.
type testLogWriter struct{}

func (testLogWriter) Write(p []byte) (int, error) {
	if os.Getenv("FLUXJOB_TEST_LOGS") == "1" {
		return os.Stderr.Write(p)
	}
	return len(p), nil
}

func testScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		panic(err)
	}
	if err := fluxjobv1.AddToScheme(s); err != nil {
		panic(err)
	}
	return s
}

// countingClient counts the reconciler's writes per object name: status
// patches and object patches (the finalizer).
type countingClient struct {
	client.Client
	mu            sync.Mutex
	statusWrites  map[string]int
	objectWrites  map[string]int
	statusByPhase map[string][]string
}

func (c *countingClient) Patch(ctx context.Context, obj client.Object, patch client.Patch, opts ...client.PatchOption) error {
	err := c.Client.Patch(ctx, obj, patch, opts...)
	if err == nil {
		c.mu.Lock()
		c.objectWrites[obj.GetName()]++
		c.mu.Unlock()
	}
	return err
}

func (c *countingClient) Status() client.SubResourceWriter {
	return &countingStatus{SubResourceWriter: c.Client.Status(), c: c}
}

type countingStatus struct {
	client.SubResourceWriter
	c *countingClient
}

func (s *countingStatus) Patch(ctx context.Context, obj client.Object, patch client.Patch, opts ...client.SubResourcePatchOption) error {
	err := s.SubResourceWriter.Patch(ctx, obj, patch, opts...)
	if err == nil {
		s.c.mu.Lock()
		s.c.statusWrites[obj.GetName()]++
		if fj, ok := obj.(*fluxjobv1.FluxJob); ok {
			s.c.statusByPhase[obj.GetName()] = append(s.c.statusByPhase[obj.GetName()], string(fj.Status.Phase))
		}
		s.c.mu.Unlock()
	}
	return err
}

func (c *countingClient) writes(name string) (status, object int, phases []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.statusWrites[name], c.objectWrites[name], append([]string(nil), c.statusByPhase[name]...)
}

// writesAfter is writes once the last recorded status write of name is
// in phase, or after timeout: the API server (and so a test's read) can show
// a write before the counting client has recorded it.
func (c *countingClient) writesAfter(name string, phase fluxjobv1.FluxJobPhase, timeout time.Duration) (status, object int, phases []string) {
	for deadline := time.Now().Add(timeout); ; time.Sleep(10 * time.Millisecond) {
		status, object, phases = c.writes(name)
		if len(phases) > 0 && phases[len(phases)-1] == string(phase) || time.Now().After(deadline) {
			return status, object, phases
		}
	}
}

// harness is one test's world: a namespace, a test broker, and a manager
// that can be stopped and started again.
type harness struct {
	t      *testing.T
	cfg    *rest.Config
	c      client.Client // direct client, no cache
	broker *testbroker.Server
	ns     string
	opts   Options
	counts *countingClient
	// reg is the manager's instance registry (startWithInstances).
	reg *broker.Registry
	// extraNS are more namespaces the manager's cache holds.
	extraNS []string

	cancel context.CancelFunc
	done   chan error
}

func newHarness(t *testing.T, bopts testbroker.Options, opts Options) *harness {
	t.Helper()
	cfg := kubeConfig(t)
	c, err := client.New(cfg, client.Options{Scheme: testScheme()})
	if err != nil {
		t.Fatal(err)
	}
	b := testbroker.New(bopts)
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	ns := "t-" + rand.String(6)
	if err := c.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, cfg: cfg, c: c, broker: b, ns: ns, opts: opts}
	t.Cleanup(h.stop)
	t.Cleanup(h.cleanupObjects)
	return h
}

// start runs a new manager (as a restarted controller process would).
func (h *harness) start() {
	h.t.Helper()
	if h.cancel != nil {
		h.t.Fatal("manager already running")
	}
	mgr := h.newManager()
	conn := broker.NewConnector(testConnectorOptions(h.broker.URI()))
	if err := mgr.Add(conn); err != nil {
		h.t.Fatal(err)
	}
	h.run(mgr, &FluxJobReconciler{Flux: conn, Options: h.opts})
}

// testConnectorOptions are the connector settings of the envtest tests:
// fast reconnects and a short shutdown.
func testConnectorOptions(uri string) broker.ConnectorOptions {
	return broker.ConnectorOptions{
		URI: uri, Workers: 2, Logger: ctrl.Log.WithName("flux"),
		Backoff:         wait.Backoff{Duration: 50 * time.Millisecond, Factor: 2, Steps: 1 << 20, Cap: time.Second},
		CheckInterval:   50 * time.Millisecond,
		ShutdownTimeout: 500 * time.Millisecond,
	}
}

// newManager makes a manager whose cache holds the test's namespaces.
func (h *harness) newManager() ctrl.Manager {
	h.t.Helper()
	nss := map[string]cache.Config{h.ns: {}}
	for _, ns := range h.extraNS {
		nss[ns] = cache.Config{}
	}
	mgr, err := ctrl.NewManager(h.cfg, ctrl.Options{
		Scheme:                 testScheme(),
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Cache:                  cache.Options{DefaultNamespaces: nss},
		Controller:             config.Controller{SkipNameValidation: ptrTo(true)},
	})
	if err != nil {
		h.t.Fatal(err)
	}
	return mgr
}

// run completes r (client, scheme, recorder), sets it up with mgr and
// starts mgr; setup, if given, adds more to mgr first.
func (h *harness) run(mgr ctrl.Manager, r *FluxJobReconciler, setup ...func(ctrl.Manager, *recorder.Recorder)) {
	h.t.Helper()
	if h.counts == nil {
		h.counts = &countingClient{statusWrites: map[string]int{}, objectWrites: map[string]int{}, statusByPhase: map[string][]string{}}
	}
	h.counts.Client = mgr.GetClient()
	rec := recorder.New(mgr.GetClient(), mgr.GetScheme(), recorder.Options{Controller: "fluxjob-controller"})
	if err := mgr.Add(rec); err != nil {
		h.t.Fatal(err)
	}
	r.Client, r.Scheme, r.Recorder = h.counts, mgr.GetScheme(), rec
	if err := r.SetupWithManager(mgr); err != nil {
		h.t.Fatal(err)
	}
	for _, fn := range setup {
		fn(mgr, rec)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel, h.done = cancel, make(chan error, 1)
	go func() { h.done <- mgr.Start(ctx) }()
}

// stop stops the manager and waits for it.
func (h *harness) stop() {
	if h.cancel == nil {
		return
	}
	h.cancel()
	select {
	case err := <-h.done:
		if err != nil {
			h.t.Errorf("manager: %v", err)
		}
	case <-time.After(60 * time.Second):
		h.t.Error("manager did not stop within 60s")
	}
	h.cancel = nil
}

// cleanupObjects deletes the test's FluxJobs without the controller (it
// strips finalizers) so the namespace does not keep stuck objects.
func (h *harness) cleanupObjects() {
	ctx := context.Background()
	var list fluxjobv1.FluxJobList
	for _, ns := range append([]string{h.ns}, h.extraNS...) {
		var l fluxjobv1.FluxJobList
		if err := h.c.List(ctx, &l, client.InNamespace(ns)); err == nil {
			list.Items = append(list.Items, l.Items...)
		}
	}
	for i := range list.Items {
		o := &list.Items[i]
		if len(o.Finalizers) > 0 {
			base := o.DeepCopy()
			o.Finalizers = nil
			_ = h.c.Patch(ctx, o, client.MergeFrom(base))
		}
		_ = h.c.Delete(ctx, o)
	}
}

func ptrTo[T any](v T) *T { return &v }

func (h *harness) create(name string, spec fluxjobv1.FluxJobSpec) *fluxjobv1.FluxJob {
	h.t.Helper()
	obj := &fluxjobv1.FluxJob{ObjectMeta: metav1.ObjectMeta{Namespace: h.ns, Name: name}, Spec: spec}
	if err := h.c.Create(context.Background(), obj); err != nil {
		h.t.Fatalf("creating FluxJob %s: %v", name, err)
	}
	return obj
}

func (h *harness) get(name string) (*fluxjobv1.FluxJob, error) {
	return h.getIn(h.ns, name)
}

func (h *harness) getIn(ns, name string) (*fluxjobv1.FluxJob, error) {
	var obj fluxjobv1.FluxJob
	err := h.c.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, &obj)
	return &obj, err
}

// waitFor polls the FluxJob until cond is true, failing after timeout.
func (h *harness) waitFor(name string, timeout time.Duration, what string, cond func(*fluxjobv1.FluxJob) bool) *fluxjobv1.FluxJob {
	h.t.Helper()
	return h.waitForIn(h.ns, name, timeout, what, cond)
}

// waitForIn is waitFor for a FluxJob in namespace ns.
func (h *harness) waitForIn(ns, name string, timeout time.Duration, what string, cond func(*fluxjobv1.FluxJob) bool) *fluxjobv1.FluxJob {
	h.t.Helper()
	var last *fluxjobv1.FluxJob
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		obj, err := h.getIn(ns, name)
		if err == nil {
			last = obj
			if cond(obj) {
				return obj
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	if last != nil {
		h.t.Fatalf("FluxJob %s: timed out after %s waiting for %s; phase %q message %q conditions %v",
			name, timeout, what, last.Status.Phase, last.Status.Message, conditionSummary(last))
	}
	h.t.Fatalf("FluxJob %s: timed out waiting for %s (object never read)", name, what)
	return nil
}

func (h *harness) waitPhase(name string, phase fluxjobv1.FluxJobPhase, timeout time.Duration) *fluxjobv1.FluxJob {
	h.t.Helper()
	return h.waitFor(name, timeout, "phase "+string(phase), func(o *fluxjobv1.FluxJob) bool { return o.Status.Phase == phase })
}

func conditionSummary(o *fluxjobv1.FluxJob) string {
	var parts []string
	for _, c := range o.Status.Conditions {
		parts = append(parts, fmt.Sprintf("%s=%s/%s", c.Type, c.Status, c.Reason))
	}
	return strings.Join(parts, " ")
}

func requireCondition(t *testing.T, o *fluxjobv1.FluxJob, typ string, status metav1.ConditionStatus, reason string) {
	t.Helper()
	c := meta.FindStatusCondition(o.Status.Conditions, typ)
	if c == nil {
		t.Fatalf("condition %s missing; have %s", typ, conditionSummary(o))
	}
	if c.Status != status || (reason != "" && c.Reason != reason) {
		t.Fatalf("condition %s = %s/%s, want %s/%s (%s)", typ, c.Status, c.Reason, status, reason, c.Message)
	}
	if c.ObservedGeneration != o.Generation {
		t.Fatalf("condition %s observedGeneration %d, object generation %d", typ, c.ObservedGeneration, o.Generation)
	}
}

// waitEvent waits for a Kubernetes event with reason about the FluxJob.
func (h *harness) waitEvent(name, reason string, timeout time.Duration) eventsv1.Event {
	h.t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		var list eventsv1.EventList
		if err := h.c.List(context.Background(), &list, client.InNamespace(h.ns)); err == nil {
			for _, e := range list.Items {
				if e.Regarding.Name == name && e.Reason == reason {
					return e
				}
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	h.t.Fatalf("no event %s for FluxJob %s within %s", reason, name, timeout)
	return eventsv1.Event{}
}

// brokerEvents returns the names of the events in a job's eventlog.
func (h *harness) brokerEvents(id job.ID) []job.Event {
	h.t.Helper()
	log, ok := h.broker.Eventlog(id)
	if !ok {
		h.t.Fatalf("broker has no job %s", id)
	}
	evs, err := job.ParseEventlog([]byte(log))
	if err != nil {
		h.t.Fatalf("parsing eventlog of %s: %v", id, err)
	}
	return evs
}

func eventNames(evs []fluxjobv1.FluxJobEvent) []string {
	var out []string
	for _, e := range evs {
		out = append(out, e.Name)
	}
	return out
}

func cmdSpec(cmd ...string) fluxjobv1.FluxJobSpec {
	return fluxjobv1.FluxJobSpec{Command: cmd}
}

func TestEnvtestHelloSucceeds(t *testing.T) {
	h := newHarness(t, testbroker.Options{Delays: testbroker.RealisticDelays()}, Options{})
	h.start()
	h.create("hello", fluxjobv1.FluxJobSpec{Command: []string{"echo", "hello"},
		Env: []fluxjobv1.EnvVar{{Name: "SECRET_TOKEN", Value: "s3cr3t-value"}}})
	obj := h.waitPhase("hello", fluxjobv1.PhaseSucceeded, 30*time.Second)

	if obj.Status.ExitStatus == nil || *obj.Status.ExitStatus != 0 {
		t.Fatalf("exitStatus = %v, want 0", obj.Status.ExitStatus)
	}
	if obj.Status.JobID == 0 || obj.Status.JobIDF58 != job.ID(obj.Status.JobID).F58() {
		t.Fatalf("job ID %d / %q", obj.Status.JobID, obj.Status.JobIDF58)
	}
	for _, c := range []string{fluxjobv1.ConditionSubmitted, fluxjobv1.ConditionSucceeded, fluxjobv1.ConditionReady} {
		requireCondition(t, obj, c, metav1.ConditionTrue, "")
	}
	requireCondition(t, obj, fluxjobv1.ConditionFailed, metav1.ConditionFalse, "")
	if meta.FindStatusCondition(obj.Status.Conditions, fluxjobv1.ConditionReconciling) != nil {
		t.Fatal("Reconciling still present on a finished job")
	}
	names := strings.Join(eventNames(obj.Status.Events), ",")
	for _, want := range []string{"submit", "alloc", "start", "finish"} {
		if !strings.Contains(names, want) {
			t.Fatalf("status.events %s lacks %s", names, want)
		}
	}
	if obj.Status.SubmitTime == nil || obj.Status.StartTime == nil || obj.Status.CompletionTime == nil || obj.Status.Duration == nil {
		t.Fatalf("times not set: %+v", obj.Status)
	}
	if obj.Status.ObservedGeneration != obj.Generation {
		t.Fatalf("observedGeneration %d, generation %d", obj.Status.ObservedGeneration, obj.Generation)
	}
	// One Flux job, named after the UID, owned by this FluxJob.
	if ids := h.broker.Jobs(); len(ids) != 1 || int64(ids[0]) != obj.Status.JobID {
		t.Fatalf("broker jobs %v, status job %d", ids, obj.Status.JobID)
	}
	if !hasFinalizer(obj) {
		t.Fatal("finalizer missing")
	}
	// Its only annotation is the submission marker, which the status
	// repeats.
	m, ok := annotationMarker(obj)
	if obj.Labels != nil || len(obj.Annotations) != 1 || !ok {
		t.Fatalf("controller wrote labels %v or annotations %v, want only its marker", obj.Labels, obj.Annotations)
	}
	if at := obj.Status.SubmitAttemptTime; at == nil || !at.Equal(m.At.Time) || obj.Status.Instance != m.Instance || obj.Status.InstanceID != m.InstanceID {
		t.Fatalf("status submitAttemptTime %v, instance %q/%q; the marker says %+v", at, obj.Status.Instance, obj.Status.InstanceID, m)
	}
	h.waitEvent("hello", "Succeeded", 10*time.Second)

	status, object, phases := h.counts.writes("hello")
	t.Logf("writes for one job: %d status patches (phases %v), %d object patches (finalizer)", status, phases, object)
	if status > 5 {
		t.Fatalf("%d status writes for one job (phases %v), want at most 5", status, phases)
	}
	if object != 1 {
		t.Fatalf("%d object writes, want 1 (the marker with the finalizer)", object)
	}
	// The status is final: a restarted controller reconciles it (from
	// its initial list) and writes nothing.
	h.restartAndSettle(1)
	if s2, _, _ := h.counts.writes("hello"); s2 != status {
		t.Fatalf("a restart wrote the finished status again (%d -> %d writes)", status, s2)
	}
}

func hasFinalizer(o *fluxjobv1.FluxJob) bool {
	for _, f := range o.Finalizers {
		if f == fluxjobv1.CancelFinalizer {
			return true
		}
	}
	return false
}

func TestEnvtestExitStatuses(t *testing.T) {
	h := newHarness(t, testbroker.Options{}, Options{})
	h.start()
	tests := []struct {
		name   string
		cmd    []string
		phase  fluxjobv1.FluxJobPhase
		exit   int32
		reason string
	}{
		{"false", []string{"false"}, fluxjobv1.PhaseFailed, 1, fluxjobv1.ReasonNonZeroExit},
		{"exit3", []string{"exit", "3"}, fluxjobv1.PhaseFailed, 3, fluxjobv1.ReasonNonZeroExit},
		{"signalled", []string{"kill-shell", "9"}, fluxjobv1.PhaseFailed, -9, fluxjobv1.ReasonSignaled},
		{"notfound", []string{"no-such-program"}, fluxjobv1.PhaseFailed, 127, fluxjobv1.ReasonException},
	}
	for _, tc := range tests {
		h.create(tc.name, cmdSpec(tc.cmd...))
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			obj := h.waitPhase(tc.name, tc.phase, 30*time.Second)
			if obj.Status.ExitStatus == nil || *obj.Status.ExitStatus != tc.exit {
				t.Fatalf("exitStatus = %v, want %d", obj.Status.ExitStatus, tc.exit)
			}
			requireCondition(t, obj, fluxjobv1.ConditionFailed, metav1.ConditionTrue, tc.reason)
			requireCondition(t, obj, fluxjobv1.ConditionStalled, metav1.ConditionTrue, tc.reason)
			requireCondition(t, obj, fluxjobv1.ConditionReady, metav1.ConditionFalse, tc.reason)
		})
	}
	h.waitEvent("false", fluxjobv1.ReasonNonZeroExit, 10*time.Second)
}

func TestEnvtestInvalidJobspec(t *testing.T) {
	h := newHarness(t, testbroker.Options{}, Options{})
	h.start()
	// Accepted by the CRD schema (version 1, resources, tasks, attributes),
	// refused by the broker's validator.
	raw := `{"version":1,"resources":[{"type":"slot","count":1,"label":"task","with":[{"type":"core","count":1}]}],` +
		`"tasks":[{"command":["true"],"slot":"task","count":{"per_slot":1}}],"attributes":{"system":{"duration":"soon"}}}`
	h.create("bad", fluxjobv1.FluxJobSpec{Jobspec: &runtime.RawExtension{Raw: []byte(raw)}})
	obj := h.waitPhase("bad", fluxjobv1.PhaseFailed, 30*time.Second)
	requireCondition(t, obj, fluxjobv1.ConditionFailed, metav1.ConditionTrue, fluxjobv1.ReasonInvalidJobspec)
	requireCondition(t, obj, fluxjobv1.ConditionSubmitted, metav1.ConditionFalse, fluxjobv1.ReasonInvalidJobspec)
	if !strings.Contains(obj.Status.Message, "Flux rejected the jobspec: ") || !strings.Contains(obj.Status.Message, "duration must be a number") {
		t.Fatalf("message %q does not quote the broker", obj.Status.Message)
	}
	if len(h.broker.Jobs()) != 0 {
		t.Fatalf("broker has jobs %v", h.broker.Jobs())
	}
	ev := h.waitEvent("bad", fluxjobv1.ReasonInvalidJobspec, 10*time.Second)
	if ev.Type != corev1.EventTypeWarning {
		t.Fatalf("event type %s, want Warning", ev.Type)
	}
	// Never retried: a restarted controller reconciles it again, and the
	// status stays put and nothing more is submitted.
	status, _, _ := h.counts.writes("bad")
	h.restartAndSettle(1)
	if s2, _, _ := h.counts.writes("bad"); s2 != status {
		t.Fatalf("status rewritten after the failure (%d -> %d)", status, s2)
	}
	if len(h.broker.Jobs()) != 0 {
		t.Fatalf("broker has jobs %v after the restart: the rejected jobspec was submitted again", h.broker.Jobs())
	}
	// Deleting a failed FluxJob removes it at once.
	if err := h.c.Delete(context.Background(), obj); err != nil {
		t.Fatal(err)
	}
	h.waitGone("bad", 10*time.Second)
}

func (h *harness) waitGone(name string, timeout time.Duration) {
	h.t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if _, err := h.get(name); apierrors.IsNotFound(err) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	h.t.Fatalf("FluxJob %s still exists after %s", name, timeout)
}

func TestEnvtestUrgencyChange(t *testing.T) {
	h := newHarness(t, testbroker.Options{}, Options{})
	h.broker.PauseScheduling(true) // keep the job pending
	h.start()
	h.create("urgent", cmdSpec("true"))
	obj := h.waitFor("urgent", 30*time.Second, "urgency 16 in status", func(o *fluxjobv1.FluxJob) bool {
		return o.Status.Urgency != nil && *o.Status.Urgency == 16 && o.Status.Phase == fluxjobv1.PhaseSubmitted
	})
	base := obj.DeepCopy()
	obj.Spec.Urgency = ptrTo(int32(5))
	if err := h.c.Patch(context.Background(), obj, client.MergeFrom(base)); err != nil {
		t.Fatal(err)
	}
	obj = h.waitFor("urgent", 30*time.Second, "urgency 5 in status", func(o *fluxjobv1.FluxJob) bool {
		return o.Status.Urgency != nil && *o.Status.Urgency == 5 && o.Status.ObservedGeneration == o.Generation
	})
	var seen bool
	for _, ev := range h.brokerEvents(job.ID(obj.Status.JobID)) {
		if ev.Name == "urgency" {
			if u, _ := job.ContextInt(ev.Context, "urgency"); u == 5 {
				seen = true
			}
		}
	}
	if !seen {
		t.Fatal("the broker's eventlog has no urgency=5 event")
	}
	h.waitEvent("urgent", "UrgencyChanged", 10*time.Second)
	h.broker.PauseScheduling(false)
	h.waitPhase("urgent", fluxjobv1.PhaseSucceeded, 30*time.Second)
}

func TestEnvtestUrgencyRejected(t *testing.T) {
	// A short resync: the running job is reconciled every 200ms, so "no
	// hot loop" is checked over reconciles that happened, not over a sleep.
	h := newHarness(t, testbroker.Options{}, Options{Resync: 200 * time.Millisecond})
	h.start()
	h.create("running", cmdSpec("sleep", "60"))
	obj := h.waitPhase("running", fluxjobv1.PhaseRunning, 30*time.Second)
	base := obj.DeepCopy()
	obj.Spec.Urgency = ptrTo(int32(3))
	if err := h.c.Patch(context.Background(), obj, client.MergeFrom(base)); err != nil {
		t.Fatal(err)
	}
	// Flux refuses once resources are allocated (EINVAL): condition + Warning, not Failed.
	obj = h.waitFor("running", 30*time.Second, "UrgencyApplied=False", func(o *fluxjobv1.FluxJob) bool {
		c := meta.FindStatusCondition(o.Status.Conditions, fluxjobv1.ConditionUrgencyApplied)
		return c != nil && c.Status == metav1.ConditionFalse
	})
	if obj.Status.Phase != fluxjobv1.PhaseRunning {
		t.Fatalf("phase %s, want Running", obj.Status.Phase)
	}
	h.waitEvent("running", fluxjobv1.ReasonUrgencyRejected, 10*time.Second)
	// No hot loop: three more reconciles write nothing and send no
	// other urgency request. The event is emitted before the status write
	// that records the rejection, so the count is taken only after one
	// more reconcile has ended.
	before, _ := reconcileCount(t)
	h.waitReconciles(before, 1, 30*time.Second)
	s1, _, _ := h.counts.writes("running")
	before, _ = reconcileCount(t)
	h.waitReconciles(before, 3, 30*time.Second)
	if s2, _, _ := h.counts.writes("running"); s2 != s1 {
		t.Fatalf("status kept changing after the rejection (%d -> %d)", s1, s2)
	}
}

func TestEnvtestDeleteRunningCancels(t *testing.T) {
	h := newHarness(t, testbroker.Options{}, Options{})
	h.start()
	h.create("long", cmdSpec("sleep", "300"))
	obj := h.waitPhase("long", fluxjobv1.PhaseRunning, 30*time.Second)
	id := job.ID(obj.Status.JobID)
	if err := h.c.Delete(context.Background(), obj); err != nil {
		t.Fatal(err)
	}
	h.waitGone("long", 20*time.Second)
	var cancelled, clean bool
	for _, ev := range h.brokerEvents(id) {
		if ev.Name == "exception" && ev.Context["type"] == "cancel" {
			cancelled = true
		}
		clean = clean || ev.Name == "clean"
	}
	if !cancelled || !clean {
		t.Fatalf("Flux job %s not cancelled and cleaned at the broker: %v", id, h.brokerEvents(id))
	}
}

func TestEnvtestRestartReattachesWithoutDuplicate(t *testing.T) {
	h := newHarness(t, testbroker.Options{TimeScale: 0.01}, Options{})
	h.start()
	h.create("restart", cmdSpec("sleep", "200")) // 2s
	h.waitPhase("restart", fluxjobv1.PhaseRunning, 30*time.Second)
	h.stop()
	h.start() // a new manager: new executor, empty tracker
	obj := h.waitPhase("restart", fluxjobv1.PhaseSucceeded, 30*time.Second)
	if ids := h.broker.Jobs(); len(ids) != 1 || int64(ids[0]) != obj.Status.JobID {
		t.Fatalf("broker jobs %v, want only %d", ids, obj.Status.JobID)
	}
	names := strings.Join(eventNames(obj.Status.Events), ",")
	if !strings.Contains(names, "submit") || !strings.Contains(names, "finish") {
		t.Fatalf("events after re-attach: %s", names)
	}
}

// TestEnvtestCrashBetweenSubmitAndStatusWrite plays a controller that
// died after Flux accepted the job but before the job ID reached the
// status: the marker is there, the job exists, the status has no ID. The
// next manager must adopt the job, not submit another.
func TestEnvtestCrashBetweenSubmitAndStatusWrite(t *testing.T) {
	h := newHarness(t, testbroker.Options{}, Options{})
	obj := h.create("crash", cmdSpec("true"))
	h.markAt(obj, time.Now())
	spec, fail := jobspec.Build(obj)
	if fail != nil {
		t.Fatal(fail.Message)
	}
	id := submitDirect(t, h.broker.URI(), spec)
	h.start()
	obj = h.waitPhase("crash", fluxjobv1.PhaseSucceeded, 30*time.Second)
	if job.ID(obj.Status.JobID) != id {
		t.Fatalf("status job %d, want the adopted %d", obj.Status.JobID, id)
	}
	if ids := h.broker.Jobs(); len(ids) != 1 {
		t.Fatalf("broker has %d jobs (%v), want 1: submitted twice", len(ids), ids)
	}
	h.waitEvent("crash", "Adopted", 10*time.Second)
}

// TestEnvtestStaleMarkerResubmits: a marker older than the adopt window
// with no job at the broker means the earlier attempt never reached Flux:
// submit (once).
func TestEnvtestStaleMarkerResubmits(t *testing.T) {
	h := newHarness(t, testbroker.Options{}, Options{AdoptWindow: time.Second})
	obj := h.create("stale", cmdSpec("true"))
	h.markAt(obj, time.Now().Add(-time.Minute))
	h.start()
	h.waitPhase("stale", fluxjobv1.PhaseSucceeded, 30*time.Second)
	if n := len(h.broker.Jobs()); n != 1 {
		t.Fatalf("broker has %d jobs, want 1", n)
	}
}

func TestEnvtestNamespaceNotAllowed(t *testing.T) {
	h := newHarness(t, testbroker.Options{}, Options{AllowedNamespaces: []string{"somewhere-else"}})
	h.start()
	h.create("refused", cmdSpec("true"))
	obj := h.waitPhase("refused", fluxjobv1.PhaseFailed, 30*time.Second)
	requireCondition(t, obj, fluxjobv1.ConditionFailed, metav1.ConditionTrue, fluxjobv1.ReasonNamespaceNotAllowed)
	requireCondition(t, obj, fluxjobv1.ConditionStalled, metav1.ConditionTrue, fluxjobv1.ReasonNamespaceNotAllowed)
	if n := len(h.broker.Jobs()); n != 0 {
		t.Fatalf("broker has %d jobs, want none", n)
	}
	if hasFinalizer(obj) {
		t.Fatal("a refused FluxJob got a finalizer")
	}
	h.waitEvent("refused", fluxjobv1.ReasonNamespaceNotAllowed, 10*time.Second)
}

func TestEnvtestBrokerConnectionLost(t *testing.T) {
	h := newHarness(t, testbroker.Options{TimeScale: 0.01}, Options{UnreachableRetry: 200 * time.Millisecond})
	h.start()
	h.create("survivor", cmdSpec("sleep", "300")) // 3s
	h.waitPhase("survivor", fluxjobv1.PhaseRunning, 30*time.Second)
	h.broker.SetConnectError(111) // ECONNREFUSED accept byte: stay unreachable
	if err := h.broker.DropConnections(); err != nil {
		t.Fatal(err)
	}
	obj := h.waitFor("survivor", 30*time.Second, "FluxReachable=False", func(o *fluxjobv1.FluxJob) bool {
		c := meta.FindStatusCondition(o.Status.Conditions, fluxjobv1.ConditionFluxReachable)
		return c != nil && c.Status == metav1.ConditionFalse
	})
	if obj.Status.Phase != fluxjobv1.PhaseRunning {
		t.Fatalf("phase %s while unreachable, want Running (not Failed)", obj.Status.Phase)
	}
	h.broker.SetConnectError(0)
	obj = h.waitPhase("survivor", fluxjobv1.PhaseSucceeded, 30*time.Second)
	requireCondition(t, obj, fluxjobv1.ConditionFluxReachable, metav1.ConditionTrue, fluxjobv1.ReasonFluxReachable)
	if n := len(h.broker.Jobs()); n != 1 {
		t.Fatalf("broker has %d jobs, want 1", n)
	}
}

func TestEnvtestBrokerRestartLosesJobs(t *testing.T) {
	h := newHarness(t, testbroker.Options{}, Options{UnreachableRetry: 200 * time.Millisecond})
	h.start()
	h.create("lost", cmdSpec("sleep", "300"))
	h.waitPhase("lost", fluxjobv1.PhaseRunning, 30*time.Second)
	if err := h.broker.Restart(false); err != nil {
		t.Fatal(err)
	}
	obj := h.waitPhase("lost", fluxjobv1.PhaseFailed, 30*time.Second)
	requireCondition(t, obj, fluxjobv1.ConditionFailed, metav1.ConditionTrue, fluxjobv1.ReasonInstanceReplaced)
}

// submitDirect submits a jobspec straight to the broker, as a controller
// that then crashed would have.
func submitDirect(t *testing.T, uri string, spec []byte) job.ID {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := flux.Dial(ctx, uri)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	id, err := job.Submit(ctx, conn, spec, job.SubmitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// Wait until job-list lists it, as it would long before a restart.
	for {
		ids, err := broker.Lookup(ctx, conn, mustName(spec), 0, time.Second)
		if err == nil && len(ids) == 1 {
			return id
		}
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			t.Fatalf("job-list never listed job %s", id)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func mustName(spec []byte) string {
	js, err := job.Parse(spec)
	if err != nil {
		panic(err)
	}
	return js.JobName()
}
