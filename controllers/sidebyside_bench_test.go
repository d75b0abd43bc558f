package controllers

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
	"github.com/fluxjob/fluxjob-operator/test/fluxendpoint"
)

// sideBySideJobs is the number of jobs each way per row of
// BenchmarkControllerSideBySide ($SIDE_BY_SIDE_JOBS overrides it).
const sideBySideJobs = 1000

// sideBySideHistory is the second history size: inactive jobs in the
// instance before the row ($SIDE_BY_SIDE_HISTORY overrides it).
const sideBySideHistory = 20000

// sideBySideProfile is how many seconds of each row the control plane's
// CPU profiles cover (with $BENCH_PROFILE_DIR).
const sideBySideProfile = 20

// BenchmarkControllerSideBySide is issue 15's side-by-side row: on one
// broker, N FluxJobs created through the API by 8 parallel clients and run
// by the manager binary in its own process (as the Deployment runs it),
// then `flux submit --cc=1-N --wait` of the same jobs on the same instance,
// at two history sizes: fresh, and with ~20,000 inactive jobs made first
// (held submissions cancelled at once: they cost the job manager and
// job-list the same as finished ones). Jobs run in flux-core's test
// execution mode (system.exec.test.run_duration, flux-core
// src/modules/job-exec/testexec.c), so the broker's own bookkeeping is
// what is measured, not process start-up.
//
// The broker is a real `flux start --test-size=1` when flux-core is on
// PATH (rows broker=flux-core), else the test broker process
// (broker=testbroker: no native row, no ratio). The harness watches the
// FluxJobs (one list, then a watch) and never polls lists, so the
// apiserver figure is the manager's cost plus the creates.
//
// Metrics per row: fluxjobs/s (first create to last Succeeded),
// native-jobs/s and k8s/native (the ratio; goal >= 0.8), CPU per job of
// each process (broker-cpu-ms/job for the FluxJobs,
// broker-cpu-ms/native-job for flux submit, and their ratio
// broker-cpu-ratio, goal <= 1.1; apiserver-cpu-ms/job, etcd-cpu-ms/job,
// apiserver+etcd-cpu-ms/job, goal <= 15; manager-cpu-ms/job;
// native-client-cpu-ms/job for the flux submit process), and
// api-requests/job: the manager's requests to the API server (client-go's
// rest_client_requests_total on its metrics endpoint) per FluxJob.
func BenchmarkControllerSideBySide(b *testing.B) {
	n := envInt(b, "SIDE_BY_SIDE_JOBS", sideBySideJobs)
	history := envInt(b, "SIDE_BY_SIDE_HISTORY", sideBySideHistory)
	e := newControlPlane(b)
	br := startSideBroker(b)
	e.uri = br.uri
	m := e.startManagerProcess(b)
	for _, h := range []int{0, history} {
		b.Run(fmt.Sprintf("broker=%s/history=%d", br.kind, h), func(b *testing.B) {
			for range b.N {
				sideBySideRow(b, e, br, m, n, h)
			}
		})
	}
}

