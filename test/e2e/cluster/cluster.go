// Package cluster starts the real parts the local end-to-end test and the
// demo run against: a kube-apiserver and etcd (the envtest binaries that
// hack/envtest.sh builds from the Go module proxy), a kubeconfig for
// kubectl, and the fluxjob-operator manager as a separate process.
//
// Nothing here is faked: the API server is the real one, kubectl is the
// real one, and the manager is the binary built from main.go. Only Flux is
// replaced, by fluxbridge/testbroker, which the caller starts.
package cluster

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
	"sync"
	"syscall"
	"time"

	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// ErrNoAssets is returned by Start when the envtest binaries
// (kube-apiserver, etcd, kubectl) cannot be found.
var ErrNoAssets = errors.New("envtest binaries not found: run `make envtest` (hack/envtest.sh) or set KUBEBUILDER_ASSETS")

// Options configures Start.
type Options struct {
	// AssetsDir holds kube-apiserver, etcd and kubectl. Empty means
	// $KUBEBUILDER_ASSETS, then <repo>/bin/k8s.
	AssetsDir string
	// CRDDir, when set, is installed with `kubectl apply` once the API
	// server is up, and Start waits for the CRDs to be established.
	CRDDir string
	// Dir is where the kubeconfig and logs go. Empty means a new
	// temporary directory, removed by Stop.
	Dir string
}

// Cluster is a running kube-apiserver and etcd.
type Cluster struct {
	// Config reaches the API server as a cluster administrator.
	Config *rest.Config
	// Kubeconfig is the path of a kubeconfig file for Config.
	Kubeconfig string
	// Dir is the working directory of the cluster (kubeconfig, logs).
	Dir string

	kubectl string
	env     *envtest.Environment
	ownDir  bool
}

// RepoRoot returns the directory of the fluxjob-operator module, found by
// walking up from the working directory to the go.mod that declares it.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("finding the repository root: %w", err)
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.Contains(b, []byte("module github.com/fluxjob/fluxjob-operator\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("finding the repository root: no go.mod of github.com/fluxjob/fluxjob-operator above the working directory")
		}
		dir = parent
	}
}

// AssetsDir returns the directory that holds the envtest binaries, or
// ErrNoAssets.
func AssetsDir(dir string) (string, error) {
	if dir == "" {
		dir = os.Getenv("KUBEBUILDER_ASSETS")
	}
	if dir == "" {
		root, err := RepoRoot()
		if err != nil {
			return "", err
		}
		dir = filepath.Join(root, "bin", "k8s")
	}
	for _, b := range []string{"kube-apiserver", "etcd", "kubectl"} {
		if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
			return "", fmt.Errorf("%w (missing %s in %s)", ErrNoAssets, b, dir)
		}
	}
	return dir, nil
}

// Start starts etcd and kube-apiserver, writes a kubeconfig and, if
// opts.CRDDir is set, installs the CRDs with kubectl.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	assets, err := AssetsDir(opts.AssetsDir)
	if err != nil {
		return nil, err
	}
	c := &Cluster{Dir: opts.Dir, kubectl: filepath.Join(assets, "kubectl")}
	if c.Dir == "" {
		if c.Dir, err = os.MkdirTemp("", "fluxjob-cluster-"); err != nil {
			return nil, fmt.Errorf("creating the cluster directory: %w", err)
		}
		c.ownDir = true
	}
	c.env = &envtest.Environment{BinaryAssetsDirectory: assets}
	// envtest reads KUBEBUILDER_ASSETS before BinaryAssetsDirectory; make
	// them agree so the binaries we checked are the ones that run.
	if err := os.Setenv("KUBEBUILDER_ASSETS", assets); err != nil {
		return nil, fmt.Errorf("setting KUBEBUILDER_ASSETS: %w", err)
	}
	if _, err := c.env.Start(); err != nil {
		c.cleanDir()
		return nil, fmt.Errorf("starting kube-apiserver and etcd from %s: %w", assets, err)
	}
	admin, err := c.env.AddUser(envtest.User{Name: "fluxjob-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		_ = c.Stop()
		return nil, fmt.Errorf("adding the admin user: %w", err)
	}
	c.Config = admin.Config()
	kc, err := admin.KubeConfig()
	if err != nil {
		_ = c.Stop()
		return nil, fmt.Errorf("writing the kubeconfig: %w", err)
	}
	c.Kubeconfig = filepath.Join(c.Dir, "kubeconfig")
	if err := os.WriteFile(c.Kubeconfig, kc, 0o600); err != nil {
		_ = c.Stop()
		return nil, fmt.Errorf("writing the kubeconfig: %w", err)
	}
	if opts.CRDDir != "" {
		if err := c.InstallCRDs(ctx, opts.CRDDir); err != nil {
			_ = c.Stop()
			return nil, err
		}
	}
	return c, nil
}

