package podexec

import (
	"context"
	"errors"
	"io"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/remotecommand"
	"k8s.io/klog/v2"

	"github.com/fluxjob/fluxjob-operator/fluxbridge"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux/fluxtest"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/testbroker"
	"github.com/fluxjob/fluxjob-operator/podexec/podexectest"
)

func TestMain(m *testing.M) {
	// `flux relay` in the "containers" of these tests is this binary
	// re-executed as a relay (fluxtest.WriteRelayShim).
	fluxtest.RunRelayIfChild()
	runBenchChildIfAsked()
	// The exec servers report a refused WebSocket v5 upgrade (client-go
	// then falls back to SPDY, as it should) through klog.
	klog.SetLogger(logr.Discard())
	os.Exit(m.Run())
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestTarget(t *testing.T) {
	tests := []struct {
		name string
		o    Target
		err  string
		argv []string
		uri  string
	}{
		{name: "MiniCluster defaults", o: Target{Namespace: "hpc", Pod: "flux-sample-0-abcde"},
			argv: append(append([]string(nil), DefaultCommand...), DefaultSocketPath), uri: "pod://hpc/flux-sample-0-abcde"},
		{name: "own command and socket", o: Target{Namespace: "hpc", Pod: "p", Container: "flux", SocketPath: "/run/flux/local", Command: []string{"/usr/bin/flux", "relay"}},
			argv: []string{"/usr/bin/flux", "relay", "/run/flux/local"}, uri: "pod://hpc/p/flux"},
		{name: "no namespace", o: Target{Pod: "p"}, err: "no namespace"},
		{name: "no pod", o: Target{Namespace: "n"}, err: "no pod name"},
		{name: "relative socket", o: Target{Namespace: "n", Pod: "p", SocketPath: "run/flux/local"}, err: "not absolute"},
		{name: "empty program", o: Target{Namespace: "n", Pod: "p", Command: []string{""}}, err: "empty program name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.o.Validate()
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("Validate = %v, want %q", err, tt.err)
				}
				if _, err := Dialer(&rest.Config{Host: "https://k8s.example.org"}, tt.o); err == nil {
					t.Error("Dialer accepted invalid options")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := tt.o.argv(); !reflect.DeepEqual(got, tt.argv) {
				t.Errorf("argv = %q, want %q", got, tt.argv)
			}
			if got := tt.o.URI(); got != tt.uri {
				t.Errorf("URI = %q, want %q", got, tt.uri)
			}
			u, err := ExecURL(&rest.Config{Host: "https://k8s.example.org:6443"}, tt.o)
			if err != nil {
				t.Fatal(err)
			}
			if want := "/api/v1/namespaces/" + tt.o.Namespace + "/pods/" + tt.o.Pod + "/exec"; u.Path != want || u.Host != "k8s.example.org:6443" {
				t.Errorf("URL %s, want path %s", u, want)
			}
			q := u.Query()
			if !reflect.DeepEqual(q["command"], tt.argv) || q.Get("container") != tt.o.Container ||
				q.Get("stdin") != "true" || q.Get("stdout") != "true" || q.Get("stderr") != "true" || q.Get("tty") != "false" {
				t.Errorf("query %v", q)
			}
		})
	}
}

