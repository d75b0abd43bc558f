package realflux

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// instance is a running flux-core instance: one we started with
// `flux start --test-size=1`, or the enclosing one named by $FLUX_URI.
type instance struct {
	// URI is the local:// URI of the instance's broker.
	URI string

	cmd     *exec.Cmd     // flux start, nil when using $FLUX_URI
	initPID int           // the initial program (sleep inf), nil-valued when not ours
	waited  chan struct{} // closed when cmd has been waited for
	stderr  bytes.Buffer  // flux start's stderr, for failures
}

// needFlux skips tb unless a `flux` command is on PATH.
func needFlux(tb testing.TB) {
	tb.Helper()
	if _, err := exec.LookPath("flux"); err != nil {
		tb.Skip("flux-core is not installed (no `flux` on PATH): the real-broker checks need flux-core 0.88 " +
			"(e.g. PATH=/opt/flux-core/bin:$PATH)")
	}
}

// startInstance starts `flux start --test-size=1` with an initial program
// that prints FLUX_URI and its pid and then sleeps for ever, or returns the
// enclosing instance when $FLUX_URI is set. Stop it with stop.
func startInstance(ctx context.Context) (*instance, error) {
	if uri := os.Getenv("FLUX_URI"); uri != "" {
		return &instance{URI: uri}, nil
	}
	return startOwnInstance(ctx)
}

// startOwnInstance starts `flux start --test-size=1 <brokerArgs...>` with
// the initial program described at startInstance, never using $FLUX_URI.
func startOwnInstance(ctx context.Context, brokerArgs ...string) (*instance, error) {
	inst := &instance{waited: make(chan struct{})}
	// The initial program is ours: it reports the URI and its pid (exec
	// keeps the pid for sleep), so stop can end the instance the normal
	// way, by ending its initial program.
	args := append(append([]string{"start", "--test-size=1"}, brokerArgs...),
		"sh", "-c", `printf '%s %s\n' "$$" "$FLUX_URI"; exec sleep inf`)
	cmd := exec.Command("flux", args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Stderr = &inst.stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("flux start: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("flux start: %w", err)
	}
	inst.cmd = cmd
	line := make(chan string, 1)
	go func() {
		r := bufio.NewReader(out)
		l, _ := r.ReadString('\n')
		line <- l
		_, _ = io.Copy(io.Discard, r)
	}()
	go func() {
		_ = cmd.Wait()
		close(inst.waited)
	}()
	select {
	case l := <-line:
		pid, uri, ok := strings.Cut(strings.TrimSpace(l), " ")
		n, err := strconv.Atoi(pid)
		if !ok || err != nil || !strings.HasPrefix(uri, "local://") {
			inst.kill()
			return nil, fmt.Errorf("flux start: unexpected first line %q (stderr: %s)", l, inst.stderr.String())
		}
		inst.initPID, inst.URI = n, uri
		return inst, nil
	case <-ctx.Done():
		inst.kill()
		return nil, fmt.Errorf("flux start: waiting for the instance: %w (stderr: %s)", ctx.Err(), inst.stderr.String())
	}
}

// kill ends flux start and its brokers at once and waits for it.
func (inst *instance) kill() {
	if inst.cmd == nil {
		return
	}
	_ = syscall.Kill(-inst.cmd.Process.Pid, syscall.SIGKILL)
	<-inst.waited
}

// stop ends the instance we started by ending its initial program (the
// broker then shuts down: rc3, exit), waiting up to timeout before killing
// it. It does nothing for the enclosing $FLUX_URI instance.
func (inst *instance) stop(timeout time.Duration) error {
	if inst.cmd == nil {
		return nil
	}
	_ = syscall.Kill(inst.initPID, syscall.SIGTERM)
	select {
	case <-inst.waited:
		return nil
	case <-time.After(timeout):
		inst.kill()
		return errors.New("flux start did not exit after its initial program ended; killed it")
	}
}

// useInstance starts an instance for one test or benchmark (or uses
// $FLUX_URI), skipping when flux is not installed, and stops it at cleanup.
func useInstance(tb testing.TB) *instance {
	tb.Helper()
	needFlux(tb)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	inst, err := startInstance(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := inst.stop(time.Minute); err != nil {
			tb.Error(err)
		}
	})
	return inst
}

// flux runs a flux command against inst and returns its trimmed stdout.
func (inst *instance) flux(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "flux", args...)
	cmd.Env = append(os.Environ(), "FLUX_URI="+inst.URI)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("flux %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(string(out)), nil
}
