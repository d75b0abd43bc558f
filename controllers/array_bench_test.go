package controllers

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
)

// BenchmarkControllerArray is issue 21's array row: on one broker (a real
// `flux start --test-size=1` when flux-core is on PATH, else the test
// broker process), one FluxJob of N indexes run by the manager binary in
// its own process, then `flux submit --cc=1-N --wait` of the same job on
// the same instance (flux-core only), for N = 1,000 and 10,000
// ($ARRAY_BENCH_SIZES, comma-separated, overrides them). The jobs run in
// flux-core's test execution mode, as BenchmarkControllerSideBySide's do.
//
// Metrics per row: indexes/s (the FluxJob's creation to Succeeded),
// native-jobs/s and k8s/native (goal >= 0.9), api-requests/array (the
// manager's requests to the API server for the whole array: goal constant,
// not per index), status-writes/array, object-writes/array (marker
// patches), and CPU per index of the manager and the broker.
func BenchmarkControllerArray(b *testing.B) {
	sizes := []int{1000, 10000}
	if v := os.Getenv("ARRAY_BENCH_SIZES"); v != "" {
		sizes = nil
		for _, f := range strings.Split(v, ",") {
			n, err := strconv.Atoi(f)
			if err != nil || n < 1 {
				b.Fatalf("ARRAY_BENCH_SIZES=%q", v)
			}
			sizes = append(sizes, n)
		}
	}
	e := newControlPlane(b)
	br := startSideBroker(b)
	e.uri = br.uri
	m := e.startManagerProcess(b)
	for _, n := range sizes {
		b.Run(fmt.Sprintf("broker=%s/indexes=%d", br.kind, n), func(b *testing.B) {
			for range b.N {
				arrayRow(b, e, br, m, n)
			}
		})
	}
}

// arrayProfileSeconds is how much of an array row the manager's CPU
// profile covers (with $BENCH_PROFILE_DIR), from the FluxJob's creation.
const arrayProfileSeconds = 60

// profileCPU, when $BENCH_PROFILE_DIR is set, takes a CPU profile of the
// manager for seconds from now and writes it there as
// manager-<row>.cpu.pprof; the channel is closed once it is written (at
// once when not profiling).
func (m *managerProcess) profileCPU(b *testing.B, ctx context.Context, seconds int) <-chan struct{} {
	done := make(chan struct{})
	dir, row := profileRow(b)
	if dir == "" {
		close(done)
		return done
	}
	path := filepath.Join(dir, "manager-"+row+".cpu.pprof")
	go func() {
		defer close(done)
		if err := fetchTo(ctx, http.DefaultClient, m.pprof+"/debug/pprof/profile?seconds="+strconv.Itoa(seconds), path); err != nil {
			b.Errorf("CPU profile of the manager: %v", err)
			return
		}
		b.Logf("CPU profile of the manager (first %ds): %s", seconds, repoPath(path))
	}()
	return done
}

