package flux

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/fluxjob/fluxjob-operator/internal/tail"
)

// EnvSSHRemoteCommand names the remote flux command for ssh:// URIs when
// SSHConfig.RemoteFlux is empty, as in flux-core's ssh connector.
const EnvSSHRemoteCommand = "FLUX_SSH_RCMD"

// SSHConfig configures ssh:// connections (WithSSH). The zero value acts
// like `ssh` for the local user: the agent at $SSH_AUTH_SOCK and the
// private keys ~/.ssh/id_ed25519, id_ecdsa and id_rsa, with host keys
// checked against ~/.ssh/known_hosts.
//
// The connection runs `flux relay /PATH` on the remote host, as flux-core's
// ssh connector does (src/connectors/ssh/ssh.c), and carries the broker
// protocol over the session's standard input and output. The relay
// connects to the broker as the SSH user, so that user's rights at the
// broker (instance owner or guest) are what the Conn gets.
type SSHConfig struct {
	// User logs in when the URI names none. Empty means the local user.
	User string
	// PrivateKeys are PEM-encoded private keys (OpenSSH, PKCS#1, PKCS#8,
	// unencrypted), tried first.
	PrivateKeys [][]byte
	// KeyFiles are private key files. Empty means the default files that
	// exist, unless PrivateKeys is set.
	KeyFiles []string
	// NoAgent disables the agent at $SSH_AUTH_SOCK.
	NoAgent bool
	// KnownHosts is known_hosts content (OpenSSH format, hashed names and
	// markers included) the server's host key is checked against.
	KnownHosts []byte
	// KnownHostsFiles are known_hosts files. Empty means
	// ~/.ssh/known_hosts, unless KnownHosts is set. A host not found in
	// them is refused: there is no trust on first use.
	KnownHostsFiles []string
	// HostKeyCallback, when set, checks host keys instead of KnownHosts
	// and KnownHostsFiles.
	HostKeyCallback ssh.HostKeyCallback
	// RemoteFlux is the remote flux command (a shell word or words, run by
	// the remote user's shell). Empty means $FLUX_SSH_RCMD, else "flux"
	// with PATH set as flux-core does (the socket's directory's bin, the
	// directory of the local flux command if any, /bin and /usr/bin).
	RemoteFlux string
	// KeepAlive is the interval of keep-alive requests, which detect a
	// remote host that went away without closing the connection (the
	// Conn then ends with ErrDisconnected). Zero means 30s; negative
	// disables them.
	KeepAlive time.Duration
}

// WithSSH configures ssh:// URIs (default: the zero SSHConfig).
func WithSSH(cfg SSHConfig) Option { return func(o *options) { o.ssh = &cfg } }

// sshTarget is a parsed ssh:// URI.
type sshTarget struct {
	user, addr, host, path string
}

// parseSSHURI parses ssh://[USER@]HOST[:PORT]/PATH (flux-core
// build_ssh_command: no query or fragment; the socket path is /PATH).
func parseSSHURI(uri string) (sshTarget, error) {
	u, err := url.Parse(uri)
	if err != nil {
		return sshTarget{}, fmt.Errorf("flux: %w", err)
	}
	if u.Scheme != "ssh" || u.Host == "" || u.Hostname() == "" || u.Opaque != "" {
		return sshTarget{}, fmt.Errorf("flux: %q is not ssh://[USER@]HOST[:PORT]/PATH", uri)
	}
	if u.RawQuery != "" || u.Fragment != "" || u.ForceQuery {
		return sshTarget{}, fmt.Errorf("flux: %q: an ssh:// URI takes no query or fragment", uri)
	}
	if u.Path == "" || u.Path == "/" {
		return sshTarget{}, fmt.Errorf("flux: %q names no socket path", uri)
	}
	if _, pw := u.User.Password(); pw {
		return sshTarget{}, fmt.Errorf("flux: %q: passwords in ssh:// URIs are not supported", redactURI(u))
	}
	port := u.Port()
	if port == "" {
		port = "22"
	}
	if n, err := strconv.Atoi(port); err != nil || n <= 0 || n > 65535 {
		return sshTarget{}, fmt.Errorf("flux: %q: bad port %q", uri, port)
	}
	return sshTarget{
		user: u.User.Username(),
		host: u.Hostname(),
		addr: net.JoinHostPort(u.Hostname(), port),
		path: path.Clean(u.Path),
	}, nil
}

func redactURI(u *url.URL) string {
	c := *u
	c.User = url.User(u.User.Username())
	return c.String()
}

