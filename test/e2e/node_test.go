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

// The images TestNode builds and imports into the node's containerd (the
// pause image's name is in hack/node.sh's containerd config).
const (
	nodeManagerImage    = "fluxjob.local/manager:e2e"
	nodeTestBrokerImage = "fluxjob.local/flux-testbroker:e2e"
	nodePauseImage      = "fluxjob.local/pause:e2e"
	nodeFluxCoreImage   = "fluxjob.local/flux-core:e2e"
)

// fluxCorePrefix returns the flux-core build to make the flux image from,
// $NODE_FLUX_PREFIX (a hack/flux-core.sh prefix). "" means none: the flux
// container runs the test broker.
func fluxCorePrefix() string {
	return os.Getenv("NODE_FLUX_PREFIX")
}

// buildFluxCoreImage writes the flux-core image (hack/flux-image.sh: a
// Debian root file system from debootstrap and the build at prefix).
func buildFluxCoreImage(ctx context.Context, dir, prefix string) (string, error) {
	root, err := cluster.RepoRoot()
	if err != nil {
		return "", err
	}
	out := filepath.Join(dir, "flux-core.tar")
	cmd := exec.CommandContext(ctx, filepath.Join(root, "hack", "flux-image.sh"), out, nodeFluxCoreImage, prefix)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("hack/flux-image.sh: %w: %s", err, b)
	}
	return out, nil
}

// busyboxApplets are the programs of the test-broker image besides flux: a
// shell and what the scenarios' shell scripts and podexec's relay command
// use, all the static busybox of Debian's busybox-static package.
var busyboxApplets = []string{"sh", "grep", "head", "ls", "cat", "test", "[", "echo", "sleep", "true", "false", "env", "kill", "id"}

// nodeTarget is a real one-node cluster (hack/node.sh): kube-apiserver,
// etcd, kube-controller-manager, kube-scheduler, containerd, runc and a
// kubelet, in a network namespace of its own, running config/default with
// images built here.
type nodeTarget struct {
	n         *cluster.Node
	pluginBin string
	fluxImage string // the image of the flux container
	fluxCore  bool   // fluxImage is flux-core, not the test broker
}

func (n *nodeTarget) kubectl(ctx context.Context, args ...string) ([]byte, error) {
	return n.n.Kubectl(ctx, nil, args...)
}

func (n *nodeTarget) kubectlInput(ctx context.Context, stdin io.Reader, args ...string) ([]byte, error) {
	return n.n.Kubectl(ctx, stdin, args...)
}

func (n *nodeTarget) flux(ctx context.Context, args ...string) ([]byte, error) {
	return n.kubectl(ctx, append([]string{"exec", "-n", deployNamespace, deployDeployment, "-c", "flux", "--", "flux"}, args...)...)
}

func (n *nodeTarget) fluxEvents(ctx context.Context, id job.ID) ([]job.Event, error) {
	out, err := n.flux(ctx, "job", "eventlog", "--format=json", id.String())
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

func (n *nodeTarget) fluxJobCount(ctx context.Context) (int, error) {
	out, err := n.flux(ctx, "jobs", "-a", "-n", "-o", "{id}")
	if err != nil {
		return 0, err
	}
	return len(strings.Fields(string(out))), nil
}

// hasQueue is false: config/default's Flux configures no queues.
func (n *nodeTarget) hasQueue(string) bool { return false }

func (n *nodeTarget) realFlux() bool { return n.fluxCore }

func (n *nodeTarget) images() map[string]string {
	return map[string]string{"controller:latest": nodeManagerImage, upstreamFluxImage: n.fluxImage}
}

// killContainer sends SIGKILL to the container's task through the node's
// containerd.
func (n *nodeTarget) killContainer(ctx context.Context, containerID string) error {
	_, id, _ := strings.Cut(containerID, "://")
	cmd := exec.CommandContext(ctx, "ctr", "--address", filepath.Join(n.n.Dir, "containerd", "containerd.sock"), "-n", "k8s.io", "tasks", "kill", "-s", "SIGKILL", id)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("ctr tasks kill %s: %w: %s", id, err, out)
	}
	return nil
}

func (n *nodeTarget) plugin(ctx context.Context, stdout io.Writer, args ...string) error {
	_, err := n.n.Exec(ctx, []string{"KUBECONFIG=" + n.n.Kubeconfig()}, stdout, append([]string{n.pluginBin}, args...)...)
	return err
}

// prepareClaim makes the volume config/persistent's claim binds to: the
// node has no provisioner, so a hostPath PersistentVolume in the node's
// directory, pre-bound to the claim and owned by the pod's uid (what a
// provisioner's fsGroup handling would give).
func (n *nodeTarget) prepareClaim(ctx context.Context) error {
	dir := filepath.Join(n.n.Dir, "flux-state-pv")
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("creating the volume's directory: %w", err)
	}
	if err := os.Chown(dir, 65532, 65532); err != nil {
		return fmt.Errorf("chown of the volume's directory: %w", err)
	}
	pv := `apiVersion: v1
kind: PersistentVolume
metadata:
  name: fluxjob-node-flux-state
spec:
  capacity:
    storage: 5Gi
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  hostPath:
    path: ` + dir + `
    type: Directory
  claimRef:
    namespace: fluxjob-system
    name: fluxjob-flux-state
`
	_, err := n.kubectlInput(ctx, strings.NewReader(pv), "apply", "-f", "-")
	return err
}

