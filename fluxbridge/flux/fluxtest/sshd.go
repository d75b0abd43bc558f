package fluxtest

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// An ExecFunc runs an SSH exec request's command with the session's
// standard input, output and error, and returns its exit status. It must
// return once stdin ends (the client went away); a goroutine of its own
// still reading stdin then ends when the session is closed, right after.
type ExecFunc func(ctx context.Context, command string, stdin io.Reader, stdout, stderr io.Writer) int

// SSHServer is an SSH server on 127.0.0.1 (x/crypto/ssh's server side)
// that accepts public keys and runs exec requests with Exec. It serves
// until Close.
type SSHServer struct {
	// Addr is the server's host:port.
	Addr string
	// HostKey is the server's host key.
	HostKey ssh.Signer
	// KnownHosts is a known_hosts line for Addr and HostKey.
	KnownHosts []byte

	exec        ExecFunc
	userExec    func(user string) ExecFunc
	streamLocal func(ctx context.Context, user, path string) (net.Conn, error)
	ln          net.Listener
	keys        [][]byte // authorised public keys, wire format

	mu       sync.Mutex
	conns    map[net.Conn]struct{}
	commands []string
	forwards []string // user:path of each direct-streamlocal channel opened
	wg       sync.WaitGroup
}

// SSHServerOptions configure StartSSHServer.
type SSHServerOptions struct {
	// AuthorizedKeys may log in (any user name).
	AuthorizedKeys []ssh.PublicKey
	// Exec runs commands; nil means InProcessRelay.
	Exec ExecFunc
	// StreamLocal, when set, serves direct-streamlocal@openssh.com
	// channels (a client's connection to a unix socket on the server's
	// host, as `ssh -L` and flux.Conn.DialHostSocket open them): it
	// connects to path for the logged-in user, as OpenSSH's sshd does in
	// the user's session process. Nil refuses them, as sshd with
	// AllowStreamLocalForwarding no. DialUnix connects as this process.
	StreamLocal func(ctx context.Context, user, path string) (net.Conn, error)
	// UserExec, when set, returns the ExecFunc of the logged-in user's
	// commands (instead of Exec), as sshd runs them in that user's
	// session: RelayAs gives an in-process relay connecting as the user.
	UserExec func(user string) ExecFunc
	// UserKeys, when set, are the only keys that may log in as each user
	// (AuthorizedKeys still log in as anyone), as each user's
	// authorized_keys file.
	UserKeys map[string][]ssh.PublicKey
}

// DialUnix is a StreamLocal that connects to path as this process.
func DialUnix(ctx context.Context, _, path string) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, "unix", path)
}

// StartSSHServer starts a server; Close stops it.
func StartSSHServer(opts SSHServerOptions) (*SSHServer, error) {
	hostKey, _, err := NewKey()
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &SSHServer{
		Addr:        ln.Addr().String(),
		HostKey:     hostKey,
		exec:        opts.Exec,
		userExec:    opts.UserExec,
		streamLocal: opts.StreamLocal,
		ln:          ln,
		conns:       map[net.Conn]struct{}{},
	}
	if s.exec == nil {
		s.exec = InProcessRelay
	}
	s.KnownHosts = []byte(knownhosts.Line([]string{knownhosts.Normalize(s.Addr)}, hostKey.PublicKey()) + "\n")
	for _, k := range opts.AuthorizedKeys {
		s.keys = append(s.keys, k.Marshal())
	}
	cfg := &ssh.ServerConfig{
		PublicKeyCallback: func(md ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
			for _, k := range s.keys {
				if bytes.Equal(k, key.Marshal()) {
					return &ssh.Permissions{}, nil
				}
			}
			for _, k := range opts.UserKeys[md.User()] {
				if bytes.Equal(k.Marshal(), key.Marshal()) {
					return &ssh.Permissions{}, nil
				}
			}
			return nil, errors.New("fluxtest sshd: key not authorised")
		},
	}
	cfg.AddHostKey(hostKey)
	s.wg.Add(1)
	go s.serve(cfg)
	return s, nil
}

// NewKey returns a new ed25519 key and its private key in OpenSSH PEM.
func NewKey() (ssh.Signer, []byte, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		return nil, nil, err
	}
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		return nil, nil, err
	}
	return signer, pem.EncodeToMemory(block), nil
}

