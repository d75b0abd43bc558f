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
	"k8s.io/apimachinery/pkg/fields"
	"sigs.k8s.io/controller-runtime/pkg/client"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
)

// BenchmarkControllerArray is issue 21's array row: on one broker (a real
// `flux start --test-size=1` when flux-core is on PATH, else the test
// broker process), one FluxJob of N indexes run by the manager binary in
// its own process, and `flux submit --cc=1-N --wait` of the same job on
// the same instance (flux-core only), for N = 1,000 and 10,000
// ($ARRAY_BENCH_SIZES, comma-separated, overrides them). The jobs run in
// flux-core's test execution mode, as BenchmarkControllerSideBySide's do.
//
// A broker's cost per job drifts with what it has run: its first jobs are
// slower, and every inactive job it keeps makes the next ones dearer. So
// the halves run in the order array, native, native, array (two rounds,
// the second reversed), after a warm-up of flux-core (100 jobs by `flux
// submit`, not measured): each kind meets the same broker history on
// average, and the ratio is of the two halves' total times.
//
// Metrics per row: indexes/s (the FluxJob's creation to Succeeded),
// native-jobs/s and k8s/native (goal >= 0.9), lead-s, flux-span-s and
// tail-s of each half (fluxSpan), api-requests/array (the manager's
// requests to the API server for one array: goal constant, not per
// index), status-writes/array, object-writes/array (marker patches), and
// CPU per index of the manager and the broker.
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
	if br.kind == kindFluxCore {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		if _, _, err := br.nativeSubmit(ctx, 100); err != nil {
			b.Fatalf("warming flux-core up: %v", err)
		}
		cancel()
		br.jobs += 100
	}
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

// arrayRow runs one row: array and native halves in the order array,
// native, native, array against flux-core (array only against the test
// broker), then reports their totals.
func arrayRow(b *testing.B, e *benchEnv, br *sideBroker, m *managerProcess, n int) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Minute)
	defer cancel()
	b.Logf("load average before the row: %s", loadAvg())
	var arr, nat arrayTotals
	arrayHalf(b, ctx, e, br, m, n, &arr)
	if br.kind == kindFluxCore {
		nativeHalf(b, ctx, e, br, m, n, &nat)
		nativeHalf(b, ctx, e, br, m, n, &nat)
		arrayHalf(b, ctx, e, br, m, n, &arr)
	}
	per := float64(n * arr.halves)
	b.ReportMetric(per/arr.wall.Seconds(), "indexes/s")
	arr.report(b, "")
	b.ReportMetric(arr.requests/float64(arr.halves), "api-requests/array")
	b.ReportMetric(arr.statusWrites/float64(arr.halves), "status-writes/array")
	b.ReportMetric(arr.objectWrites/float64(arr.halves), "object-writes/array")
	b.ReportMetric(arr.cpu["manager"].Seconds()*1000/per, "manager-cpu-ms/index")
	b.ReportMetric(arr.cpu["broker"].Seconds()*1000/per, "broker-cpu-ms/index")
	b.ReportMetric(arr.cpu["broker-processes"].Seconds()*1000/per, "broker-processes-cpu-ms/index")
	if nat.halves == 0 {
		return
	}
	b.ReportMetric(per/nat.wall.Seconds(), "native-jobs/s")
	nat.report(b, "native-")
	b.ReportMetric(nat.wall.Seconds()/arr.wall.Seconds(), "k8s/native")
	b.ReportMetric(nat.client.Seconds()*1000/per, "native-client-cpu-ms/job")
	b.ReportMetric(nat.cpu["broker"].Seconds()*1000/per, "native-broker-cpu-ms/job")
	b.ReportMetric(nat.cpu["broker-processes"].Seconds()*1000/per, "native-broker-processes-cpu-ms/job")
	b.Logf("%d indexes, two halves each: array %s, flux submit %s: array / native = %.2f",
		n, arr.wall.Round(time.Millisecond), nat.wall.Round(time.Millisecond), nat.wall.Seconds()/arr.wall.Seconds())
}

// arrayTotals adds up one kind of half over a row.
type arrayTotals struct {
	halves                               int
	wall, lead, span, tail, client       time.Duration
	requests, statusWrites, objectWrites float64
	cpu                                  map[string]time.Duration
}

// add counts one half that started at start and took wall.
func (t *arrayTotals) add(s fluxSpan, start time.Time, wall time.Duration, cpu0, cpu1 map[string]time.Duration) {
	lead, span, tail := s.parts(start, wall)
	t.halves++
	t.wall += wall
	t.lead += lead
	t.span += span
	t.tail += tail
	if t.cpu == nil {
		t.cpu = map[string]time.Duration{}
	}
	for k, v := range cpu1 {
		t.cpu[k] += v - cpu0[k]
	}
}

// report adds the mean lead, span and tail of the halves (seconds) as
// metrics named with prefix.
func (t *arrayTotals) report(b *testing.B, prefix string) {
	h := float64(t.halves)
	b.ReportMetric(t.lead.Seconds()/h, prefix+"lead-s")
	b.ReportMetric(t.span.Seconds()/h, prefix+"flux-span-s")
	b.ReportMetric(t.tail.Seconds()/h, prefix+"tail-s")
}

