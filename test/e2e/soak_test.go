package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/testbroker"
	"github.com/fluxjob/fluxjob-operator/test/e2e/cluster"
)

// The tests in this file run the manager as a separate process (the
// binary built from main.go) against a real kube-apiserver and etcd, with
// the test broker in this process so that it outlives every manager: the
// manager is SIGKILLed and restarted (soak), or two managers hand over
// leadership (leader_test.go). Afterwards the broker is the judge: one
// Flux job per FluxJob, and every FluxJob's status is its Flux job's.
//
// SOAK_KILLS and SOAK_JOBS override the kill and job counts of
// TestManagerKillSoak (`make soak` runs hack/soak, which sets them to 100
// and 600); the default (15 kills, 60 jobs, at least 10 kills inside the
// submit window) runs in every `make test`. SOAK_SEED replays a schedule.

// procWorld is a real API server, the in-process test broker and the
// built manager binary.
type procWorld struct {
	t      *testing.T
	ctx    context.Context
	c      *cluster.Cluster
	k      client.Client
	broker *testbroker.Server
	bin    string
	ns     string

	mu    sync.Mutex
	procs []*cluster.Process // every manager started, for the log checks
}

func procScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, fluxjobv1.AddToScheme} {
		if err := add(s); err != nil {
			panic(err)
		}
	}
	return s
}

// newProcWorld starts the API server and the broker, builds the manager
// (or uses $MANAGER_BIN when it names an existing file, as `make soak`
// builds it first) and creates namespace ns.
func newProcWorld(t *testing.T, timeout time.Duration, bopts testbroker.Options, ns string) *procWorld {
	t.Helper()
	if testing.Short() {
		t.Skip("skipped in -short mode: builds and runs the manager binary against a real API server")
	}
	_, err := cluster.AssetsDir("")
	requireRealParts(t, err)
	ctx := deadline(t, timeout)
	root, err := cluster.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	if bopts.Dir == "" {
		dir, err := os.MkdirTemp("", "fjsoak-") // short: a socket path has ~108 bytes
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = os.RemoveAll(dir) })
		bopts.Dir = dir
	}
	broker := testbroker.New(bopts)
	if err := broker.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = broker.Close() })
	c, err := cluster.Start(ctx, cluster.Options{CRDDir: filepath.Join(root, "config", "crd", "bases")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Stop(); err != nil {
			t.Error(err)
		}
	})
	k, err := client.New(c.Config, client.Options{Scheme: procScheme()})
	if err != nil {
		t.Fatal(err)
	}
	if err := k.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	bin := os.Getenv("MANAGER_BIN")
	if fi, err := os.Stat(bin); bin == "" || err != nil || fi.IsDir() {
		bin = filepath.Join(t.TempDir(), "manager")
		if err := cluster.BuildManager(ctx, bin); err != nil {
			t.Fatal(err)
		}
	}
	return &procWorld{t: t, ctx: ctx, c: c, k: k, broker: broker, bin: bin, ns: ns}
}

// startManager starts one manager process with extra flags. Its logs are
// verbose (V(7), the most client-go logs short of request and response
// bodies, which it dumps from V(8) on, whatever they hold), so that the
// secret check sees everything the manager logs.
func (w *procWorld) startManager(extra ...string) (*cluster.Process, string) {
	w.t.Helper()
	probe := freeAddr(w.t)
	args := append([]string{"--metrics-bind-address=0", "--health-probe-bind-address=" + probe,
		"--zap-log-level=7", "--zap-devel"}, extra...)
	p, err := cluster.StartProcess(w.ctx, w.bin, args,
		[]string{"KUBECONFIG=" + w.c.Kubeconfig, "FLUX_URI=" + w.broker.URI()}, nil)
	if err != nil {
		w.t.Fatal(err)
	}
	w.mu.Lock()
	w.procs = append(w.procs, p)
	w.mu.Unlock()
	return p, "http://" + probe + "/readyz"
}