// sideBySideRow runs one row: the FluxJobs, then the native submission.
func sideBySideRow(b *testing.B, e *benchEnv, br *sideBroker, m *managerProcess, n, history int) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	if missing := history - br.jobs; missing > 0 {
		start := time.Now()
		if err := br.fill(ctx, missing); err != nil {
			b.Fatal(err)
		}
		b.Logf("made %d inactive jobs in %s", missing, time.Since(start).Round(time.Second))
	}
	b.Logf("history before the row: %d inactive jobs; load average %s", br.jobs, loadAvg())
	spec := sideJobspec(b, br.kind == kindFluxCore)
	ns := e.namespace(b)
	pw := e.watchPhases(b, ctx, ns)
	before := e.sideCPU(b, br, m)
	mods0 := br.moduleCPU(b, ctx)
	kv0 := br.kvsStats(b, ctx)
	metrics0 := m.metricsText(b, ctx)
	// The control plane's CPU profiles of the first sideBySideProfile
	// seconds of the row (with $BENCH_PROFILE_DIR): where its CPU goes.
	e.profileControlPlaneFor(b, ctx, sideBySideProfile)
	start := time.Now()
	var output *fluxjobv1.FluxJobOutputSpec
	if v := os.Getenv("SIDE_BY_SIDE_TAIL_BYTES"); v != "" {
		// An experiment's knob: spec.output.tailBytes of every FluxJob
		// (0: no output read after the job ends).
		tb, err := strconv.Atoi(v)
		if err != nil {
			b.Fatalf("SIDE_BY_SIDE_TAIL_BYTES=%q: %v", v, err)
		}
		t32 := int32(tb)
		output = &fluxjobv1.FluxJobOutputSpec{TailBytes: &t32}
		b.Logf("spec.output.tailBytes %d", tb)
	}
	err := parallel(n, func(i int) error {
		obj := &fluxjobv1.FluxJob{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "job-" + strconv.Itoa(i)},
			Spec:       fluxjobv1.FluxJobSpec{Jobspec: spec, Output: output},
		}
		return e.c.Create(ctx, obj)
	})
	if err != nil {
		b.Fatal(err)
	}
	err = pw.until(ctx, func(c map[fluxjobv1.FluxJobPhase]int) bool {
		return c[fluxjobv1.PhaseSucceeded] == n || c[fluxjobv1.PhaseFailed] > 0
	})
	k8s := time.Since(start)
	after := e.sideCPU(b, br, m)
	mods1 := br.moduleCPU(b, ctx)
	kv1 := br.kvsStats(b, ctx)
	metrics1 := m.metricsText(b, ctx)
	reqs := sumSamples(metrics1, "rest_client_requests_total") - sumSamples(metrics0, "rest_client_requests_total")
	since := func(name, label string) map[string]float64 {
		out := sumByLabel(metrics1, name, label)
		for k, v := range sumByLabel(metrics0, name, label) {
			out[k] -= v
		}
		return out
	}
	methods := since("rest_client_requests_total", "method")
	writes := since("fluxjob_status_patches_total", "result")
	failed := pw.counts()[fluxjobv1.PhaseFailed]
	pw.stop()
	if err != nil {
		b.Fatal(err)
	}
	if failed > 0 {
		b.Fatalf("%d FluxJobs failed", failed)
	}
	br.jobs += n
	per := float64(n)
	cpu := func(k string) float64 { return float64((after[k] - before[k]).Microseconds()) / 1000 / per }
	b.ReportMetric(per/k8s.Seconds(), "fluxjobs/s")
	b.ReportMetric(cpu("broker"), "broker-cpu-ms/job")
	b.ReportMetric(cpu("kube-apiserver"), "apiserver-cpu-ms/job")
	b.ReportMetric(cpu("etcd"), "etcd-cpu-ms/job")
	b.ReportMetric(cpu("kube-apiserver")+cpu("etcd"), "apiserver+etcd-cpu-ms/job")
	b.ReportMetric(cpu("manager"), "manager-cpu-ms/job")
	b.ReportMetric(reqs/per, "api-requests/job")
	b.ReportMetric(writes["success"]/per, "status-writes/job")
	b.ReportMetric(writes["conflict"]/per, "status-conflicts/job")
	b.Logf("%d FluxJobs through the manager: %s (%.1f/s); CPU per FluxJob: broker %.2f ms, kube-apiserver %.2f ms, etcd %.2f ms, manager %.2f ms; manager API requests %.2f/job (status writes %.2f/job, conflicts %.2f/job)",
		n, k8s.Round(time.Millisecond), per/k8s.Seconds(), cpu("broker"), cpu("kube-apiserver"), cpu("etcd"), cpu("manager"), reqs/per, writes["success"]/per, writes["conflict"]/per)
	b.Logf("manager API requests per FluxJob by method: %s", perMethod(methods, per))
	if br.kind != kindFluxCore {
		return
	}
	// The same jobs the native way, on the same instance.
	k8sBroker := cpu("broker")
	nb0 := e.sideCPU(b, br, m)["broker"]
	nat, client, err := br.nativeSubmit(ctx, n)
	if err != nil {
		b.Fatal(err)
	}
	nb1 := e.sideCPU(b, br, m)["broker"]
	mods2 := br.moduleCPU(b, ctx)
	b.Logf("broker CPU per job by module, FluxJobs | native (ms; \"broker\" is the rest: the broker's own thread): %s",
		moduleTable(mods0, mods1, mods2, k8sBroker, float64((nb1-nb0).Microseconds())/1000/per, per))
	if kv0 != nil {
		kv2 := br.kvsStats(b, ctx)
		b.Logf("KVS per job, FluxJobs | native: root updates %.2f | %.2f, transactions %.2f | %.2f (flux module stats kvs: store revision, transaction-opcount.commit.count)",
			(kv1.revision-kv0.revision)/per, (kv2.revision-kv1.revision)/per, (kv1.commits-kv0.commits)/per, (kv2.commits-kv1.commits)/per)
	}
	br.jobs += n
	nativeBroker := float64((nb1 - nb0).Microseconds()) / 1000 / per
	b.ReportMetric(per/nat.Seconds(), "native-jobs/s")
	b.ReportMetric(nat.Seconds()/k8s.Seconds(), "k8s/native")
	b.ReportMetric(nativeBroker, "broker-cpu-ms/native-job")
	b.ReportMetric(k8sBroker/nativeBroker, "broker-cpu-ratio")
	b.ReportMetric(float64(client.Microseconds())/1000/per, "native-client-cpu-ms/job")
	b.Logf("flux submit --cc=1-%d --wait: %s (%.1f/s); broker CPU %.2f ms/job, flux submit's own CPU %.2f ms/job; Kubernetes path / native = %.2f",
		n, nat.Round(time.Millisecond), per/nat.Seconds(), nativeBroker, float64(client.Microseconds())/1000/per, nat.Seconds()/k8s.Seconds())
}

