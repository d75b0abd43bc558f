package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/testbroker"
	"github.com/fluxjob/fluxjob-operator/test/e2e/cluster"
)

// localTarget is a real kube-apiserver and etcd, the built manager binary
// as a process, and the test broker on a unix socket.
type localTarget struct {
	c      *cluster.Cluster
	broker *testbroker.Server
}

// localQueues are the test broker's queues (the first is the default).
var localQueues = []string{"batch", "debug"}

func (l *localTarget) kubectl(ctx context.Context, args ...string) ([]byte, error) {
	return l.c.Kubectl(ctx, args...)
}

func (l *localTarget) kubectlInput(ctx context.Context, stdin io.Reader, args ...string) ([]byte, error) {
	return l.c.KubectlInput(ctx, stdin, args...)
}

func (l *localTarget) fluxEvents(ctx context.Context, id job.ID) ([]job.Event, error) {
	return readEventlog(ctx, l.broker.URI(), id)
}

// hasQueue reports whether the test broker was given the queue.
func (l *localTarget) hasQueue(name string) bool { return slices.Contains(localQueues, name) }

func (l *localTarget) fluxJobCount(context.Context) (int, error) {
	return len(l.broker.Jobs()), nil
}

// readEventlog reads the whole eventlog of a job that has ended, through
// the production client.
func readEventlog(ctx context.Context, uri string, id job.ID) ([]job.Event, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	c, err := flux.Dial(ctx, uri)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	w, err := job.WatchEvents(ctx, c, id, job.WatchOptions{})
	if err != nil {
		return nil, err
	}
	defer w.Close()
	var evs []job.Event
	for {
		ev, err := w.Next()
		if errors.Is(err, io.EOF) {
			return evs, nil
		}
		if err != nil {
			return evs, err
		}
		evs = append(evs, ev)
	}
}

// localWorld is a real API server and etcd, the test broker, and the
// built manager binary, ready to start.
type localWorld struct {
	c      *cluster.Cluster
	broker *testbroker.Server
	root   string
	bin    string
}

// startLocal starts the API server (with the CRD) and the test broker, and
// builds the manager; all are stopped when the test ends. It skips (fails
// in CI) without the envtest binaries.
func startLocal(ctx context.Context, t *testing.T) *localWorld {
	t.Helper()
	if testing.Short() {
		t.Skip("skipped in -short mode: builds and runs the manager binary against a real API server")
	}
	_, err := cluster.AssetsDir("")
	requireRealParts(t, err)
	root, err := cluster.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	// Queues as an instance configured with [queues.batch], [queues.debug]
	// and policy.jobspec.defaults.system.queue = "batch" has them.
	broker := testbroker.New(testbroker.Options{Dir: t.TempDir(), Queues: localQueues, DefaultQueue: localQueues[0]})
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
	bin, err := cluster.ManagerBinary(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return &localWorld{c: c, broker: broker, root: root, bin: bin}
}

// managerEnv is the manager process's environment besides the test's own.
func (l *localWorld) managerEnv(extra ...string) []string {
	return append([]string{"KUBECONFIG=" + l.c.Kubeconfig, "FLUX_URI=" + l.broker.URI()}, extra...)
}

// startManager runs the manager binary with args (and a free health probe
// address) and env, waits until it is ready, and stops it with SIGTERM
// when the test ends: it must exit cleanly (executor shut down, leader
// lease released) within its grace period.
func (l *localWorld) startManager(ctx context.Context, t *testing.T, args, env []string) *cluster.Process {
	t.Helper()
	probe := freeAddr(t)
	mgr, err := cluster.StartProcess(ctx, l.bin, append([]string{"--health-probe-bind-address=" + probe}, args...), env, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := mgr.Stop(30 * time.Second); err != nil {
			t.Errorf("manager did not exit cleanly on SIGTERM: %v", err)
		}
		if t.Failed() {
			t.Logf("manager output:\n%s", mgr.Output())
		}
	})
	if err := waitReady(ctx, "http://"+probe+"/readyz", mgr); err != nil {
		t.Fatalf("manager never became ready: %v\n%s", err, mgr.Output())
	}
	return mgr
}

// TestLocal runs the e2e scenario against the real API server and the
// built manager binary, with the test broker in place of Flux.
func TestLocal(t *testing.T) {
	ctx := deadline(t, 8*time.Minute)
	l := startLocal(ctx, t)
	c, broker := l.c, l.broker
	// Besides its kubeconfig, the manager gets what a manager container in
	// a pod has (the API server's address) and a canary: none of it may
	// reach a Flux job (checkJobEnv below).
	mgrEnv := l.managerEnv(canaryEnv()...)
	l.startManager(ctx, t, []string{"--metrics-bind-address=0"}, mgrEnv)

	tg := &localTarget{c: c, broker: broker}
	runScenario(ctx, t, tg, "e2e")

	// The token probe: the test broker runs no command, so what can be
	// checked here is what the controller hands Flux. The job's
	// environment is the FluxJob's spec.env and nothing of the manager's
	// (no kubeconfig, no API server address, no canary). On kind the same
	// FluxJob runs for real in the flux sidecar and must find no token
	// (TestKind).
	if _, err := tg.kubectlInput(ctx, strings.NewReader(tokenProbe), "apply", "-n", "e2e", "-f", "-"); err != nil {
		t.Fatal(err)
	}
	fj := waitJobID(ctx, t, tg, "e2e", "token-probe")
	checkJobEnv(ctx, t, broker.URI(), job.ID(fj.Status.JobID), map[string]string{"PROBE": "token"}, mgrEnv)
}

// freeAddr returns a loopback address with a port that was free a moment
// ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// waitReady polls url until it answers 200, the process exits, or ctx
// ends.
func waitReady(ctx context.Context, url string, p *cluster.Process) error {
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-p.Done():
			return fmt.Errorf("the manager exited")
		case <-tick.C:
		}
	}
}