// arrayRow runs one row: the array FluxJob, then the native submission.
func arrayRow(b *testing.B, e *benchEnv, br *sideBroker, m *managerProcess, n int) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	b.Logf("load average before the row: %s", loadAvg())
	spec := sideJobspec(b, br.kind == kindFluxCore)
	ns := e.namespace(b)
	before := e.sideCPU(b, br, m)
	metrics0 := m.metricsText(b, ctx)
	profiled := m.profileCPU(b, ctx, arrayProfileSeconds)
	start := time.Now()
	obj := &fluxjobv1.FluxJob{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "array"},
		Spec: fluxjobv1.FluxJobSpec{Jobspec: spec, Array: &fluxjobv1.ArraySpec{Indexes: "1-" + strconv.Itoa(n)}}}
	if err := e.c.Create(ctx, obj); err != nil {
		b.Fatal(err)
	}
	var got fluxjobv1.FluxJob
	for {
		if err := e.c.Get(ctx, client.ObjectKeyFromObject(obj), &got); err != nil {
			b.Fatal(err)
		}
		if got.Status.Phase.IsTerminal() {
			break
		}
		select {
		case <-ctx.Done():
			b.Fatalf("the array did not finish: %s", got.Status.Message)
		case <-time.After(20 * time.Millisecond):
		}
	}
	k8s := time.Since(start)
	arraySpan := br.span(b, ctx, n)
	<-profiled
	if got.Status.Phase != fluxjobv1.PhaseSucceeded {
		b.Fatalf("the array ended %s: %s", got.Status.Phase, got.Status.Message)
	}
	after := e.sideCPU(b, br, m)
	metrics1 := m.metricsText(b, ctx)
	since := func(name, label string) map[string]float64 {
		out := sumByLabel(metrics1, name, label)
		for k, v := range sumByLabel(metrics0, name, label) {
			out[k] -= v
		}
		return out
	}
	reqs := sumSamples(metrics1, "rest_client_requests_total") - sumSamples(metrics0, "rest_client_requests_total")
	methods := since("rest_client_requests_total", "method")
	writes := since("fluxjob_status_patches_total", "result")
	br.jobs += n
	per := float64(n)
	cpu := func(k string) float64 { return float64((after[k] - before[k]).Microseconds()) / 1000 / per }
	b.ReportMetric(per/k8s.Seconds(), "indexes/s")
	b.ReportMetric(reqs, "api-requests/array")
	b.ReportMetric(writes["success"], "status-writes/array")
	b.ReportMetric(methods["PATCH"]-writes["success"]-writes["conflict"], "object-writes/array")
	b.ReportMetric(cpu("manager"), "manager-cpu-ms/index")
	b.ReportMetric(cpu("broker"), "broker-cpu-ms/index")
	arraySpan.report(b, "", start, k8s)
	b.Logf("one FluxJob of %d indexes: %s (%.1f indexes/s; %s); manager API requests %.0f (%s), status writes %.0f; CPU per index: manager %.3f ms, broker %.3f ms, kube-apiserver+etcd %.3f ms; load average %s",
		n, k8s.Round(time.Millisecond), per/k8s.Seconds(), arraySpan.describe(start, k8s), reqs, perMethod(methods, 1), writes["success"], cpu("manager"), cpu("broker"),
		cpu("kube-apiserver")+cpu("etcd"), loadAvg())
	if br.kind != kindFluxCore {
		return
	}
	before = e.sideCPU(b, br, m)
	natStart := time.Now()
	nat, client, err := br.nativeSubmit(ctx, n)
	if err != nil {
		b.Fatal(err)
	}
	natSpan := br.span(b, ctx, n)
	after = e.sideCPU(b, br, m)
	br.jobs += n
	natSpan.report(b, "native-", natStart, nat)
	b.ReportMetric(per/nat.Seconds(), "native-jobs/s")
	b.ReportMetric(nat.Seconds()/k8s.Seconds(), "k8s/native")
	b.ReportMetric(float64(client.Microseconds())/1000/per, "native-client-cpu-ms/job")
	b.ReportMetric(cpu("broker"), "native-broker-cpu-ms/job")
	b.Logf("flux submit --cc=1-%d --wait: %s (%.1f/s; %s); broker CPU %.3f ms/job; array / native = %.2f; load average %s",
		n, nat.Round(time.Millisecond), per/nat.Seconds(), natSpan.describe(natStart, nat), cpu("broker"), nat.Seconds()/k8s.Seconds(), loadAvg())
}

// fluxSpan is when Flux itself saw a row's jobs: the first submission
// and the last job's end (job-list's t_submit and t_inactive). It splits
// a row's wall time into what came before Flux had the first job (lead),
// Flux's own span, and what came after the last job ended (tail): a cost
// per array shows in lead or tail, a cost per job in the span.
type fluxSpan struct{ first, last time.Time }

// span reads the fluxSpan of the broker's n newest jobs, the row's own
// (the rows run one after the other and wait for their jobs' end).
func (br *sideBroker) span(b *testing.B, ctx context.Context, n int) fluxSpan {
	b.Helper()
	c, err := flux.Dial(ctx, br.uri)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	jobs, err := job.List(ctx, c, job.ListOptions{MaxEntries: n, Attrs: []string{"t_submit", "t_inactive"}})
	if err != nil {
		b.Fatal(err)
	}
	if len(jobs) != n {
		b.Fatalf("job-list: %d jobs, want the row's %d", len(jobs), n)
	}
	var first, last float64
	for i, j := range jobs {
		if j.TInactive == 0 {
			b.Fatalf("job %s is still active after its row", j.ID.F58())
		}
		if i == 0 || j.TSubmit < first {
			first = j.TSubmit
		}
		last = max(last, j.TInactive)
	}
	return fluxSpan{first: floatTime(first), last: floatTime(last)}
}

