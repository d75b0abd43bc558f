package testbroker_test

import (
	"context"
	"errors"
	"io"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/testbroker"
)

// These tests drive the test broker with the production client,
// fluxbridge/flux, unmodified.

func dialFlux(t *testing.T, srv *testbroker.Server) *flux.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := flux.Dial(ctx, srv.URI())
	if err != nil {
		t.Fatalf("dial %s: %v", srv.URI(), err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func fluxSubmit(t *testing.T, c *flux.Conn, command ...string) job.ID {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var out struct {
		ID job.ID `json:"id"`
	}
	req := map[string]any{"J": signNone(jobspecFor(command...), myUID()), "urgency": 16, "flags": 0}
	if err := c.RPC(ctx, "job-ingest.submit", req, &out); err != nil {
		t.Fatalf("submit: %v", err)
	}
	return out.ID
}

func TestFluxClientLifecycle(t *testing.T) {
	srv := startServer(t, testbroker.Options{})
	c := dialFlux(t, srv)
	id := fluxSubmit(t, c, "false")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := c.Stream(ctx, "job-info.eventlog-watch", map[string]any{"id": id, "path": "eventlog", "flags": 0})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	var finish job.Event
	for {
		var resp struct{ Event string }
		err := st.Recv(&resp)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("recv: %v", err)
		}
		ev, err := job.ParseEvent([]byte(resp.Event))
		if err != nil {
			t.Fatalf("parse %q: %v", resp.Event, err)
		}
		got = append(got, ev.Name)
		if ev.Name == "finish" {
			finish = ev
		}
	}
	if strings.Join(got, " ") != fullLife {
		t.Fatalf("events %v", got)
	}
	if status, _ := finish.Context["status"].(float64); status != 256 {
		t.Fatalf("finish context %v, want status 256", finish.Context)
	}
}

func TestFluxClientErrors(t *testing.T) {
	srv := startServer(t, testbroker.Options{})
	c := dialFlux(t, srv)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	tests := []struct {
		topic string
		req   any
		errno syscall.Errno
		text  string
	}{
		{"job-manager.urgency", map[string]any{"id": 42, "urgency": 3}, syscall.EINVAL, "unknown job"},
		{"job-manager.kill", map[string]any{"id": 42, "signum": 15}, syscall.EINVAL, "unknown job id"},
		{"job-manager.raise", map[string]any{"id": 42, "type": "cancel", "severity": 0}, syscall.ENOENT, "unknown job id"},
		{"job-manager.raise", map[string]any{"id": 42, "type": "bad type", "severity": 0}, syscall.EPROTO, "invalid exception type"},
		{"job-manager.wait", map[string]any{"id": -1}, syscall.ECHILD, "there are no more waitable jobs"},
		{"job-list.list-id", map[string]any{"id": 42, "attrs": []string{}}, syscall.ENOENT, ""},
		{"job-info.lookup", map[string]any{"id": 42, "keys": []string{"eventlog"}, "flags": 0}, syscall.ENOENT, "invalid job id"},
		{"job-manager.no-such-method", map[string]any{}, syscall.ENOSYS, "Unknown service method 'job-manager.no-such-method'"},
		{"kvs.lookup", map[string]any{}, syscall.EPROTO, ""},
		{"content.load", map[string]any{}, syscall.ENOSYS, "No service matching content.load is registered"},
	}
	for _, tc := range tests {
		t.Run(tc.topic+"_"+tc.text, func(t *testing.T) {
			err := c.RPC(ctx, tc.topic, tc.req, nil)
			var fe *flux.Error
			if !errors.As(err, &fe) || !errors.Is(err, tc.errno) || fe.Message != tc.text {
				t.Fatalf("err = %v, want errno %v %q", err, tc.errno, tc.text)
			}
		})
	}
}

func TestFluxClientCancelStream(t *testing.T) {
	srv := startServer(t, testbroker.Options{})
	c := dialFlux(t, srv)
	id := fluxSubmit(t, c, "sleep", "300")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := c.Stream(ctx, "job-info.eventlog-watch", map[string]any{"id": id, "path": "eventlog", "flags": 0})
	if err != nil {
		t.Fatal(err)
	}
	var resp struct{ Event string }
	if err := st.Recv(&resp); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	// The connection is still usable, and the job still runs.
	var out struct{ Job struct{ State int } }
	if err := c.RPC(ctx, "job-list.list-id", map[string]any{"id": id, "attrs": []string{"state"}}, &out); err != nil {
		t.Fatal(err)
	}
	if out.Job.State&(8|16) == 0 {
		t.Fatalf("state %d", out.Job.State)
	}
}

func TestFluxClientDisconnectAndRefusal(t *testing.T) {
	srv := startServer(t, testbroker.Options{})
	c := dialFlux(t, srv)
	id := fluxSubmit(t, c, "sleep", "300")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := c.Stream(ctx, "job-info.eventlog-watch", map[string]any{"id": id, "path": "eventlog", "flags": 0})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.DropConnections(); err != nil {
		t.Fatal(err)
	}
	for {
		var resp struct{ Event string }
		err := st.Recv(&resp)
		if err == nil {
			continue
		}
		if !errors.Is(err, flux.ErrDisconnected) {
			t.Fatalf("after drop: %v, want ErrDisconnected", err)
		}
		break
	}
	srv.SetConnectError(syscall.EPERM)
	_, err = flux.Dial(ctx, srv.URI())
	var ce *flux.ConnectError
	if !errors.As(err, &ce) || !errors.Is(err, syscall.EPERM) {
		t.Fatalf("dial refused: %v", err)
	}
}

// BenchmarkRPCRoundTrip measures job-list.list-id round trips over the
// socket with the production client (an error response: no job state to
// build, so it is the transport and dispatch cost).
func BenchmarkRPCRoundTrip(b *testing.B) {
	srv := testbroker.New(testbroker.Options{})
	if err := srv.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	ctx := context.Background()
	c, err := flux.Dial(ctx, srv.URI())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	req := map[string]any{"id": 42, "attrs": []string{}}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := c.RPC(ctx, "job-list.list-id", req, nil); !errors.Is(err, syscall.ENOENT) {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "rpc/s")
}

// BenchmarkSubmit measures job-ingest.submit round trips (each creates a
// job whose lifecycle then runs in the background).
func BenchmarkSubmit(b *testing.B) {
	srv := testbroker.New(testbroker.Options{Cores: 1 << 20})
	if err := srv.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	ctx := context.Background()
	c, err := flux.Dial(ctx, srv.URI())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	req := map[string]any{"J": signNone(jobspecFor("true"), myUID()), "urgency": 16, "flags": 0}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := c.RPC(ctx, "job-ingest.submit", req, nil); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "submit/s")
}
