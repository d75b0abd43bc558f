package controllers

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/rand"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/watch"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/yaml"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
	"github.com/fluxjob/fluxjob-operator/internal/broker"
	"github.com/fluxjob/fluxjob-operator/internal/recorder"
)

// The benchmarks in this file run the controller end to end against a
// real kube-apiserver and etcd (envtest, $KUBEBUILDER_ASSETS) and the test
// broker, which runs as a separate process (hack/testbroker, built by the
// benchmark). BenchmarkControllerEndToEnd1000 runs the reconciler in this
// process as main.go configures it (2 executor workers, 4 concurrent
// reconciles, no client-side rate limit) so that every request it sends
// to the API server goes through a counting http.RoundTripper.
// BenchmarkControllerMemory10000 runs the manager binary itself in its own
// process, so that its heap and RSS are the product's, not the
// benchmark's nor the simulated broker's.
//
// Each benchmark starts its own envtest and stops it when it ends; run
// them with -benchtime=1x (hack/bench does): one iteration is a whole
// scenario (1,000 or 10,000 FluxJobs).

// benchGVR is the FluxJob resource, for classifying API requests.
var benchGVR = schema.GroupVersionResource{Group: fluxjobv1.GroupVersion.Group, Version: fluxjobv1.GroupVersion.Version, Resource: "fluxjobs"}

// apiCounter counts the API requests that pass through it by verb and
// resource ("PATCH fluxjobs/status", "WATCH fluxjobs", "POST events"), and
// separately those answered 409 Conflict.
type apiCounter struct {
	mu        sync.Mutex
	counts    map[string]int
	conflicts map[string]int
	latency   time.Duration // summed over the non-watch requests
	timed     int
}

func newAPICounter() *apiCounter {
	return &apiCounter{counts: map[string]int{}, conflicts: map[string]int{}}
}

// wrap is a rest.Config WrapTransport.
func (c *apiCounter) wrap(rt http.RoundTripper) http.RoundTripper {
	return roundTripperFunc(func(req *http.Request) (*http.Response, error) {
		key := requestKey(req)
		start := time.Now()
		resp, err := rt.RoundTrip(req)
		d := time.Since(start)
		c.mu.Lock()
		c.counts[key]++
		if !strings.HasPrefix(key, "WATCH ") {
			c.latency += d
			c.timed++
		}
		if err == nil && resp.StatusCode == http.StatusConflict {
			c.conflicts[key]++
		}
		c.mu.Unlock()
		return resp, err
	})
}

// reset returns the counts, the conflicts and the mean latency of the
// requests other than watches (until the response headers), and zeroes
// them.
func (c *apiCounter) reset() (counts, conflicts map[string]int, mean time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	counts, conflicts = c.counts, c.conflicts
	if c.timed > 0 {
		mean = c.latency / time.Duration(c.timed)
	}
	c.counts, c.conflicts, c.latency, c.timed = map[string]int{}, map[string]int{}, 0, 0
	return counts, conflicts, mean
}

type roundTripperFunc func(*http.Request) (*http.Response, error)

func (f roundTripperFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// requestKey classifies a request as "VERB resource[/subresource]":
// /apis/G/V/namespaces/NS/RES/NAME/SUB or /api/v1/namespaces/NS/RES...
// A GET with watch=true is a WATCH.
func requestKey(req *http.Request) string {
	verb := req.Method
	if verb == http.MethodGet && req.URL.Query().Get("watch") == "true" {
		verb = "WATCH"
	}
	parts := strings.Split(strings.Trim(req.URL.Path, "/"), "/")
	switch {
	case len(parts) >= 3 && parts[0] == "apis":
		parts = parts[3:]
	case len(parts) >= 2 && parts[0] == "api":
		parts = parts[2:]
	default:
		return verb + " " + req.URL.Path
	}
	if len(parts) >= 2 && parts[0] == "namespaces" {
		if len(parts) == 2 {
			return verb + " namespaces"
		}
		parts = parts[2:]
	}
	switch len(parts) {
	case 0:
		return verb + " (discovery)"
	case 1, 2:
		return verb + " " + parts[0]
	default:
		return verb + " " + parts[0] + "/" + parts[2]
	}
}

// statusWrites sums the writes of the FluxJob status subresource.
func statusWrites(counts map[string]int) int {
	return counts["PATCH "+benchGVR.Resource+"/status"] + counts["PUT "+benchGVR.Resource+"/status"]
}

// sumCounts adds every request.
func sumCounts(counts map[string]int) int {
	n := 0
	for _, v := range counts {
		n += v
	}
	return n
}

// benchScheme knows the core types and FluxJobs.
func benchScheme() *k8sruntime.Scheme {
	s := k8sruntime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(fluxjobv1.AddToScheme(s))
	return s
}

// benchEnv is one benchmark's world: envtest, a test broker process, and
// a manager running the reconciler with a counting transport.
type benchEnv struct {
	b       *testing.B
	env     *envtest.Environment
	cfg     *rest.Config
	c       client.WithWatch // the benchmark's own client, not counted
	counter *apiCounter
	uri     string

	cancel context.CancelFunc
	done   chan error
}

func newBenchEnv(b *testing.B) *benchEnv {
	b.Helper()
	e := newControlPlane(b)
	e.uri = startBrokerProcess(b)
	return e
}

// newControlPlane starts envtest (kube-apiserver and etcd, the FluxJob
// CRD installed) and a client of its own; the broker is the caller's.
func newControlPlane(b *testing.B) *benchEnv {
	b.Helper()
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		b.Skip("KUBEBUILDER_ASSETS is not set: the controller benchmarks need the envtest binaries; run `make bench`")
	}
	ctrl.SetLogger(zap.New(zap.WriteTo(io.Discard)))
	e := &benchEnv{b: b, counter: newAPICounter()}
	e.env = &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join("..", "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
		// kube-apiserver takes longer than envtest's default 20s to come
		// up on a loaded 2-core machine
		ControlPlaneStartTimeout: 2 * time.Minute,
	}
	// etcd serves /debug/pprof on its client URL only when asked to;
	// kube-apiserver does by default (--profiling).
	e.env.ControlPlane.Etcd = &envtest.Etcd{}
	e.env.ControlPlane.Etcd.Configure().Set("enable-pprof", "true")
	cfg, err := e.env.Start()
	if err != nil {
		b.Fatalf("starting envtest: %v", err)
	}
	b.Cleanup(func() {
		if err := e.env.Stop(); err != nil {
			b.Errorf("stopping envtest: %v", err)
		}
	})
	e.cfg = cfg
	own := rest.CopyConfig(cfg)
	own.QPS, own.Burst = -1, 0 // creating thousands of objects fast
	if e.c, err = client.NewWithWatch(own, client.Options{Scheme: benchScheme()}); err != nil {
		b.Fatal(err)
	}
	return e
}

// startBrokerProcess builds hack/testbroker and runs it with no phase
// delays and enough cores for every job to run at once; it returns the URI.
func startBrokerProcess(b *testing.B) string {
	b.Helper()
	_, uri := runBrokerProcess(b, buildBroker(b))
	return uri
}