// arrayHalf runs one FluxJob of n indexes to its end and adds it to t.
func arrayHalf(b *testing.B, ctx context.Context, e *benchEnv, br *sideBroker, m *managerProcess, n int, t *arrayTotals) {
	spec := sideJobspec(b, br.kind == kindFluxCore)
	ns := e.namespace(b)
	before := e.sideCPU(b, br, m)
	metrics0 := m.metricsText(b, ctx)
	var profiled <-chan struct{} = closedChan
	if t.halves == 0 {
		profiled = m.profileCPU(b, ctx, arrayProfileSeconds)
	}
	start := time.Now()
	obj := &fluxjobv1.FluxJob{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "array"},
		Spec: fluxjobv1.FluxJobSpec{Jobspec: spec, Array: &fluxjobv1.ArraySpec{Indexes: "1-" + strconv.Itoa(n)}}}
	if err := e.c.Create(ctx, obj); err != nil {
		b.Fatal(err)
	}
	got, err := e.awaitTerminal(ctx, client.ObjectKeyFromObject(obj))
	if err != nil {
		b.Fatalf("the array did not finish: %v", err)
	}
	wall := time.Since(start)
	sp := br.span(b, ctx, n)
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
	t.add(sp, start, wall, before, after)
	t.requests += reqs
	t.statusWrites += writes["success"]
	t.objectWrites += methods["PATCH"] - writes["success"] - writes["conflict"]
	per := float64(n)
	cpu := func(k string) float64 { return float64((after[k] - before[k]).Microseconds()) / 1000 / per }
	b.Logf("one FluxJob of %d indexes: %s (%.1f indexes/s; %s); manager API requests %.0f (%s), status writes %.0f; CPU per index: manager %.3f ms, broker %.3f ms (its processes %.3f ms), kube-apiserver+etcd %.3f ms; load average %s",
		n, wall.Round(time.Millisecond), per/wall.Seconds(), sp.describe(start, wall), reqs, perMethod(methods, 1), writes["success"], cpu("manager"), cpu("broker"),
		cpu("broker-processes"), cpu("kube-apiserver")+cpu("etcd"), loadAvg())
}

// awaitTerminal waits until the FluxJob key's phase is terminal and
// returns it, watching it as `kubectl wait` does. Polling it instead (a
// GET every 20 ms) cost kube-apiserver and etcd about 3 ms of CPU per
// index of a 1,000-index row, taken from the broker on a 2-core machine:
// the harness's load, not the array's.
func (e *benchEnv) awaitTerminal(ctx context.Context, key client.ObjectKey) (fluxjobv1.FluxJob, error) {
	one := fields.OneTermEqualSelector("metadata.name", key.Name)
	for {
		var list fluxjobv1.FluxJobList
		if err := e.c.List(ctx, &list, &client.ListOptions{Namespace: key.Namespace, FieldSelector: one}); err != nil {
			return fluxjobv1.FluxJob{}, err
		}
		for _, it := range list.Items {
			if it.Status.Phase.IsTerminal() {
				return it, nil
			}
		}
		w, err := e.c.Watch(ctx, &fluxjobv1.FluxJobList{}, &client.ListOptions{Namespace: key.Namespace, FieldSelector: one,
			Raw: &metav1.ListOptions{ResourceVersion: list.ResourceVersion}})
		if err != nil {
			return fluxjobv1.FluxJob{}, err
		}
		for closed := false; !closed; {
			select {
			case <-ctx.Done():
				w.Stop()
				return fluxjobv1.FluxJob{}, ctx.Err()
			case ev, ok := <-w.ResultChan():
				if !ok {
					closed = true // the server ended the watch: list and watch again
					break
				}
				if obj, ok := ev.Object.(*fluxjobv1.FluxJob); ok && obj.Status.Phase.IsTerminal() {
					w.Stop()
					return *obj, nil
				}
			}
		}
		w.Stop()
	}
}

// closedChan is a channel that never blocks a receive.
var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// nativeHalf runs `flux submit --cc=1-n --wait` and adds it to t.
func nativeHalf(b *testing.B, ctx context.Context, e *benchEnv, br *sideBroker, m *managerProcess, n int, t *arrayTotals) {
	before := e.sideCPU(b, br, m)
	start := time.Now()
	wall, client, err := br.nativeSubmit(ctx, n)
	if err != nil {
		b.Fatal(err)
	}
	sp := br.span(b, ctx, n)
	after := e.sideCPU(b, br, m)
	br.jobs += n
	t.add(sp, start, wall, before, after)
	t.client += client
	per := func(k string) float64 { return float64((after[k] - before[k]).Microseconds()) / 1000 / float64(n) }
	b.Logf("flux submit --cc=1-%d --wait: %s (%.1f/s; %s); CPU per job: broker %.3f ms (its processes %.3f ms), meanwhile manager %.3f ms and kube-apiserver+etcd %.3f ms; load average %s",
		n, wall.Round(time.Millisecond), float64(n)/wall.Seconds(), sp.describe(start, wall), per("broker"), per("broker-processes"),
		per("manager"), per("kube-apiserver")+per("etcd"), loadAvg())
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

// parts splits a half that started at start and took wall into what
// came before Flux had its first job, Flux's span, and what came after
// its last job ended.
func (s fluxSpan) parts(start time.Time, wall time.Duration) (lead, span, tail time.Duration) {
	return s.first.Sub(start), s.last.Sub(s.first), start.Add(wall).Sub(s.last)
}

// describe is the span in words, for the half's log line.
func (s fluxSpan) describe(start time.Time, wall time.Duration) string {
	lead, span, tail := s.parts(start, wall)
	return fmt.Sprintf("first submission after %s, Flux's span %s, terminal %s after the last job's end",
		lead.Round(time.Millisecond), span.Round(time.Millisecond), tail.Round(time.Millisecond))
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
