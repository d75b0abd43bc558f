package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
	"github.com/fluxjob/fluxjob-operator/controllers"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux/fluxtest"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/testbroker"
	fluxbroker "github.com/fluxjob/fluxjob-operator/internal/broker"
)

// The plugin's tests run it end to end: a real kube-apiserver (envtest,
// binaries in $KUBEBUILDER_ASSETS) read through a kubeconfig file, the
// real controller submitting FluxJobs to the test broker, and the plugin
// reaching the broker with --flux-uri.

var (
	envOnce sync.Once
	testEnv *envtest.Environment
	envCfg  *rest.Config
	envErr  error
)

func TestMain(m *testing.M) {
	// `flux relay` in the pod of TestLogsThroughPodExec is this binary
	// re-executed as a relay (fluxtest.WriteRelayShim)
	fluxtest.RunRelayIfChild()
	code := m.Run()
	if testEnv != nil && envCfg != nil {
		if err := testEnv.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stopping envtest:", err)
			code = 1
		}
	}
	if code == 0 {
		if err := goleak.Find(goleak.IgnoreTopFunction("k8s.io/klog/v2.(*flushDaemon).run.func1"),
			// client-go's WebSocket exec keeps its heartbeat goroutine until
			// its next ping period after the connection closed
			goleak.IgnoreTopFunction("k8s.io/client-go/tools/remotecommand.(*heartbeat).start")); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

func kubeConfig(t *testing.T) *rest.Config {
	t.Helper()
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		msg := "KUBEBUILDER_ASSETS is not set: these tests need the envtest binaries (kube-apiserver, etcd); run `make test`"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	envOnce.Do(func() {
		testEnv = &envtest.Environment{
			CRDDirectoryPaths:     []string{filepath.Join("..", "..", "config", "crd", "bases")},
			ErrorIfCRDPathMissing: true,
		}
		envCfg, envErr = testEnv.Start()
	})
	if envErr != nil {
		t.Fatalf("starting envtest: %v", envErr)
	}
	return envCfg
}

// world is one test's namespace, kubeconfig file, test broker and manager.
type world struct {
	t          *testing.T
	c          client.Client
	ns         string
	kubeconfig string
	broker     *testbroker.Server
	scheme     *runtime.Scheme
}

func newWorld(t *testing.T, bopts testbroker.Options) *world {
	t.Helper()
	w := newCluster(t, bopts)
	w.startManager(w.scheme, kubeConfig(t))
	return w
}

// newCluster is a world without a manager: the test plays its part.
func newCluster(t *testing.T, bopts testbroker.Options) *world {
	t.Helper()
	cfg := kubeConfig(t)
	s, err := scheme()
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(cfg, client.Options{Scheme: s})
	if err != nil {
		t.Fatal(err)
	}
	ns := "p-" + rand.String(6)
	if err := c.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	w := &world{t: t, c: c, ns: ns, kubeconfig: writeKubeconfig(t, cfg, ns), scheme: s}
	w.broker = testbroker.New(bopts)
	if err := w.broker.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.broker.Close() })
	return w
}