// buildBroker builds hack/testbroker into a temporary directory and
// returns the binary.
func buildBroker(b *testing.B) string {
	b.Helper()
	bin := filepath.Join(b.TempDir(), "testbroker")
	build := exec.Command("go", "build", "-o", bin, "../hack/testbroker")
	if out, err := build.CombinedOutput(); err != nil {
		b.Fatalf("building hack/testbroker: %v\n%s", err, out)
	}
	return bin
}

// runBrokerProcess runs the test broker binary bin with no phase delays,
// enough cores for every job to run at once and args, until the
// benchmark ends; it returns the process and the URI.
func runBrokerProcess(b *testing.B, bin string, args ...string) (*os.Process, string) {
	b.Helper()
	dir := b.TempDir()
	uriFile := filepath.Join(dir, "uri")
	cmd := exec.Command(bin, append([]string{"-dir", filepath.Join(dir, "sock"), "-realistic=false", "-cores", "20000", "-uri-file", uriFile}, args...)...)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatalf("starting the test broker: %v", err)
	}
	b.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		waited := make(chan struct{})
		go func() { _ = cmd.Wait(); close(waited) }()
		select {
		case <-waited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-waited
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if data, err := os.ReadFile(uriFile); err == nil && len(data) > 0 {
			return cmd.Process, strings.TrimSpace(string(data))
		}
		time.Sleep(20 * time.Millisecond)
	}
	b.Fatal("the test broker did not write its URI within 30s")
	return nil, ""
}

var skipNameValidation = true

// startManager runs the reconciler as main.go configures it, with every
// request counted.
func (e *benchEnv) startManager(b *testing.B, reconciles int) {
	b.Helper()
	cfg := rest.CopyConfig(e.cfg)
	cfg.QPS, cfg.Burst = -1, 0 // what ctrl.GetConfig does: rely on API priority and fairness
	cfg.WrapTransport = e.counter.wrap
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 benchScheme(),
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		// One manager per row in one process: the controller name repeats.
		Controller: config.Controller{SkipNameValidation: &skipNameValidation},
	})
	if err != nil {
		b.Fatal(err)
	}
	conn := broker.NewConnector(broker.ConnectorOptions{URI: e.uri, Workers: 2, Logger: ctrl.Log.WithName("executor")})
	if err := mgr.Add(conn); err != nil {
		b.Fatal(err)
	}
	rec := recorder.New(mgr.GetClient(), mgr.GetScheme(), recorder.Options{Controller: "fluxjob-controller"})
	if err := mgr.Add(rec); err != nil {
		b.Fatal(err)
	}
	r := &FluxJobReconciler{
		Client: mgr.GetClient(), Scheme: mgr.GetScheme(), Recorder: rec,
		Flux: conn, Options: Options{MaxConcurrentReconciles: reconciles},
	}
	if err := r.SetupWithManager(mgr); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel, e.done = cancel, make(chan error, 1)
	go func() { e.done <- mgr.Start(ctx) }()
	b.Cleanup(func() { e.stopManager(b) })
	// Wait for the cache and the broker connection.
	wctx, wcancel := context.WithTimeout(ctx, time.Minute)
	defer wcancel()
	if !mgr.GetCache().WaitForCacheSync(wctx) {
		b.Fatal("manager cache did not sync")
	}
	for conn.Ready(nil) != nil {
		if wctx.Err() != nil {
			b.Fatalf("executor not connected: %v", conn.Ready(nil))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (e *benchEnv) stopManager(b *testing.B) {
	if e.cancel == nil {
		return
	}
	e.cancel()
	select {
	case err := <-e.done:
		if err != nil {
			b.Errorf("manager: %v", err)
		}
	case <-time.After(2 * time.Minute):
		b.Error("manager did not stop within 2m")
	}
	e.cancel = nil
}

func (e *benchEnv) namespace(b *testing.B) string {
	b.Helper()
	ns := "bench-" + rand.String(6)
	if err := e.c.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		b.Fatal(err)
	}
	return ns
}

// createJobs creates n FluxJobs named job-0..job-(n-1) in ns with 8
// concurrent clients; cmd(i) is job i's command.
func (e *benchEnv) createJobs(b *testing.B, ctx context.Context, ns string, n int, cmd func(i int) []string) {
	b.Helper()
	e.createJobSpecs(b, ctx, ns, n, func(i int) fluxjobv1.FluxJobSpec { return fluxjobv1.FluxJobSpec{Command: cmd(i)} })
}

// createJobSpecs is createJobs with the whole spec of job i given.
func (e *benchEnv) createJobSpecs(b *testing.B, ctx context.Context, ns string, n int, spec func(i int) fluxjobv1.FluxJobSpec) {
	b.Helper()
	err := parallel(n, func(i int) error {
		obj := &fluxjobv1.FluxJob{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "job-" + strconv.Itoa(i)},
			Spec:       spec(i),
		}
		if err := e.c.Create(ctx, obj); err != nil {
			return fmt.Errorf("creating FluxJob %d: %w", i, err)
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
}

// parallel calls do(0..n-1) from 8 goroutines and returns the first
// error; a goroutine stops at its first error.
func parallel(n int, do func(i int) error) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if err := do(i); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// phaseWatch follows the FluxJobs of a namespace (list, then watch from
// the list's resourceVersion, again whenever the API server closes the
// watch, as it does with a consumer it finds too slow) and tells when
// enough of them reached given phases.
type phaseWatch struct {
	mu     sync.Mutex
	phases map[string]fluxjobv1.FluxJobPhase
	count  map[fluxjobv1.FluxJobPhase]int
	err    error

	cancel context.CancelFunc
	done   chan struct{}
}

func (e *benchEnv) watchPhases(b *testing.B, ctx context.Context, ns string) *phaseWatch {
	ctx, cancel := context.WithCancel(ctx)
	p := &phaseWatch{phases: map[string]fluxjobv1.FluxJobPhase{}, count: map[fluxjobv1.FluxJobPhase]int{}, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		for ctx.Err() == nil {
			if err := p.follow(ctx, e.c, ns); err != nil && ctx.Err() == nil {
				p.mu.Lock()
				p.err = err
				p.mu.Unlock()
				return
			}
		}
	}()
	b.Cleanup(p.stop)
	return p
}

// follow lists, then watches until the watch closes.
func (p *phaseWatch) follow(ctx context.Context, c client.WithWatch, ns string) error {
	var list fluxjobv1.FluxJobList
	if err := c.List(ctx, &list, client.InNamespace(ns)); err != nil {
		return fmt.Errorf("listing FluxJobs: %w", err)
	}
	for i := range list.Items {
		p.set(list.Items[i].Name, list.Items[i].Status.Phase)
	}
	w, err := c.Watch(ctx, &fluxjobv1.FluxJobList{}, &client.ListOptions{Namespace: ns,
		Raw: &metav1.ListOptions{ResourceVersion: list.ResourceVersion}})
	if err != nil {
		return fmt.Errorf("watching FluxJobs: %w", err)
	}
	defer w.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.ResultChan():
			if !ok {
				return nil // closed by the server: list and watch again
			}
			if obj, ok := ev.Object.(*fluxjobv1.FluxJob); ok && ev.Type != watch.Deleted {
				p.set(obj.Name, obj.Status.Phase)
			}
		}
	}
}

func (p *phaseWatch) set(name string, phase fluxjobv1.FluxJobPhase) {
	p.mu.Lock()
	defer p.mu.Unlock()
	old, seen := p.phases[name]
	if seen && old == phase {
		return
	}
	if seen {
		p.count[old]--
	}
	p.phases[name] = phase
	p.count[phase]++
}

// counts returns a copy of the number of FluxJobs per phase.
func (p *phaseWatch) counts() map[fluxjobv1.FluxJobPhase]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[fluxjobv1.FluxJobPhase]int, len(p.count))
	for k, v := range p.count {
		out[k] = v
	}
	return out
}