// remoteCommand is the command line run on the remote host: flux-core's
// "[env PATH=...] FLUX relay /PATH" (build_ssh_command and make_path).
// flux-core also forwards the client's LD_LIBRARY_PATH, which concerns
// its own libraries; a Go client has none to forward.
func remoteCommand(cfg *SSHConfig, sock string) string {
	rcmd := cfg.RemoteFlux
	if rcmd == "" {
		rcmd = os.Getenv(EnvSSHRemoteCommand)
	}
	if rcmd == "" {
		dirs := []string{path.Join(path.Dir(sock), "bin")}
		if p, err := exec.LookPath("flux"); err == nil {
			if abs, err := filepath.Abs(p); err == nil {
				dirs = append(dirs, filepath.Dir(abs))
			}
		}
		dirs = append(dirs, "/bin", "/usr/bin")
		rcmd = "env " + shellQuote("PATH="+strings.Join(dirs, ":")) + " flux"
	}
	return rcmd + " relay " + shellQuote(sock)
}

// shellQuote quotes s for a POSIX shell unless it needs none.
func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("_./:=@%+-,", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// dialSSH opens an SSH session to the URI's host running the relay, and
// returns it as a stream. ctx bounds the TCP connection, the SSH
// handshake and the start of the command.
func dialSSH(ctx context.Context, uri string, cfg *SSHConfig) (io.ReadWriteCloser, error) {
	if cfg == nil {
		cfg = &SSHConfig{}
	}
	t, err := parseSSHURI(uri)
	if err != nil {
		return nil, err
	}
	fail := func(err error) error { return fmt.Errorf("flux: dial %s: %w", uri, err) }
	login := t.user
	if login == "" {
		login = cfg.User
	}
	if login == "" {
		u, err := user.Current()
		if err != nil {
			return nil, fail(fmt.Errorf("no ssh user: %w", err))
		}
		login = u.Username
	}
	hostKey, err := cfg.hostKeyCallback()
	if err != nil {
		return nil, fail(err)
	}
	auth, closeAgent, err := cfg.authMethods()
	if err != nil {
		return nil, fail(err)
	}
	defer closeAgent()
	cc := &ssh.ClientConfig{
		User:              login,
		Auth:              auth,
		HostKeyCallback:   hostKey,
		HostKeyAlgorithms: knownHostKeyAlgorithms(hostKey, t.addr),
	}
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", t.addr)
	if err != nil {
		return nil, fail(err)
	}
	// The handshake and the session's start have no context: the
	// connection's deadline and closing it when ctx ends bound them.
	if dl, ok := ctx.Deadline(); ok {
		_ = nc.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = nc.Close() })
	s, err := startRelay(nc, t, cc, remoteCommand(cfg, t.path))
	if !stop() && err == nil {
		_ = s.Close()
		err = ctx.Err()
	}
	if err != nil {
		_ = nc.Close()
		if cerr := ctxErr(ctx, err); cerr != nil {
			err = cerr
		}
		return nil, fail(err)
	}
	_ = nc.SetDeadline(time.Time{})
	s.startKeepAlive(cfg.KeepAlive)
	return s, nil
}

// startRelay makes the SSH client connection over nc and starts cmd in a
// session.
func startRelay(nc net.Conn, t sshTarget, cc *ssh.ClientConfig, cmd string) (*sshStream, error) {
	conn, chans, reqs, err := ssh.NewClientConn(nc, t.addr, cc)
	if err != nil {
		return nil, err
	}
	client := ssh.NewClient(conn, chans, reqs)
	sess, err := client.NewSession()
	if err != nil {
		_ = client.Close()
		return nil, fmt.Errorf("ssh session: %w", err)
	}
	s := &sshStream{client: client, sess: sess, stderr: &tail.Buffer{}, exited: make(chan struct{}), kaDone: make(chan struct{})}
	sess.Stderr = s.stderr
	if s.stdin, err = sess.StdinPipe(); err == nil {
		s.stdout, err = sess.StdoutPipe()
	}
	if err == nil {
		err = sess.Start(cmd)
	}
	if err != nil {
		_ = client.Close()
		return nil, fmt.Errorf("ssh: starting %q: %w", cmd, err)
	}
	go func() {
		s.waitErr = sess.Wait()
		close(s.exited)
	}()
	return s, nil
}