// Kinds of side-by-side broker.
const (
	kindFluxCore   = "flux-core"
	kindTestBroker = "testbroker"
)

// sideBroker is the broker of BenchmarkControllerSideBySide.
type sideBroker struct {
	kind string
	uri  string
	inst *fluxendpoint.Instance // flux-core only
	pid  int                    // flux-core's broker; the test broker is counted as a child
	jobs int                    // jobs the benchmark made so far (all inactive between rows)
}

// startSideBroker starts flux-core when it is installed, else the test
// broker process.
func startSideBroker(b *testing.B) *sideBroker {
	b.Helper()
	if fluxendpoint.Installed() != nil {
		b.Logf("flux-core is not installed: the test broker stands in (no native row)")
		return &sideBroker{kind: kindTestBroker, uri: startBrokerProcess(b)}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	inst, err := fluxendpoint.Start(ctx, fluxendpoint.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if err := inst.Stop(time.Minute); err != nil {
			b.Error(err)
		}
	})
	pid, err := inst.BrokerPID(ctx)
	if err != nil {
		b.Fatal(err)
	}
	version, _ := inst.Flux(ctx, "version")
	b.Logf("broker: flux start --test-size=1 (%s)", strings.Join(strings.Fields(version), " "))
	return &sideBroker{kind: kindFluxCore, uri: inst.URI, inst: inst, pid: pid}
}

// fill makes n inactive jobs: held submissions, cancelled. flux-core
// makes them with its own CLI (flux submit --cc, flux cancel --all, then
// flux queue drain waits until no job is active); the test broker with
// our client.
func (br *sideBroker) fill(ctx context.Context, n int) error {
	defer func() { br.jobs += n }()
	if br.inst != nil {
		if _, err := br.inst.Flux(ctx, "submit", "--quiet", "--cc=1-"+strconv.Itoa(n), "--urgency=0", "true"); err != nil {
			return err
		}
		if _, err := br.inst.Flux(ctx, "cancel", "--all", "--quiet"); err != nil {
			return err
		}
		_, err := br.inst.Flux(ctx, "queue", "drain")
		return err
	}
	c, err := flux.Dial(ctx, br.uri)
	if err != nil {
		return err
	}
	defer c.Close()
	js, err := job.FromCommand([]string{"true"}, job.CommandOptions{Cwd: "/"})
	if err != nil {
		return err
	}
	for range n {
		id, err := job.SubmitJobspec(ctx, c, js, job.SubmitOptions{Urgency: job.Urgency(job.UrgencyHold)})
		if err != nil {
			return err
		}
		if err := job.Cancel(ctx, c, id, ""); err != nil {
			return err
		}
	}
	return nil
}

// perMethod formats requests per job by method.
func perMethod(m map[string]float64, per float64) string {
	keys := slices.Sorted(maps.Keys(m))
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		if m[k] > 0 {
			parts = append(parts, fmt.Sprintf("%s %.3f", k, m[k]/per))
		}
	}
	return strings.Join(parts, ", ")
}