// until waits until done(counts) is true, the watch fails, or ctx ends.
func (p *phaseWatch) until(ctx context.Context, done func(map[fluxjobv1.FluxJobPhase]int) bool) error {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if done(p.counts()) {
			return nil
		}
		p.mu.Lock()
		err := p.err
		p.mu.Unlock()
		if err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for phases (have %v): %w", p.counts(), ctx.Err())
		case <-tick.C:
		}
	}
}

// stop ends the watch and waits for its goroutine.
func (p *phaseWatch) stop() {
	p.cancel()
	<-p.done
}

// BenchmarkControllerEndToEnd1000 creates 1,000 FluxJobs of `true` (zero
// run time at the test broker) and measures the time until all are
// Succeeded, and the API requests the manager sent meanwhile. Metrics:
// fluxjobs/s (target >= 200), status-writes/job (target <= 4),
// api-requests/job, api-ms/request (mean latency of the manager's
// requests other than watches), and cpu-ms/job: this process's CPU time
// (the manager, plus the benchmark's own creates and watch; not the API
// server's nor the broker's) per FluxJob, which a loaded machine does not
// inflate as it does wall time; apiserver+etcd-cpu-ms/job and
// broker-cpu-ms/job are the same for the envtest and broker processes. The rows differ in
// --max-concurrent-reconciles: 4 is main.go's default.
func BenchmarkControllerEndToEnd1000(b *testing.B) {
	e := newBenchEnv(b)
	for _, reconciles := range []int{4, 16} {
		b.Run("reconciles="+strconv.Itoa(reconciles), func(b *testing.B) {
			e.startManager(b, reconciles)
			defer e.stopManager(b)
			endToEnd(b, e, 1000)
		})
	}
}

func endToEnd(b *testing.B, e *benchEnv, n int) {
	var elapsed time.Duration
	var counts, conflicts map[string]int
	var latency, cpu time.Duration
	children := map[string]time.Duration{}
	b.ResetTimer()
	for range b.N {
		ns := e.namespace(b)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		pw := e.watchPhases(b, ctx, ns)
		e.counter.reset()
		profiled := e.profileControlPlane(b, ctx)
		cpu0, child0 := processCPU(), childCPU()
		start := time.Now()
		e.createJobs(b, ctx, ns, n, func(int) []string { return []string{"true"} })
		err := pw.until(ctx, func(c map[fluxjobv1.FluxJobPhase]int) bool {
			return c[fluxjobv1.PhaseSucceeded] == n || c[fluxjobv1.PhaseFailed] > 0
		})
		elapsed += time.Since(start)
		cpu += processCPU() - cpu0
		for k, v := range childCPU() {
			children[k] += v - child0[k]
		}
		if f := pw.counts()[fluxjobv1.PhaseFailed]; err == nil && f > 0 {
			err = fmt.Errorf("%d FluxJobs failed", f)
		}
		pw.stop()
		<-profiled
		cancel()
		if err != nil {
			b.Fatal(err)
		}
		// Writes still in flight when the last Succeeded arrived (events)
		// belong to this batch: let them land before counting.
		time.Sleep(2 * time.Second)
		counts, conflicts, latency = e.counter.reset()
	}
	b.StopTimer()
	jobs := float64(n * b.N)
	per := float64(n) // counts are the last iteration's
	b.ReportMetric(jobs/elapsed.Seconds(), "fluxjobs/s")
	b.ReportMetric(float64(cpu.Microseconds())/1000/jobs, "cpu-ms/job")
	b.ReportMetric(float64((children["kube-apiserver"]+children["etcd"]).Microseconds())/1000/jobs, "apiserver+etcd-cpu-ms/job")
	b.ReportMetric(float64(children["testbroker"].Microseconds())/1000/jobs, "broker-cpu-ms/job")
	b.ReportMetric(float64(statusWrites(counts))/per, "status-writes/job")
	b.ReportMetric(float64(statusWrites(conflicts))/per, "status-conflicts/job")
	b.ReportMetric(float64(sumCounts(counts))/per, "api-requests/job")
	b.ReportMetric(float64(latency.Microseconds())/1000, "api-ms/request")
	b.ReportMetric(float64(counts["PATCH fluxjobs"]+counts["PUT fluxjobs"])/per, "object-writes/job")
	b.ReportMetric(float64(counts["POST events"]+counts["PATCH events"])/per, "event-writes/job")
	b.Logf("API requests for %d FluxJobs: %v; answered 409 Conflict: %v", n, counts, conflicts)
}

// controlPlaneProfileSeconds is how long the CPU profiles of
// kube-apiserver and etcd last, from the first create on: shorter than
// any row, so that they see the API server under load only.
const controlPlaneProfileSeconds = 4

// repoPath is path relative to the repository root (the tests run in
// controllers/), so that what the benchmarks print, and the docs made from
// it, carry no path of the machine they ran on; a path outside the
// repository is printed as given.
func repoPath(path string) string {
	root, err := filepath.Abs("..")
	if err != nil {
		return path
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return path
	}
	rel, err := filepath.Rel(root, abs)
	if err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
		return path
	}
	return rel
}

// profileControlPlane, when $BENCH_PROFILE_DIR is set, takes CPU profiles
// of kube-apiserver and etcd (their /debug/pprof/profile) for
// controlPlaneProfileSeconds from now, and writes them there as
// apiserver-<row>.cpu.pprof and etcd-<row>.cpu.pprof. The returned
// channel is closed when both are written (at once when not profiling).
// A failed profile is reported as an error of the benchmark.
func (e *benchEnv) profileControlPlane(b *testing.B, ctx context.Context) <-chan struct{} {
	return e.profileControlPlaneFor(b, ctx, controlPlaneProfileSeconds)
}

// profileRow returns $BENCH_PROFILE_DIR ("" when not profiling) and the
// current row's name as profile file names carry it.
func profileRow(b *testing.B) (dir, row string) {
	row = strings.NewReplacer("/", "-", "=", "").Replace(strings.TrimPrefix(b.Name(), "BenchmarkController"))
	return os.Getenv("BENCH_PROFILE_DIR"), row
}

