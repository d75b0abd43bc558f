package realflux

import (
	"context"
	"errors"
	"io"
	"net/url"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
	"k8s.io/client-go/rest"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux/fluxtest"
	"github.com/fluxjob/fluxjob-operator/podexec"
	"github.com/fluxjob/fluxjob-operator/podexec/podexectest"
)

// transportTargets returns the targets of the executor's contract
// scenarios: the real instance over its unix socket, the same instance
// through the real `flux relay` (flux-core's, found on PATH) run by an
// SSH server (ssh://, x/crypto/ssh's server side in this process) and by
// the exec protocol's server side (pod exec through podexec, against the
// kubelet-like ServeExec endpoint of podexectest), and the test broker.
func transportTargets(t *testing.T) []target {
	t.Helper()
	tgs := targets(t)
	real := tgs[0]
	sock, err := fluxtest.SocketPath(real.uri)
	if err != nil {
		t.Fatal(err)
	}
	sshURI, sshCfg := realRelayOverSSH(t, sock)
	podURI, podDialer := realRelayOverExec(t, sock)
	return append([]target{
		real,
		{name: "real-over-ssh", uri: sshURI, real: true, opts: []flux.Option{flux.WithSSH(sshCfg)}},
		{name: "real-over-pod-exec", uri: podURI, real: true, opts: []flux.Option{flux.WithDialer(podDialer)}},
	}, tgs[1:]...)
}

// realRelayOverSSH starts an SSH server whose sessions run their command
// with /bin/sh (the real `flux relay` for an ssh:// URI) and returns the
// ssh:// URI of sock through it and a client configuration it accepts.
func realRelayOverSSH(t *testing.T, sock string) (string, flux.SSHConfig) {
	t.Helper()
	key, keyPEM, err := fluxtest.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	sshd, err := fluxtest.StartSSHServer(fluxtest.SSHServerOptions{AuthorizedKeys: []ssh.PublicKey{key.PublicKey()}, Exec: fluxtest.ShellExec()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sshd.Close)
	return sshd.URI("flux", sock), flux.SSHConfig{PrivateKeys: [][]byte{keyPEM}, KnownHosts: sshd.KnownHosts, NoAgent: true}
}

// realRelayOverExec starts the exec server (kubelet's ServeExec) whose
// "container" is this machine, and returns a pod:// name and a Dialer
// that runs `flux relay sock` there with podexec's default command.
func realRelayOverExec(t *testing.T, sock string) (string, flux.Dialer) {
	t.Helper()
	fluxBin, err := exec.LookPath("flux")
	if err != nil {
		t.Fatal(err)
	}
	rt := &podexectest.Runtime{Env: []string{podexectest.PathWith(filepath.Dir(fluxBin))}}
	k, err := podexectest.StartKubelet(rt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Close)
	o := podexec.Options{Namespace: "hpc", Pod: "flux-0", Container: "flux", SocketPath: sock}
	q := url.Values{"input": {"1"}, "output": {"1"}, "error": {"1"}, "command": append(append([]string(nil), podexec.DefaultCommand...), sock)}
	u := &url.URL{Scheme: "https", Host: "127.0.0.1:" + strconv.Itoa(k.Port), Path: "/exec/hpc/flux-0/flux", RawQuery: q.Encode()}
	cfg := &rest.Config{Host: "https://" + u.Host, TLSClientConfig: rest.TLSClientConfig{Insecure: true}}
	return o.URI(), func(ctx context.Context, _ string) (io.ReadWriteCloser, error) {
		return podexec.Open(ctx, cfg, u)
	}
}

// TestRealRelayErrors: when the real `flux relay` cannot reach a broker,
// Dial's error carries what it wrote to stderr, over SSH and pod exec.
func TestRealRelayErrors(t *testing.T) {
	needFlux(t)
	missing := filepath.Join(t.TempDir(), "local")
	sshURI, sshCfg := realRelayOverSSH(t, missing)
	podURI, podDialer := realRelayOverExec(t, missing)
	for _, tt := range []struct {
		name string
		uri  string
		opts []flux.Option
	}{
		{"ssh", sshURI, []flux.Option{flux.WithSSH(sshCfg)}},
		{"pod exec", podURI, []flux.Option{flux.WithDialer(podDialer)}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := flux.Dial(ctxT(t), tt.uri, tt.opts...)
			var re *flux.RelayError
			if !errors.As(err, &re) || !strings.Contains(re.Stderr, missing) {
				t.Fatalf("Dial = %v, want a *flux.RelayError with flux relay's stderr naming %s", err, missing)
			}
			t.Logf("%s: %v", tt.name, err)
		})
	}
}
