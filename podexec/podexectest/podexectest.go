// Package podexectest serves the exec protocol for tests of package
// podexec with the real server side of it: the CRI streaming server that
// container runtimes serve kubelet's exec with (k8s.io/cri-streaming,
// pkg/streaming), and a kubelet-like HTTPS endpoint that a Node can name
// so that the API server's pods/exec reaches it (remotecommand.ServeExec,
// the same server code). The "container" is the local machine: commands
// run as local processes.
package podexectest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"k8s.io/client-go/rest"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/cri-streaming/pkg/streaming"
	"k8s.io/cri-streaming/pkg/streaming/remotecommand"
	utilexec "k8s.io/utils/exec"
)

// Runtime runs exec'd commands as local processes with Env added to the
// environment. It implements streaming.Runtime (the CRI streaming
// server's) and remotecommand.Executor (ServeExec's).
type Runtime struct {
	// Env is added to the commands' environment (e.g. PATH with a relay
	// shim, fluxtest.WriteRelayShim).
	Env []string

	mu    sync.Mutex
	execs []Exec
}

// Exec records one exec request.
type Exec struct {
	// Pod is "NAMESPACE/NAME" for a kubelet request, "" for a CRI one.
	Pod       string
	Container string
	Cmd       []string
}

// Execs returns the exec requests so far.
func (r *Runtime) Execs() []Exec {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Exec(nil), r.execs...)
}

// Exec runs cmd (streaming.Runtime).
func (r *Runtime) Exec(ctx context.Context, containerID string, cmd []string, in io.Reader, out, errw io.WriteCloser, tty bool, _ <-chan remotecommand.TerminalSize) error {
	return r.run(ctx, Exec{Container: containerID, Cmd: cmd}, in, out, errw, tty)
}

// ExecInContainer runs cmd (remotecommand.Executor).
func (r *Runtime) ExecInContainer(ctx context.Context, name, _ string, container string, cmd []string, in io.Reader, out, errw io.WriteCloser, tty bool, _ <-chan remotecommand.TerminalSize, _ time.Duration) error {
	return r.run(ctx, Exec{Pod: name, Container: container, Cmd: cmd}, in, out, errw, tty)
}

func (r *Runtime) run(ctx context.Context, e Exec, in io.Reader, out, errw io.WriteCloser, tty bool) error {
	r.mu.Lock()
	r.execs = append(r.execs, e)
	r.mu.Unlock()
	if tty {
		return errors.New("podexectest: a TTY was requested; the Flux protocol needs raw stdin/stdout")
	}
	if len(e.Cmd) == 0 {
		return errors.New("podexectest: empty command")
	}
	cmd := exec.CommandContext(ctx, e.Cmd[0], e.Cmd[1:]...)
	cmd.Env = append(os.Environ(), r.Env...)
	if out != nil {
		cmd.Stdout = out
	}
	if errw != nil {
		cmd.Stderr = errw
	}
	// stdin is copied by a goroutine of ours: exec's would keep Wait
	// waiting for the client's stdin after the command exited.
	var stdin io.WriteCloser
	var err error
	if in != nil {
		if stdin, err = cmd.StdinPipe(); err != nil {
			return err
		}
	}
	if err := cmd.Start(); err != nil {
		return utilexec.CodeExitError{Err: err, Code: 127}
	}
	if in != nil {
		go func() {
			_, _ = io.Copy(stdin, in)
			_ = stdin.Close()
		}()
	}
	err = cmd.Wait()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code := ee.ExitCode()
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			code = 128 + int(ws.Signal())
		}
		return utilexec.CodeExitError{Err: err, Code: code}
	}
	return err
}

// Attach is not supported.
func (r *Runtime) Attach(context.Context, string, io.Reader, io.WriteCloser, io.WriteCloser, bool, <-chan remotecommand.TerminalSize) error {
	return errors.New("podexectest: attach is not supported")
}

// PortForward is not supported.
func (r *Runtime) PortForward(context.Context, string, int32, io.ReadWriteCloser) error {
	return errors.New("podexectest: port-forward is not supported")
}

// CRIServer is the CRI streaming server on 127.0.0.1, serving exec
// requests with a Runtime.
type CRIServer struct {
	srv   streaming.Server
	hs    *http.Server
	conns conns
	done  chan struct{}
}

// StartCRI starts a CRI streaming server; Close stops it.
func StartCRI(rt *Runtime) (*CRIServer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	cfg := streaming.DefaultConfig
	cfg.Addr = ln.Addr().String()
	cfg.BaseURL = &url.URL{Scheme: "http", Host: cfg.Addr}
	srv, err := streaming.NewServer(cfg, rt)
	if err != nil {
		_ = ln.Close()
		return nil, err
	}
	s := &CRIServer{srv: srv, hs: &http.Server{Handler: srv, ReadHeaderTimeout: 10 * time.Second}, done: make(chan struct{})}
	s.conns.track(s.hs)
	go func() {
		defer close(s.done)
		_ = s.hs.Serve(ln)
	}()
	return s, nil
}

