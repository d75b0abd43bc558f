package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
	"github.com/fluxjob/fluxjob-operator/test/e2e/cluster"
)

// kindCluster is the name of the kind cluster the test creates (or reuses,
// with KIND_CLUSTER).
const kindCluster = "fluxjob-e2e"

// kindImage is the manager image built and loaded into kind.
const kindImage = "fluxjob-operator:e2e"

// kindNamespace and kindDeployment are where config/default puts the
// manager (namespace and namePrefix of config/default/kustomization.yaml).
const (
	kindNamespace  = "fluxjob-system"
	kindDeployment = "deploy/fluxjob-controller-manager"
	// kindJobNamespace is the one namespace config/default lets the
	// manager watch and run jobs from (manager_namespaces_patch.yaml).
	kindJobNamespace = "fluxjob-jobs"
)

// kindTarget is a kind cluster running config/default: the manager and its
// Flux sidecar, a real flux-core broker.
type kindTarget struct {
	kubeconfig string
}

func (k *kindTarget) kubectl(ctx context.Context, args ...string) ([]byte, error) {
	return k.kubectlInput(ctx, nil, args...)
}

func (k *kindTarget) kubectlInput(ctx context.Context, stdin io.Reader, args ...string) ([]byte, error) {
	return run(ctx, stdin, "kubectl", append([]string{"--kubeconfig", k.kubeconfig}, args...)...)
}

// flux runs the flux command in the sidecar.
func (k *kindTarget) flux(ctx context.Context, args ...string) ([]byte, error) {
	return k.kubectl(ctx, append([]string{"exec", "-n", kindNamespace, kindDeployment, "-c", "flux", "--", "flux"}, args...)...)
}

func (k *kindTarget) fluxEvents(ctx context.Context, id job.ID) ([]job.Event, error) {
	// `flux job eventlog --format=json` prints one RFC 18 event per line.
	out, err := k.flux(ctx, "job", "eventlog", "--format=json", id.String())
	if err != nil {
		return nil, err
	}
	var evs []job.Event
	for _, line := range bytes.Split(bytes.TrimSpace(out), []byte("\n")) {
		ev, err := job.ParseEvent(line)
		if err != nil {
			return nil, fmt.Errorf("parsing `flux job eventlog` output: %w", err)
		}
		evs = append(evs, ev)
	}
	return evs, nil
}

// hasQueue is false: the Deployment's Flux sidecar configures no queues.
func (k *kindTarget) hasQueue(string) bool { return false }

func (k *kindTarget) fluxJobCount(ctx context.Context) (int, error) {
	out, err := k.flux(ctx, "jobs", "-a", "-n", "-o", "{id}")
	if err != nil {
		return 0, err
	}
	return len(strings.Fields(string(out))), nil
}

// kindMissing says what the kind e2e test needs and does not have, or "".
func kindMissing(ctx context.Context) string {
	for _, tool := range []string{"kind", "docker", "kubectl"} {
		if _, err := exec.LookPath(tool); err != nil {
			return tool + " is not on PATH"
		}
	}
	if _, err := run(ctx, nil, "docker", "info", "--format", "{{.ServerVersion}}"); err != nil {
		return "the Docker daemon is not reachable (" + err.Error() + ")"
	}
	return ""
}

// TestKind runs the e2e scenario on a kind cluster, as users run it in
// their CI: build and load the image, apply config/default, apply the
// samples. It is skipped, with the reason, where Docker or kind is
// missing; TestLocal covers the same scenario there.
func TestKind(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped in -short mode: creates a kind cluster")
	}
	ctx := deadline(t, 30*time.Minute)
	if why := kindMissing(ctx); why != "" {
		t.Skipf("kind e2e skipped: %s (TestLocal runs the same scenario against a local API server)", why)
	}
	root, err := cluster.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	name := kindCluster
	if v := os.Getenv("KIND_CLUSTER"); v != "" {
		name = v
	} else {
		mustRun(ctx, t, "kind", "create", "cluster", "--name", name, "--wait", "120s")
		t.Cleanup(func() {
			if os.Getenv("KEEP_KIND_CLUSTER") == "" {
				_, _ = run(context.Background(), nil, "kind", "delete", "cluster", "--name", name)
			}
		})
	}
	kc := filepath.Join(t.TempDir(), "kubeconfig")
	out := mustRun(ctx, t, "kind", "get", "kubeconfig", "--name", name)
	if err := os.WriteFile(kc, out, 0o600); err != nil {
		t.Fatal(err)
	}
	tg := &kindTarget{kubeconfig: kc}

	mustRun(ctx, t, "docker", "build", "-t", kindImage, root)
	mustRun(ctx, t, "kind", "load", "docker-image", kindImage, "--name", name)
	manifests, err := tg.kubectl(ctx, "kustomize", filepath.Join(root, "config", "default"))
	if err != nil {
		t.Fatal(err)
	}
	manifests = bytes.ReplaceAll(manifests, []byte("image: controller:latest"), []byte("image: "+kindImage))
	// config/default serves kindJobNamespace only; the pod-instance
	// scenario's namespace is added as a user would edit
	// manager_namespaces_patch.yaml.
	podNS := "e2e-pod-" + strconv.FormatInt(time.Now().Unix(), 36)
	for _, flag := range []string{"--watch-namespaces=", "--allowed-namespaces="} {
		manifests = bytes.ReplaceAll(manifests, []byte(flag+kindJobNamespace), []byte(flag+kindJobNamespace+","+podNS))
	}
	if _, err := tg.kubectlInput(ctx, bytes.NewReader(manifests), "apply", "--server-side", "-f", "-"); err != nil {
		t.Fatal(err)
	}
	if _, err := tg.kubectl(ctx, "wait", "-n", kindNamespace, kindDeployment, "--for=condition=Available", "--timeout=300s"); err != nil {
		logs, _ := tg.kubectl(ctx, "logs", "-n", kindNamespace, kindDeployment, "--all-containers")
		t.Fatalf("%v\n%s", err, logs)
	}
	ns := kindJobNamespace
	runScenario(ctx, t, tg, ns)

	// A FluxJob looks for the manager's credentials from where every job
	// runs, the flux sidecar, and must find none (tokenProbe).
	if _, err := tg.kubectlInput(ctx, strings.NewReader(tokenProbe), "apply", "-n", ns, "-f", "-"); err != nil {
		t.Fatal(err)
	}
	if _, err := tg.kubectl(ctx, "wait", "-n", ns, "fluxjob/token-probe", "--for=jsonpath={.status.phase}=Succeeded", "--timeout=120s"); err != nil {
		fj := getFluxJob(ctx, t, tg, ns, "token-probe")
		out, _ := tg.flux(ctx, "job", "attach", fj.Status.JobIDF58)
		t.Fatalf("the token probe did not succeed (phase %s, %s): the job can reach credentials: %v\n%s", fj.Status.Phase, fj.Status.Message, err, out)
	}
	t.Run("FluxInstance of kind pod", func(t *testing.T) {
		runPodInstanceScenario(ctx, t, tg, podNS)
	})
}

// run runs a command and returns its stdout, or an error with its stderr.
func run(ctx context.Context, stdin io.Reader, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdin = stdin
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) || stderr.Len() > 0 {
			return stdout.Bytes(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
		}
		return stdout.Bytes(), fmt.Errorf("%s %s: %w", name, strings.Join(args, " "), err)
	}
	return stdout.Bytes(), nil
}

func mustRun(ctx context.Context, t *testing.T, name string, args ...string) []byte {
	t.Helper()
	out, err := run(ctx, nil, name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}