// profileControlPlaneFor is profileControlPlane with a profile of seconds.
func (e *benchEnv) profileControlPlaneFor(b *testing.B, ctx context.Context, seconds int) <-chan struct{} {
	done := make(chan struct{})
	dir, row := profileRow(b)
	if dir == "" {
		close(done)
		return done
	}
	apiClient, err := rest.HTTPClientFor(e.cfg)
	if err != nil {
		b.Fatalf("API server client: %v", err)
	}
	query := "/debug/pprof/profile?seconds=" + strconv.Itoa(seconds)
	targets := []struct {
		name, url string
		c         *http.Client
	}{
		{"apiserver", strings.TrimSuffix(e.cfg.Host, "/") + query, apiClient},
		{"etcd", e.env.ControlPlane.Etcd.URL.String() + query, http.DefaultClient},
	}
	var wg sync.WaitGroup
	for _, t := range targets {
		wg.Go(func() {
			path := filepath.Join(dir, t.name+"-"+row+".cpu.pprof")
			if err := fetchTo(ctx, t.c, t.url, path); err != nil {
				b.Errorf("CPU profile of %s: %v", t.name, err)
				return
			}
			b.Logf("CPU profile of %s (first %ds): %s", t.name, seconds, repoPath(path))
		})
	}
	go func() { wg.Wait(); close(done) }()
	b.Cleanup(func() { <-done }) // a failed row must not end before its profiles
	return done
}

// fetchTo writes the body of a successful GET of url to path.
func fetchTo(ctx context.Context, c *http.Client, url, path string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return fmt.Errorf("reading %s: %w", url, err)
	}
	return f.Close()
}

// BenchmarkControllerMemory10000 makes the manager track 10,000
// FluxJobs, half finished (`true`) and half running (`sleep inf`, one
// eventlog watch each), and measures the manager as it is deployed: the
// binary built from main.go (or $MANAGER_BIN) in its own process, with
// the flags and environment config/manager/manager.yaml gives it
// (--leader-elect, GOMEMLIMIT from the container's memory limit), against
// the envtest API server and the test broker process. Nothing of the
// benchmark (its client, its watch of the 10,000 objects) is in the
// measured process. Metrics, read once the FluxJobs have settled:
// rss-MiB (target <= 150) and peak-rss-MiB from the manager's
// /proc/PID/status (VmRSS, VmHWM); heap-MiB (go_memstats_heap_alloc_bytes
// after a GC forced through the manager's pprof endpoint, i.e. the live
// heap) and goroutines (go_goroutines) from its metrics endpoint. With
// $BENCH_PROFILE_DIR set, the heap profile is written there as
// controller-10000.heap.pprof.
func BenchmarkControllerMemory10000(b *testing.B) {
	const n = 10000
	e := newBenchEnv(b)
	m := e.startManagerProcess(b)
	e.memoryScenario(b, m, n, "controller-10000", func(int) string { return "" })
}

// BenchmarkControllerMemory4x2500 is BenchmarkControllerMemory10000 with
// the FluxJobs spread over 4 FluxEndpoints, each its own test broker
// process (local://), and no implicit instance (--default-instance=""):
// 4 executors with 2 workers and a control connection each, job i on
// instance i%4 by spec.instance. Same metrics; the heap profile is
// controller-4x2500.heap.pprof.
func BenchmarkControllerMemory4x2500(b *testing.B) {
	const instances, perInstance = 4, 2500
	e := newBenchEnv(b)
	uris := []string{e.uri}
	for len(uris) < instances {
		uris = append(uris, startBrokerProcess(b))
	}
	m := e.startManagerProcess(b, "--default-instance=")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	names := make([]string, instances)
	for i, uri := range uris {
		names[i] = "bench-" + strconv.Itoa(i)
		fi := &fluxjobv1.FluxEndpoint{ObjectMeta: metav1.ObjectMeta{Name: names[i]}, Spec: fluxjobv1.FluxEndpointSpec{
			Connection: fluxjobv1.FluxEndpointConnection{URI: uri}, NamespaceSelector: &metav1.LabelSelector{}}}
		if err := e.c.Create(ctx, fi); err != nil {
			b.Fatal(err)
		}
	}
	for _, name := range names {
		e.waitEndpointReady(b, ctx, name)
	}
	e.memoryScenario(b, m, instances*perInstance, "controller-4x2500", func(i int) string { return names[i%instances] })
}

// memoryScenario creates n FluxJobs per iteration, half finishing at once
// and half running until the end, job i on instance(i) ("" the default),
// waits until they settled, then reports the manager process's memory
// (see BenchmarkControllerMemory10000); profile names the heap profile.
func (e *benchEnv) memoryScenario(b *testing.B, m *managerProcess, n int, profile string, instance func(i int) string) {
	b.ResetTimer()
	for range b.N {
		ns := e.namespace(b)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
		pw := e.watchPhases(b, ctx, ns)
		start := time.Now()
		e.createJobSpecs(b, ctx, ns, n, func(i int) fluxjobv1.FluxJobSpec {
			cmd := []string{"sleep", "inf"}
			if i%2 == 0 {
				cmd = []string{"true"}
			}
			return fluxjobv1.FluxJobSpec{Command: cmd, Instance: instance(i)}
		})
		err := pw.until(ctx, func(c map[fluxjobv1.FluxJobPhase]int) bool {
			return c[fluxjobv1.PhaseSucceeded] == n/2 && c[fluxjobv1.PhaseRunning] == n/2 || c[fluxjobv1.PhaseFailed] > 0
		})
		failed := pw.counts()[fluxjobv1.PhaseFailed]
		pw.stop()
		cancel()
		if err != nil {
			b.Fatal(err)
		}
		if failed > 0 {
			b.Fatalf("%d FluxJobs failed", failed)
		}
		b.Logf("%d FluxJobs settled (%d Succeeded, %d Running) in %s", n, n/2, n/2, time.Since(start).Round(time.Millisecond))
	}
	b.StopTimer()
	// Let the last status writes and events land, then measure the
	// process as it runs (RSS), then its live heap after a forced GC.
	time.Sleep(5 * time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rss, hwm := m.statusKiB(b, "VmRSS"), m.statusKiB(b, "VmHWM")
	before := m.metrics(b, ctx)
	out := io.Discard
	if dir := os.Getenv("BENCH_PROFILE_DIR"); dir != "" {
		path := filepath.Join(dir, profile+".heap.pprof")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			b.Fatalf("heap profile: %v", err)
		}
		f, err := os.Create(path)
		if err != nil {
			b.Fatalf("heap profile: %v", err)
		}
		defer f.Close()
		out = f
		b.Logf("heap profile of the manager: %s", repoPath(path))
	}
	m.heapProfile(b, ctx, io.Discard) // each fetch runs a GC (gc=1)
	m.heapProfile(b, ctx, out)
	after := m.metrics(b, ctx)
	b.ReportMetric(after["go_memstats_heap_alloc_bytes"]/(1<<20), "heap-MiB")
	b.ReportMetric(float64(rss)/1024, "rss-MiB")
	b.ReportMetric(float64(hwm)/1024, "peak-rss-MiB")
	b.ReportMetric(before["go_goroutines"], "goroutines")
	b.Logf("manager process (GOMEMLIMIT=%d): RSS %.1f MiB (peak %.1f MiB, %.1f MiB after a forced GC); heap alloc %.1f MiB (%.1f MiB before the GC), inuse %.1f MiB, sys %.1f MiB; stacks %.1f MiB; %.0f goroutines",
		m.memLimit, float64(rss)/1024, float64(hwm)/1024, float64(m.statusKiB(b, "VmRSS"))/1024,
		after["go_memstats_heap_alloc_bytes"]/(1<<20), before["go_memstats_heap_alloc_bytes"]/(1<<20),
		after["go_memstats_heap_inuse_bytes"]/(1<<20), after["go_memstats_sys_bytes"]/(1<<20),
		after["go_memstats_stack_inuse_bytes"]/(1<<20), before["go_goroutines"])
}