// sshStream is the relay's standard input and output in an SSH session;
// it owns the SSH connection (one per Conn).
type sshStream struct {
	client *ssh.Client
	sess   *ssh.Session
	stdin  io.WriteCloser
	stdout io.Reader
	stderr *tail.Buffer

	exited  chan struct{} // closed when the session ended (its Wait returned)
	waitErr error         // the session's end, set before exited closes

	mu        sync.Mutex
	lost      error         // why the keep-alives closed the connection; guarded by mu
	kaStop    chan struct{} // closed by Close to stop the keep-alive goroutine; nil: none
	kaDone    chan struct{} // closed when the keep-alive goroutine returns
	closeOnce sync.Once
}

// Read reads the relay's standard output; once the keep-alives gave up on
// the host, its error says so instead of a bare end of stream.
func (s *sshStream) Read(p []byte) (int, error) {
	n, err := s.stdout.Read(p)
	if err != nil {
		s.mu.Lock()
		lost := s.lost
		s.mu.Unlock()
		if lost != nil {
			return n, lost
		}
	}
	return n, err
}
func (s *sshStream) Write(p []byte) (int, error) { return s.stdin.Write(p) }

// Close closes the SSH connection, which ends the session (the remote
// relay sees its standard input close and exits) and every blocked Read
// and Write, and waits for the stream's goroutines.
func (s *sshStream) Close() error {
	s.closeOnce.Do(func() {
		if s.kaStop != nil {
			close(s.kaStop)
			<-s.kaDone
		}
		_ = s.client.Close()
		<-s.exited
		_ = s.client.Wait()
	})
	return nil
}

// DialHostSocket implements HostSocketDialer: a direct-streamlocal
// channel of the SSH connection to path on the remote host, opened by the
// SSH server as the logged-in user (OpenSSH needs AllowStreamLocalForwarding,
// on by default). The connection has no deadlines; closing it closes the
// channel.
func (s *sshStream) DialHostSocket(ctx context.Context, path string) (net.Conn, error) {
	nc, err := s.client.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("ssh: forwarding to %s: %w", path, err)
	}
	return nc, nil
}

// Stderr implements StderrStream.
func (s *sshStream) Stderr(ctx context.Context) string {
	select {
	case <-s.exited:
		out := s.stderr.String()
		var ee *ssh.ExitError
		if errors.As(s.waitErr, &ee) && out == "" {
			return fmt.Sprintf("remote command exited with status %d", ee.ExitStatus())
		}
		return out
	case <-ctx.Done():
		return s.stderr.String()
	}
}

// setLost records why the keep-alives closed the connection (first wins).
func (s *sshStream) setLost(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lost == nil {
		s.lost = err
	}
}

// startKeepAlive starts the keep-alive goroutine: a global request every
// interval; one that fails closes the connection (the Conn's reader then
// ends with ErrDisconnected).
func (s *sshStream) startKeepAlive(interval time.Duration) {
	if interval == 0 {
		interval = 30 * time.Second
	}
	if interval < 0 {
		close(s.kaDone)
		return
	}
	s.kaStop = make(chan struct{})
	go func() {
		defer close(s.kaDone)
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			select {
			case <-s.kaStop:
				return
			case <-s.exited:
				return
			case <-tick.C:
			}
			// SendRequest has no timeout: bound it by closing the
			// connection if no reply comes within another interval.
			timer := time.AfterFunc(interval, func() {
				s.setLost(fmt.Errorf("ssh: no answer to a keep-alive within %v", interval))
				_ = s.client.Close()
			})
			_, _, err := s.client.SendRequest("keepalive@openssh.com", true, nil)
			timer.Stop()
			if err != nil {
				s.setLost(fmt.Errorf("ssh: keep-alive: %w", err))
				_ = s.client.Close()
				return
			}
		}
	}()
}

// hostKeyCallback returns the configured host key check: the callback, or
// known_hosts content and files. Without any, there is nothing to check
// against, which is an error, not trust on first use.
func (cfg *SSHConfig) hostKeyCallback() (ssh.HostKeyCallback, error) {
	if cfg.HostKeyCallback != nil {
		return cfg.HostKeyCallback, nil
	}
	files := cfg.KnownHostsFiles
	if len(files) == 0 && len(cfg.KnownHosts) == 0 {
		if home, err := os.UserHomeDir(); err == nil {
			if p := filepath.Join(home, ".ssh", "known_hosts"); fileExists(p) {
				files = []string{p}
			}
		}
	}
	if len(files) == 0 && len(cfg.KnownHosts) == 0 {
		return nil, errors.New("no known_hosts to check the host key against (SSHConfig.KnownHosts or KnownHostsFiles; host keys are never trusted on first use)")
	}
	if len(cfg.KnownHosts) == 0 {
		cb, err := knownhosts.New(files...)
		if err != nil {
			return nil, fmt.Errorf("known_hosts: %w", err)
		}
		return cb, nil
	}
	return knownHostsFromBytes(cfg.KnownHosts, files)
}

