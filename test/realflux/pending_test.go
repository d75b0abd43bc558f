package realflux

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/testbroker"
	"github.com/fluxjob/fluxjob-operator/internal/broker"
	"github.com/fluxjob/fluxjob-operator/internal/jobspec"
	"github.com/fluxjob/fluxjob-operator/internal/pending"
)

// TestPendingReasons records, on flux-core and on the test broker
// configured alike (queues batch and debug, default batch, started), what
// each way of waiting looks like through the production client: the
// eventlog events the reason is read from (names and descriptions), the
// queue RPCs (job-manager.queue-list, queue-status, queue-start,
// queue-enable: answers, errnos and messages), the job-list read of the
// jobs in SCHED (broker.ReadWaiting), and the reason internal/pending
// derives from them; then compares the two. Cases: held (urgency 0), an
// afterok dependency on a running job, a begin time, a stopped queue
// (with its reason, then started), a disabled queue (submission refused),
// and a job waiting for cores (sched-simple: no estimate); and arrays
// (their indexes submitted as the controller does, the reason read from
// the first index's eventlog as the controller reads it): held, after a
// running job, with a begin time, in a stopped queue.
func TestPendingReasons(t *testing.T) {
	needFlux(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	inst := queuesInstance(ctx, t)
	cores := realCores(ctx, t, inst)
	srv := testbroker.New(testbroker.Options{Queues: []string{"batch", "debug"}, DefaultQueue: "batch", Cores: cores})
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })

	obs := map[string][]string{}
	begin := strconv.FormatFloat(float64(time.Now().Add(time.Hour).Unix()), 'f', 1, 64)
	for _, tg := range []target{{name: "real", uri: inst.URI, real: true}, {name: "testbroker", uri: srv.URI()}} {
		obs[tg.name] = pendingScenario(t, dial(t, tg.uri), cores, begin)
		for _, line := range obs[tg.name] {
			t.Logf("%s: %s", tg.name, line)
		}
	}
	compare(t, "pending reasons", obs)
}

// queuesInstance starts flux-core with queues batch and debug (default
// batch), started.
func queuesInstance(ctx context.Context, t *testing.T, args ...string) *instance {
	t.Helper()
	conf := t.TempDir()
	toml := "[queues.batch]\n[queues.debug]\n[policy.jobspec.defaults.system]\nqueue = \"batch\"\n"
	if err := os.WriteFile(filepath.Join(conf, "queues.toml"), []byte(toml), 0o600); err != nil {
		t.Fatal(err)
	}
	inst, err := startOwnInstance(ctx, append([]string{"--config-path=" + conf}, args...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := inst.Stop(time.Minute); err != nil {
			t.Error(err)
		}
	})
	if _, err := inst.Flux(ctx, "queue", "start", "--all"); err != nil {
		t.Fatal(err)
	}
	return inst
}

// realCores is how many cores the instance has.
func realCores(ctx context.Context, t *testing.T, inst *instance) int {
	t.Helper()
	out, err := inst.Flux(ctx, "resource", "list", "-s", "free", "-no", "{ncores}")
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(strings.Fields(out)[0])
	if err != nil || n < 1 {
		t.Fatalf("flux resource list: %q", out)
	}
	return n
}

