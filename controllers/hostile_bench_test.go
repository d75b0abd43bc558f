package controllers

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/testbroker"
)

// hostileWindow is how long the manager is watched under a hostile
// broker, once after the broker turns hostile and once after a restart:
// longer than a keepalive interval plus its timeout (15s + 10s), so that a
// broker that stops answering is noticed inside it. HOSTILE_WINDOW
// (a duration) lengthens it: 10,000 re-attached streams take minutes to
// fill.
var hostileWindow = 45 * time.Second

// hostileJobs is how many FluxJobs run before the broker turns hostile;
// HOSTILE_JOBS changes it (the 10,000-job rows of docs/benchmarks.md).
var hostileJobs = 1000

func init() {
	if d, err := time.ParseDuration(os.Getenv("HOSTILE_WINDOW")); err == nil && d > 0 {
		hostileWindow = d
	}
	if n, err := strconv.Atoi(os.Getenv("HOSTILE_JOBS")); err == nil && n > 0 {
		hostileJobs = n
	}
}

// BenchmarkManagerHostileBroker measures the manager binary (as
// config/manager/manager.yaml runs it: GOMEMLIMIT from its 256 MiB limit,
// GOGC=50; see startManagerProcess) under a broker that turns hostile
// (issue 19 item 2). One row per mode of fluxbridge/testbroker (and none,
// the baseline), each with its own test broker process (hack/testbroker
// -hostile MODE), FluxEndpoint, namespace and manager process (no
// implicit instance, --watch-namespaces that namespace):
//
//  1. 1,000 FluxJobs (hostileJobs) of `sleep inf` are created and reach Running (one
//     eventlog stream each);
//  2. the manager's VmHWM is reset (/proc/PID/clear_refs 5), the broker
//     is sent SIGUSR1 and turns hostile, 50 more FluxJobs of `sleep 5`
//     are created (so that new eventlog streams and events flow), and the
//     manager is watched for hostileWindow;
//  3. the manager is stopped (SIGTERM) and a new one started against the
//     still-hostile broker (it re-attaches to the 1,050 jobs, reading
//     their eventlogs again), and watched for hostileWindow: the crash
//     loop check.
//
// It asserts nothing about the outcome: it reports, per mode, the peak
// RSS (VmHWM, sampled every 100ms) of each phase against the limit
// (peak-rss-MiB, restart-peak-rss-MiB), whether the process was still
// alive at the end of each window (alive, restart-alive: 1 or 0), and
// logs the FluxEndpoint's Ready reasons and the FluxJobs' phases and
// FluxReachable reasons.
func BenchmarkManagerHostileBroker(b *testing.B) {
	running, fresh := hostileJobs, 50
	e := newControlPlane(b)
	brokerBin := buildBroker(b)
	// One manager binary for every row.
	managerBin, err := filepath.Abs(managerBinary(b, b.TempDir()))
	if err != nil {
		b.Fatal(err)
	}
	b.Setenv("MANAGER_BIN", managerBin)
	for _, mode := range append([]testbroker.Hostile{testbroker.HostileNone}, testbroker.HostileModes...) {
		b.Run("mode="+mode.String(), func(b *testing.B) {
			for range b.N {
				e.hostileRow(b, brokerBin, mode, running, fresh)
			}
		})
	}
}

// hostilePhase is what one window of a hostile row saw.
type hostilePhase struct {
	peakKiB  int64
	alive    bool
	exit     string   // the process state if it exited
	panics   int      // "panic" lines in its output
	ready    []string // the FluxEndpoint's Ready states, in order, each once
	readyMsg string   // the message of the last non-True Ready
	jobs     string   // FluxJobs by phase and FluxReachable reason at the end
}