// moduleCPU returns the CPU time so far of each flux-core module thread
// of the broker (flux module stats --rusage=thread); nil for the test
// broker.
func (br *sideBroker) moduleCPU(b *testing.B, ctx context.Context) map[string]time.Duration {
	b.Helper()
	if br.inst == nil {
		return nil
	}
	list, err := br.inst.Flux(ctx, "module", "list")
	if err != nil {
		b.Fatalf("flux module list: %v", err)
	}
	out := map[string]time.Duration{}
	for _, line := range strings.Split(list, "\n")[1:] {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		js, err := br.inst.Flux(ctx, "module", "stats", "--rusage=thread", f[0])
		if err != nil {
			b.Fatalf("flux module stats --rusage=thread %s: %v", f[0], err)
		}
		var ru struct {
			Utime float64 `json:"utime"`
			Stime float64 `json:"stime"`
		}
		if err := json.Unmarshal([]byte(js), &ru); err != nil {
			b.Fatalf("flux module stats --rusage=thread %s: %v", f[0], err)
		}
		out[f[0]] = time.Duration((ru.Utime + ru.Stime) * float64(time.Second))
	}
	return out
}

// kvsCounts are counters of the broker's KVS module.
type kvsCounts struct {
	revision float64 // root updates (namespace.primary "store revision")
	commits  float64 // transactions committed (transaction-opcount.commit.count)
}

// kvsStats reads the KVS module's counters (flux module stats kvs); nil
// for the test broker.
func (br *sideBroker) kvsStats(b *testing.B, ctx context.Context) *kvsCounts {
	b.Helper()
	if br.inst == nil {
		return nil
	}
	js, err := br.inst.Flux(ctx, "module", "stats", "kvs")
	if err != nil {
		b.Fatalf("flux module stats kvs: %v", err)
	}
	var st struct {
		Namespace struct {
			Primary struct {
				Revision float64 `json:"store revision"`
			} `json:"primary"`
		} `json:"namespace"`
		Opcount struct {
			Commit struct {
				Count float64 `json:"count"`
			} `json:"commit"`
		} `json:"transaction-opcount"`
	}
	if err := json.Unmarshal([]byte(js), &st); err != nil {
		b.Fatalf("flux module stats kvs: %v", err)
	}
	return &kvsCounts{revision: st.Namespace.Primary.Revision, commits: st.Opcount.Commit.Count}
}

// moduleTable formats the CPU per job of each module in two intervals
// (a..b: the FluxJobs, b..c: the native jobs), biggest first; the
// broker's total CPU per job in each (ms) gives the rest, its own thread.
func moduleTable(a, b, c map[string]time.Duration, k8sTotal, nativeTotal, per float64) string {
	if a == nil {
		return "n/a"
	}
	type row struct {
		name        string
		k8s, native float64
	}
	var rows []row
	restK, restN := k8sTotal, nativeTotal
	for name := range c {
		k := float64((b[name] - a[name]).Microseconds()) / 1000 / per
		n := float64((c[name] - b[name]).Microseconds()) / 1000 / per
		restK, restN = restK-k, restN-n
		if k >= 0.05 || n >= 0.05 {
			rows = append(rows, row{name, k, n})
		}
	}
	rows = append(rows, row{"broker", restK, restN})
	slices.SortFunc(rows, func(x, y row) int { return cmp.Compare(y.k8s+y.native, x.k8s+x.native) })
	parts := make([]string, len(rows))
	for i, r := range rows {
		parts[i] = fmt.Sprintf("%s %.2f | %.2f", r.name, r.k8s, r.native)
	}
	return strings.Join(parts, ", ")
}

// nativeSubmit runs `flux submit --cc=1-N --wait` of the benchmark's job
// and returns its wall time and its own CPU time.
func (br *sideBroker) nativeSubmit(ctx context.Context, n int) (time.Duration, time.Duration, error) {
	cmd := exec.CommandContext(ctx, "flux", "submit", "--quiet", "--wait", "--cc=1-"+strconv.Itoa(n),
		"--setattr=system.exec.test.run_duration="+testRunDuration, "true")
	cmd.Env = append(os.Environ(), "FLUX_URI="+br.uri)
	start := time.Now()
	out, err := cmd.CombinedOutput()
	wall := time.Since(start)
	if err != nil {
		return 0, 0, fmt.Errorf("flux submit --cc=1-%d --wait: %w: %s", n, err, out)
	}
	ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	if !ok {
		return wall, 0, nil
	}
	return wall, time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), nil
}