// InstallCRDs applies the CRDs in dir with kubectl and waits until they
// are established.
func (c *Cluster) InstallCRDs(ctx context.Context, dir string) error {
	if _, err := c.Kubectl(ctx, "apply", "--server-side", "-f", dir); err != nil {
		return fmt.Errorf("installing CRDs from %s: %w", dir, err)
	}
	if _, err := c.Kubectl(ctx, "wait", "--for=condition=Established", "--timeout=60s", "-f", dir); err != nil {
		return fmt.Errorf("waiting for the CRDs from %s: %w", dir, err)
	}
	return nil
}

// Kubectl runs kubectl against the cluster and returns its standard
// output. A failure returns an error that includes standard error.
func (c *Cluster) Kubectl(ctx context.Context, args ...string) ([]byte, error) {
	return c.KubectlInput(ctx, nil, args...)
}

// KubectlInput is Kubectl with stdin.
func (c *Cluster) KubectlInput(ctx context.Context, stdin io.Reader, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, c.kubectl, append([]string{"--kubeconfig", c.Kubeconfig}, args...)...)
	cmd.Stdin = stdin
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.Bytes(), nil
}

// Stop stops the API server and etcd and removes the cluster directory if
// Start created it.
func (c *Cluster) Stop() error {
	err := c.env.Stop()
	c.cleanDir()
	if err != nil {
		return fmt.Errorf("stopping the control plane: %w", err)
	}
	return nil
}

func (c *Cluster) cleanDir() {
	if c.ownDir {
		_ = os.RemoveAll(c.Dir)
	}
}

// ManagerBinary returns the manager binary to run: $MANAGER_BIN when it is
// set (the Makefile builds bin/manager before the tests and sets it), else
// a fresh build from the repository into dir.
func ManagerBinary(ctx context.Context, dir string) (string, error) {
	if bin := os.Getenv("MANAGER_BIN"); bin != "" {
		if !filepath.IsAbs(bin) {
			root, err := RepoRoot()
			if err != nil {
				return "", err
			}
			bin = filepath.Join(root, bin)
		}
		if _, err := os.Stat(bin); err != nil {
			return "", fmt.Errorf("MANAGER_BIN: %w", err)
		}
		return bin, nil
	}
	bin := filepath.Join(dir, "manager")
	return bin, BuildManager(ctx, bin)
}

// BuildManager builds the manager binary from the repository's main.go
// into out.
func BuildManager(ctx context.Context, out string) error {
	root, err := RepoRoot()
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, ".")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("building the manager: %w: %s", err, b)
	}
	return nil
}

// Process is a program started by StartProcess.
type Process struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error
	mu   sync.Mutex
	log  bytes.Buffer
}

// StartProcess starts path with args and env (added to the current
// environment). Its combined output is kept (see Output) and also copied
// to logw if not nil. The process is killed if ctx ends.
func StartProcess(ctx context.Context, path string, args, env []string, logw io.Writer) (*Process, error) {
	p := &Process{done: make(chan struct{})}
	p.cmd = exec.CommandContext(ctx, path, args...)
	p.cmd.Env = append(os.Environ(), env...)
	var w io.Writer = lockedWriter{p}
	if logw != nil {
		w = io.MultiWriter(w, logw)
	}
	p.cmd.Stdout, p.cmd.Stderr = w, w
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", path, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

type lockedWriter struct{ p *Process }

func (l lockedWriter) Write(b []byte) (int, error) {
	l.p.mu.Lock()
	defer l.p.mu.Unlock()
	return l.p.log.Write(b)
}

// Output returns what the process has written so far.
func (p *Process) Output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.String()
}

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Stop sends SIGTERM, waits up to grace for the process to exit, then
// kills it. It returns the process's exit error (nil for a clean exit).
func (p *Process) Stop(grace time.Duration) error {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-p.done:
		return p.err
	case <-t.C:
		return p.Kill()
	}
}

// Kill sends SIGKILL and waits for the process to exit.
func (p *Process) Kill() error {
	_ = p.cmd.Process.Kill()
	<-p.done
	return p.err
}
