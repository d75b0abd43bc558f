// Package fluxendpoint starts and stops flux-core test instances
// (`flux start --test-size=1`) for the real-broker tests and benchmarks.
// It needs a `flux` command (flux-core 0.88) on PATH; Installed tells
// whether there is one, so callers can skip with a clear message.
package fluxendpoint

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
	"sync"
	"syscall"
	"time"
)

// ErrNotInstalled is returned by Installed when no `flux` is on PATH.
var ErrNotInstalled = errors.New("flux-core is not installed (no `flux` on PATH): " +
	"the real-broker checks need flux-core 0.88 (e.g. PATH=<prefix>/bin:$PATH)")

// Installed returns nil if a `flux` command is on PATH, else ErrNotInstalled.
func Installed() error {
	if _, err := exec.LookPath("flux"); err != nil {
		return ErrNotInstalled
	}
	return nil
}

// Instance is a running flux-core instance: one started with Start, or an
// existing one named by its URI (Attach), which Stop leaves alone.
type Instance struct {
	// URI is the local:// URI of the instance's broker.
	URI string

	cmd     *exec.Cmd     // flux start, nil when attached
	initPID int           // the initial program (sleep inf)
	waited  chan struct{} // closed when cmd has been waited for
	mu      sync.Mutex
	stderr  bytes.Buffer // flux start's stderr, for failures
}

// Options are what Start adds to `flux start --test-size=1`.
type Options struct {
	// Args go to flux start before the initial program: broker
	// attributes (-Sstatedir=DIR) and configuration (--conf=KEY=VALUE).
	Args []string
	// Env is added to flux start's environment.
	Env []string
	// Prefix, when set, is a command that runs flux start: it is given
	// "flux" and flux start's arguments as its last arguments (a wrapper
	// that sets up a namespace and drops privileges, then execs them).
	Prefix []string
}

// Attach returns the existing instance at uri; Stop does nothing to it.
func Attach(uri string) *Instance { return &Instance{URI: uri} }

// Start starts `flux start --test-size=1` with an initial program that
// prints its pid and FLUX_URI and then sleeps for ever, and waits for that
// line (or ctx's end). Stop it with Stop.
func Start(ctx context.Context, opts Options) (*Instance, error) {
	inst := &Instance{waited: make(chan struct{})}
	// The initial program is ours: it reports the URI and its pid (exec
	// keeps the pid for sleep), so Stop can end the instance the normal
	// way, by ending its initial program.
	args := append([]string{"start", "--test-size=1"}, opts.Args...)
	args = append(args, "sh", "-c", `printf '%s %s\n' "$$" "$FLUX_URI"; exec sleep inf`)
	cmd := exec.Command("flux", args...)
	if len(opts.Prefix) > 0 {
		cmd = exec.Command(opts.Prefix[0], append(append(opts.Prefix[1:len(opts.Prefix):len(opts.Prefix)], "flux"), args...)...)
	}
	cmd.Env = append(os.Environ(), opts.Env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Stderr = lockedWriter{&inst.mu, &inst.stderr}
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
			inst.Kill()
			return nil, fmt.Errorf("flux start: unexpected first line %q (stderr: %s)", l, inst.Stderr())
		}
		inst.initPID, inst.URI = n, uri
		return inst, nil
	case <-ctx.Done():
		inst.Kill()
		return nil, fmt.Errorf("flux start: waiting for the instance: %w (stderr: %s)", ctx.Err(), inst.Stderr())
	}
}

// Stderr is what flux start wrote to its stderr so far.
func (inst *Instance) Stderr() string {
	inst.mu.Lock()
	defer inst.mu.Unlock()
	return inst.stderr.String()
}

// Kill ends flux start and its brokers at once and waits for it.
func (inst *Instance) Kill() {
	if inst.cmd == nil {
		return
	}
	_ = syscall.Kill(-inst.cmd.Process.Pid, syscall.SIGKILL)
	// The broker runs its initial program in a process group of its own:
	// it outlives a killed broker unless killed too.
	if inst.initPID > 0 {
		_ = syscall.Kill(inst.initPID, syscall.SIGKILL)
	}
	<-inst.waited
}

// Stop ends an instance started by Start by ending its initial program
// (the broker then shuts down: the cleanup phase, rc3, exit), waiting up
// to timeout before killing it. It does nothing to an attached instance.
func (inst *Instance) Stop(timeout time.Duration) error {
	if inst.cmd == nil {
		return nil
	}
	_ = syscall.Kill(inst.initPID, syscall.SIGTERM)
	select {
	case <-inst.waited:
		return nil
	case <-time.After(timeout):
		inst.Kill()
		return errors.New("flux start did not exit after its initial program ended; killed it")
	}
}

// Flux runs a flux command against the instance and returns its trimmed
// stdout.
func (inst *Instance) Flux(ctx context.Context, args ...string) (string, error) {
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

// BrokerPID is the pid of the instance's (rank 0) broker, from its
// broker.pid attribute.
func (inst *Instance) BrokerPID(ctx context.Context) (int, error) {
	s, err := inst.Flux(ctx, "getattr", "broker.pid")
	if err != nil {
		return 0, err
	}
	pid, err := strconv.Atoi(s)
	if err != nil {
		return 0, fmt.Errorf("broker.pid %q: %w", s, err)
	}
	return pid, nil
}

// lockedWriter serialises writes to w.
type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
