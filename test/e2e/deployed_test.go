package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
	"github.com/fluxjob/fluxjob-operator/config/argocd"
	"github.com/fluxjob/fluxjob-operator/test/e2e/cluster"
)

// deployed is a cluster that runs config/default as users install it: a
// kind cluster (TestKind) or a real kubelet node (TestNode). Both run the
// same scenarios (runDeployed); they differ only in how the cluster is made
// and reached.
type deployed interface {
	target
	// flux runs the flux command in the manager pod's flux container.
	flux(ctx context.Context, args ...string) ([]byte, error)
	// realFlux reports whether the flux container runs flux-core (jobs
	// really run) rather than the test broker (jobs are simulated).
	realFlux() bool
	// images maps the images config/ names (controller:latest,
	// upstreamFluxImage) to the ones to run there.
	images() map[string]string
	// killContainer kills a running container through the container
	// runtime with SIGKILL, as the OOM killer would.
	killContainer(ctx context.Context, containerID string) error
	// plugin runs the kubectl-fluxjob plugin against the cluster, its
	// standard output to stdout.
	plugin(ctx context.Context, stdout io.Writer, args ...string) error
	// prepareClaim makes what the cluster needs for config/persistent's
	// claim to bind (nothing where a default StorageClass exists).
	prepareClaim(ctx context.Context) error
}

// Where config/default puts the manager (namespace and namePrefix of
// config/default/kustomization.yaml).
const (
	deployNamespace  = "fluxjob-system"
	deployDeployment = "deploy/fluxjob-controller-manager"
	// deploySelector selects the manager's pod.
	deploySelector = "control-plane=controller-manager"
	// jobNamespace is the one namespace config/default lets the manager
	// watch and run jobs from (manager_namespaces_patch.yaml).
	jobNamespace = "fluxjob-jobs"
	// upstreamFluxImage is the flux image config/ names.
	upstreamFluxImage = "fluxrm/flux-core:bookworm-v0.88.0"
)

// renderDeployment renders config/<overlay> with kubectl kustomize, with
// the images of tg and the namespaces extra added to the ones the manager
// serves (as a user would edit manager_namespaces_patch.yaml): nothing else
// of the install changes.
func renderDeployment(ctx context.Context, t *testing.T, tg deployed, overlay string, extra ...string) []byte {
	t.Helper()
	root, err := cluster.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	out, err := tg.kubectl(ctx, "kustomize", filepath.Join(root, "config", overlay))
	if err != nil {
		t.Fatal(err)
	}
	for from, to := range tg.images() {
		out = bytes.ReplaceAll(out, []byte("image: "+from+"\n"), []byte("image: "+to+"\n"))
	}
	for _, ns := range extra {
		for _, flag := range []string{"--watch-namespaces=", "--allowed-namespaces="} {
			out = bytes.ReplaceAll(out, []byte(flag+jobNamespace), []byte(flag+jobNamespace+","+ns))
		}
	}
	// config/pod-exec: its component lists flux-operator; the pod-instance
	// scenario's broker is in podInstanceNamespace, set as a user would
	// (make pod-exec-namespaces), and created here so that the component's
	// RoleBinding there can be applied.
	if bytes.Contains(out, []byte("--exec-namespaces="+podExecComponentNamespace+"\n")) {
		out = bytes.ReplaceAll(out, []byte("--exec-namespaces="+podExecComponentNamespace+"\n"), []byte("--exec-namespaces="+podInstanceNamespace+"\n"))
		out = bytes.ReplaceAll(out, []byte("namespace: "+podExecComponentNamespace+"\n"), []byte("namespace: "+podInstanceNamespace+"\n"))
		out = append([]byte("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: "+podInstanceNamespace+"\n---\n"), out...)
	}
	return out
}

// podExecComponentNamespace is the namespace config/components/pod-exec
// lists as committed.
const podExecComponentNamespace = "flux-operator"

// deploy applies the rendered manifests and waits until the manager's pod
// is Ready: its readiness probe (/readyz) is true only once the manager has
// a connection to the broker in the flux container.
func deploy(ctx context.Context, t *testing.T, tg deployed, manifests []byte) {
	t.Helper()
	if _, err := tg.kubectlInput(ctx, bytes.NewReader(manifests), "apply", "--server-side", "--force-conflicts", "-f", "-"); err != nil {
		t.Fatal(err)
	}
	waitManagerReady(ctx, t, tg, "")
}