// buildNodeImages builds the binaries and the images of the node e2e into
// dir and returns the image tarballs.
func buildNodeImages(ctx context.Context, dir string) ([]string, error) {
	bins := map[string]string{
		"manager":         ".",
		"flux":            "./hack/testbroker/flux",
		"pause":           "./hack/pause",
		"image":           "./hack/image",
		"kubectl-fluxjob": "./cmd/kubectl-fluxjob",
	}
	for name, pkg := range bins {
		if err := buildGo(ctx, filepath.Join(dir, name), pkg); err != nil {
			return nil, err
		}
	}
	busybox, err := exec.LookPath("busybox")
	if err != nil {
		return nil, fmt.Errorf("busybox (Debian's busybox-static) is not on PATH: the test-broker image needs a shell: %w", err)
	}
	bb := filepath.Join(dir, "busybox")
	if err := copyFile(busybox, bb); err != nil {
		return nil, err
	}
	images := map[string][]string{
		"manager.tar": {"-tag", nodeManagerImage, "-file", filepath.Join(dir, "manager") + ":/manager",
			"-dir", "/tmp:1777", "-entrypoint", "/manager", "-user", "65532:65532"},
		"pause.tar": {"-tag", nodePauseImage, "-file", filepath.Join(dir, "pause") + ":/pause", "-entrypoint", "/pause", "-user", "65535:65535"},
		"flux-testbroker.tar": append([]string{"-tag", nodeTestBrokerImage,
			"-file", filepath.Join(dir, "flux") + ":/usr/bin/flux", "-file", bb + ":/bin/busybox",
			"-dir", "/tmp:1777", "-dir", "/run:755", "-dir", "/var/lib/flux:755", "-dir", "/etc/flux:755",
			"-entrypoint", "/usr/bin/flux", "-user", "65532:65532"}, appletLinks()...),
	}
	var tarballs []string
	for name, args := range images {
		out := filepath.Join(dir, name)
		cmd := exec.CommandContext(ctx, filepath.Join(dir, "image"), append([]string{"-o", out}, args...)...)
		if b, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("hack/image %s: %w: %s", name, err, b)
		}
		tarballs = append(tarballs, out)
	}
	return tarballs, nil
}

func appletLinks() []string {
	var args []string
	for _, a := range busyboxApplets {
		args = append(args, "-symlink", "/bin/"+a+":/bin/busybox")
	}
	return args
}

func copyFile(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return fmt.Errorf("copying %s: %w", src, err)
	}
	if err := os.WriteFile(dst, b, 0o755); err != nil {
		return fmt.Errorf("copying %s: %w", src, err)
	}
	return nil
}

// TestNode runs the deployed scenarios (runDeployed, shared with TestKind)
// on a real node: hack/node.sh starts etcd, kube-apiserver,
// kube-controller-manager, kube-scheduler, containerd, runc and a kubelet
// v1.37.2 in a network namespace of its own; the test builds the manager,
// test-broker and pause images without Docker or a registry (hack/image),
// and a flux-core image when a flux-core build is available
// (hack/flux-image.sh; the flux container then runs flux-core, else the
// test broker), imports them, applies config/default with only the image names changed,
// runs every scenario through the real kubelet (exec, logs, probes,
// restarts), tears the node down and checks that nothing is left behind.
// It needs root and containerd, runc and the CNI plugins (Debian
// packages); without them it skips, or fails under CI=true.
func TestNode(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped in -short mode: starts a real node")
	}
	if why := cluster.NodeMissing(); why != "" {
		requireRealParts(t, errors.New("real-node e2e: "+why))
	}
	ctx := deadline(t, 40*time.Minute)
	begin := time.Now()
	work := t.TempDir()
	tarballs, err := buildNodeImages(ctx, work)
	if err != nil {
		requireRealParts(t, err)
	}
	fluxImage, fluxCore := nodeTestBrokerImage, false
	if prefix := fluxCorePrefix(); prefix != "" {
		tarball, err := buildFluxCoreImage(ctx, work, prefix)
		if err != nil {
			t.Fatalf("flux-core is available (%s) but its image cannot be made: %v", prefix, err)
		}
		tarballs = append(tarballs, tarball)
		fluxImage, fluxCore = nodeFluxCoreImage, true
	} else {
		t.Log("NODE_FLUX_PREFIX is not set: the flux container runs the test broker")
	}
	t.Logf("binaries and images built in %v; flux container: %s", time.Since(begin).Round(time.Second), fluxImage)

	var logw bytes.Buffer
	n, err := cluster.StartNode(ctx, os.TempDir(), &logw)
	if err != nil {
		t.Fatalf("%v\n%s", err, logw.String())
	}
	t.Logf("node Ready in %v (hack/node.sh up)", n.Started.Round(time.Second))
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		if t.Failed() {
			for _, c := range []string{"kubelet", "containerd", "kube-apiserver"} {
				t.Logf("%s log (last lines):\n%s", c, n.Log(c, 30))
			}
		}
		start := time.Now()
		left, err := n.Stop(sctx)
		if err != nil {
			t.Errorf("tearing the node down: %v", err)
		}
		if len(left) > 0 {
			t.Errorf("the node left behind:\n%s", strings.Join(left, "\n"))
		}
		t.Logf("node torn down in %v; whole test %v", time.Since(start).Round(time.Second), time.Since(begin).Round(time.Second))
	})
	if err := n.Import(ctx, tarballs...); err != nil {
		t.Fatal(err)
	}
	tg := &nodeTarget{n: n, pluginBin: filepath.Join(work, "kubectl-fluxjob"), fluxImage: fluxImage, fluxCore: fluxCore}
	podNS := uniqueNamespace("e2e-pod-")
	deploy(ctx, t, tg, renderDeployment(ctx, t, tg, "pod-exec", podNS)) // config/default plus pod FluxEndpoints in podInstanceNamespace
	t.Logf("manager Ready %v after the start", time.Since(begin).Round(time.Second))
	runDeployed(ctx, t, tg, podNS)
}
