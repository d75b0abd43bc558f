package realflux

import (
	"context"
	"errors"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
	"k8s.io/client-go/rest"

	"github.com/fluxjob/fluxjob-operator/fluxbridge"
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
	r, err := startSSHRelay(sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.close)
	return r.uri, flux.SSHConfig{PrivateKeys: [][]byte{r.keyPEM}, KnownHosts: r.knownHosts, NoAgent: true}
}

// sshRelay is an SSH server running the real relay, and what a client
// needs to reach sock through it.
type sshRelay struct {
	uri        string
	keyPEM     []byte
	knownHosts []byte
	close      func()
}

func startSSHRelay(sock string) (*sshRelay, error) {
	key, keyPEM, err := fluxtest.NewKey()
	if err != nil {
		return nil, err
	}
	sshd, err := fluxtest.StartSSHServer(fluxtest.SSHServerOptions{AuthorizedKeys: []ssh.PublicKey{key.PublicKey()}, Exec: fluxtest.ShellExec()})
	if err != nil {
		return nil, err
	}
	return &sshRelay{uri: sshd.URI("flux", sock), keyPEM: keyPEM, knownHosts: sshd.KnownHosts, close: sshd.Close}, nil
}

// realRelayOverExec starts the exec server (kubelet's ServeExec) whose
// "container" is this machine, and returns a pod:// name and a Dialer
// that runs `flux relay sock` there with podexec's default command.
func realRelayOverExec(t *testing.T, sock string) (string, flux.Dialer) {
	t.Helper()
	u, stop, err := startExecRelay(sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	return "pod://hpc/flux-0/flux", execDialer(u)
}

// startExecRelay starts the exec server with the real flux on PATH and
// returns the URL of an exec of `flux relay sock` with podexec's default
// command.
func startExecRelay(sock string) (*url.URL, func(), error) {
	fluxBin, err := exec.LookPath("flux")
	if err != nil {
		return nil, nil, err
	}
	k, err := podexectest.StartKubelet(&podexectest.Runtime{Env: []string{podexectest.PathWith(filepath.Dir(fluxBin))}})
	if err != nil {
		return nil, nil, err
	}
	return k.ExecURL("hpc", "flux-0", "flux", append(append([]string(nil), podexec.DefaultCommand...), sock)), k.Close, nil
}

// execDialer dials the exec at u (the test endpoint's self-signed TLS).
func execDialer(u *url.URL) flux.Dialer {
	cfg := &rest.Config{Host: "https://" + u.Host, TLSClientConfig: rest.TLSClientConfig{Insecure: true}}
	return func(ctx context.Context, _ string) (io.ReadWriteCloser, error) {
		return podexec.Open(ctx, cfg, u)
	}
}

// envExecURL names the exec URL the executor client of the pod-exec row
// dials (./execclient).
const envExecURL = "REALFLUX_POD_EXEC_URL"

// ourExecutorVia is the executor row (4 workers, eventlog) through the
// real `flux relay`: tr "ssh" (an SSH server in this process; the child
// uses the zero SSHConfig, i.e. ~/.ssh in a temporary HOME) or "pod-exec"
// (the exec server in this process). The servers' and relays' CPU is not
// the client's: only the child's is measured.
func ourExecutorVia(tr string) func(context.Context, *instance, int) (benchRow, error) {
	return func(ctx context.Context, inst *instance, n int) (benchRow, error) {
		sock, err := fluxtest.SocketPath(inst.URI)
		if err != nil {
			return benchRow{}, err
		}
		var env []string
		switch tr {
		case "ssh":
			r, err := startSSHRelay(sock)
			if err != nil {
				return benchRow{}, err
			}
			defer r.close()
			home, err := os.MkdirTemp("", "realflux-ssh-")
			if err != nil {
				return benchRow{}, err
			}
			defer os.RemoveAll(home)
			dir := filepath.Join(home, ".ssh")
			if err := os.Mkdir(dir, 0o700); err != nil {
				return benchRow{}, err
			}
			if err := os.WriteFile(filepath.Join(dir, "id_ed25519"), r.keyPEM, 0o600); err != nil {
				return benchRow{}, err
			}
			if err := os.WriteFile(filepath.Join(dir, "known_hosts"), r.knownHosts, 0o600); err != nil {
				return benchRow{}, err
			}
			env = []string{"HOME=" + home, "SSH_AUTH_SOCK=", "FLUX_URI=" + r.uri}
		case "pod-exec":
			u, stop, err := startExecRelay(sock)
			if err != nil {
				return benchRow{}, err
			}
			defer stop()
			env = []string{envExecURL + "=" + u.String(), "FLUX_URI=pod://hpc/flux-0/flux"}
		}
		return ourExecutor(4, fluxbridge.EventSourceEventlog, env...)(ctx, inst, n)
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