func (e *benchEnv) hostileRow(b *testing.B, brokerBin string, mode testbroker.Hostile, running, fresh int) {
	var args []string
	if mode != testbroker.HostileNone {
		args = []string{"-hostile", mode.String()}
	}
	brokerProc, uri := runBrokerProcess(b, brokerBin, args...)
	e.uri = uri
	ns := e.namespace(b)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	fe := &fluxjobv1.FluxEndpoint{ObjectMeta: metav1.ObjectMeta{Name: ns}, Spec: fluxjobv1.FluxEndpointSpec{
		Connection: fluxjobv1.FluxEndpointConnection{URI: uri}, NamespaceSelector: &metav1.LabelSelector{}}}
	if err := e.c.Create(ctx, fe); err != nil {
		b.Fatal(err)
	}
	// Later rows' managers must not connect to this row's broker.
	b.Cleanup(func() { _ = e.c.Delete(context.Background(), fe) })
	managerArgs := []string{"--default-instance=", "--watch-namespaces=" + ns}
	m := e.startManagerProcess(b, managerArgs...)
	e.waitEndpointReady(b, ctx, fe.Name)

	pw := e.watchPhases(b, ctx, ns)
	start := time.Now()
	e.createJobSpecs(b, ctx, ns, running, func(int) fluxjobv1.FluxJobSpec {
		return fluxjobv1.FluxJobSpec{Command: []string{"sleep", "inf"}, Instance: fe.Name}
	})
	err := pw.until(ctx, func(c map[fluxjobv1.FluxJobPhase]int) bool {
		return c[fluxjobv1.PhaseRunning] == running || c[fluxjobv1.PhaseFailed] > 0
	})
	pw.stop()
	if err != nil {
		b.Fatal(err)
	}
	if f := pw.counts()[fluxjobv1.PhaseFailed]; f > 0 {
		b.Fatalf("%d FluxJobs failed before the broker turned hostile", f)
	}
	b.Logf("%d FluxJobs Running in %s", running, time.Since(start).Round(time.Millisecond))

	b.ResetTimer()
	if err := os.WriteFile(filepath.Join("/proc", strconv.Itoa(m.cmd.Process.Pid), "clear_refs"), []byte("5"), 0); err != nil {
		b.Fatalf("resetting the manager's VmHWM: %v", err)
	}
	if mode != testbroker.HostileNone {
		if err := brokerProc.Signal(syscall.SIGUSR1); err != nil {
			b.Fatalf("turning the broker hostile: %v", err)
		}
	}
	if err := parallel(fresh, func(i int) error {
		return e.c.Create(ctx, &fluxjobv1.FluxJob{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "fresh-" + strconv.Itoa(i)},
			Spec: fluxjobv1.FluxJobSpec{Command: []string{"sleep", "5"}, Instance: fe.Name}})
	}); err != nil {
		b.Fatal(err)
	}
	hostile := e.watchHostile(b, ctx, m, fe.Name, ns)
	m.stop(b)
	m2 := e.startManagerProcess(b, managerArgs...)
	restart := e.watchHostile(b, ctx, m2, fe.Name, ns)
	b.StopTimer()

	limit := float64(m.memLimit) / (1 << 20)
	b.ReportMetric(float64(hostile.peakKiB)/1024, "peak-rss-MiB")
	b.ReportMetric(float64(restart.peakKiB)/1024, "restart-peak-rss-MiB")
	b.ReportMetric(boolMetric(hostile.alive), "alive")
	b.ReportMetric(boolMetric(restart.alive), "restart-alive")
	for _, p := range []struct {
		name string
		ph   hostilePhase
	}{{"hostile", hostile}, {"restarted", restart}} {
		b.Logf("mode %s, %s manager: peak RSS %.1f MiB of the %.0f MiB limit (%.0f%%); %s; FluxEndpoint Ready: %s; FluxJobs: %s",
			mode, p.name, float64(p.ph.peakKiB)/1024, limit, 100*float64(p.ph.peakKiB)/1024/limit, p.ph.state(),
			strings.Join(p.ph.ready, " -> "), p.ph.jobs)
		if p.ph.readyMsg != "" {
			// The socket is a temporary path of this machine.
			msg := strings.ReplaceAll(p.ph.readyMsg, uri, "local://SOCKET")
			b.Logf("mode %s, %s manager: last Ready=False message: %s", mode, p.name, fluxjobv1.Clip(msg, 300))
		}
	}
}