// managerPod is the manager's pod as the test reads it.
type managerPod struct {
	Metadata struct {
		Name string `json:"name"`
		UID  string `json:"uid"`
	} `json:"metadata"`
	Status struct {
		Phase             string            `json:"phase"`
		Conditions        []podCondition    `json:"conditions"`
		InitContainers    []containerStatus `json:"initContainerStatuses"`
		ContainerStatuses []containerStatus `json:"containerStatuses"`
	} `json:"status"`
}

type podCondition struct {
	Type   string `json:"type"`
	Status string `json:"status"`
}

type containerStatus struct {
	Name         string `json:"name"`
	Ready        bool   `json:"ready"`
	RestartCount int    `json:"restartCount"`
	ContainerID  string `json:"containerID"`
}

func (p *managerPod) ready() bool {
	for _, c := range p.Status.Conditions {
		if c.Type == "Ready" {
			return c.Status == "True"
		}
	}
	return false
}

func (p *managerPod) container(name string) *containerStatus {
	for _, list := range [][]containerStatus{p.Status.InitContainers, p.Status.ContainerStatuses} {
		for i := range list {
			if list[i].Name == name {
				return &list[i]
			}
		}
	}
	return nil
}

// getManagerPods returns the manager's pods.
func getManagerPods(ctx context.Context, tg deployed) ([]managerPod, error) {
	out, err := tg.kubectl(ctx, "get", "pods", "-n", deployNamespace, "-l", deploySelector, "-o", "json")
	if err != nil {
		return nil, err
	}
	var list struct {
		Items []managerPod `json:"items"`
	}
	if err := json.Unmarshal(out, &list); err != nil {
		return nil, fmt.Errorf("decoding the manager's pods: %w", err)
	}
	return list.Items, nil
}

// waitManagerReady waits until exactly one manager pod exists, is Ready,
// and (if notUID is set) is not the pod with that UID; it returns it.
func waitManagerReady(ctx context.Context, t *testing.T, tg deployed, notUID string) managerPod {
	t.Helper()
	var last []managerPod
	for {
		pods, err := getManagerPods(ctx, tg)
		if err == nil {
			last = pods
			if len(pods) == 1 && pods[0].ready() && pods[0].Metadata.UID != notUID {
				return pods[0]
			}
		}
		select {
		case <-ctx.Done():
			logs, _ := tg.kubectl(context.Background(), "logs", "-n", deployNamespace, deployDeployment, "--all-containers", "--tail=40")
			desc, _ := tg.kubectl(context.Background(), "describe", "pods", "-n", deployNamespace, "-l", deploySelector)
			t.Fatalf("the manager pod did not become Ready (pods %+v, last error %v)\n%s\n%s", last, err, desc, logs)
		case <-time.After(time.Second):
		}
	}
}

// runDeployed runs every scenario on a cluster that runs config/pod-exec
// (config/default with miniCluster/pod FluxEndpoints allowed in
// podInstanceNamespace only):
// the samples, the token check, the pod FluxEndpoint, `kubectl fluxjob logs
// -f`, the Argo CD health check on live objects, a killed flux container,
// and (on config/persistent) a replaced manager pod. The manager is
// deployed by the caller (deploy), with podNS among its namespaces.
func runDeployed(ctx context.Context, t *testing.T, tg deployed, podNS string) {
	ns := jobNamespace
	t.Run("samples", func(t *testing.T) { runScenario(ctx, t, tg, ns) })
	t.Run("no token in the flux container", func(t *testing.T) { runTokenScenario(ctx, t, tg, ns) })
	t.Run("Argo CD health of live FluxJobs", func(t *testing.T) { runArgoHealthScenario(ctx, t, tg, ns) })
	t.Run("kubectl fluxjob logs -f", func(t *testing.T) { runLogsFollowScenario(ctx, t, tg, ns) })
	t.Run("FluxEndpoint of kind pod", func(t *testing.T) { runPodInstanceScenario(ctx, t, tg, podNS) })
	t.Run("flux container killed", func(t *testing.T) { runSidecarKillScenario(ctx, t, tg, ns) })
	t.Run("manager pod replaced, config/persistent", func(t *testing.T) {
		if err := tg.prepareClaim(ctx); err != nil {
			t.Fatal(err)
		}
		old := waitManagerReady(ctx, t, tg, "")
		deploy(ctx, t, tg, renderDeployment(ctx, t, tg, "persistent", podNS))
		waitManagerReady(ctx, t, tg, old.Metadata.UID)
		runPodReplacedScenario(ctx, t, tg, ns)
	})
}