// URI returns ssh://USER@ADDR/SOCKET for the server.
func (s *SSHServer) URI(user, socket string) string {
	return "ssh://" + user + "@" + s.Addr + socket
}

// Commands returns the commands run so far.
func (s *SSHServer) Commands() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.commands...)
}

// Forwards returns the unix-socket forwardings opened so far, as
// "USER:PATH".
func (s *SSHServer) Forwards() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.forwards...)
}

// DropAll closes every client connection's TCP connection, as a host
// going away would (the sessions' commands end: their stdin closes).
func (s *SSHServer) DropAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		_ = c.Close()
	}
}

// Close stops the server, closes every connection and waits for the
// sessions to end.
func (s *SSHServer) Close() {
	_ = s.ln.Close()
	s.DropAll()
	s.wg.Wait()
}

func (s *SSHServer) serve(cfg *ssh.ServerConfig) {
	defer s.wg.Done()
	for {
		nc, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		s.conns[nc] = struct{}{}
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer func() {
				s.mu.Lock()
				delete(s.conns, nc)
				s.mu.Unlock()
				_ = nc.Close()
			}()
			s.serveConn(nc, cfg)
		}()
	}
}

func (s *SSHServer) serveConn(nc net.Conn, cfg *ssh.ServerConfig) {
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	sc, chans, reqs, err := ssh.NewServerConn(nc, cfg)
	if err != nil {
		return
	}
	_ = nc.SetDeadline(time.Time{})
	var wg sync.WaitGroup
	connDone := make(chan struct{}) // closed once the SSH connection ended
	wg.Add(1)
	go func() {
		defer wg.Done()
		for r := range reqs { // keep-alives
			if r.WantReply {
				_ = r.Reply(r.Type == "keepalive@openssh.com", nil)
			}
		}
	}()
	for nch := range chans {
		if nch.ChannelType() == "direct-streamlocal@openssh.com" {
			wg.Add(1)
			go func() {
				defer wg.Done()
				s.serveStreamLocal(sc.User(), nch, connDone)
			}()
			continue
		}
		if nch.ChannelType() != "session" {
			_ = nch.Reject(ssh.UnknownChannelType, "only sessions")
			continue
		}
		ch, creqs, err := nch.Accept()
		if err != nil {
			continue
		}
		exec := s.exec
		if s.userExec != nil {
			exec = s.userExec(sc.User())
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.serveSession(ch, creqs, exec)
		}()
	}
	_ = sc.Close()
	close(connDone)
	wg.Wait()
}

// serveStreamLocal connects a direct-streamlocal channel to its socket
// (OpenSSH PROTOCOL 2.4: the payload is the socket path, a reserved
// string and a reserved uint32) and copies both ways until either side
// ends.
func (s *SSHServer) serveStreamLocal(user string, nch ssh.NewChannel, connDone <-chan struct{}) {
	var p struct {
		SocketPath string
		Reserved0  string
		Reserved1  uint32
	}
	if err := ssh.Unmarshal(nch.ExtraData(), &p); err != nil {
		_ = nch.Reject(ssh.ConnectionFailed, "bad direct-streamlocal request")
		return
	}
	if s.streamLocal == nil {
		_ = nch.Reject(ssh.Prohibited, "unix-socket forwarding disabled")
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	sock, err := s.streamLocal(ctx, user, p.SocketPath)
	cancel()
	if err != nil {
		_ = nch.Reject(ssh.ConnectionFailed, err.Error())
		return
	}
	defer sock.Close()
	ch, reqs, err := nch.Accept()
	if err != nil {
		return
	}
	defer ch.Close()
	go ssh.DiscardRequests(reqs)
	stop := make(chan struct{})
	defer close(stop)
	go func() { // the connection's end ends a socket that keeps quiet
		select {
		case <-connDone:
			_ = sock.Close()
		case <-stop:
		}
	}()
	s.mu.Lock()
	s.forwards = append(s.forwards, user+":"+p.SocketPath)
	s.mu.Unlock()
	done := make(chan struct{})
	go func() {
		_, _ = io.Copy(sock, ch)
		if cw, ok := sock.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		}
		close(done)
	}()
	_, _ = io.Copy(ch, sock)
	_ = ch.CloseWrite()
	_ = ch.Close() // ends the copy above: reads of ch return EOF
	<-done
}