// report adds the span's lead, span and tail (seconds) as metrics named
// with prefix, for a row that started at start and took wall.
func (s fluxSpan) report(b *testing.B, prefix string, start time.Time, wall time.Duration) {
	b.ReportMetric(s.first.Sub(start).Seconds(), prefix+"lead-s")
	b.ReportMetric(s.last.Sub(s.first).Seconds(), prefix+"flux-span-s")
	b.ReportMetric(start.Add(wall).Sub(s.last).Seconds(), prefix+"tail-s")
}

// describe is the span in words, for the row's log line.
func (s fluxSpan) describe(start time.Time, wall time.Duration) string {
	return fmt.Sprintf("first submission after %s, Flux's span %s, terminal %s after the last job's end",
		s.first.Sub(start).Round(time.Millisecond), s.last.Sub(s.first).Round(time.Millisecond), start.Add(wall).Sub(s.last).Round(time.Millisecond))
}

// BenchmarkControllerArrayMemory is the manager's memory per index: one
// FluxJob of 100,000 indexes ($ARRAY_MEMORY_INDEXES) held in Flux
// (urgency 0, so every index's job stays active and followed), the
// manager binary in its own process against the test broker process.
// rss-bytes/index is the manager's RSS growth from before the array to
// when every index is submitted, per index (goal <= 1 KiB). With
// $BENCH_PROFILE_DIR set, the manager's heap profile with every index
// held is written there as array-<n>.heap.pprof.
func BenchmarkControllerArrayMemory(b *testing.B) {
	n := envInt(b, "ARRAY_MEMORY_INDEXES", 100000)
	e := newBenchEnv(b)
	m := e.startManagerProcess(b)
	for range b.N {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
		ns := e.namespace(b)
		time.Sleep(2 * time.Second) // the manager settles after start
		rss0 := m.statusKiB(b, "VmRSS")
		zero := int32(0)
		obj := &fluxjobv1.FluxJob{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "big"},
			Spec: fluxjobv1.FluxJobSpec{Command: []string{"true"}, Urgency: &zero,
				Array: &fluxjobv1.ArraySpec{Indexes: "0-" + strconv.Itoa(n-1)}}}
		start := time.Now()
		if err := e.c.Create(ctx, obj); err != nil {
			b.Fatal(err)
		}
		var got fluxjobv1.FluxJob
		for {
			if err := e.c.Get(ctx, client.ObjectKeyFromObject(obj), &got); err != nil {
				b.Fatal(err)
			}
			if a := got.Status.Array; a != nil && a.Pending == 0 && a.Active == int32(n) {
				break
			}
			if got.Status.Phase.IsTerminal() {
				b.Fatalf("the array ended %s: %s", got.Status.Phase, got.Status.Message)
			}
			select {
			case <-ctx.Done():
				b.Fatalf("the array was not submitted: %s", got.Status.Message)
			case <-time.After(100 * time.Millisecond):
			}
		}
		b.Logf("%d indexes submitted and held in %s; load average %s", n, time.Since(start).Round(time.Millisecond), loadAvg())
		time.Sleep(3 * time.Second)
		rss := m.statusKiB(b, "VmRSS")
		metrics := m.metrics(b, ctx)
		if dir := os.Getenv("BENCH_PROFILE_DIR"); dir != "" {
			m.writeHeapProfile(b, ctx, filepath.Join(dir, "array-"+strconv.Itoa(n)+".heap.pprof"))
		}
		b.ReportMetric(float64(rss-rss0)*1024/float64(n), "rss-bytes/index")
		b.ReportMetric(float64(rss)/1024, "rss-MiB")
		b.ReportMetric(metrics["go_memstats_heap_alloc_bytes"]/float64(n), "heap-bytes/index")
		b.Logf("manager RSS %.1f MiB before the array, %.1f MiB with %d held indexes: %.0f bytes/index (heap %.1f MiB, %.0f goroutines); load average %s",
			float64(rss0)/1024, float64(rss)/1024, n, float64(rss-rss0)*1024/float64(n),
			metrics["go_memstats_heap_alloc_bytes"]/(1<<20), metrics["go_goroutines"], loadAvg())
		if err := e.c.Delete(ctx, obj); err != nil {
			b.Fatal(err)
		}
		cancel()
	}
}