// output returns every manager's output so far.
func (w *procWorld) output() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var b strings.Builder
	for i, p := range w.procs {
		fmt.Fprintf(&b, "----- manager process %d -----\n%s", i, p.Output())
	}
	return b.String()
}

// soakCommands are what the soak's FluxJobs run, in turn (the broker's
// TimeScale makes sleep N last N/100 seconds).
var soakCommands = [][]string{{"true"}, {"false"}, {"exit", "3"}, {"sleep", "30"}, {"sleep", "120"}, {"kill-self", "15"}}

// createJob creates FluxJob name running the i-th soak command, with an
// environment that holds secret.
func (w *procWorld) createJob(name string, i int, secret string) error {
	obj := &fluxjobv1.FluxJob{
		ObjectMeta: metav1.ObjectMeta{Namespace: w.ns, Name: name},
		Spec: fluxjobv1.FluxJobSpec{
			Command: soakCommands[i%len(soakCommands)],
			Env: []fluxjobv1.EnvVar{
				{Name: "API_TOKEN", Value: secret},
				{Name: "DB_PASSWORD", Value: secret + "-db"},
			},
		},
	}
	ctx, cancel := context.WithTimeout(w.ctx, 30*time.Second)
	defer cancel()
	return w.k.Create(ctx, obj)
}

func (w *procWorld) list() []fluxjobv1.FluxJob {
	w.t.Helper()
	var l fluxjobv1.FluxJobList
	if err := w.k.List(w.ctx, &l, client.InNamespace(w.ns)); err != nil {
		w.t.Fatalf("listing FluxJobs: %v", err)
	}
	return l.Items
}

// brokerByName lists the broker's jobs by job name (read in process).
func (w *procWorld) brokerByName() map[string][]job.ID {
	return w.broker.JobsByName()
}