// serveSession runs the session's exec request and reports its status.
func (s *SSHServer) serveSession(ch ssh.Channel, reqs <-chan *ssh.Request, exec ExecFunc) {
	defer ch.Close()
	for r := range reqs {
		if r.Type != "exec" {
			if r.WantReply {
				_ = r.Reply(false, nil)
			}
			continue
		}
		var p struct{ Command string }
		if err := ssh.Unmarshal(r.Payload, &p); err != nil {
			_ = r.Reply(false, nil)
			continue
		}
		_ = r.Reply(true, nil)
		s.mu.Lock()
		s.commands = append(s.commands, p.Command)
		s.mu.Unlock()
		go ssh.DiscardRequests(reqs)
		ctx, cancel := context.WithCancel(context.Background())
		status := exec(ctx, p.Command, ch, ch, ch.Stderr())
		cancel()
		_, _ = ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{uint32(status)}))
		return
	}
}

// InProcessRelay is an ExecFunc that runs `... relay SOCKET` in-process
// with Relay: the command's last word is the socket path (shell quotes
// are removed). A socket that cannot be reached gives status 1 and an
// error on stderr, as `flux relay` does.
func InProcessRelay(ctx context.Context, command string, stdin io.Reader, stdout, stderr io.Writer) int {
	return RelayAs(DialUnix, "")(ctx, command, stdin, stdout, stderr)
}

// RelayAs is InProcessRelay connecting to the socket with dial (given
// user), e.g. DialUnixAs for the user's uid.
func RelayAs(dial func(ctx context.Context, user, path string) (net.Conn, error), user string) ExecFunc {
	return func(ctx context.Context, command string, stdin io.Reader, stdout, stderr io.Writer) int {
		words := shellWords(command)
		if len(words) < 2 || words[len(words)-2] != "relay" {
			fmt.Fprintf(stderr, "fluxtest sshd: %q is not a relay command\n", command)
			return 127
		}
		sock := words[len(words)-1]
		dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		nc, err := dial(dctx, user, sock)
		cancel()
		if err != nil {
			fmt.Fprintf(stderr, "flux-relay: local://%s: %v\n", sock, err)
			return 1
		}
		relayConn(nc, stdin, stdout)
		return 0
	}
}

// ShellExec is an ExecFunc that runs the command with /bin/sh -c, with
// env added to the environment, as sshd does with a user's shell.
func ShellExec(env ...string) ExecFunc {
	return func(ctx context.Context, command string, stdin io.Reader, stdout, stderr io.Writer) int {
		cmd := exec.CommandContext(ctx, "/bin/sh", "-c", command)
		cmd.Env = append(os.Environ(), env...)
		cmd.Stdout, cmd.Stderr = stdout, stderr
		// stdin is copied by a goroutine of ours, not exec's: Wait would
		// wait for exec's until the client closes the session, while the
		// client waits for the session to end.
		in, err := cmd.StdinPipe()
		if err == nil {
			err = cmd.Start()
		}
		if err == nil {
			go func() {
				_, _ = io.Copy(in, stdin)
				_ = in.Close()
			}()
			err = cmd.Wait()
		}
		var ee *exec.ExitError
		switch {
		case err == nil:
			return 0
		case errors.As(err, &ee):
			if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				return 128 + int(ws.Signal())
			}
			return ee.ExitCode()
		default:
			fmt.Fprintln(stderr, err)
			return 127
		}
	}
}

// shellWords splits a command line as a shell would for the simple
// quoting remoteCommand produces: single-quoted words, and backslash
// escapes outside quotes.
func shellWords(s string) []string {
	var (
		words []string
		cur   strings.Builder
		in    bool // inside single quotes
		any   bool
	)
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case in && c == '\'':
			in = false
		case in:
			cur.WriteByte(c)
		case c == '\'':
			in, any = true, true
		case c == '\\' && i+1 < len(s):
			i++
			cur.WriteByte(s[i])
			any = true
		case c == ' ' || c == '\t' || c == '\n':
			if any {
				words = append(words, cur.String())
				cur.Reset()
				any = false
			}
		default:
			cur.WriteByte(c)
			any = true
		}
	}
	if any {
		words = append(words, cur.String())
	}
	return words
}