func boolMetric(v bool) float64 {
	if v {
		return 1
	}
	return 0
}

// state says whether the process was alive and what its output showed.
func (p hostilePhase) state() string {
	s := "alive"
	if !p.alive {
		s = "EXITED (" + p.exit + ")"
	}
	if p.panics > 0 {
		s += fmt.Sprintf(", %d panic lines in its output", p.panics)
	}
	return s
}

// watchHostile follows manager m for hostileWindow (less if it exits):
// its peak RSS, the Ready states of FluxEndpoint name; then the FluxJobs
// of ns.
func (e *benchEnv) watchHostile(b *testing.B, ctx context.Context, m *managerProcess, name, ns string) hostilePhase {
	b.Helper()
	var ph hostilePhase
	var peak atomic.Int64
	sample := func() {
		if v, err := procStatusKiB(m.cmd.Process.Pid, "VmHWM"); err == nil {
			peak.Store(max(peak.Load(), v))
		}
	}
	end := time.After(hostileWindow)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	lastPoll := time.Time{}
watch:
	for {
		sample()
		if time.Since(lastPoll) >= 500*time.Millisecond {
			lastPoll = time.Now()
			var fe fluxjobv1.FluxEndpoint
			if err := e.c.Get(ctx, client.ObjectKey{Name: name}, &fe); err == nil {
				if c := meta.FindStatusCondition(fe.Status.Conditions, fluxjobv1.InstanceConditionReady); c != nil {
					st := string(c.Status) + "/" + c.Reason
					if len(ph.ready) == 0 || ph.ready[len(ph.ready)-1] != st {
						ph.ready = append(ph.ready, st)
					}
					if c.Status != metav1.ConditionTrue {
						ph.readyMsg = c.Message
					}
				}
			}
		}
		select {
		case <-m.done:
			break watch
		case <-end:
			break watch
		case <-ctx.Done():
			b.Fatal(ctx.Err())
		case <-tick.C:
		}
	}
	ph.peakKiB = peak.Load()
	select {
	case <-m.done:
		ph.exit = m.cmd.ProcessState.String()
	default:
		ph.alive = true
	}
	if out, err := os.ReadFile(m.logPath); err == nil {
		ph.panics = strings.Count(string(out), "panic")
	}
	var list fluxjobv1.FluxJobList
	if err := e.c.List(ctx, &list, client.InNamespace(ns)); err != nil {
		b.Fatal(err)
	}
	ph.jobs = jobSummary(list.Items)
	return ph
}

// jobSummary counts FluxJobs by phase and FluxReachable condition
// ("Running FluxReachable=False/FluxUnreachable: 1000").
func jobSummary(jobs []fluxjobv1.FluxJob) string {
	counts := map[string]int{}
	for i := range jobs {
		key := string(jobs[i].Status.Phase)
		if key == "" {
			key = "(no phase)"
		}
		if c := meta.FindStatusCondition(jobs[i].Status.Conditions, fluxjobv1.ConditionFluxReachable); c != nil {
			key += " FluxReachable=" + string(c.Status) + "/" + c.Reason
		}
		counts[key]++
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(counts)) {
		parts = append(parts, fmt.Sprintf("%s: %d", k, counts[k]))
	}
	return strings.Join(parts, ", ")
}

// waitEndpointReady waits up to 2 minutes for FluxEndpoint name's Ready
// condition to be True.
func (e *benchEnv) waitEndpointReady(b *testing.B, ctx context.Context, name string) {
	b.Helper()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	for {
		var fe fluxjobv1.FluxEndpoint
		if err := e.c.Get(ctx, client.ObjectKey{Name: name}, &fe); err == nil && meta.IsStatusConditionTrue(fe.Status.Conditions, fluxjobv1.InstanceConditionReady) {
			return
		}
		select {
		case <-ctx.Done():
			b.Fatalf("FluxEndpoint %s not Ready within 2m", name)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