// pendingScenario returns what a broker shows of each way to wait.
// begin is the begin time (RFC 26 begin-time value) of the begin-time case.
func pendingScenario(t *testing.T, c *flux.Conn, cores int, begin string) []string {
	var out []string
	ids := map[job.ID]string{}
	alias := func(s string) string {
		for id, name := range ids {
			s = strings.ReplaceAll(s, id.F58(), name)
		}
		return s
	}
	rpc := func(what, topic string, req any) map[string]any {
		var resp map[string]any
		err := c.RPC(ctxT(t), topic, req, &resp)
		out = append(out, fmt.Sprintf("%s: %s %v", what, errObs(err), sortedMap(resp)))
		return resp
	}
	sub := func(name, queue string, urgency int, deps []job.Dependency, cmd ...string) job.ID {
		js := fromCommand(t, cmd...)
		js.Attributes.System.Queue = queue
		js.Attributes.System.Dependencies = deps
		u := urgency
		id, err := job.SubmitJobspec(ctxT(t), c, js, job.SubmitOptions{Urgency: &u})
		if err != nil {
			out = append(out, name+": "+errObs(err))
			return 0
		}
		ids[id] = name
		return id
	}
	// reason follows id's eventlog up to the event named until, reads the
	// instance's Waiting, and records the events and the reason.
	describe := func(evs []job.Event) string {
		var parts []string
		for _, ev := range evs {
			p := ev.Name
			for _, k := range []string{"description", "urgency", "priority"} {
				if v, ok := ev.Context[k]; ok {
					p += fmt.Sprintf(" %s=%v", k, v)
				}
			}
			parts = append(parts, p)
		}
		return alias(strings.Join(parts, ", "))
	}
	reason := func(what string, id job.ID, until string) pending.Reason {
		evs := events(t, c, id, until)
		w := broker.ReadWaiting(ctxT(t), c, nil)
		if w.Err != "" {
			t.Errorf("%s: ReadWaiting: %s", what, w.Err)
		}
		r, waits := pending.Of(id, job.NewSummary(evs), "", w)
		si := w.Jobs[id]
		out = append(out, fmt.Sprintf("%s: events [%s]; waits %v reason %s (%s); job-list queue %q estimate %v",
			what, describe(evs), waits, r.Reason, alias(r.Message), si.Queue, si.TEstimate > 0))
		return r
	}
	want := func(what string, r pending.Reason, reason string) {
		if r.Reason != reason {
			t.Errorf("%s: reason %s (%s), want %s", what, r.Reason, r.Message, reason)
		}
	}

	// arr submits the indexes 0..n-1 of an array FluxJob as the
	// controller does (its jobspec template, in index order, with deps)
	// and records what the controller reads of it: the first index's
	// eventlog (job.LookupEventlog, once it reached until), the
	// instance's Waiting, and the reason internal/pending.Array derives.
	var arrays []job.ID
	arr := func(name string, n int, spec fluxjobv1.FluxJobSpec, urgency int, deps []job.Dependency, until string) pending.Reason {
		obj := &fluxjobv1.FluxJob{ObjectMeta: metav1.ObjectMeta{UID: types.UID("pending-" + name), Name: name, Namespace: "ns"}, Spec: spec}
		obj.Spec.Array = &fluxjobv1.ArraySpec{Indexes: fmt.Sprintf("0-%d", n-1)}
		tpl, jerr := jobspec.BuildTemplate(obj, append(deps, jobspec.BeginTime(obj)...)...)
		if jerr != nil {
			t.Fatalf("array %s: %v", name, jerr)
		}
		var first job.ID
		for i := range n {
			u := urgency
			id, err := job.Submit(ctxT(t), c, tpl.Render(i, 0), job.SubmitOptions{Urgency: &u})
			if err != nil {
				out = append(out, fmt.Sprintf("array %s index %d: %s", name, i, errObs(err)))
				return pending.Reason{}
			}
			ids[id] = fmt.Sprintf("%s.%d", name, i)
			arrays = append(arrays, id)
			if i == 0 {
				first = id
			}
		}
		events(t, c, first, until)
		evs, err := job.LookupEventlog(ctxT(t), c, first)
		if err != nil {
			t.Fatalf("array %s: %v", name, err)
		}
		w := broker.ReadWaiting(ctxT(t), c, nil)
		if w.Err != "" {
			t.Errorf("array %s: ReadWaiting: %s", name, w.Err)
		}
		r, waits := pending.Array(pending.Sample{Waiting: n, Indexes: n, Index: 0, ID: first, Summary: job.NewSummary(evs)}, spec.Queue, w)
		out = append(out, fmt.Sprintf("array %s: eventlog [%s]; waits %v reason %s (%s)", name, describe(evs), waits, r.Reason, alias(r.Message)))
		return r
	}

	rpc("queue-list", "job-manager.queue-list", struct{}{})
	rpc("queue-status batch", "job-manager.queue-status", map[string]any{"name": "batch"})
	rpc("queue-status without a name", "job-manager.queue-status", struct{}{})
	rpc("queue-status nope", "job-manager.queue-status", map[string]any{"name": "nope"})

	held := sub("H", "", 0, nil, "true")
	want("held", reason("held", held, "priority"), fluxjobv1.PendingHeld)
	want("held array", arr("AH", 3, fluxjobv1.FluxJobSpec{Command: []string{"true"}}, 0, nil, "priority"), fluxjobv1.PendingHeld)

	b := sub("B", "", 16, nil, "sleep", "300")
	events(t, c, b, "start")
	d := sub("D", "", 16, []job.Dependency{{Scheme: "afterok", Value: b.F58()}}, "true")
	want("afterok on running B", reason("afterok on running B", d, "validate"), fluxjobv1.PendingDependency)
	want("array after running B", arr("AD", 2, fluxjobv1.FluxJobSpec{Command: []string{"true"}}, 16,
		[]job.Dependency{{Scheme: "afterok", Value: b.F58()}}, "validate"), fluxjobv1.PendingDependency)

	bt := sub("T", "", 16, []job.Dependency{{Scheme: "begin-time", Value: begin}}, "true")
	r := reason("begin time", bt, "validate")
	want("begin time", r, fluxjobv1.PendingBeginTime)
	if !strings.Contains(r.Message, "begin-time="+begin) {
		t.Errorf("begin time: message %q does not quote begin-time=%s", r.Message, begin)
	}
	beginT, err := strconv.ParseFloat(begin, 64)
	if err != nil {
		t.Fatal(err)
	}
	at := metav1.NewTime(time.Unix(int64(beginT), 0))
	r = arr("AT", 2, fluxjobv1.FluxJobSpec{Command: []string{"true"}, BeginTime: &at}, 16, nil, "validate")
	want("array with a begin time", r, fluxjobv1.PendingBeginTime)
	if !strings.Contains(r.Message, "begin-time="+begin) {
		t.Errorf("array with a begin time: message %q does not quote begin-time=%s", r.Message, begin)
	}

	rpc("stop debug without all", "job-manager.queue-start", map[string]any{"start": false, "all": false})
	rpc("stop debug", "job-manager.queue-start", map[string]any{"name": "debug", "start": false, "reason": "maintenance window", "all": false})
	rpc("queue-status debug stopped", "job-manager.queue-status", map[string]any{"name": "debug"})
	s := sub("S", "debug", 16, nil, "true")
	want("stopped queue", reason("stopped queue", s, "priority"), fluxjobv1.PendingQueueStopped)
	want("array in a stopped queue", arr("AS", 2, fluxjobv1.FluxJobSpec{Command: []string{"true"}, Queue: "debug"}, 16, nil, "priority"), fluxjobv1.PendingQueueStopped)
	rpc("start debug", "job-manager.queue-start", map[string]any{"name": "debug", "start": true, "all": false})
	out = append(out, "stopped queue started: "+strings.Join(names(events(t, c, s, "alloc")), " "))

	rpc("disable without reason", "job-manager.queue-enable", map[string]any{"name": "debug", "enable": false, "all": false})
	rpc("disable debug", "job-manager.queue-enable", map[string]any{"name": "debug", "enable": false, "reason": "closed", "all": false})
	rpc("queue-status debug disabled", "job-manager.queue-status", map[string]any{"name": "debug"})
	sub("submit to disabled debug", "debug", 16, nil, "true")
	rpc("enable debug", "job-manager.queue-enable", map[string]any{"name": "debug", "enable": true, "all": false})

	if err := job.Cancel(ctxT(t), c, b, ""); err != nil {
		t.Fatal(err)
	}
	events(t, c, b, "clean")
	allJS, err := job.FromCommand([]string{"sleep", "300"}, job.CommandOptions{Cwd: "/", CoresPerTask: cores})
	if err != nil {
		t.Fatal(err)
	}
	full, err := job.SubmitJobspec(ctxT(t), c, allJS, job.SubmitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ids[full] = "F"
	events(t, c, full, "start")
	g := sub("G", "", 16, nil, "true")
	want("waiting for cores", reason("waiting for cores", g, "priority"), fluxjobv1.PendingScheduling)
	for _, id := range append([]job.ID{held, d, bt, full, g}, arrays...) {
		_ = job.Cancel(ctxT(t), c, id, "")
	}
	return out
}

// sortedMap prints a decoded JSON object with sorted keys.
func sortedMap(m map[string]any) string {
	if m == nil {
		return "-"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s=%v", k, m[k]))
	}
	return "{" + strings.Join(parts, " ") + "}"
}

// TestPendingRealOnly records what the test broker does not simulate, on
// flux-core alone: a limit's dependency (flux-accounting posts
// dependency-add "max-running-jobs-user-limit"; here posted with
// job-manager.post-event.post, as the plugin's jobtap call does), the
// singleton dependency, and the scheduler's t_estimate (sched-fifo
// loaded in place of sched-simple), each read into its reason, and the
// estimate of an array's first waiting index.
func TestPendingRealOnly(t *testing.T) {
	needFlux(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	inst := queuesInstance(ctx, t)
	c := dial(t, inst.URI)
	sub := func(js *job.Jobspec, deps ...job.Dependency) job.ID {
		js.Attributes.System.Dependencies = deps
		return submit(t, c, js, job.SubmitOptions{})
	}
	// until is an event name, or the description of a dependency-add
	reason := func(what string, id job.ID, until string, wantReason string) pending.Reason {
		evs := eventsUntil(t, c, id, func(ev job.Event) bool { return ev.Name == until || ev.Context["description"] == until })
		w := broker.ReadWaiting(ctxT(t), c, nil)
		r, _ := pending.Of(id, job.NewSummary(evs), "", w)
		if w.Err != "" {
			t.Errorf("%s: ReadWaiting: %s", what, w.Err)
		}
		t.Logf("%s: events %v; job-list %+v; reason %s (%s)", what, names(evs), w.Jobs[id], r.Reason, r.Message)
		if wantReason != "" && r.Reason != wantReason {
			t.Errorf("%s: reason %s (%s), want %s", what, r.Reason, r.Message, wantReason)
		}
		return r
	}

	b := sub(timed(t, 600, "sleep", "300"))
	events(t, c, b, "start")
	d := sub(fromCommand(t, "true"), job.Dependency{Scheme: "afterok", Value: b.F58()})
	events(t, c, d, "validate")
	post := map[string]any{"id": d, "name": "dependency-add", "context": map[string]any{"description": "max-running-jobs-user-limit"}}
	if err := c.RPC(ctxT(t), "job-manager.post-event.post", post, nil); err != nil {
		t.Fatal(err)
	}
	reason("job dependency and a limit", d, "max-running-jobs-user-limit", fluxjobv1.PendingDependency)
	// the job dependency met (posted here as its plugin would): the limit holds it
	post = map[string]any{"id": d, "name": "dependency-remove", "context": map[string]any{"description": "after-success=" + b.F58()}}
	if err := c.RPC(ctxT(t), "job-manager.post-event.post", post, nil); err != nil {
		t.Fatal(err)
	}
	reason("a limit", d, "dependency-remove", fluxjobv1.PendingLimit)
	// flux jobs' DEPENDENCIES column says the same
	w, err := job.ListID(ctxT(t), c, d, "dependencies")
	if err != nil || strings.Join(w.Dependencies, ",") != "max-running-jobs-user-limit" {
		t.Errorf("job-list dependencies %v (%v), want the limit's", w.Dependencies, err)
	}

	s1 := sub(named(fromCommand(t, "sleep", "300"), "one"), job.Dependency{Scheme: "singleton"})
	events(t, c, s1, "start")
	s2 := sub(named(fromCommand(t, "true"), "one"), job.Dependency{Scheme: "singleton"})
	reason("singleton", s2, "validate", fluxjobv1.PendingDependency)
	for _, id := range []job.ID{s1, s2, d} {
		_ = job.Cancel(ctxT(t), c, id, "")
	}
	events(t, c, s1, "clean")

	if _, err := inst.Flux(ctx, "module", "remove", "sched-simple"); err != nil {
		t.Fatal(err)
	}
	if _, err := inst.Flux(ctx, "module", "load", "sched-fifo"); err != nil {
		t.Fatal(err)
	}
	// as flux submit -N1 -x -t: the whole node, with a time limit
	node := func(seconds float64, cmd ...string) *job.Jobspec {
		js, err := job.FromCommand(cmd, job.CommandOptions{Cwd: "/", NumNodes: 1, Exclusive: true})
		if err != nil {
			t.Fatal(err)
		}
		js.Attributes.System.Duration = seconds
		return js
	}
	_ = job.Cancel(ctxT(t), c, b, "")
	events(t, c, b, "clean")
	f := sub(node(600, "sleep", "300"))
	events(t, c, f, "start")
	g := sub(node(60, "true"))
	var r pending.Reason
	for deadline := time.Now().Add(20 * time.Second); ; {
		r = reason("t_estimate", g, "priority", "")
		if r.Reason == fluxjobv1.PendingResources || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Second)
	}
	if r.Reason != fluxjobv1.PendingResources || r.Estimate == 0 {
		t.Fatalf("sched-fifo: reason %s (%s) estimate %v, want Resources with an estimate", r.Reason, r.Message, r.Estimate)
	}
	// An array's first waiting index, read as the controller reads it
	// (its eventlog with job.LookupEventlog, the instance's Waiting):
	// the scheduler's estimate of that index.
	a0, a1 := sub(node(60, "true")), sub(node(60, "true"))
	events(t, c, a0, "priority")
	var ar pending.Reason
	for deadline := time.Now().Add(20 * time.Second); ; {
		evs, err := job.LookupEventlog(ctxT(t), c, a0)
		if err != nil {
			t.Fatal(err)
		}
		w := broker.ReadWaiting(ctxT(t), c, nil)
		ar, _ = pending.Array(pending.Sample{Waiting: 2, Indexes: 2, Index: 0, ID: a0, Summary: job.NewSummary(evs)}, "", w)
		if ar.Reason == fluxjobv1.PendingResources && ar.Estimate > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Second)
	}
	t.Logf("array on sched-fifo: %s (%s)", ar.Reason, ar.Message)
	if ar.Reason != fluxjobv1.PendingResources || ar.Estimate == 0 || !strings.Contains(ar.Message, "2 of 2 indexes wait in Flux; the first, index 0") {
		t.Errorf("array on sched-fifo: reason %s (%s) estimate %v, want Resources with an estimate", ar.Reason, ar.Message, ar.Estimate)
	}
	for _, id := range []job.ID{f, g, a0, a1} {
		_ = job.Cancel(ctxT(t), c, id, "")
	}
}

// eventsUntil follows a job's eventlog up to the first event stop
// accepts.
func eventsUntil(t *testing.T, c *flux.Conn, id job.ID, stop func(job.Event) bool) []job.Event {
	t.Helper()
	w, err := job.WatchEvents(ctxT(t), c, id, job.WatchOptions{})
	if err != nil {
		t.Fatalf("WatchEvents: %v", err)
	}
	defer w.Close()
	var evs []job.Event
	for {
		ev, err := w.Next()
		if err != nil {
			t.Fatalf("WatchEvents(%s).Next after %v: %v", id, names(evs), err)
		}
		if evs = append(evs, ev); stop(ev) {
			return evs
		}
	}
}

func timed(t *testing.T, seconds float64, cmd ...string) *job.Jobspec {
	js := fromCommand(t, cmd...)
	js.Attributes.System.Duration = seconds
	return js
}

func named(js *job.Jobspec, name string) *job.Jobspec {
	js.SetJobName(name)
	return js
}
