package broker

import (
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/testbroker"
)

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestFluxConnectorReconnects runs the connector against the test broker:
// it connects, reports ready, notices a lost broker, reconnects with
// backoff (calling OnConnect again) and stops cleanly.
func TestFluxConnectorReconnects(t *testing.T) {
	b := testbroker.New(testbroker.Options{})
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	c := NewConnector(ConnectorOptions{
		URI: b.URI(), Workers: 2,
		Backoff:       wait.Backoff{Duration: 10 * time.Millisecond, Factor: 2, Steps: 1 << 20, Cap: 100 * time.Millisecond},
		CheckInterval: 10 * time.Millisecond, ShutdownTimeout: time.Second,
	})
	var connects atomic.Int32
	c.OnConnect(func() { connects.Add(1) })
	if connected, why := c.State(); connected || why != "" {
		t.Fatalf("before Start: State() = %v, %q; want false, \"\"", connected, why)
	}
	if err := c.Ready(nil); err == nil {
		t.Fatal("ready before connecting")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Start(ctx) }()

	waitUntil(t, "first connection", func() bool { return c.Ready(nil) == nil })
	exec, ctl, err := c.Get()
	if err != nil {
		t.Fatal(err)
	}
	f, err := exec.Submit(ctx, mustJobspec(t, "true"), job.SubmitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res, err := f.Result(ctx); err != nil || res != 0 {
		t.Fatalf("result %d, %v", res, err)
	}
	if ids, err := Lookup(ctx, ctl, "true", 0, time.Second); err != nil || len(ids) != 1 {
		t.Fatalf("lookup by name: %v, %v", ids, err)
	}

	b.SetConnectError(syscall.ECONNREFUSED)
	if err := b.DropConnections(); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "unreachable", func() bool { _, why := c.State(); return why != "" })
	if err := c.Ready(nil); err == nil {
		t.Fatal("ready while the broker refuses connections")
	}
	b.SetConnectError(0)
	waitUntil(t, "reconnection", func() bool { return c.Ready(nil) == nil && connects.Load() == 2 })
	if exec2, _, _ := c.Get(); exec2 == exec {
		t.Fatal("the broken executor was kept")
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Start returned %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Start did not return after cancel")
	}
	if connected, _ := c.State(); connected {
		t.Fatal("still connected after stop")
	}
}

func mustJobspec(t *testing.T, cmd ...string) []byte {
	t.Helper()
	return namedJobspec(t, cmd, "")
}

// namedJobspec is a jobspec running cmd, with job name name.
func namedJobspec(t *testing.T, cmd []string, name string) []byte {
	t.Helper()
	js, err := job.FromCommand(cmd, job.CommandOptions{Name: name})
	if err != nil {
		t.Fatal(err)
	}
	b, err := js.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// stderrStream is a relay that exits at once after writing secret to its
// standard error (flux.StderrStream).
type stderrStream struct{ stderr string }

func (s *stderrStream) Read([]byte) (int, error)      { return 0, io.EOF }
func (s *stderrStream) Write(p []byte) (int, error)   { return len(p), nil }
func (s *stderrStream) Close() error                  { return nil }
func (s *stderrStream) Stderr(context.Context) string { return s.stderr }

// TestConnectorKeepsRelayStderrOutOfState: a relay that fails and writes
// something secret to its standard error (a hostile command printing a
// service-account token) has the failure reported by State and Get — what
// FluxEndpoint and FluxJob status show — with the size of its standard
// error only; the text goes to the manager's log. Before, State returned
// flux.RelayError's message, standard error included.
func TestConnectorKeepsRelayStderrOutOfState(t *testing.T) {
	const secret = "eyJhbGciOiJSUzI1NiIsImtpZCI6IsecretTOKEN"
	var logged strings.Builder
	var mu sync.Mutex
	logger := funcr.New(func(prefix, args string) {
		mu.Lock()
		defer mu.Unlock()
		logged.WriteString(args + "\n")
	}, funcr.Options{})
	c := NewConnector(ConnectorOptions{
		URI: "pod://hpc/flux-0", Workers: 1, Logger: logger,
		Backoff: wait.Backoff{Duration: 10 * time.Millisecond, Factor: 1, Steps: 1 << 20},
		DialOptions: []flux.Option{flux.WithDialer(func(context.Context, string) (io.ReadWriteCloser, error) {
			return &stderrStream{stderr: "cat: token follows\n" + secret + "\n"}, nil
		})},
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Start(ctx) }()
	defer func() { cancel(); <-done }()
	var why string
	waitUntil(t, "a failed connection attempt", func() bool { _, why = c.State(); return why != "" })
	_, _, getErr := c.Get()
	for _, msg := range []string{why, getErr.Error()} {
		if strings.Contains(msg, secret) || strings.Contains(msg, "token follows") {
			t.Fatalf("the relay's standard error reached State/Get: %q", msg)
		}
		if !strings.Contains(msg, "pod://hpc/flux-0") || !strings.Contains(msg, "bytes to its standard error, which are in the manager's log only") {
			t.Fatalf("State/Get %q: want the URI and a summary of the standard error", msg)
		}
	}
	if !errors.Is(getErr, ErrUnreachable) {
		t.Fatalf("Get: %v, want ErrUnreachable", getErr)
	}
	mu.Lock()
	defer mu.Unlock()
	if !strings.Contains(logged.String(), secret) {
		t.Fatalf("the manager's log lacks the relay's standard error:\n%s", logged.String())
	}
}