// tokenSearch is a shell script, run in the flux container, that fails if
// a process there (every Flux job runs there, as the same uid) can find a
// service-account token: the files client libraries read, and any readable
// file holding a JWT of the kind the API server issues (header
// {"alg":"RS256","kid":...}).
const tokenSearch = `
for f in /var/run/secrets/kubernetes.io/serviceaccount /run/secrets/kubernetes.io/serviceaccount /var/run/secrets/tokens; do
  if [ -e "$f" ]; then echo "found $f"; exit 1; fi
done
for d in /*; do
  case "$d" in /proc|/sys|/dev) continue;; esac
  hit=$(grep -rls 'eyJhbGciOiJSUzI1NiIsImtpZCI6' "$d" 2>/dev/null | head -1)
  if [ -n "$hit" ]; then echo "token in $hit"; exit 2; fi
done
echo none`

// runTokenScenario checks that nothing in the flux container can read a
// service-account token: a shell there searches the file system (through
// the real kubelet's exec), and on flux-core a FluxJob looks for it from
// where jobs run (tokenProbe).
func runTokenScenario(ctx context.Context, t *testing.T, tg deployed, ns string) {
	out, err := tg.kubectl(ctx, "exec", "-n", deployNamespace, deployDeployment, "-c", "flux", "--", "sh", "-c", tokenSearch)
	if err != nil || strings.TrimSpace(string(out)) != "none" {
		t.Errorf("the flux container can reach a token: %q %v", out, err)
	}
	if !tg.realFlux() {
		t.Log("the test broker runs no job: the FluxJob token probe needs flux-core")
		return
	}
	if _, err := tg.kubectlInput(ctx, strings.NewReader(tokenProbe), "apply", "-n", ns, "-f", "-"); err != nil {
		t.Fatal(err)
	}
	if _, err := tg.kubectl(ctx, "wait", "-n", ns, "fluxjob/token-probe", "--for=jsonpath={.status.phase}=Succeeded", "--timeout=120s"); err != nil {
		fj := getFluxJob(ctx, t, tg, ns, "token-probe")
		out, _ := tg.flux(ctx, "job", "attach", fj.Status.JobIDF58)
		t.Fatalf("the token probe did not succeed (phase %s, %s): the job can reach credentials: %v\n%s", fj.Status.Phase, fj.Status.Message, err, out)
	}
}

// heldJob is a FluxJob held at urgency 0: it stays pending in Flux.
const heldJob = `apiVersion: fluxjob.io/v1alpha1
kind: FluxJob
metadata:
  name: NAME
spec:
  command: ["true"]
  urgency: 0
`

// runArgoHealthScenario runs config/argocd/health.lua on live FluxJobs, as
// Argo CD reads them from the API server: a sample that succeeded is
// Healthy, one that failed Degraded, a held job Suspended, a running one
// Progressing.
func runArgoHealthScenario(ctx context.Context, t *testing.T, tg deployed, ns string) {
	health := func(name string) argocd.Health {
		t.Helper()
		out, err := tg.kubectl(ctx, "get", "-n", ns, "fluxjob/"+name, "-o", "json")
		if err != nil {
			t.Fatal(err)
		}
		var obj map[string]any
		if err := json.Unmarshal(out, &obj); err != nil {
			t.Fatal(err)
		}
		h, err := argocd.Evaluate(argocd.HealthLua, obj)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return h
	}
	for name, want := range map[string]string{"hello": "Healthy", "fail": "Degraded"} {
		if h := health(name); h.Status != want {
			t.Errorf("fluxjob/%s: Argo CD health %+v, want %s", name, h, want)
		}
	}
	apply(ctx, t, tg, ns, strings.ReplaceAll(heldJob, "NAME", "argo-held"))
	apply(ctx, t, tg, ns, strings.ReplaceAll(longJob, "name: long", "name: argo-running"))
	waitJobID(ctx, t, tg, ns, "argo-held")
	mustKubectl(ctx, t, tg, "wait", "-n", ns, "fluxjob/argo-running", "--for=condition=Running", "--timeout=120s")
	if h := health("argo-held"); h.Status != "Suspended" {
		t.Errorf("a held FluxJob: Argo CD health %+v, want Suspended", h)
	}
	if h := health("argo-running"); h.Status != "Progressing" {
		t.Errorf("a running FluxJob: Argo CD health %+v, want Progressing", h)
	}
	mustKubectl(ctx, t, tg, "delete", "-n", ns, "fluxjob/argo-held", "fluxjob/argo-running", "--timeout=120s")
}