// testRunDuration is how long a job "runs" in flux-core's test execution
// mode (an FSD string).
const testRunDuration = "0.001s"

// sideJobspec is the FluxJobs' spec.jobspec: `true`, in test execution
// mode at flux-core (the test broker ignores the attribute).
func sideJobspec(b *testing.B, testExec bool) *k8sruntime.RawExtension {
	b.Helper()
	js, err := job.FromCommand([]string{"true"}, job.CommandOptions{Cwd: "/"})
	if err != nil {
		b.Fatal(err)
	}
	if testExec {
		if js.Attributes.System.Extra == nil {
			js.Attributes.System.Extra = map[string]any{}
		}
		js.Attributes.System.Extra["exec"] = map[string]any{"test": map[string]any{"run_duration": testRunDuration}}
	}
	raw, err := json.Marshal(js)
	if err != nil {
		b.Fatal(err)
	}
	return &k8sruntime.RawExtension{Raw: raw}
}

// sideCPU reads the CPU time so far of the broker, kube-apiserver, etcd
// and the manager. flux-core's broker also runs processes of its own
// (sched-simple is a Python module process in 0.88, job-ingest's
// validators are Python workers): "broker-processes" is their CPU, the
// live ones' and the reaped ones' (which the broker's stat counts).
func (e *benchEnv) sideCPU(b *testing.B, br *sideBroker, m *managerProcess) map[string]time.Duration {
	b.Helper()
	out := childCPU()
	if br.pid != 0 {
		st, err := readProcStat(br.pid)
		if err != nil {
			b.Fatalf("the broker's CPU: %v", err)
		}
		out["broker"] = st.cpu
		out["broker-processes"] = st.reaped + descendantCPU(br.pid)
	} else {
		out["broker"] = out["testbroker"]
	}
	st, err := readProcStat(m.cmd.Process.Pid)
	if err != nil {
		b.Fatalf("the manager's CPU: %v", err)
	}
	out["manager"] = st.cpu
	return out
}

// sumByLabel adds the samples of the metric called name by the value of
// their label (a sample without it is left out).
func sumByLabel(text, name, label string) map[string]float64 {
	out := map[string]float64{}
	for _, line := range strings.Split(text, "\n") {
		if !strings.HasPrefix(line, name+"{") {
			continue
		}
		i := strings.Index(line, label+`="`)
		if i < 0 {
			continue
		}
		v := line[i+len(label)+2:]
		v = v[:strings.IndexByte(v, '"')]
		f := strings.Fields(line)
		if n, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
			out[v] += n
		}
	}
	return out
}

// sumSamples adds every sample of the metric called name (all label sets)
// in a Prometheus text exposition.
func sumSamples(text, name string) float64 {
	total := 0.0
	for _, line := range strings.Split(text, "\n") {
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		f := strings.Fields(line)
		if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
			total += v
		}
	}
	return total
}

// envInt reads a positive integer from the environment, or returns def.
func envInt(b *testing.B, name string, def int) int {
	b.Helper()
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	v, err := strconv.Atoi(s)
	if err != nil || v <= 0 {
		b.Fatalf("%s=%q: want a positive integer", name, s)
	}
	return v
}

// loadAvg is the 1-, 5- and 15-minute load averages.
func loadAvg() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(data))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

func TestSumSamples(t *testing.T) {
	text := `# HELP rest_client_requests_total Number of HTTP requests
# TYPE rest_client_requests_total counter
rest_client_requests_total{code="200",host="127.0.0.1:1",method="GET"} 3
rest_client_requests_total{code="200",host="127.0.0.1:1",method="PATCH"} 2000
rest_client_requests_total_other 7
rest_client_requests_total 1
`
	for _, tc := range []struct {
		name string
		want float64
	}{
		{"rest_client_requests_total", 2004},
		{"rest_client_requests_total_other", 7},
		{"missing", 0},
	} {
		if got := sumSamples(text, tc.name); got != tc.want {
			t.Errorf("sumSamples(%s) = %v; want %v", tc.name, got, tc.want)
		}
	}
	byMethod := sumByLabel(text, "rest_client_requests_total", "method")
	if len(byMethod) != 2 || byMethod["GET"] != 3 || byMethod["PATCH"] != 2000 {
		t.Errorf("sumByLabel(method) = %v; want GET 3, PATCH 2000", byMethod)
	}
}