// ExecURL asks the server for the URL of one exec of cmd in container,
// with stdin, stdout and stderr and no TTY, as kubelet asks the runtime
// (CRI Exec). The URL serves one exec.
func (s *CRIServer) ExecURL(container string, cmd []string) (*url.URL, error) {
	resp, err := s.srv.GetExec(&runtimeapi.ExecRequest{ContainerId: container, Cmd: cmd, Stdin: true, Stdout: true, Stderr: true})
	if err != nil {
		return nil, err
	}
	return url.Parse(resp.Url)
}

// Close stops the server and its connections, the exec streams too.
func (s *CRIServer) Close() {
	_ = s.hs.Close()
	s.conns.closeAll()
	<-s.done
}

// conns tracks a server's connections, which http.Server.Close does not
// close once hijacked (an exec stream's are).
type conns struct {
	mu sync.Mutex
	m  map[net.Conn]struct{}
}

func (c *conns) track(hs *http.Server) {
	c.m = map[net.Conn]struct{}{}
	hs.ConnState = func(nc net.Conn, st http.ConnState) {
		c.mu.Lock()
		defer c.mu.Unlock()
		switch st {
		case http.StateNew:
			c.m[nc] = struct{}{}
		case http.StateClosed:
			delete(c.m, nc)
		}
	}
}

func (c *conns) closeAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for nc := range c.m {
		_ = nc.Close()
	}
}

// Kubelet is an HTTPS server on 127.0.0.1 that serves kubelet's exec path,
// /exec/NAMESPACE/POD/CONTAINER?command=...&stdin=1..., with
// remotecommand.ServeExec and a Runtime: what the API server's pods/exec
// subresource proxies to on the pod's Node (status.daemonEndpoints.
// kubeletEndpoint.port at the Node's address). It does not authenticate
// the API server (a kubelet would).
type Kubelet struct {
	// Port is the port to put in the Node's status.
	Port  int
	hs    *http.Server
	conns conns
	done  chan struct{}

	mu       sync.Mutex
	requests []string
}

// Requests returns the exec requests received so far as "METHOD
// UPGRADE-PROTOCOL" ("GET websocket" for a WebSocket exec, "POST
// SPDY/3.1" for an SPDY one).
func (k *Kubelet) Requests() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]string(nil), k.requests...)
}

// StartKubelet starts the endpoint with a self-signed certificate for
// 127.0.0.1; Close stops it.
func StartKubelet(rt *Runtime) (*Kubelet, error) {
	cert, err := selfSigned()
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	k := &Kubelet{done: make(chan struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc("/exec/{namespace}/{pod}/{container}", func(w http.ResponseWriter, r *http.Request) {
		k.mu.Lock()
		k.requests = append(k.requests, r.Method+" "+r.Header.Get("Upgrade"))
		k.mu.Unlock()
		opts, err := remotecommand.NewOptions(r)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		pod := r.PathValue("namespace") + "/" + r.PathValue("pod")
		remotecommand.ServeExec(w, r, rt, pod, "", r.PathValue("container"), r.URL.Query()["command"], opts,
			streaming.DefaultConfig.StreamIdleTimeout, streaming.DefaultConfig.StreamCreationTimeout, remotecommand.SupportedStreamingProtocols)
	})
	k.Port = ln.Addr().(*net.TCPAddr).Port
	k.hs = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
	}
	k.conns.track(k.hs)
	go func() {
		defer close(k.done)
		_ = k.hs.ServeTLS(ln, "", "")
	}()
	return k, nil
}

// ExecURL returns the URL of an exec of cmd in namespace/pod's container
// on this endpoint, with stdin, stdout and stderr and no TTY: the request
// the API server makes of a kubelet for pods/exec.
func (k *Kubelet) ExecURL(namespace, pod, container string, cmd []string) *url.URL {
	q := url.Values{"input": {"1"}, "output": {"1"}, "error": {"1"}, "command": cmd}
	return &url.URL{Scheme: "https", Host: "127.0.0.1:" + strconv.Itoa(k.Port), Path: "/exec/" + namespace + "/" + pod + "/" + container, RawQuery: q.Encode()}
}

// ClientConfig returns a client configuration for the endpoint (its
// certificate is self-signed: not verified).
func (k *Kubelet) ClientConfig() *rest.Config {
	return &rest.Config{Host: "https://127.0.0.1:" + strconv.Itoa(k.Port), TLSClientConfig: rest.TLSClientConfig{Insecure: true}}
}

// Close stops the endpoint and its connections, the exec streams too.
func (k *Kubelet) Close() {
	_ = k.hs.Close()
	k.conns.closeAll()
	<-k.done
}

// selfSigned returns a certificate for 127.0.0.1 signed by itself.
func selfSigned() (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "podexectest-kubelet"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("podexectest: certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

// PathWith returns PATH with dir first, for Runtime.Env.
func PathWith(dir string) string {
	return "PATH=" + strings.Join([]string{dir, os.Getenv("PATH")}, string(os.PathListSeparator))
}