// The default command in a shell: it sources the MiniCluster's
// flux-view.sh only where it exists, keeps its output off stdout, and
// runs `flux relay SOCKET`. Checked with a stand-in flux that prints its
// arguments.
func TestDefaultCommand(t *testing.T) {
	if _, err := os.Stat("/bin/sh"); err != nil {
		t.Skip("no /bin/sh")
	}
	dir := t.TempDir()
	if err := os.WriteFile(dir+"/flux", []byte("#!/bin/sh\necho \"flux $*\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	argv := Target{Namespace: "n", Pod: "p", SocketPath: "/tmp/it's/local"}.argv()
	var out, errb strings.Builder
	rt := &podexectest.Runtime{Env: []string{podexectest.PathWith(dir)}}
	if err := rt.Exec(testCtx(t), "c", argv, strings.NewReader(""), nopCloser{&out}, nopCloser{&errb}, false, nil); err != nil {
		t.Fatalf("%v: %s", err, errb.String())
	}
	if got, want := out.String(), "flux relay /tmp/it's/local\n"; got != want {
		t.Errorf("stdout %q, want %q", got, want)
	}
}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }

// env is a test broker and a runtime whose `flux relay` reaches it.
type env struct {
	srv  *testbroker.Server
	sock string
	rt   *podexectest.Runtime
}

func newEnv(t *testing.T) *env {
	t.Helper()
	srv := testbroker.New(testbroker.Options{TimeScale: 0.001})
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	sock, err := fluxtest.SocketPath(srv.URI())
	if err != nil {
		t.Fatal(err)
	}
	shim := t.TempDir()
	if err := fluxtest.WriteRelayShim(shim); err != nil {
		t.Fatal(err)
	}
	return &env{srv: srv, sock: sock, rt: &podexectest.Runtime{Env: []string{podexectest.PathWith(shim)}}}
}

// criDialer dials through the CRI streaming server: each call asks it
// for a fresh exec URL (as kubelet asks the runtime) and execs there with
// client-go's SPDY executor (the API server and kubelet speak SPDY to the
// runtime).
func criDialer(t *testing.T, cri *podexectest.CRIServer, o Target) flux.Dialer {
	return func(ctx context.Context, _ string) (io.ReadWriteCloser, error) {
		u, err := cri.ExecURL("flux", o.argv())
		if err != nil {
			return nil, err
		}
		ex, err := remotecommand.NewSPDYExecutor(&rest.Config{Host: "http://" + u.Host}, "POST", u)
		if err != nil {
			return nil, err
		}
		return Start(ctx, ex, u.Path)
	}
}

// kubeletDialer dials the kubelet-like endpoint the way Dialer dials the
// API server: the fallback executor, WebSocket first.
func kubeletDialer(t *testing.T, k *podexectest.Kubelet, o Target) flux.Dialer {
	u, cfg := k.ExecURL(o.Namespace, o.Pod, o.Container, o.argv()), k.ClientConfig()
	return func(ctx context.Context, _ string) (io.ReadWriteCloser, error) {
		return Open(ctx, cfg, u)
	}
}

// servers are the two real exec servers the tests run against.
var servers = []string{"CRI streaming server", "kubelet endpoint (ServeExec)"}

// startServer starts one and returns a Dialer through it and a function
// that stops it (cutting every exec connection).
func startServer(t *testing.T, name string, e *env, o Target) (flux.Dialer, func()) {
	t.Helper()
	switch name {
	case "CRI streaming server":
		cri, err := podexectest.StartCRI(e.rt)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(cri.Close)
		return criDialer(t, cri, o), cri.Close
	default:
		k, err := podexectest.StartKubelet(e.rt)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(k.Close)
		t.Cleanup(func() {
			// WebSocket v5 first; these servers only know v1-v4, so
			// client-go falls back to SPDY for every exec.
			reqs := k.Requests()
			for i := 0; i+1 < len(reqs); i += 2 {
				if reqs[i] != "GET websocket" || reqs[i+1] != "POST SPDY/3.1" {
					t.Errorf("exec requests %q, want WebSocket then SPDY each time", reqs)
					break
				}
			}
		})
		return kubeletDialer(t, k, o), k.Close
	}
}

// TestExecutorThroughExec: the executor's contract through pod exec
// against the real exec servers, running the default (MiniCluster)
// command in a shell, whose `flux relay` reaches the test broker.
func TestExecutorThroughExec(t *testing.T) {
	for _, s := range servers {
		t.Run(s, func(t *testing.T) {
			e := newEnv(t)
			o := Target{Namespace: "hpc", Pod: "flux-sample-0", Container: "flux-sample", SocketPath: e.sock}
			d, _ := startServer(t, s, e, o)
			ctx := testCtx(t)
			ex, err := fluxbridge.NewExecutor(ctx, fluxbridge.ExecutorOptions{Workers: 2, URI: o.URI(), DialOptions: []flux.Option{flux.WithDialer(d)}})
			if err != nil {
				t.Fatal(err)
			}
			defer ex.Close()
			tests := []struct {
				cmd  []string
				want int
			}{{[]string{"true"}, 0}, {[]string{"false"}, 1}, {[]string{"exit", "3"}, 3}}
			js := make([]*fluxbridge.Future, len(tests))
			for i, tt := range tests {
				spec, err := job.FromCommand(tt.cmd, job.CommandOptions{})
				if err != nil {
					t.Fatal(err)
				}
				if js[i], err = ex.Submit(ctx, spec, job.SubmitOptions{}); err != nil {
					t.Fatal(err)
				}
			}
			for i, tt := range tests {
				if got, err := js[i].Result(ctx); err != nil || got != tt.want {
					t.Errorf("%v: Result = %d, %v; want %d", tt.cmd, got, err, tt.want)
				}
			}
			execs := e.rt.Execs()
			if len(execs) != 2 {
				t.Fatalf("%d execs, want one per worker: %+v", len(execs), execs)
			}
			if want := o.argv(); !reflect.DeepEqual(execs[0].Cmd, want) {
				t.Errorf("exec'd %q, want %q", execs[0].Cmd, want)
			}
			if s != "CRI streaming server" && (execs[0].Pod != "hpc/flux-sample-0" || execs[0].Container != "flux-sample") {
				t.Errorf("exec in %s container %s", execs[0].Pod, execs[0].Container)
			}
			ex.Shutdown(true, false)
		})
	}
}

// TestExecFailures: what goes wrong inside the container is reported with
// the command's stderr; a connection cut mid-job fails the futures as a
// broker drop does.
func TestExecFailures(t *testing.T) {
	for _, s := range servers {
		t.Run(s, func(t *testing.T) {
			t.Run("no broker at the socket", func(t *testing.T) {
				e := newEnv(t)
				o := Target{Namespace: "n", Pod: "p", Container: "c", SocketPath: "/nonexistent/flux/local"}
				d, _ := startServer(t, s, e, o)
				_, err := flux.Dial(testCtx(t), o.URI(), flux.WithDialer(d))
				var re *flux.RelayError
				if !errors.As(err, &re) || !strings.Contains(re.Stderr, "/nonexistent/flux/local") || !strings.Contains(err.Error(), "no such file") {
					t.Fatalf("err = %v, want a *RelayError with the relay's stderr", err)
				}
			})
			t.Run("no flux in the container", func(t *testing.T) {
				e := newEnv(t)
				e.rt.Env = []string{"PATH=/nonexistent"}
				o := Target{Namespace: "n", Pod: "p", Container: "c", SocketPath: e.sock}
				d, _ := startServer(t, s, e, o)
				_, err := flux.Dial(testCtx(t), o.URI(), flux.WithDialer(d))
				var re *flux.RelayError
				if !errors.As(err, &re) || !strings.Contains(re.Stderr, "flux: not found") {
					t.Fatalf("err = %v, want a *RelayError with `flux: not found`", err)
				}
			})
			for _, cut := range []string{"broker drops the relay", "exec server goes away"} {
				t.Run(cut, func(t *testing.T) {
					e := newEnv(t)
					o := Target{Namespace: "n", Pod: "p", Container: "c", SocketPath: e.sock}
					d, stop := startServer(t, s, e, o)
					ctx := testCtx(t)
					ex, err := fluxbridge.NewExecutor(ctx, fluxbridge.ExecutorOptions{URI: o.URI(), DialOptions: []flux.Option{flux.WithDialer(d)}})
					if err != nil {
						t.Fatal(err)
					}
					defer ex.Close()
					spec, _ := job.FromCommand([]string{"sleep", "100000"}, job.CommandOptions{})
					f, err := ex.Submit(ctx, spec, job.SubmitOptions{})
					if err != nil {
						t.Fatal(err)
					}
					if _, err := f.JobID(ctx); err != nil {
						t.Fatal(err)
					}
					if cut == "broker drops the relay" {
						if err := e.srv.DropConnections(); err != nil {
							t.Fatal(err)
						}
					} else {
						stop()
					}
					if _, err := f.Result(ctx); !errors.Is(err, flux.ErrDisconnected) {
						t.Fatalf("Result = %v, want ErrDisconnected", err)
					}
					// the executor marks itself broken as its connection
					// ends, which may be just after the future failed
					for ex.Err() == nil && ctx.Err() == nil {
						time.Sleep(time.Millisecond)
					}
					if err := ex.Err(); !errors.Is(err, fluxbridge.ErrBroken) {
						t.Errorf("executor Err = %v", err)
					}
				})
			}
		})
	}
}