// knownHostsFromBytes builds a known_hosts check from content as well as
// files. knownhosts reads files only; the content goes through a pipe
// named by /proc/self/fd, so that nothing is written to disk (the manager's
// root filesystem is read-only).
func knownHostsFromBytes(content []byte, files []string) (ssh.HostKeyCallback, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("known_hosts: %w", err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = w.Write(content)
		_ = w.Close()
	}()
	cb, err := knownhosts.New(append([]string{fmt.Sprintf("/proc/self/fd/%d", r.Fd())}, files...)...)
	_ = r.Close() // a writer still blocked (New failed early) gets EPIPE
	<-done
	if err != nil {
		return nil, fmt.Errorf("known_hosts: %w", err)
	}
	return cb, nil
}

// knownHostKeyAlgorithms returns the host key algorithms of the keys
// known for addr, so that the server is asked for a key that can be
// checked: otherwise it may offer another type than the one known_hosts
// has, which knownhosts reports as a mismatch. nil means the defaults.
func knownHostKeyAlgorithms(cb ssh.HostKeyCallback, addr string) []string {
	// A key that is surely not known makes knownhosts list the known ones.
	err := cb(addr, &net.TCPAddr{IP: net.IPv4zero}, probeKey)
	var ke *knownhosts.KeyError
	if !errors.As(err, &ke) || len(ke.Want) == 0 {
		return nil
	}
	var algs []string
	for _, k := range ke.Want {
		switch t := k.Key.Type(); t {
		case ssh.KeyAlgoRSA:
			algs = append(algs, ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSA)
		default:
			algs = append(algs, t)
		}
	}
	return algs
}

// probeKey is an ed25519 public key nobody has the private key of (32
// zero bytes), for knownHostKeyAlgorithms.
var probeKey = func() ssh.PublicKey {
	k, err := ssh.ParsePublicKey(ssh.Marshal(struct {
		Type string
		Key  []byte
	}{ssh.KeyAlgoED25519, make([]byte, 32)}))
	if err != nil {
		panic(err)
	}
	return k
}()

// authMethods returns one public-key method with the configured keys,
// the key files and the agent's keys (one method: the client tries each
// method name once). closeAgent closes the agent connection.
func (cfg *SSHConfig) authMethods() (methods []ssh.AuthMethod, closeAgent func(), err error) {
	closeAgent = func() {}
	var signers []ssh.Signer
	for i, pem := range cfg.PrivateKeys {
		s, err := ssh.ParsePrivateKey(pem)
		if err != nil {
			return nil, closeAgent, fmt.Errorf("private key %d: %w", i, err)
		}
		signers = append(signers, s)
	}
	files := cfg.KeyFiles
	if len(files) == 0 && len(cfg.PrivateKeys) == 0 {
		if home, err := os.UserHomeDir(); err == nil {
			for _, n := range []string{"id_ed25519", "id_ecdsa", "id_rsa"} {
				if p := filepath.Join(home, ".ssh", n); fileExists(p) {
					files = append(files, p)
				}
			}
		}
	}
	for _, f := range files {
		pem, err := os.ReadFile(f)
		if err != nil {
			return nil, closeAgent, fmt.Errorf("private key: %w", err)
		}
		s, err := ssh.ParsePrivateKey(pem)
		if err != nil {
			return nil, closeAgent, fmt.Errorf("private key %s: %w", f, err)
		}
		signers = append(signers, s)
	}
	var ag agent.ExtendedAgent
	if sock := os.Getenv("SSH_AUTH_SOCK"); sock != "" && !cfg.NoAgent {
		if c, err := net.Dial("unix", sock); err == nil {
			ag = agent.NewClient(c)
			closeAgent = func() { _ = c.Close() }
		}
	}
	if len(signers) == 0 && ag == nil {
		return nil, closeAgent, errors.New("no ssh private key (SSHConfig.PrivateKeys, KeyFiles, ~/.ssh/id_* or an agent at $SSH_AUTH_SOCK)")
	}
	return []ssh.AuthMethod{ssh.PublicKeysCallback(func() ([]ssh.Signer, error) {
		all := signers
		if ag != nil {
			if as, err := ag.Signers(); err == nil {
				all = append(append([]ssh.Signer(nil), signers...), as...)
			}
		}
		return all, nil
	})}, closeAgent, nil
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