// managerProcess is the manager binary running as its own process.
type managerProcess struct {
	cmd        *exec.Cmd
	done       chan struct{} // closed when the process has exited
	metricsURL string        // base URL of the metrics endpoint
	pprof      string        // base URL of the pprof endpoint
	memLimit   int64         // GOMEMLIMIT given to it, bytes
	logPath    string
}

// startManagerProcess runs the manager binary as the Deployment does
// (config/manager/manager.yaml: --leader-elect, GOMEMLIMIT set to the
// manager container's memory limit, main.go's defaults otherwise) against
// the benchmark's API server and broker, with its metrics and pprof
// endpoints on loopback ports, and waits until it is ready (/readyz:
// broker connected; the cache has synced once the controller runs). It is
// stopped with SIGTERM when the benchmark ends.
func (e *benchEnv) startManagerProcess(b *testing.B, args ...string) *managerProcess {
	b.Helper()
	dir := b.TempDir()
	bin := managerBinary(b, dir)
	deployment := filepath.Join("..", "config", "manager", "manager.yaml")
	limit, err := deploymentMemoryLimit(deployment)
	if err != nil {
		b.Fatal(err)
	}
	literalEnv, err := deploymentLiteralEnv(deployment)
	if err != nil {
		b.Fatal(err)
	}
	user, err := e.env.AddUser(envtest.User{Name: "bench-manager", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		b.Fatalf("adding the manager's API user: %v", err)
	}
	kc, err := user.KubeConfig()
	if err != nil {
		b.Fatalf("the manager's kubeconfig: %v", err)
	}
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kubeconfig, kc, 0o600); err != nil {
		b.Fatal(err)
	}
	metricsAddr, probeAddr, pprofAddr := freeLoopback(b), freeLoopback(b), freeLoopback(b)
	m := &managerProcess{done: make(chan struct{}), metricsURL: "http://" + metricsAddr, pprof: "http://" + pprofAddr,
		memLimit: limit, logPath: filepath.Join(dir, "manager.log")}
	logFile, err := os.Create(m.logPath)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = logFile.Close() })
	// Plain HTTP metrics on loopback: the benchmark scrapes them without a
	// token (the Deployment serves them with --metrics-secure).
	m.cmd = exec.Command(bin, append([]string{"--leader-elect", "--leader-election-namespace=default",
		"--metrics-bind-address=" + metricsAddr, "--metrics-secure=false",
		"--health-probe-bind-address=" + probeAddr, "--pprof-bind-address=" + pprofAddr}, args...)...)
	m.cmd.Env = append(os.Environ(), literalEnv...)
	m.cmd.Env = append(m.cmd.Env, "KUBECONFIG="+kubeconfig, "FLUX_URI="+e.uri, "GOMEMLIMIT="+strconv.FormatInt(limit, 10))
	b.Logf("manager environment from the Deployment: %v GOMEMLIMIT=%d", literalEnv, limit)
	m.cmd.Stdout, m.cmd.Stderr = logFile, logFile
	if err := m.cmd.Start(); err != nil {
		b.Fatalf("starting the manager: %v", err)
	}
	go func() { _ = m.cmd.Wait(); close(m.done) }()
	b.Cleanup(func() {
		m.stop(b)
		if b.Failed() {
			if out, err := os.ReadFile(m.logPath); err == nil {
				b.Logf("manager output (last 4 KiB):\n%s", out[max(0, len(out)-4096):])
			}
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for {
		if code, _ := httpGet(ctx, "http://"+probeAddr+"/readyz", io.Discard); code == http.StatusOK {
			return m
		}
		select {
		case <-m.done:
			out, _ := os.ReadFile(m.logPath)
			b.Fatalf("the manager exited before it was ready: %s\n%s", m.cmd.ProcessState, out)
		case <-ctx.Done():
			b.Fatalf("the manager was not ready within 2m")
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// stop stops the manager as the kubelet does: SIGTERM, then SIGKILL after
// the grace period (an error of the benchmark). It returns at once if the
// process has exited.
func (m *managerProcess) stop(b *testing.B) {
	b.Helper()
	_ = m.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-m.done:
	case <-time.After(60 * time.Second):
		b.Errorf("the manager did not exit within 60s of SIGTERM")
		_ = m.cmd.Process.Kill()
		<-m.done
	}
}

// managerBinary returns $MANAGER_BIN if it names a file (relative to the
// repository root, as the Makefile sets it), else builds main.go into dir
// as the Dockerfile does (CGO_ENABLED=0).
func managerBinary(b *testing.B, dir string) string {
	b.Helper()
	if bin := os.Getenv("MANAGER_BIN"); bin != "" {
		if !filepath.IsAbs(bin) {
			bin = filepath.Join("..", bin)
		}
		if fi, err := os.Stat(bin); err == nil && !fi.IsDir() {
			return bin
		}
	}
	bin := filepath.Join(dir, "manager")
	build := exec.Command("go", "build", "-o", bin, "..")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		b.Fatalf("building the manager: %v\n%s", err, out)
	}
	return bin
}

// deploymentManager returns the "manager" container of the Deployment
// in path.
func deploymentManager(path string) (*corev1.Container, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading the Deployment: %w", err)
	}
	for _, doc := range strings.Split(string(data), "\n---\n") {
		var d appsv1.Deployment
		if err := yaml.Unmarshal([]byte(doc), &d); err != nil {
			return nil, fmt.Errorf("parsing %s: %w", path, err)
		}
		if d.Kind != "Deployment" {
			continue
		}
		for i, c := range d.Spec.Template.Spec.Containers {
			if c.Name == "manager" {
				return &d.Spec.Template.Spec.Containers[i], nil
			}
		}
	}
	return nil, fmt.Errorf("%s: no Deployment with a manager container", path)
}

// deploymentMemoryLimit reads the memory limit of the "manager" container
// of the Deployment in path, in bytes: the value of the GOMEMLIMIT the
// Deployment sets from it (resourceFieldRef limits.memory, divisor 1).
func deploymentMemoryLimit(path string) (int64, error) {
	c, err := deploymentManager(path)
	if err != nil {
		return 0, err
	}
	q, ok := c.Resources.Limits[corev1.ResourceMemory]
	if !ok {
		return 0, fmt.Errorf("%s: no memory limit for the manager container", path)
	}
	return q.Value(), nil
}

// deploymentLiteralEnv returns the environment variables with literal
// values (GOGC, say) that the Deployment in path gives the "manager"
// container, as NAME=VALUE, except FLUX_URI, which names the cluster's
// socket.
func deploymentLiteralEnv(path string) ([]string, error) {
	c, err := deploymentManager(path)
	if err != nil {
		return nil, err
	}
	var env []string
	for _, v := range c.Env {
		if v.ValueFrom == nil && v.Name != "FLUX_URI" {
			env = append(env, v.Name+"="+v.Value)
		}
	}
	return env, nil
}

// freeLoopback returns a loopback address whose port was free a moment ago.
func freeLoopback(b *testing.B) string {
	b.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// httpGet copies url's body to w and returns the status code.
func httpGet(ctx context.Context, url string, w io.Writer) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(w, resp.Body); err != nil {
		return resp.StatusCode, fmt.Errorf("reading %s: %w", url, err)
	}
	return resp.StatusCode, nil
}

// statusKiB reads a "Key:  N kB" line of the manager's /proc/PID/status.
func (m *managerProcess) statusKiB(b *testing.B, key string) int64 {
	b.Helper()
	v, err := procStatusKiB(m.cmd.Process.Pid, key)
	if err != nil {
		b.Fatal(err)
	}
	return v
}

// metrics scrapes the manager's metrics endpoint: the samples without
// labels, by name.
func (m *managerProcess) metrics(b *testing.B, ctx context.Context) map[string]float64 {
	b.Helper()
	return parseUnlabelled(m.metricsText(b, ctx))
}

// metricsText is the manager's metrics endpoint's text now.
func (m *managerProcess) metricsText(b *testing.B, ctx context.Context) string {
	b.Helper()
	var buf strings.Builder
	code, err := httpGet(ctx, m.metricsURL+"/metrics", &buf)
	if err != nil || code != http.StatusOK {
		b.Fatalf("scraping the manager's metrics: %d %v", code, err)
	}
	return buf.String()
}

// heapProfile writes the manager's heap profile to w, after a GC (gc=1).
func (m *managerProcess) heapProfile(b *testing.B, ctx context.Context, w io.Writer) {
	b.Helper()
	if code, err := httpGet(ctx, m.pprof+"/debug/pprof/heap?gc=1", w); err != nil || code != http.StatusOK {
		b.Fatalf("the manager's heap profile: %d %v", code, err)
	}
}

// writeHeapProfile writes the manager's heap profile (after a GC) to
// path, creating its directory.
func (m *managerProcess) writeHeapProfile(b *testing.B, ctx context.Context, path string) {
	b.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		b.Fatalf("heap profile: %v", err)
	}
	f, err := os.Create(path)
	if err != nil {
		b.Fatalf("heap profile: %v", err)
	}
	defer f.Close()
	m.heapProfile(b, ctx, f)
	b.Logf("heap profile of the manager: %s", repoPath(path))
}

// parseUnlabelled reads the samples without labels of a Prometheus text
// exposition ("name value"), by name.
func parseUnlabelled(text string) map[string]float64 {
	out := map[string]float64{}
	for _, line := range strings.Split(text, "\n") {
		f := strings.Fields(line)
		if len(f) != 2 || strings.HasPrefix(f[0], "#") || strings.Contains(f[0], "{") {
			continue
		}
		if v, err := strconv.ParseFloat(f[1], 64); err == nil {
			out[f[0]] = v
		}
	}
	return out
}

// childCPU returns the CPU time (user+system) of this process's direct
// children by command name (kube-apiserver, etcd, testbroker), read from
// /proc/PID/stat.
func childCPU() map[string]time.Duration {
	out := map[string]time.Duration{}
	self := os.Getpid()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return out
	}
	for _, ent := range entries {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil || pid == self {
			continue
		}
		st, err := readProcStat(pid)
		if err != nil || st.ppid != self {
			continue
		}
		out[st.comm] += st.cpu
	}
	return out
}

