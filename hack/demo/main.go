// Command demo runs fluxjob-operator end to end on one machine: a real
// kube-apiserver and etcd (bin/k8s, built by hack/envtest.sh), the manager
// binary, and a Flux broker — a real `flux start` instance when flux-core
// is on PATH, otherwise fluxbridge/testbroker, a test double, with a banner
// that says so. It applies the samples in config/samples and shows
// `kubectl get fluxjobs` until every sample has finished.
//
//	go run ./hack/demo            # what `make demo` runs
//	go run ./hack/demo -keep      # keep everything running; Ctrl-C to stop
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/testbroker"
	"github.com/fluxjob/fluxjob-operator/test/e2e/cluster"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func run() error {
	keep := flag.Bool("keep", false, "keep the API server, broker and manager running after the samples finish (Ctrl-C stops)")
	timeout := flag.Duration("timeout", 3*time.Minute, "how long to wait for the samples to finish")
	manager := flag.String("manager", "bin/manager", "manager binary (built if missing)")
	testBroker := flag.Bool("test-broker", false, "use the test broker even when flux-core is installed")
	flag.Parse()

	logf.SetLogger(logr.Discard()) // envtest's own logs; the manager logs to its file
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	root, err := cluster.RepoRoot()
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "fluxjob-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	uri, closeBroker, err := startBroker(ctx, dir, *testBroker)
	if err != nil {
		return err
	}
	defer closeBroker()

	step("Starting kube-apiserver and etcd (bin/k8s) and installing the FluxJob CRD")
	c, err := cluster.Start(ctx, cluster.Options{Dir: dir, CRDDir: filepath.Join(root, "config", "crd", "bases")})
	if err != nil {
		return err
	}
	defer func() { _ = c.Stop() }()

	bin := *manager
	if !filepath.IsAbs(bin) {
		bin = filepath.Join(root, bin)
	}
	if _, err := os.Stat(bin); err != nil {
		step("Building the manager")
		if err := cluster.BuildManager(ctx, bin); err != nil {
			return err
		}
	}
	logPath := filepath.Join(dir, "manager.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer logf.Close()
	step("Starting the manager (log: %s)", logPath)
	mgr, err := cluster.StartProcess(ctx, bin,
		[]string{"--metrics-bind-address=0", "--health-probe-bind-address=127.0.0.1:0"},
		[]string{"KUBECONFIG=" + c.Kubeconfig, "FLUX_URI=" + uri}, logf)
	if err != nil {
		return err
	}
	defer func() { _ = mgr.Stop(20 * time.Second) }()

	step("kubectl apply -k config/samples")
	out, err := c.Kubectl(ctx, "apply", "-k", filepath.Join(root, "config", "samples"))
	fmt.Print(string(out))
	if err != nil {
		return err
	}

	step("kubectl get fluxjobs (until every sample has finished)")
	if err := watch(ctx, c, mgr, *timeout); err != nil {
		return fmt.Errorf("%w\nmanager log: %s", err, tail(mgr.Output(), 20))
	}
	out, err = c.Kubectl(ctx, "get", "fluxjob", "hello", "-o", "jsonpath={.status}")
	if err == nil {
		step("Status of fluxjob/hello")
		fmt.Println(string(out))
	}
	out, _ = c.Kubectl(ctx, "describe", "fluxjob", "fail")
	step("kubectl describe fluxjob fail (events at the end)")
	fmt.Print(string(out))

	if *keep {
		step("Running; Ctrl-C stops. Try:\n    %s --kubeconfig %s get fluxjobs", kubectlPath(), c.Kubeconfig)
		<-ctx.Done()
	}
	step("Stopping the manager, the broker and the API server")
	return nil
}

// demoQueues are the Flux queues of the demo's instance (the queue sample
// uses batch), the first the default; demoQueuesTOML configures them in a
// real one.
var demoQueues = []string{"batch", "debug"}

const demoQueuesTOML = `[queues.batch]
[queues.debug]
[policy.jobspec.defaults.system]
queue = "batch"
`

// startBroker starts a real Flux instance if flux-core is installed, else
// the test broker, and returns its URI.
func startBroker(ctx context.Context, dir string, forceTest bool) (string, func(), error) {
	if flux, err := exec.LookPath("flux"); err == nil && !forceTest {
		step("Starting a real Flux instance: flux start --test-size=1 (%s)", flux)
		uriFile := filepath.Join(dir, "flux-uri")
		// The queues the queue sample uses (named queues start stopped).
		confDir := filepath.Join(dir, "flux-config")
		if err := os.MkdirAll(confDir, 0o700); err != nil {
			return "", nil, err
		}
		if err := os.WriteFile(filepath.Join(confDir, "queues.toml"), []byte(demoQueuesTOML), 0o600); err != nil {
			return "", nil, err
		}
		cmd := exec.CommandContext(ctx, flux, "start", "--test-size=1", "--config-path="+confDir,
			"sh", "-c", `flux queue start --all && echo "$FLUX_URI" >"$0"; exec sleep inf`, uriFile)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := cmd.Start(); err != nil {
			return "", nil, fmt.Errorf("flux start: %w", err)
		}
		closeFn := func() {
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
			_ = cmd.Wait()
		}
		deadline := time.Now().Add(60 * time.Second)
		for time.Now().Before(deadline) {
			if b, err := os.ReadFile(uriFile); err == nil && len(strings.TrimSpace(string(b))) > 0 {
				return strings.TrimSpace(string(b)), closeFn, nil
			}
			time.Sleep(200 * time.Millisecond)
		}
		closeFn()
		return "", nil, errors.New("flux start: the instance did not come up within 60s")
	}
	banner("Flux: fluxbridge/testbroker — a TEST DOUBLE that simulates a flux-core broker's job\n" +
		"services on a real unix socket. No job really runs. (flux-core is not on PATH;\n" +
		"install it to run this demo against a real Flux instance.)")
	b := testbroker.New(testbroker.Options{Dir: filepath.Join(dir, "flux"), Delays: testbroker.RealisticDelays(),
		Queues: demoQueues, DefaultQueue: demoQueues[0]})
	if err := os.MkdirAll(filepath.Join(dir, "flux"), 0o700); err != nil {
		return "", nil, err
	}
	if err := b.Start(ctx); err != nil {
		return "", nil, err
	}
	return b.URI(), func() { _ = b.Close() }, nil
}

// watch prints `kubectl get fluxjobs` whenever it changes, until every
// FluxJob has a final phase.
func watch(ctx context.Context, c *cluster.Cluster, mgr *cluster.Process, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	last := ""
	for {
		out, err := c.Kubectl(ctx, "get", "fluxjobs")
		if err == nil && string(out) != last {
			last = string(out)
			fmt.Printf("--- %s\n%s", time.Now().Format("15:04:05.000"), last)
		}
		phases, err := c.Kubectl(ctx, "get", "fluxjobs", "-o", "jsonpath={range .items[*]}{.status.phase}{\"\\n\"}{end}")
		if err == nil && allFinal(string(phases)) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("samples did not finish: %w", ctx.Err())
		case <-mgr.Done():
			return errors.New("the manager exited")
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func allFinal(phases string) bool {
	sc := bufio.NewScanner(strings.NewReader(phases))
	n := 0
	for sc.Scan() {
		n++
		switch strings.TrimSpace(sc.Text()) {
		case "Succeeded", "Failed", "Cancelled":
		default:
			return false
		}
	}
	return n > 0
}

func kubectlPath() string {
	dir, err := cluster.AssetsDir("")
	if err != nil {
		return "kubectl"
	}
	return filepath.Join(dir, "kubectl")
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func step(format string, args ...any) {
	fmt.Printf("\n==> "+format+"\n", args...)
}

func banner(s string) {
	line := strings.Repeat("=", 78)
	fmt.Printf("\n%s\n%s\n%s\n", line, s, line)
}
