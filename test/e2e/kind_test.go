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

// kindNode is the container of the kind cluster's node (kind names it
// <cluster>-control-plane).
const kindNodeSuffix = "-control-plane"

// kindTarget is a kind cluster running config/default: the manager and its
// Flux sidecar, a real flux-core broker.
type kindTarget struct {
	kubeconfig string
	name       string // the kind cluster
	pluginBin  string // kubectl-fluxjob, built by the test
}

func (k *kindTarget) kubectl(ctx context.Context, args ...string) ([]byte, error) {
	return k.kubectlInput(ctx, nil, args...)
}

func (k *kindTarget) kubectlInput(ctx context.Context, stdin io.Reader, args ...string) ([]byte, error) {
	return run(ctx, stdin, "kubectl", append([]string{"--kubeconfig", k.kubeconfig}, args...)...)
}

// flux runs the flux command in the sidecar.
func (k *kindTarget) flux(ctx context.Context, args ...string) ([]byte, error) {
	return k.kubectl(ctx, append([]string{"exec", "-n", deployNamespace, deployDeployment, "-c", "flux", "--", "flux"}, args...)...)
}

// realFlux is true: the sidecar is the public flux-core image.
func (k *kindTarget) realFlux() bool { return true }

func (k *kindTarget) images() map[string]string {
	return map[string]string{"controller:latest": kindImage}
}

// killContainer stops the container with no grace period (SIGKILL) through
// the CRI, with crictl in the kind node's container.
func (k *kindTarget) killContainer(ctx context.Context, containerID string) error {
	_, id, _ := strings.Cut(containerID, "://")
	_, err := run(ctx, nil, "docker", "exec", k.name+kindNodeSuffix, "crictl", "stop", "--timeout", "0", id)
	return err
}

func (k *kindTarget) plugin(ctx context.Context, stdout io.Writer, args ...string) error {
	cmd := exec.CommandContext(ctx, k.pluginBin, append([]string{"--kubeconfig", k.kubeconfig}, args...)...)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = stdout, &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("kubectl-fluxjob %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// prepareClaim does nothing: kind's default StorageClass provisions the
// claim.
func (k *kindTarget) prepareClaim(context.Context) error { return nil }

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

// TestKind runs the deployed scenarios (runDeployed, shared with TestNode)
// on a kind cluster, as users run them in their CI: build and load the
// image, apply config/default, then the samples and the rest. It is skipped, with the reason, where Docker or kind is
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
	tg := &kindTarget{kubeconfig: kc, name: name, pluginBin: filepath.Join(t.TempDir(), "kubectl-fluxjob")}
	if err := buildGo(ctx, tg.pluginBin, "./cmd/kubectl-fluxjob"); err != nil {
		t.Fatal(err)
	}

	mustRun(ctx, t, "docker", "build", "-t", kindImage, root)
	mustRun(ctx, t, "kind", "load", "docker-image", kindImage, "--name", name)
	// The pod-instance scenario's namespace is served too, as a user would
	// edit manager_namespaces_patch.yaml.
	podNS := uniqueNamespace("e2e-pod-")
	deploy(ctx, t, tg, renderDeployment(ctx, t, tg, "pod-exec", podNS)) // config/default plus pod FluxEndpoints in podInstanceNamespace
	runDeployed(ctx, t, tg, podNS)
}

// buildGo builds package pkg of the repository into out (static, as for an
// image).
func buildGo(ctx context.Context, out, pkg string) error {
	root, err := cluster.RepoRoot()
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, pkg)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=-buildvcs=false")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %w: %s", pkg, err, b)
	}
	return nil
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