// procStat is what the benchmarks read of /proc/PID/stat.
type procStat struct {
	comm   string
	ppid   int
	cpu    time.Duration // user + system
	reaped time.Duration // user + system of its children that ended and were waited for
}

// readProcStat reads /proc/PID/stat: pid (comm) state ppid ... utime(14)
// stime(15), in clock ticks.
func readProcStat(pid int) (procStat, error) {
	data, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return procStat{}, err
	}
	open, closing := strings.IndexByte(string(data), '('), strings.LastIndexByte(string(data), ')')
	if open < 0 || closing < open {
		return procStat{}, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(data[closing+1:]))
	if len(f) < 13 {
		return procStat{}, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	const ticks = 100 // USER_HZ on Linux
	ppid, _ := strconv.Atoi(f[1])
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	var cut, cst int64
	if len(f) >= 15 {
		cut, _ = strconv.ParseInt(f[13], 10, 64)
		cst, _ = strconv.ParseInt(f[14], 10, 64)
	}
	return procStat{comm: string(data[open+1 : closing]), ppid: ppid, cpu: time.Duration(ut+st) * time.Second / ticks,
		reaped: time.Duration(cut+cst) * time.Second / ticks}, nil
}

// descendantCPU is the CPU time so far of the live processes below pid,
// each with its own reaped children.
func descendantCPU(pid int) time.Duration {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	children := map[int][]int{}
	stats := map[int]procStat{}
	for _, ent := range entries {
		p, err := strconv.Atoi(ent.Name())
		if err != nil {
			continue
		}
		if st, err := readProcStat(p); err == nil {
			stats[p] = st
			children[st.ppid] = append(children[st.ppid], p)
		}
	}
	var total time.Duration
	for next := children[pid]; len(next) > 0; {
		p := next[0]
		next = append(next[1:], children[p]...)
		total += stats[p].cpu + stats[p].reaped
	}
	return total
}

// processCPU is this process's user plus system CPU time.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// procStatusKiB reads a "Key:  N kB" line of /proc/PID/status.
func procStatusKiB(pid int, key string) (int64, error) {
	f, err := os.Open(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || k != key {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/%d/status %s: %w", pid, key, err)
		}
		return n, nil
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("/proc/%d/status: %w", pid, err)
	}
	return 0, fmt.Errorf("/proc/%d/status has no %s", pid, key)
}

func TestRequestKey(t *testing.T) {
	tests := []struct {
		method, url, want string
	}{
		{"PATCH", "https://h/apis/fluxjob.io/v1alpha1/namespaces/ns/fluxjobs/a/status", "PATCH fluxjobs/status"},
		{"PATCH", "https://h/apis/fluxjob.io/v1alpha1/namespaces/ns/fluxjobs/a", "PATCH fluxjobs"},
		{"GET", "https://h/apis/fluxjob.io/v1alpha1/fluxjobs?watch=true&resourceVersion=1", "WATCH fluxjobs"},
		{"GET", "https://h/apis/fluxjob.io/v1alpha1/fluxjobs?limit=500", "GET fluxjobs"},
		{"POST", "https://h/apis/events.k8s.io/v1/namespaces/ns/events", "POST events"},
		{"GET", "https://h/api/v1/namespaces/ns", "GET namespaces"},
		{"GET", "https://h/api", "GET /api"},
		{"GET", "https://h/apis/fluxjob.io/v1alpha1", "GET (discovery)"},
	}
	for _, tc := range tests {
		t.Run(tc.want, func(t *testing.T) {
			req, err := http.NewRequest(tc.method, tc.url, nil)
			if err != nil {
				t.Fatal(err)
			}
			if got := requestKey(req); got != tc.want {
				t.Fatalf("requestKey(%s %s) = %q, want %q", tc.method, tc.url, got, tc.want)
			}
		})
	}
}