func apply(ctx context.Context, t *testing.T, tg target, ns, manifest string) {
	t.Helper()
	if _, err := tg.kubectlInput(ctx, strings.NewReader(manifest), "apply", "-n", ns, "-f", "-"); err != nil {
		t.Fatal(err)
	}
}

// followJob prints a line, runs long enough (20s) for a follower to be
// attached while it runs, prints another, and ends.
const followJob = `apiVersion: fluxjob.io/v1alpha1
kind: FluxJob
metadata:
  name: follow
spec:
  command: ["sh", "-c", "echo first line; sleep 20; echo second line"]
`

// lineWriter records when each line arrived.
type lineWriter struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	lines []string
	at    []time.Time
	seen  chan struct{} // gets a value per line
}

func (w *lineWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(b)
	for {
		line, err := w.buf.ReadString('\n')
		if err != nil {
			w.buf.Reset()
			w.buf.WriteString(line)
			return len(b), nil
		}
		w.lines = append(w.lines, strings.TrimSuffix(line, "\n"))
		w.at = append(w.at, time.Now())
		select {
		case w.seen <- struct{}{}:
		default:
		}
	}
}

// runLogsFollowScenario runs `kubectl fluxjob logs -f` on a running job:
// the plugin reaches Flux through the real kubelet's exec (`flux relay` in
// the flux container), prints the first line while the job still runs, the
// second when it comes, and returns when the job ends.
func runLogsFollowScenario(ctx context.Context, t *testing.T, tg deployed, ns string) {
	apply(ctx, t, tg, ns, followJob)
	mustKubectl(ctx, t, tg, "wait", "-n", ns, "fluxjob/follow", "--for=condition=Running", "--timeout=120s")
	w := &lineWriter{seen: make(chan struct{}, 16)}
	done := make(chan error, 1)
	fctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	go func() { done <- tg.plugin(fctx, w, "logs", "follow", "-f", "-n", ns) }()
	// The first line arrives while the job still runs.
	select {
	case <-w.seen:
	case err := <-done:
		t.Fatalf("kubectl fluxjob logs -f ended before any output: %v", err)
	case <-fctx.Done():
		t.Fatal("no output from kubectl fluxjob logs -f")
	}
	if fj := getFluxJob(ctx, t, tg, ns, "follow"); fj.Status.Phase != fluxjobv1.PhaseRunning {
		t.Logf("the job was %s when the first line arrived (a loaded machine): streaming is not shown", fj.Status.Phase)
	}
	if err := <-done; err != nil {
		t.Fatalf("kubectl fluxjob logs -f: %v", err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if strings.Join(w.lines, "\n") != "first line\nsecond line" {
		t.Fatalf("kubectl fluxjob logs -f printed %q", w.lines)
	}
	// The job sleeps 20s between its lines; the plugin attached (a few
	// seconds on a loaded machine) after the first was printed.
	if gap := w.at[1].Sub(w.at[0]); gap < 5*time.Second {
		t.Errorf("the two lines arrived %v apart: the plugin did not follow the job as it ran (the job sleeps 20s between them)", gap)
	}
	fj := getFluxJob(ctx, t, tg, ns, "follow")
	if fj.Status.Phase != fluxjobv1.PhaseSucceeded {
		t.Errorf("fluxjob/follow ended %s after logs -f returned", fj.Status.Phase)
	}
}

// fluxJobsByName returns how many Flux jobs the instance in the flux
// container holds under each job name.
func fluxJobsByName(ctx context.Context, tg deployed) (map[string]int, error) {
	out, err := tg.flux(ctx, "jobs", "-a", "-n", "-o", "{name}")
	if err != nil {
		return nil, err
	}
	byName := map[string]int{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if name := strings.TrimSpace(sc.Text()); name != "" {
			byName[name]++
		}
	}
	return byName, nil
}

// durable is a FluxJob a restart scenario follows: before, its Flux job ID;
// after, what it must end as.
type durable struct {
	name, manifest string
	id             int64
	uid            string
}

// exactlyOnce checks, after a restart, that no FluxJob got a second Flux
// job: each has at most one (at least one where the instance kept its
// jobs) job named after it, and the one it records.
func exactlyOnce(ctx context.Context, t *testing.T, tg deployed, ns string, jobs []*durable, kept bool) {
	t.Helper()
	byName, err := fluxJobsByName(ctx, tg)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range jobs {
		n := byName[fluxjobv1.FluxJobNamePrefix+d.uid]
		fj := getFluxJob(ctx, t, tg, ns, d.name)
		switch {
		case n > 1:
			t.Errorf("%s: %d Flux jobs named after it: submitted more than once", d.name, n)
		case kept && n != 1:
			t.Errorf("%s: %d Flux jobs named after it, want exactly 1 (the instance kept its jobs)", d.name, n)
		}
		if fj.Status.JobID != d.id {
			t.Errorf("%s: Flux job ID %d after the restart, %d before: the controller submitted it again", d.name, fj.Status.JobID, d.id)
		}
	}
}

// startDurable creates a finished job, a running one and a held (pending)
// one, and records their Flux job IDs.
func startDurable(ctx context.Context, t *testing.T, tg deployed, ns, prefix string) (done, running, held *durable) {
	t.Helper()
	done = &durable{name: prefix + "-done", manifest: "apiVersion: fluxjob.io/v1alpha1\nkind: FluxJob\nmetadata:\n  name: " + prefix + "-done\nspec:\n  command: [\"true\"]\n"}
	running = &durable{name: prefix + "-running", manifest: strings.ReplaceAll(longJob, "name: long", "name: "+prefix+"-running")}
	held = &durable{name: prefix + "-held", manifest: strings.ReplaceAll(heldJob, "NAME", prefix+"-held")}
	for _, d := range []*durable{done, running, held} {
		apply(ctx, t, tg, ns, d.manifest)
	}
	mustKubectl(ctx, t, tg, "wait", "-n", ns, "fluxjob/"+done.name, "--for=condition=Succeeded", "--timeout=120s")
	mustKubectl(ctx, t, tg, "wait", "-n", ns, "fluxjob/"+running.name, "--for=condition=Running", "--timeout=120s")
	for _, d := range []*durable{done, running, held} {
		fj := waitJobID(ctx, t, tg, ns, d.name)
		d.id, d.uid = fj.Status.JobID, string(fj.UID)
	}
	return done, running, held
}

// release gives a held FluxJob urgency 16.
func release(ctx context.Context, t *testing.T, tg deployed, ns, name string) {
	t.Helper()
	mustKubectl(ctx, t, tg, "patch", "-n", ns, "fluxjob/"+name, "--type=merge", "-p", `{"spec":{"urgency":16}}`)
}

// checkAfterRestart checks the three durable jobs after the broker came
// back: on flux-core with its statedir kept (kept), the finished job is
// unchanged, the pending one runs to success under the same ID, and the
// running one ended (running is "Failed" after a crash: flux-core cannot
// re-attach to job shells that died with the broker; "Cancelled" after a
// clean stop). The test broker keeps nothing: a restart is a new instance,
// and the unfinished jobs end Failed, InstanceReplaced. Either way no
// FluxJob is submitted twice.
func checkAfterRestart(ctx context.Context, t *testing.T, tg deployed, ns string, done, running, held *durable, kept bool, runningEnds string) {
	t.Helper()
	release(ctx, t, tg, ns, held.name)
	mustKubectl(ctx, t, tg, "wait", "-n", ns, "fluxjob/"+held.name, "fluxjob/"+running.name, "--for=condition=Finished", "--timeout=180s")
	fjDone := getFluxJob(ctx, t, tg, ns, done.name)
	if fjDone.Status.Phase != fluxjobv1.PhaseSucceeded {
		t.Errorf("%s: %s after the restart, was Succeeded", done.name, fjDone.Status.Phase)
	}
	fjHeld := getFluxJob(ctx, t, tg, ns, held.name)
	fjRunning := getFluxJob(ctx, t, tg, ns, running.name)
	if kept {
		if fjHeld.Status.Phase != fluxjobv1.PhaseSucceeded {
			t.Errorf("%s: %s (%s), want Succeeded: the pending job survives the restart", held.name, fjHeld.Status.Phase, fjHeld.Status.Message)
		}
		if string(fjRunning.Status.Phase) != runningEnds {
			t.Errorf("%s: %s (%s), want %s", running.name, fjRunning.Status.Phase, fjRunning.Status.Message, runningEnds)
		}
	} else {
		for _, fj := range []*fluxjobv1.FluxJob{fjHeld, fjRunning} {
			c := findCondition(fj, fluxjobv1.ConditionFailed)
			if fj.Status.Phase != fluxjobv1.PhaseFailed || c == nil || c.Reason != fluxjobv1.ReasonInstanceReplaced {
				t.Errorf("%s: %s %+v, want Failed, InstanceReplaced (a new instance)", fj.Name, fj.Status.Phase, c)
			}
		}
	}
	exactlyOnce(ctx, t, tg, ns, []*durable{done, running, held}, kept)
	mustKubectl(ctx, t, tg, "delete", "-n", ns, "fluxjob/"+done.name, "fluxjob/"+running.name, "fluxjob/"+held.name, "--timeout=120s")
}

// runSidecarKillScenario kills the flux container with SIGKILL through the
// container runtime; the kubelet restarts it (a native sidecar), the
// manager reconnects, and every FluxJob is still submitted exactly once.
func runSidecarKillScenario(ctx context.Context, t *testing.T, tg deployed, ns string) {
	done, running, held := startDurable(ctx, t, tg, ns, "kill")
	pod := waitManagerReady(ctx, t, tg, "")
	flux := pod.container("flux")
	if flux == nil || flux.ContainerID == "" {
		t.Fatalf("no flux container in %+v", pod.Status)
	}
	restarts := flux.RestartCount
	if tg.realFlux() {
		// flux-core checkpoints its KVS every 30s (flux-config); what a
		// broker killed before the next checkpoint wrote is lost (README,
		// "What survives what"). Checkpoint now, so that the outcome is the
		// documented one for jobs that were in the KVS.
		if _, err := tg.flux(ctx, "kvs", "sync"); err != nil {
			t.Fatal(err)
		}
	}
	if err := tg.killContainer(ctx, flux.ContainerID); err != nil {
		t.Fatal(err)
	}
	for {
		pods, err := getManagerPods(ctx, tg)
		if err == nil && len(pods) == 1 && pods[0].Metadata.UID == pod.Metadata.UID {
			if c := pods[0].container("flux"); c != nil && c.RestartCount > restarts && pods[0].ready() {
				break
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the flux container was not restarted and Ready again (restart count was %d): %v", restarts, err)
		case <-time.After(time.Second):
		}
	}
	// flux-core on the emptyDir statedir: the instance is the same.
	checkAfterRestart(ctx, t, tg, ns, done, running, held, tg.realFlux(), string(fluxjobv1.PhaseFailed))
}

// runPodReplacedScenario deletes the manager's pod (config/persistent): the
// Deployment makes a new one, whose broker finds the old one's statedir on
// the claim.
func runPodReplacedScenario(ctx context.Context, t *testing.T, tg deployed, ns string) {
	done, running, held := startDurable(ctx, t, tg, ns, "replace")
	pod := waitManagerReady(ctx, t, tg, "")
	mustKubectl(ctx, t, tg, "delete", "pod", "-n", deployNamespace, pod.Metadata.Name, "--timeout=180s")
	waitManagerReady(ctx, t, tg, pod.Metadata.UID)
	// The old pod's broker got SIGTERM: a clean stop cancels running jobs.
	checkAfterRestart(ctx, t, tg, ns, done, running, held, tg.realFlux(), string(fluxjobv1.PhaseCancelled))
}

// uniqueNamespace returns a namespace name that a reused cluster has not
// seen.
func uniqueNamespace(prefix string) string {
	return prefix + strconv.FormatInt(time.Now().Unix(), 36)
}