// writeKubeconfig writes a kubeconfig for cfg's admin user whose context
// defaults to namespace ns.
func writeKubeconfig(t *testing.T, cfg *rest.Config, ns string) string {
	t.Helper()
	kc := clientcmdapi.NewConfig()
	kc.Clusters["envtest"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	kc.AuthInfos["admin"] = &clientcmdapi.AuthInfo{ClientCertificateData: cfg.CertData, ClientKeyData: cfg.KeyData, Token: cfg.BearerToken}
	kc.Contexts["envtest"] = &clientcmdapi.Context{Cluster: "envtest", AuthInfo: "admin", Namespace: ns}
	kc.CurrentContext = "envtest"
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// startManager runs the FluxJob controller against the test broker.
func (w *world) startManager(s *runtime.Scheme, cfg *rest.Config) {
	t := w.t
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 s,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Cache:                  cache.Options{DefaultNamespaces: map[string]cache.Config{w.ns: {}}},
		Controller:             config.Controller{SkipNameValidation: ptrTo(true)},
	})
	if err != nil {
		t.Fatal(err)
	}
	conn := fluxbroker.NewConnector(fluxbroker.ConnectorOptions{
		URI: w.broker.URI(), Workers: 1,
		Backoff:         wait.Backoff{Duration: 50 * time.Millisecond, Factor: 2, Steps: 1 << 20, Cap: time.Second},
		CheckInterval:   50 * time.Millisecond,
		ShutdownTimeout: 500 * time.Millisecond,
	})
	if err := mgr.Add(conn); err != nil {
		t.Fatal(err)
	}
	// the test broker is the implicit instance "default"; FluxEndpoints
	// are reached as the manager reaches them (pods/exec through the API
	// server)
	reg := fluxbroker.NewRegistry(fluxbroker.ConnectorOptions{
		Backoff:       wait.Backoff{Duration: 50 * time.Millisecond, Factor: 2, Steps: 1 << 20, Cap: time.Second},
		CheckInterval: 50 * time.Millisecond, ShutdownTimeout: 500 * time.Millisecond,
	})
	if err := mgr.Add(reg); err != nil {
		t.Fatal(err)
	}
	reg.SetImplicit("default", conn)
	r := &controllers.FluxJobReconciler{Client: mgr.GetClient(), Scheme: mgr.GetScheme(), Instances: reg}
	if err := r.SetupWithManager(mgr); err != nil {
		t.Fatal(err)
	}
	// The world's namespace is the one exec namespace (as with
	// config/components/pod-exec listing it).
	ir := &controllers.FluxEndpointReconciler{Client: mgr.GetClient(), Registry: reg, Transports: fluxbroker.DefaultTransports(cfg),
		StatusInterval: time.Second, RetryInterval: 200 * time.Millisecond, ExecNamespaces: []string{w.ns}}
	if err := ir.SetupWithManager(mgr); err != nil {
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

func ptrTo[T any](v T) *T { return &v }

func (w *world) create(name string, spec fluxjobv1.FluxJobSpec) {
	w.t.Helper()
	obj := &fluxjobv1.FluxJob{ObjectMeta: metav1.ObjectMeta{Namespace: w.ns, Name: name}, Spec: spec}
	if err := w.c.Create(context.Background(), obj); err != nil {
		w.t.Fatal(err)
	}
}

func (w *world) waitFor(name string, what string, cond func(*fluxjobv1.FluxJob) bool) *fluxjobv1.FluxJob {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var obj fluxjobv1.FluxJob
	for {
		err := w.c.Get(ctx, client.ObjectKey{Namespace: w.ns, Name: name}, &obj)
		if err == nil && cond(&obj) {
			return &obj
		}
		select {
		case <-ctx.Done():
			w.t.Fatalf("FluxJob %s: waiting for %s: %v (status %+v)", name, what, ctx.Err(), obj.Status)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (w *world) waitPhase(name string, p fluxjobv1.FluxJobPhase) *fluxjobv1.FluxJob {
	w.t.Helper()
	return w.waitFor(name, "phase "+string(p), func(o *fluxjobv1.FluxJob) bool { return o.Status.Phase == p })
}

// plugin runs the plugin with args (plus the world's kubeconfig and the
// broker's URI) and returns what it wrote.
func (w *world) plugin(ctx context.Context, stdout, stderr io.Writer, args ...string) error {
	args = append(args, "--kubeconfig", w.kubeconfig, "--flux-uri", w.broker.URI())
	return run(ctx, args, env{stdout: stdout, stderr: stderr})
}

func (w *world) pluginOut(args ...string) (string, string, error) {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var out, errb bytes.Buffer
	err := w.plugin(ctx, &out, &errb, args...)
	return out.String(), errb.String(), err
}

func TestLogs(t *testing.T) {
	w := newWorld(t, testbroker.Options{})
	w.create("both", fluxjobv1.FluxJobSpec{Command: []string{"sh", "-c", "echo out; echo err >&2; printf 'bin\\xff\\n'"}, Tasks: ptrTo[int32](2)})
	w.waitPhase("both", fluxjobv1.PhaseSucceeded)
	tests := []struct {
		name       string
		args       []string
		out, errut string
	}{
		{"both streams", nil, "out\nout\nbin\xff\nbin\xff\n", "err\nerr\n"},
		{"stdout", []string{"--stdout"}, "out\nout\nbin\xff\nbin\xff\n", ""},
		{"stderr to stdout", []string{"--stderr"}, "err\nerr\n", ""},
		{"rank", []string{"--rank", "1"}, "out\nbin\xff\n", "err\n"},
		{"follow a finished job", []string{"-f"}, "out\nout\nbin\xff\nbin\xff\n", "err\nerr\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, errs, err := w.pluginOut(append([]string{"logs", "both"}, tc.args...)...)
			if err != nil {
				t.Fatal(err)
			}
			if out != tc.out || errs != tc.errut {
				t.Fatalf("stdout %q stderr %q, want %q %q", out, errs, tc.out, tc.errut)
			}
		})
	}
}

// notifyWriter collects writes and signals when its content has a suffix.
type notifyWriter struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	suffix string
	seen   chan struct{}
}

func (n *notifyWriter) Write(p []byte) (int, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.buf.Write(p)
	if n.seen != nil && strings.HasSuffix(n.buf.String(), n.suffix) {
		close(n.seen)
		n.seen = nil
	}
	return len(p), nil
}

func (n *notifyWriter) String() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.buf.String()
}

// slowJob prints a line, sleeps 6s, then two more lines. The sleep is
// the margin within which the first line must reach the plugin and the
// test must read the FluxJob still Running: 2s was too short at load 20.
var slowJob = []string{"sh", "-c", "echo first; sleep 6; echo second >&2; echo third"}

// followSlow runs `logs slow -f` with runLogs (started before the job
// prints) and checks that the first line shows while the FluxJob still
// runs, that the command returns when the job ended, and what it printed.
func (w *world) followSlow(ctx context.Context, runLogs func(out, errw io.Writer) error) {
	t := w.t
	t.Helper()
	out := &notifyWriter{suffix: "first\n", seen: make(chan struct{})}
	seen := out.seen
	var errb notifyWriter
	done := make(chan error, 1)
	go func() { done <- runLogs(out, &errb) }()
	select {
	case <-seen:
	case err := <-done:
		t.Fatalf("logs -f returned before the first line: %v (stdout %q stderr %q)", err, out.String(), errb.String())
	case <-ctx.Done():
		t.Fatal(ctx.Err())
	}
	if obj := w.waitFor("slow", "a status", func(*fluxjobv1.FluxJob) bool { return true }); obj.Status.Phase.IsTerminal() {
		t.Fatalf("the job ended (%s) before its first line was shown", obj.Status.Phase)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if out.String() != "first\nthird\n" || errb.String() != "second\n" {
		t.Fatalf("stdout %q stderr %q", out.String(), errb.String())
	}
}

// TestLogsFollowRunning: logs -f started before the job prints its first
// line shows it while the FluxJob is still Running, then the rest, and
// returns when the job ended.
func TestLogsFollowRunning(t *testing.T) {
	w := newWorld(t, testbroker.Options{})
	w.create("slow", fluxjobv1.FluxJobSpec{Command: slowJob})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	w.followSlow(ctx, func(out, errw io.Writer) error { return w.plugin(ctx, out, errw, "logs", "slow", "-f") })
	obj := w.waitPhase("slow", fluxjobv1.PhaseSucceeded)
	if o := obj.Status.Output; o == nil || o.Stdout != "first\nthird\n" || o.Stderr != "second\n" {
		t.Fatalf("status.output %+v", o)
	}
}

func TestLogsNotStarted(t *testing.T) {
	w := newWorld(t, testbroker.Options{})
	w.create("held", fluxjobv1.FluxJobSpec{Command: []string{"echo", "x"}, Urgency: ptrTo[int32](0)})
	w.waitPhase("held", fluxjobv1.PhaseSubmitted)
	if _, _, err := w.pluginOut("logs", "held"); err == nil || !strings.Contains(err.Error(), "has not started") {
		t.Fatalf("logs of a held job: %v", err)
	}
	// -f waits; release lets it run, and the output comes
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var out, errb bytes.Buffer
	done := make(chan error, 1)
	go func() { done <- w.plugin(ctx, &out, &errb, "logs", "held", "-f") }()
	if o, _, err := w.pluginOut("release", "held"); err != nil || !strings.Contains(o, "released (urgency 0 -> 16)") {
		t.Fatalf("release: %q %v", o, err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if out.String() != "x\n" {
		t.Fatalf("stdout %q", out.String())
	}
}

func TestHoldReleaseCancel(t *testing.T) {
	w := newWorld(t, testbroker.Options{})
	// the job stays pending (SCHED) until scheduling resumes
	w.broker.PauseScheduling(true)
	w.create("pending", fluxjobv1.FluxJobSpec{Command: []string{"sleep", "inf"}, Urgency: ptrTo[int32](12)})
	w.waitPhase("pending", fluxjobv1.PhaseSubmitted)
	if o, _, err := w.pluginOut("hold", "pending"); err != nil || !strings.Contains(o, "held (urgency 12 -> 0)") {
		t.Fatalf("hold: %q %v", o, err)
	}
	obj := w.waitFor("pending", "urgency 0 applied", func(o *fluxjobv1.FluxJob) bool { return o.Status.Urgency != nil && *o.Status.Urgency == 0 })
	if obj.Annotations[HeldUrgencyAnnotation] != "12" {
		t.Fatalf("annotations %v", obj.Annotations)
	}
	w.waitFor("pending", "pending reason Held", func(o *fluxjobv1.FluxJob) bool {
		return o.Status.Pending != nil && o.Status.Pending.Reason == fluxjobv1.PendingHeld
	})
	if o, _, err := w.pluginOut("describe", "pending"); err != nil || !strings.Contains(o, "Waiting:") || !strings.Contains(o, "Held: Held in Flux at urgency 0") {
		t.Fatalf("describe of a held job: %v\n%s", err, o)
	}
	if o, _, err := w.pluginOut("release", "pending"); err != nil || !strings.Contains(o, "released (urgency 0 -> 12)") {
		t.Fatalf("release: %q %v", o, err)
	}
	w.broker.PauseScheduling(false)
	w.waitPhase("pending", fluxjobv1.PhaseRunning)
	if _, _, err := w.pluginOut("hold", "pending"); err == nil || !strings.Contains(err.Error(), "already started") {
		t.Fatalf("hold of a running job: %v", err)
	}
	if o, _, err := w.pluginOut("cancel", "pending", "--message", "enough"); err != nil || !strings.Contains(o, "cancelled") {
		t.Fatalf("cancel: %q %v", o, err)
	}
	obj = w.waitPhase("pending", fluxjobv1.PhaseCancelled)
	if obj.Status.Exception == nil || obj.Status.Exception.Note != "enough" {
		t.Fatalf("exception %+v", obj.Status.Exception)
	}
}

func TestEventsAndDescribe(t *testing.T) {
	w := newWorld(t, testbroker.Options{})
	w.create("hello", fluxjobv1.FluxJobSpec{Command: []string{"sh", "-c", "echo hello; echo oops >&2; exit 2"}})
	w.waitPhase("hello", fluxjobv1.PhaseFailed)
	for _, args := range [][]string{{"events", "hello"}, {"events", "hello", "-f"}} {
		out, _, err := w.pluginOut(args...)
		if err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		var names []string
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			if f := strings.Fields(line); len(f) >= 2 {
				names = append(names, f[1])
			}
		}
		if got := strings.Join(names, " "); got != "submit validate depend priority alloc start finish release free clean" {
			t.Fatalf("%v: events %q\n%s", args, got, out)
		}
		if !strings.Contains(out, `finish {"status":512}`) {
			t.Fatalf("%v: no finish context:\n%s", args, out)
		}
	}
	out, _, err := w.pluginOut("describe", "hello")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Phase:", "Failed", "Exit status:  2", "stdout (6 bytes in all):\n    hello\n", "stderr (5 bytes in all):\n    oops\n", "Conditions:", "Flux events:", "Events:"} {
		if !strings.Contains(out, want) {
			t.Fatalf("describe lacks %q:\n%s", want, out)
		}
	}
}

func TestArgs(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"frobnicate", "x"}, `unknown command "frobnicate"`},
		{[]string{"logs"}, "takes one FluxJob name"},
		{[]string{"logs", "a", "b"}, "takes one FluxJob name"},
		{[]string{"logs", "a", "--stdout", "--stderr"}, "exclude each other"},
		{[]string{"describe", "a", "-f"}, "describe does not take --follow"},
		{[]string{"cancel", "a", "--rank", "2"}, "cancel does not take --rank"},
		{[]string{"logs", "a", "--rank", "-3"}, "--rank must be a task rank"},
		{[]string{"logs", "a", "--flux-selector", "a=(b"}, "--flux-selector"},
		{[]string{"logs", "a", "--nope"}, "unknown flag"},
	}
	for _, tc := range tests {
		var errb bytes.Buffer
		_, err := parseArgs(tc.args, &errb)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want %q", tc.args, err, tc.want)
		}
	}
	var errb bytes.Buffer
	if _, err := parseArgs(nil, &errb); err != errUsage || !strings.Contains(errb.String(), "Commands:") {
		t.Errorf("no arguments: %v, usage %q", err, errb.String())
	}
	o, err := parseArgs([]string{"-n", "ns1", "logs", "job1", "-f", "--rank", "0"}, &errb)
	if err != nil || o.command != "logs" || o.name != "job1" || !o.follow || o.rank != 0 || o.overrides.Context.Namespace != "ns1" {
		t.Fatalf("parsed %+v, %v", o, err)
	}
}