func TestParseUnlabelled(t *testing.T) {
	text := `# HELP go_goroutines Number of goroutines that currently exist.
# TYPE go_goroutines gauge
go_goroutines 42
go_memstats_heap_alloc_bytes 1.048576e+06
rest_client_requests_total{code="200",host="h",method="GET"} 7
broken_sample x
`
	got := parseUnlabelled(text)
	want := map[string]float64{"go_goroutines": 42, "go_memstats_heap_alloc_bytes": 1 << 20}
	if len(got) != len(want) {
		t.Fatalf("parseUnlabelled = %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
}

func TestDeploymentMemoryLimit(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name, yaml string
		want       int64 // 0: an error
	}{
		{"manager container", "kind: Namespace\n---\nkind: Deployment\nspec:\n  template:\n    spec:\n      containers:\n      - name: sidecar\n        resources: {limits: {memory: 1Gi}}\n      - name: manager\n        resources: {limits: {memory: 256Mi}}\n", 256 << 20},
		{"no limit", "kind: Deployment\nspec:\n  template:\n    spec:\n      containers:\n      - name: manager\n", 0},
		{"no deployment", "kind: Namespace\n", 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-")+".yaml")
			if err := os.WriteFile(path, []byte(tc.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			got, err := deploymentMemoryLimit(path)
			if tc.want == 0 {
				if err == nil {
					t.Fatalf("deploymentMemoryLimit = %d, want an error", got)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("deploymentMemoryLimit = %d, %v; want %d", got, err, tc.want)
			}
		})
	}
	// The real manifest has one, or the benchmark cannot run, and the
	// benchmark runs the manager with its GOGC.
	real := filepath.Join("..", "config", "manager", "manager.yaml")
	if _, err := deploymentMemoryLimit(real); err != nil {
		t.Fatal(err)
	}
	env, err := deploymentLiteralEnv(real)
	if err != nil || !slices.Contains(env, "GOGC=50") {
		t.Fatalf("deploymentLiteralEnv = %v, %v; want GOGC=50 among them", env, err)
	}
}

// BenchmarkControllerAPIServerCost measures what kube-apiserver and etcd
// spend in CPU on one request of each kind a FluxJob costs them (the
// create, the finalizer patch, a status patch as the controller writes
// it, the event), next to the create of a ConfigMap of the same size (a
// built-in type) and to the same FluxJob requests against a copy of the
// CRD without its CEL rules (group plain.fluxjob.io). One watch follows
// each resource, as the manager's informer does. The status is also
// written without its eventlog entries, to show what they cost. It tells
// how many FluxJobs per second the API server can carry on this machine
// at all: cores / (the sum over a FluxJob's requests). Metrics per row:
// apiserver+etcd-cpu-ms/request and requests/s (8 concurrent clients).
func BenchmarkControllerAPIServerCost(b *testing.B) {
	const n = 1000
	e := newBenchEnv(b)
	plain := e.installPlainCRD(b)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	ns := e.namespace(b)
	for _, gvk := range []schema.GroupVersionKind{fluxjobv1.GroupVersion.WithKind("FluxJob"), plain, corev1.SchemeGroupVersion.WithKind("ConfigMap")} {
		e.drainWatch(b, ctx, ns, gvk)
	}
	status := benchStatus()
	data := strings.Repeat("x", 2000) // a FluxJob with its status is about 2 KB of JSON
	rows := []struct {
		name  string
		gvk   schema.GroupVersionKind
		setup bool // the FluxJobs exist before the timed requests
		do    func(ctx context.Context, obj *unstructured.Unstructured) error
	}{
		{"create-configmap", corev1.SchemeGroupVersion.WithKind("ConfigMap"), false, func(ctx context.Context, obj *unstructured.Unstructured) error {
			obj.Object["data"] = map[string]any{"d": data}
			return e.c.Create(ctx, obj)
		}},
		{"create-fluxjob", fluxjobv1.GroupVersion.WithKind("FluxJob"), false, nil},
		{"patch-fluxjob-finalizer", fluxjobv1.GroupVersion.WithKind("FluxJob"), true, func(ctx context.Context, obj *unstructured.Unstructured) error {
			base := obj.DeepCopy()
			obj.SetFinalizers([]string{fluxjobv1.CancelFinalizer})
			return e.c.Patch(ctx, obj, clientMergeLocked(base))
		}},
		{"patch-fluxjob-status", fluxjobv1.GroupVersion.WithKind("FluxJob"), true, func(ctx context.Context, obj *unstructured.Unstructured) error {
			base := obj.DeepCopy()
			obj.Object["status"] = status
			return e.c.Status().Patch(ctx, obj, clientMergeLocked(base))
		}},
		{"create-event", fluxjobv1.GroupVersion.WithKind("FluxJob"), true, func(ctx context.Context, obj *unstructured.Unstructured) error {
			now := metav1.NewMicroTime(time.Now())
			return e.c.Create(ctx, &eventsv1.Event{
				ObjectMeta: metav1.ObjectMeta{Namespace: obj.GetNamespace(), Name: fmt.Sprintf("%s.%x", obj.GetName(), now.UnixNano())},
				EventTime:  now, ReportingController: "fluxjob-controller", ReportingInstance: "bench",
				Action: "Reconcile", Reason: "Succeeded", Type: corev1.EventTypeNormal, Note: "Flux job ƒ2Q6Jf8Y3 completed (exit 0)",
				Regarding: corev1.ObjectReference{APIVersion: obj.GetAPIVersion(), Kind: obj.GetKind(), Namespace: obj.GetNamespace(), Name: obj.GetName(), UID: obj.GetUID()},
			})
		}},
		{"patch-fluxjob-status-without-events", fluxjobv1.GroupVersion.WithKind("FluxJob"), true, func(ctx context.Context, obj *unstructured.Unstructured) error {
			base := obj.DeepCopy()
			st := maps.Clone(status)
			delete(st, "events")
			obj.Object["status"] = st
			return e.c.Status().Patch(ctx, obj, clientMergeLocked(base))
		}},
		{"create-fluxjob-without-cel", plain, false, nil},
		{"patch-fluxjob-status-without-cel", plain, true, func(ctx context.Context, obj *unstructured.Unstructured) error {
			base := obj.DeepCopy()
			obj.Object["status"] = status
			return e.c.Status().Patch(ctx, obj, clientMergeLocked(base))
		}},
	}
	create := func(ctx context.Context, obj *unstructured.Unstructured) error { return e.c.Create(ctx, obj) }
	for _, row := range rows {
		b.Run(row.name, func(b *testing.B) {
			var prepare func(context.Context, *unstructured.Unstructured) error
			if row.setup {
				prepare = create
			}
			e.requestCost(b, ctx, ns, n, row.gvk, prepare, row.do, false)
		})
	}
}

// requestCost runs one row of the API-server-cost benchmarks: b.N times,
// n new objects of kind gvk named after the row, prepare (nil: nothing)
// on each, then the timed requests do (nil: the create) from 8 clients.
// It reports apiserver+etcd-cpu-ms/request and requests/s, and with
// profile set takes the control plane's CPU profiles during the timed
// requests (see profileControlPlane).
func (e *benchEnv) requestCost(b *testing.B, ctx context.Context, ns string, n int, gvk schema.GroupVersionKind,
	prepare, do func(context.Context, *unstructured.Unstructured) error, profile bool) {
	b.Helper()
	if do == nil {
		do = func(ctx context.Context, obj *unstructured.Unstructured) error { return e.c.Create(ctx, obj) }
	}
	row := b.Name()[strings.LastIndexByte(b.Name(), '/')+1:] // the row's name, as the objects' prefix
	var cpu, elapsed time.Duration
	for iter := range b.N {
		objs := make([]*unstructured.Unstructured, n)
		for i := range objs {
			objs[i] = benchObject(gvk, ns, fmt.Sprintf("%s-%d-%d", row, iter, i))
		}
		if prepare != nil {
			if err := forEach(ctx, objs, prepare); err != nil {
				b.Fatal(err)
			}
		}
		profiled := make(<-chan struct{})
		if profile {
			profiled = e.profileControlPlane(b, ctx)
		}
		c0, start := childCPU(), time.Now()
		if err := forEach(ctx, objs, do); err != nil {
			b.Fatal(err)
		}
		elapsed += time.Since(start)
		c1 := childCPU()
		cpu += c1["kube-apiserver"] + c1["etcd"] - c0["kube-apiserver"] - c0["etcd"]
		if profile {
			<-profiled
		}
	}
	reqs := float64(n * b.N)
	b.ReportMetric(float64(cpu.Microseconds())/1000/reqs, "apiserver+etcd-cpu-ms/request")
	b.ReportMetric(reqs/elapsed.Seconds(), "requests/s")
}

// benchObject is an object of kind gvk to create: a FluxJob of `true`
// (also for the plain copy of the CRD) or an empty ConfigMap.
func benchObject(gvk schema.GroupVersionKind, ns, name string) *unstructured.Unstructured {
	obj := &unstructured.Unstructured{Object: map[string]any{}}
	if gvk.Kind == "FluxJob" {
		obj.Object["spec"] = map[string]any{"command": []any{"true"}}
	}
	obj.SetGroupVersionKind(gvk)
	obj.SetNamespace(ns)
	obj.SetName(name)
	return obj
}

// benchStatus is the final status of a FluxJob of `true` as the
// controller writes it, in unstructured form.
func benchStatus() map[string]any {
	return benchStatusOf([]string{"validate", "depend", "priority", "alloc", "start", "finish", "release", "free", "clean"},
		broker.Outcome{Kind: broker.OutcomeExited})
}

// benchStatusOf is the status the controller writes for a FluxJob of
// `true` whose eventlog has reached the events named (after "submit"),
// with the given outcome.
func benchStatusOf(names []string, out broker.Outcome) map[string]any {
	obj := &fluxjobv1.FluxJob{ObjectMeta: metav1.ObjectMeta{Generation: 1}}
	t := 1700000000.25
	evs := []job.Event{{Name: "submit", Timestamp: t, Context: map[string]any{"userid": 1000.0, "urgency": 16.0, "flags": 0.0, "version": 1.0}}}
	for i, name := range names {
		ctx := map[string]any(nil)
		if name == "finish" {
			ctx = map[string]any{"status": 0.0}
		}
		evs = append(evs, job.Event{Name: name, Timestamp: t + float64(i+1)*0.001, Context: ctx})
	}
	obj.Status = computeStatus(obj, statusInput{Reachable: true, Obs: &broker.View{JobID: 1234567890123, HasJobID: true, Events: evs,
		Outcome: out}}, time.Unix(1700000001, 0))
	u, err := k8sruntime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		panic(err)
	}
	return u["status"].(map[string]any)
}

// forEach runs do on every object with 8 concurrent clients.
func forEach(ctx context.Context, objs []*unstructured.Unstructured, do func(context.Context, *unstructured.Unstructured) error) error {
	return parallel(len(objs), func(i int) error {
		if err := do(ctx, objs[i]); err != nil {
			return fmt.Errorf("%s %s: %w", objs[i].GetKind(), objs[i].GetName(), err)
		}
		return nil
	})
}

// installPlainCRD installs a copy of the FluxJob CRD in group
// plain.fluxjob.io with every x-kubernetes-validations (CEL) rule removed,
// and returns its kind.
func (e *benchEnv) installPlainCRD(b *testing.B) schema.GroupVersionKind {
	return e.installCRDVariant(b, "plain.fluxjob.io", nil)
}

// installCRDVariant installs a copy of the FluxJob CRD in group, with
// every x-kubernetes-validations (CEL) rule removed and then mutate (if
// not nil) applied to it, and returns its kind.
func (e *benchEnv) installCRDVariant(b *testing.B, group string, mutate func(crd map[string]any)) schema.GroupVersionKind {
	b.Helper()
	data, err := os.ReadFile(filepath.Join("..", "config", "crd", "bases", "fluxjob.io_fluxjobs.yaml"))
	if err != nil {
		b.Fatal(err)
	}
	var crd map[string]any
	if err := yaml.Unmarshal(data, &crd); err != nil {
		b.Fatal(err)
	}
	var strip func(v any)
	strip = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			delete(v, "x-kubernetes-validations")
			for _, c := range v {
				strip(c)
			}
		case []any:
			for _, c := range v {
				strip(c)
			}
		}
	}
	strip(crd)
	if mutate != nil {
		mutate(crd)
	}
	crd["metadata"].(map[string]any)["name"] = "fluxjobs." + group
	crd["spec"].(map[string]any)["group"] = group
	out, err := yaml.Marshal(crd)
	if err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "crd.yaml"), out, 0o600); err != nil {
		b.Fatal(err)
	}
	if _, err := envtest.InstallCRDs(e.cfg, envtest.CRDInstallOptions{Paths: []string{dir}, ErrorIfPathMissing: true}); err != nil {
		b.Fatalf("installing the CRD variant %s: %v", group, err)
	}
	return schema.GroupVersionKind{Group: group, Version: fluxjobv1.GroupVersion.Version, Kind: "FluxJob"}
}