// waitInSubmitWindow returns once the broker holds more Flux jobs than
// FluxJobs have a job ID in their status: some FluxJob is between its
// submission and its status write. It asks the broker in process (its
// socket answers late while the soak slows it down), or gives up after
// timeout (the kill then lands where it lands; inSubmitWindow, not this,
// decides whether it counts).
func (w *procWorld) waitInSubmitWindow(timeout time.Duration) {
	end := time.Now().Add(timeout)
	for time.Now().Before(end) {
		withID := 0
		for _, o := range w.list() {
			if o.Status.JobID != 0 {
				withID++
			}
		}
		if len(w.broker.Jobs()) > withID {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// inSubmitWindow counts the FluxJobs whose Flux job exists at the broker
// while their status has no job ID yet: a kill now falls between submit
// and status write.
//
// marked counts those with the submission marker (status.submitAttemptTime)
// but no Flux job: a kill now falls between the marker and the submit.
func (w *procWorld) inSubmitWindow() (n, marked int) {
	byName := w.brokerByName()
	for _, o := range w.list() {
		if o.Status.JobID != 0 {
			continue
		}
		switch {
		case len(byName[fluxjobv1.FluxJobNamePrefix+string(o.UID)]) > 0:
			n++
		case o.Status.SubmitAttemptTime != nil:
			marked++
		}
	}
	return n, marked
}

// waitSettled waits until every FluxJob of the namespace is terminal.
func (w *procWorld) waitSettled(want int, timeout time.Duration) {
	w.t.Helper()
	end := time.Now().Add(timeout)
	for {
		items := w.list()
		open := 0
		var example string
		for _, o := range items {
			if !o.Status.Phase.IsTerminal() {
				open++
				example = fmt.Sprintf("%s: %s %q", o.Name, o.Status.Phase, o.Status.Message)
			}
		}
		if len(items) == want && open == 0 {
			return
		}
		if time.Now().After(end) {
			w.t.Fatalf("after %s: %d FluxJobs (want %d), %d not finished (e.g. %s)\n%s", timeout, len(items), want, open, example, tail(w.output(), 8000))
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// truth is a Flux job's final phase and exit status, from its eventlog.
func (w *procWorld) truth(id job.ID) (fluxjobv1.FluxJobPhase, *int32, bool) {
	text, ok := w.broker.Eventlog(id)
	if !ok {
		return "", nil, false
	}
	evs, err := job.ParseEventlog([]byte(text))
	if err != nil {
		w.t.Fatalf("eventlog of %s: %v", id, err)
	}
	var fatal string
	var exit *int32
	ended := false
	for _, ev := range evs {
		switch ev.Name {
		case "exception":
			if sev, ok := ev.Context["severity"].(float64); ok && sev == 0 && fatal == "" {
				fatal, _ = ev.Context["type"].(string)
			}
		case "finish":
			ended = true
			if s, ok := ev.Context["status"].(float64); ok {
				r := int32(job.WaitStatus(int(s)).Result())
				exit = &r
			}
		case "clean":
			ended = true
		}
	}
	switch {
	case !ended:
		return "", exit, false
	case fatal == "cancel":
		return fluxjobv1.PhaseCancelled, exit, true
	case fatal != "" || exit == nil || *exit != 0:
		return fluxjobv1.PhaseFailed, exit, true
	}
	return fluxjobv1.PhaseSucceeded, exit, true
}

// verdict compares every FluxJob with the broker.
type verdict struct {
	fluxJobs, brokerJobs         int
	duplicates, missing, orphans int
	mismatched, adopted          int
	problems                     []string
}

func (v *verdict) String() string {
	return fmt.Sprintf("FluxJobs=%d brokerJobs=%d duplicates=%d missing=%d orphans=%d mismatched=%d adopted=%d",
		v.fluxJobs, v.brokerJobs, v.duplicates, v.missing, v.orphans, v.mismatched, v.adopted)
}

func (w *procWorld) judge() *verdict {
	w.t.Helper()
	v := &verdict{}
	byName := w.brokerByName()
	v.brokerJobs = len(w.broker.Jobs())
	names := map[string]bool{}
	for _, o := range w.list() {
		v.fluxJobs++
		name := fluxjobv1.FluxJobNamePrefix + string(o.UID)
		names[name] = true
		ids := byName[name]
		switch {
		case len(ids) == 0:
			v.missing++
			v.problems = append(v.problems, fmt.Sprintf("%s: no Flux job (status %s %q)", o.Name, o.Status.Phase, o.Status.Message))
			continue
		case len(ids) > 1:
			v.duplicates += len(ids) - 1
			v.problems = append(v.problems, fmt.Sprintf("%s: %d Flux jobs %v", o.Name, len(ids), ids))
		}
		if job.ID(o.Status.JobID) != ids[0] && (len(ids) == 1 || !containsID(ids, job.ID(o.Status.JobID))) {
			v.mismatched++
			v.problems = append(v.problems, fmt.Sprintf("%s: status.jobID %d, the broker's %v", o.Name, o.Status.JobID, ids))
			continue
		}
		phase, exit, ended := w.truth(job.ID(o.Status.JobID))
		if !ended {
			v.mismatched++
			v.problems = append(v.problems, fmt.Sprintf("%s: Flux job %d has not ended, status %s", o.Name, o.Status.JobID, o.Status.Phase))
			continue
		}
		sameExit := (exit == nil) == (o.Status.ExitStatus == nil) && (exit == nil || *exit == *o.Status.ExitStatus)
		if phase != o.Status.Phase || !sameExit {
			v.mismatched++
			v.problems = append(v.problems, fmt.Sprintf("%s: status %s exit %v, Flux job %d ended %s exit %v", o.Name, o.Status.Phase, ptrVal(o.Status.ExitStatus), o.Status.JobID, phase, ptrVal(exit)))
		}
	}
	for name, ids := range byName {
		if !names[name] {
			v.orphans += len(ids)
			v.problems = append(v.problems, fmt.Sprintf("Flux jobs %v named %q belong to no FluxJob", ids, name))
		}
	}
	var evs eventsv1.EventList
	if err := w.k.List(w.ctx, &evs, client.InNamespace(w.ns)); err == nil {
		for _, e := range evs.Items {
			if e.Reason == "Adopted" {
				v.adopted++
			}
		}
	}
	return v
}

func containsID(ids []job.ID, id job.ID) bool {
	for _, x := range ids {
		if x == id {
			return true
		}
	}
	return false
}

func ptrVal(p *int32) any {
	if p == nil {
		return nil
	}
	return *p
}

// checkNoSecrets fails if a secret appears in any manager's output or in
// the namespace's Kubernetes events.
func (w *procWorld) checkNoSecrets(secret string) {
	w.t.Helper()
	out := w.output()
	if !strings.Contains(out, "submitted to Flux") {
		w.t.Errorf("the managers never logged a submission: the secret check saw no log to check\n%s", tail(out, 4000))
	}
	if i := strings.Index(out, secret); i >= 0 {
		lo, hi := max(0, i-300), min(len(out), i+300)
		w.t.Errorf("a FluxJob's environment value appears in the manager's log output:\n...%s...", out[lo:hi])
	}
	var evs eventsv1.EventList
	if err := w.k.List(w.ctx, &evs, client.InNamespace(w.ns)); err != nil {
		w.t.Fatal(err)
	}
	for _, e := range evs.Items {
		if strings.Contains(e.Note, secret) {
			w.t.Errorf("event %s/%s shows an environment value: %q", e.Reason, e.Regarding.Name, e.Note)
		}
	}
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "..." + s[len(s)-n:]
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// TestManagerKillSoak SIGKILLs the manager process at random points while
// FluxJobs flow (jobs created before, during and after each kill; kills
// land before the manager is ready, between a submit and its status
// write, during status writes), restarting it each time. Then one manager
// runs until every FluxJob ended, and the broker must hold exactly one
// Flux job per FluxJob, each FluxJob's status must be its Flux job's, and
// no environment value may appear in any manager's logs.
//
// Most kills are aimed at the window between submit and status write: the
// broker then answers 400ms late, and the kill comes as soon as the broker
// holds a Flux job of a FluxJob whose status has no job ID yet (watched,
// not timed). The test counts the kills that landed in that window and
// fails below SOAK_MIN_WINDOW_KILLS (default 10, at most two thirds of the
// kills). SOAK_SEED replays a schedule (the seed is logged).
func TestManagerKillSoak(t *testing.T) {
	kills := envInt("SOAK_KILLS", 15)
	jobs := envInt("SOAK_JOBS", 60)
	minWindow := envInt("SOAK_MIN_WINDOW_KILLS", min(10, kills*2/3))
	seed := rand.Uint64()
	if v, err := strconv.ParseUint(os.Getenv("SOAK_SEED"), 10, 64); err == nil {
		seed = v
	}
	t.Logf("soak seed %d (SOAK_SEED=%d reproduces the schedule)", seed, seed)
	fmt.Printf("soak: seed=%d kills=%d jobs=%d\n", seed, kills, jobs)
	timeout := 10*time.Minute + time.Duration(kills)*10*time.Second
	w := newProcWorld(t, timeout, testbroker.Options{TimeScale: 0.01, Delays: testbroker.RealisticDelays(), Cores: 16}, "soak")
	// Slow responses widen the window between Flux accepting a job and
	// the manager hearing its ID.
	w.broker.SetResponseDelay(2 * time.Millisecond)
	secret := "fj-secret-" + strconv.FormatUint(rand.Uint64(), 36)
	rng := rand.New(rand.NewPCG(seed, 8))
	perCycle := (jobs + kills - 1) / kills

	created := 0
	inWindow, windowKills, inMarked, aimed := 0, 0, 0, 0
	for k := range kills {
		p, readyz := w.startManager()
		// Every fifth kill lands at a random time after the manager was
		// started (often before it is ready); the others are aimed at the
		// submit window once it is ready.
		aim := k%5 != 4
		var up time.Duration
		if !aim {
			up = time.Duration(rng.IntN(2000)) * time.Millisecond
		} else {
			if err := waitReady(w.ctx, readyz, p); err != nil {
				t.Fatalf("kill %d: the manager never became ready: %v\n%s", k, err, tail(p.Output(), 8000))
			}
			up = time.Duration(rng.IntN(500)) * time.Millisecond
		}
		n := min(perCycle, jobs-created)
		// Create this cycle's jobs while the manager comes up and works:
		// half spread over the cycle, half in a burst at its end.
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for i := range n {
			idx := created + i
			at := up
			if i < n/2 {
				at = time.Duration(i) * up / time.Duration(max(n, 1))
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				time.Sleep(at)
				if err := w.createJob(fmt.Sprintf("job-%03d", idx), idx, secret); err != nil {
					errs <- err
				}
			}()
		}
		created += n
		time.Sleep(up)
		if aim && n > 0 {
			aimed++
			// The broker now answers late: watch for a FluxJob caught
			// between its submission and its status write, then kill.
			w.broker.SetResponseDelay(400 * time.Millisecond)
			w.waitInSubmitWindow(5 * time.Second)
		}
		select {
		case <-p.Done():
			t.Fatalf("kill %d: the manager exited on its own\n%s", k, tail(p.Output(), 8000))
		default:
		}
		_ = p.Kill() // SIGKILL: "signal: killed"
		w.broker.SetResponseDelay(2 * time.Millisecond)
		if strings.Contains(p.Output(), "panic:") {
			t.Fatalf("kill %d: the manager panicked\n%s", k, tail(p.Output(), 8000))
		}
		// Nothing writes now: a FluxJob whose Flux job exists but whose
		// status has no job ID was caught between submit and status write.
		win, marked := w.inSubmitWindow()
		inMarked += marked
		inWindow += win
		if win > 0 {
			windowKills++
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatalf("creating a FluxJob: %v", err)
		}
		if kills <= 20 || k%10 == 9 {
			t.Logf("kill %d/%d after %s (aimed %v): %d FluxJobs created, %d between submit and status write, %d between marker and submit",
				k+1, kills, up, aim, created, win, marked)
		}
	}
	for ; created < jobs; created++ {
		if err := w.createJob(fmt.Sprintf("job-%03d", created), created, secret); err != nil {
			t.Fatal(err)
		}
	}
	last, _ := w.startManager()
	w.waitSettled(jobs, 5*time.Minute+time.Duration(jobs)*time.Second)
	v := w.judge()
	summary := fmt.Sprintf("soak: seed=%d kills=%d aimedKills=%d killsBetweenSubmitAndStatusWrite=%d jobsBetweenSubmitAndStatusWrite=%d jobsBetweenMarkerAndSubmit=%d %s lost=%d",
		seed, kills, aimed, windowKills, inWindow, inMarked, v, v.missing)
	t.Log(summary)
	fmt.Println(summary) // `make soak` prints it
	for _, p := range v.problems {
		t.Error(p)
	}
	if v.duplicates != 0 || v.missing != 0 || v.orphans != 0 || v.mismatched != 0 || v.fluxJobs != jobs || v.brokerJobs != jobs {
		t.Errorf("the broker and the FluxJobs disagree: %s", v)
	}
	if windowKills < minWindow {
		t.Errorf("only %d of %d kills landed between a submission and its status write, want at least %d (SOAK_MIN_WINDOW_KILLS): the soak did not test what it is for",
			windowKills, kills, minWindow)
	}
	w.checkNoSecrets(secret)
	if err := last.Stop(30 * time.Second); err != nil {
		t.Errorf("the last manager did not exit cleanly on SIGTERM: %v\n%s", err, tail(last.Output(), 4000))
	}
}
