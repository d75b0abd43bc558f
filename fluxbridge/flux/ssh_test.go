package flux

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux/fluxtest"
)

func TestParseSSHURI(t *testing.T) {
	tests := []struct {
		uri  string
		want sshTarget
		err  string
	}{
		{uri: "ssh://login1/run/flux/local", want: sshTarget{addr: "login1:22", host: "login1", path: "/run/flux/local"}},
		{uri: "ssh://alice@login1:2222/var/run/flux/local", want: sshTarget{user: "alice", addr: "login1:2222", host: "login1", path: "/var/run/flux/local"}},
		{uri: "ssh://[::1]:22/tmp/flux-x/local", want: sshTarget{addr: "[::1]:22", host: "::1", path: "/tmp/flux-x/local"}},
		{uri: "ssh://login1", err: "names no socket path"},
		{uri: "ssh://login1/", err: "names no socket path"},
		{uri: "ssh:///run/flux/local", err: "is not ssh://"},
		{uri: "ssh://login1/run/flux/local?x=1", err: "no query or fragment"},
		{uri: "ssh://login1/run/flux/local#x", err: "no query or fragment"},
		{uri: "ssh://alice:secret@login1/run/flux/local", err: "passwords"},
		{uri: "ssh://login1:0/run", err: "bad port"},
		{uri: "ssh://login1:99999/run", err: "bad port"},
	}
	for _, tt := range tests {
		t.Run(tt.uri, func(t *testing.T) {
			got, err := parseSSHURI(tt.uri)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want %q", err, tt.err)
				}
				if strings.Contains(err.Error(), "secret") {
					t.Errorf("error %q shows the password", err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

func TestRemoteCommand(t *testing.T) {
	t.Setenv("PATH", t.TempDir()) // no local flux: its directory is not added
	tests := []struct {
		name string
		cfg  SSHConfig
		env  string
		sock string
		want string
	}{
		{"flux-core's default", SSHConfig{}, "", "/run/flux/local", "env PATH=/run/flux/bin:/bin:/usr/bin flux relay /run/flux/local"},
		{"FLUX_SSH_RCMD", SSHConfig{}, "/opt/flux/bin/flux", "/run/flux/local", "/opt/flux/bin/flux relay /run/flux/local"},
		{"RemoteFlux wins", SSHConfig{RemoteFlux: ". /etc/profile.d/flux.sh; flux"}, "/opt/x", "/run/flux/local", ". /etc/profile.d/flux.sh; flux relay /run/flux/local"},
		{"quoted path", SSHConfig{RemoteFlux: "flux"}, "", "/tmp/it's here/local", `flux relay '/tmp/it'\''s here/local'`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(EnvSSHRemoteCommand, tt.env)
			if got := remoteCommand(&tt.cfg, tt.sock); got != tt.want {
				t.Errorf("got  %q\nwant %q", got, tt.want)
			}
		})
	}
}

// sshFixture is an in-process SSH server whose exec runs the relay
// in-process, a client key it accepts, and a broker double to relay to.
type sshFixture struct {
	sshd   *fluxtest.SSHServer
	keyPEM []byte
	key    ssh.Signer
	srv    *fakeServer
}

func newSSHFixture(t *testing.T, exec fluxtest.ExecFunc) *sshFixture {
	t.Helper()
	return newSSHFixtureOpts(t, fluxtest.SSHServerOptions{Exec: exec})
}

// newSSHFixtureOpts is newSSHFixture with the server's options (the
// fixture's key is added to AuthorizedKeys).
func newSSHFixtureOpts(t *testing.T, opts fluxtest.SSHServerOptions) *sshFixture {
	t.Helper()
	key, keyPEM, err := fluxtest.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	opts.AuthorizedKeys = append(opts.AuthorizedKeys, key.PublicKey())
	sshd, err := fluxtest.StartSSHServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sshd.Close)
	// No key or known_hosts of the machine's user may leak in.
	t.Setenv("HOME", t.TempDir())
	t.Setenv("SSH_AUTH_SOCK", "")
	t.Setenv(EnvSSHRemoteCommand, "")
	return &sshFixture{sshd: sshd, keyPEM: keyPEM, key: key, srv: newFakeServer(t, transportHandler)}
}

func (f *sshFixture) uri() string { return f.sshd.URI("alice", f.srv.path) }

func (f *sshFixture) config() SSHConfig {
	return SSHConfig{PrivateKeys: [][]byte{f.keyPEM}, KnownHosts: f.sshd.KnownHosts, KeepAlive: -1}
}

func TestSSH(t *testing.T) {
	f := newSSHFixture(t, nil)
	c, err := Dial(testCtx(t), f.uri(), WithSSH(f.config()))
	if err != nil {
		t.Fatal(err)
	}
	var out map[string]int
	if err := c.RPC(testCtx(t), "echo", map[string]int{"x": 3}, &out); err != nil || out["x"] != 3 {
		t.Fatalf("RPC over ssh = %v, %v", out, err)
	}
	if err := c.RPC(testCtx(t), "fail", nil, nil); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("RPC fail over ssh = %v", err)
	}
	cmds := f.sshd.Commands()
	want := "relay " + f.srv.path
	if len(cmds) != 1 || !strings.HasPrefix(cmds[0], "env PATH=") || !strings.HasSuffix(cmds[0], want) {
		t.Errorf("remote commands %q, want one `env PATH=... flux %s`", cmds, want)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestSSHRefused: what must not connect does not, and says why.
func TestSSHRefused(t *testing.T) {
	f := newSSHFixture(t, nil)
	otherKey, otherPEM, err := fluxtest.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	mismatch := []byte(knownhosts.Line([]string{knownhosts.Normalize(f.sshd.Addr)}, otherKey.PublicKey()) + "\n")
	otherHost := []byte(knownhosts.Line([]string{"login9.example.org"}, f.sshd.HostKey.PublicKey()) + "\n")
	tests := []struct {
		name  string
		edit  func(c *SSHConfig)
		check func(t *testing.T, err error)
	}{
		{"host key mismatch", func(c *SSHConfig) { c.KnownHosts = mismatch }, func(t *testing.T, err error) {
			var ke *knownhosts.KeyError
			if !errors.As(err, &ke) || len(ke.Want) != 1 {
				t.Errorf("err = %v, want a knownhosts.KeyError naming the known key", err)
			}
		}},
		{"unknown host", func(c *SSHConfig) { c.KnownHosts = otherHost }, func(t *testing.T, err error) {
			var ke *knownhosts.KeyError
			if !errors.As(err, &ke) || len(ke.Want) != 0 {
				t.Errorf("err = %v, want a knownhosts.KeyError for an unknown host", err)
			}
		}},
		{"no known_hosts at all", func(c *SSHConfig) { c.KnownHosts = nil }, func(t *testing.T, err error) {
			if err == nil || !strings.Contains(err.Error(), "never trusted on first use") {
				t.Errorf("err = %v", err)
			}
		}},
		{"key not authorised", func(c *SSHConfig) { c.PrivateKeys = [][]byte{otherPEM} }, func(t *testing.T, err error) {
			if err == nil || !strings.Contains(err.Error(), "unable to authenticate") {
				t.Errorf("err = %v", err)
			}
		}},
		{"no key", func(c *SSHConfig) { c.PrivateKeys = nil }, func(t *testing.T, err error) {
			if err == nil || !strings.Contains(err.Error(), "no ssh private key") {
				t.Errorf("err = %v", err)
			}
		}},
		{"garbage key", func(c *SSHConfig) { c.PrivateKeys = [][]byte{[]byte("not a key")} }, func(t *testing.T, err error) {
			if err == nil || !strings.Contains(err.Error(), "private key 0") {
				t.Errorf("err = %v", err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := f.config()
			tt.edit(&cfg)
			c, err := Dial(testCtx(t), f.uri(), WithSSH(cfg))
			if err == nil {
				_ = c.Close()
				t.Fatal("Dial succeeded")
			}
			if !strings.Contains(err.Error(), f.uri()) {
				t.Errorf("error %q does not name the URI", err)
			}
			tt.check(t, err)
		})
	}
	if cmds := f.sshd.Commands(); len(cmds) != 0 {
		t.Errorf("refused connections ran commands: %q", cmds)
	}
}

// TestSSHRemoteFailure: a relay that fails on the remote side is reported
// with its standard error, or with flux-core's hint when it wrote
// something else than the accept byte to stdout.
func TestSSHRemoteFailure(t *testing.T) {
	tests := []struct {
		name string
		exec fluxtest.ExecFunc
		sock string // "": the fixture's broker
		want []string
	}{
		{"no broker at the socket", nil, "/nonexistent/flux/local", []string{"relay failed", "flux-relay: local:///nonexistent/flux/local", "no such file"}},
		{"no such command", fluxtest.ShellExec(), "", []string{"relay failed", "not found"}},
		{"shell init file writes to stdout", func(ctx context.Context, cmd string, in io.Reader, out, errw io.Writer) int {
			_, _ = io.WriteString(out, "Welcome to login1\n")
			return fluxtest.InProcessRelay(ctx, cmd, in, out, errw)
		}, "", []string{"shell init files do not write to stdout"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newSSHFixture(t, tt.exec)
			cfg := f.config()
			if tt.name == "no such command" {
				cfg.RemoteFlux = "/nonexistent/bin/flux"
			}
			uri := f.uri()
			if tt.sock != "" {
				uri = f.sshd.URI("alice", tt.sock)
			}
			_, err := Dial(testCtx(t), uri, WithSSH(cfg))
			var re *RelayError
			if !errors.As(err, &re) {
				t.Fatalf("err = %v, want a *RelayError", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

// TestSSHAuthSources: keys from files and from the agent at
// $SSH_AUTH_SOCK, known_hosts from a file.
func TestSSHAuthSources(t *testing.T) {
	f := newSSHFixture(t, nil)
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "id_ed25519")
	khFile := filepath.Join(dir, "known_hosts")
	if err := os.WriteFile(keyFile, f.keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(khFile, f.sshd.KnownHosts, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		cfg   SSHConfig
		agent bool
		home  bool // the files are ~/.ssh/id_ed25519 and ~/.ssh/known_hosts
	}{
		{"key and known_hosts files", SSHConfig{KeyFiles: []string{keyFile}, KnownHostsFiles: []string{khFile}}, false, false},
		{"agent", SSHConfig{KnownHostsFiles: []string{khFile}}, true, false},
		{"defaults under ~/.ssh", SSHConfig{}, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.agent {
				startAgent(t, f.keyPEM)
			}
			if tt.home {
				home := t.TempDir()
				_ = os.Mkdir(filepath.Join(home, ".ssh"), 0o700)
				for src, dst := range map[string]string{keyFile: "id_ed25519", khFile: "known_hosts"} {
					b, _ := os.ReadFile(src)
					if err := os.WriteFile(filepath.Join(home, ".ssh", dst), b, 0o600); err != nil {
						t.Fatal(err)
					}
				}
				t.Setenv("HOME", home)
			}
			tt.cfg.KeepAlive = -1
			c, err := Dial(testCtx(t), f.uri(), WithSSH(tt.cfg))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if err := c.RPC(testCtx(t), "echo", nil, nil); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// startAgent serves an agent holding another key and then key's at a
// fresh $SSH_AUTH_SOCK.
func startAgent(t *testing.T, keyPEM []byte) {
	t.Helper()
	kr := agent.NewKeyring()
	_, otherPEM, err := fluxtest.NewKey() // a key the server does not accept, first
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range [][]byte{otherPEM, keyPEM} {
		k, err := ssh.ParseRawPrivateKey(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := kr.Add(agent.AddedKey{PrivateKey: k}); err != nil {
			t.Fatal(err)
		}
	}
	sock := filepath.Join(t.TempDir(), "agent.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	acceptAll(t, ln, func(c net.Conn) { _ = agent.ServeAgent(kr, c) })
	t.Setenv("SSH_AUTH_SOCK", sock)
}

// TestSSHDisconnect: the SSH connection dropping mid-call ends the Conn
// as a broker going away does (ErrDisconnected); so does a host that
// stops answering, found by the keep-alives.
func TestSSHDisconnect(t *testing.T) {
	f := newSSHFixture(t, nil)
	c, err := Dial(testCtx(t), f.uri(), WithSSH(f.config()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	pending := make(chan error, 1)
	go func() { pending <- c.RPC(testCtx(t), "hang", nil, nil) }()
	waitFor(t, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.pending) == 1
	})
	f.sshd.DropAll()
	if err := recvTimeout(t, pending); !errors.Is(err, ErrDisconnected) {
		t.Fatalf("pending RPC = %v, want ErrDisconnected", err)
	}
	<-c.Done()
}

// TestSSHDialContext: a host that accepts TCP but never speaks SSH is
// given up on when the context ends.
func TestSSHDialContext(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// accepts and reads, never answers
	acceptAll(t, ln, func(c net.Conn) { _, _ = io.Copy(io.Discard, c) })
	f := newSSHFixture(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	uri := "ssh://alice@" + ln.Addr().String() + "/run/flux/local"
	_, err = Dial(ctx, uri, WithSSH(SSHConfig{PrivateKeys: [][]byte{f.keyPEM}, HostKeyCallback: ssh.InsecureIgnoreHostKey()}))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want DeadlineExceeded", err)
	}
}

// TestSSHKeepAlive: a host that stops answering without closing the
// connection (a network partition, a frozen host) is found by the
// keep-alives, and the Conn ends with ErrDisconnected.
func TestSSHKeepAlive(t *testing.T) {
	f := newSSHFixture(t, nil)
	p := startFreezer(t, f.sshd.Addr)
	cfg := f.config()
	cfg.KeepAlive = 50 * time.Millisecond
	// known_hosts names the proxy's address with the server's key
	cfg.KnownHosts = []byte(knownhosts.Line([]string{knownhosts.Normalize(p.addr)}, f.sshd.HostKey.PublicKey()) + "\n")
	c, err := Dial(testCtx(t), "ssh://alice@"+p.addr+f.srv.path, WithSSH(cfg))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.RPC(testCtx(t), "echo", nil, nil); err != nil {
		t.Fatal(err)
	}
	p.freeze()
	select {
	case <-c.Done():
	case <-testCtx(t).Done():
		t.Fatal("the Conn did not end after the host stopped answering")
	}
	if err := c.Err(); !errors.Is(err, ErrDisconnected) || !strings.Contains(err.Error(), "keep-alive") {
		t.Errorf("Err = %v, want ErrDisconnected saying the keep-alives went unanswered", err)
	}
}

// freezer is a TCP proxy that can stop forwarding without closing.
type freezer struct {
	addr   string
	frozen chan struct{}
	once   sync.Once
}

func (p *freezer) freeze() { p.once.Do(func() { close(p.frozen) }) }

func startFreezer(t *testing.T, target string) *freezer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &freezer{addr: ln.Addr().String(), frozen: make(chan struct{})}
	// pipe copies src to dst until src ends, dropping what comes once
	// frozen, then closes dst.
	pipe := func(dst, src net.Conn) {
		defer dst.Close()
		buf := make([]byte, 32<<10)
		for {
			n, err := src.Read(buf)
			if err != nil {
				return
			}
			select {
			case <-p.frozen:
				continue // swallowed: the host no longer answers
			default:
			}
			if _, err := dst.Write(buf[:n]); err != nil {
				return
			}
		}
	}
	acceptAll(t, ln, func(c net.Conn) {
		s, err := net.Dial("tcp", target)
		if err != nil {
			return
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			pipe(c, s)
		}()
		pipe(s, c)
		<-done
	})
	return p
}

// acceptAll serves ln until the test ends, each connection with handle in
// a goroutine of its own; at the end it closes ln and every connection and
// waits for the handlers.
func acceptAll(t *testing.T, ln net.Listener, handle func(net.Conn)) {
	t.Helper()
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		conns  []net.Conn
		closed bool
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			if closed { // accepted as the test ended
				_ = c.Close()
			}
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				handle(c)
			}()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		closed = true
		for _, c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
}