// drainWatch watches the objects of kind gvk in ns, and discards what it
// gets, until ctx ends or the server closes the watch.
func (e *benchEnv) drainWatch(b *testing.B, ctx context.Context, ns string, gvk schema.GroupVersionKind) {
	b.Helper()
	list := &unstructured.UnstructuredList{}
	list.SetGroupVersionKind(gvk.GroupVersion().WithKind(gvk.Kind + "List"))
	w, err := e.c.Watch(ctx, list, client.InNamespace(ns))
	if err != nil {
		b.Fatalf("watching %s: %v", gvk.Kind, err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range w.ResultChan() {
		}
	}()
	b.Cleanup(func() { w.Stop(); <-done })
}

// TestRepoPath: profile paths are printed relative to the repository, and
// paths outside it as given.
func TestRepoPath(t *testing.T) {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	outside := filepath.Join(filepath.Dir(root), "elsewhere", "x.pprof")
	for _, tc := range []struct{ in, want string }{
		{filepath.Join(root, "bin", "bench", "a.pprof"), filepath.Join("bin", "bench", "a.pprof")},
		{"../bin/bench/b.pprof", filepath.Join("bin", "bench", "b.pprof")},
		{outside, outside},
	} {
		if got := repoPath(tc.in); got != tc.want {
			t.Errorf("repoPath(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
