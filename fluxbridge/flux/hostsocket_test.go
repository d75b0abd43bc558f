package flux

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux/fluxtest"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/munge"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/munge/mungetest"
)

// TestDialHostSocketSSH: through an ssh:// Conn, DialHostSocket reaches a
// unix socket on the SSH server's host over the same SSH connection (a
// direct-streamlocal channel, opened by the server for the logged-in
// user): a real munged there encodes a credential for the user the
// server connects as, and the local munged decodes it (same key).
func TestDialHostSocketSSH(t *testing.T) {
	d := mungetest.Start(t, mungetest.Options{})
	f := newSSHFixtureOpts(t, fluxtest.SSHServerOptions{StreamLocal: fluxtest.DialUnix})
	c, err := Dial(testCtx(t), f.uri(), WithSSH(f.config()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	remote := &munge.Client{Dial: func(ctx context.Context) (net.Conn, error) { return c.DialHostSocket(ctx, d.Socket) }}
	cred, err := remote.Encode(testCtx(t), []byte("over ssh"), munge.EncodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cr, err := (&munge.Client{Socket: d.Socket}).Decode(testCtx(t), cred)
	if err != nil {
		t.Fatal(err)
	}
	if string(cr.Payload) != "over ssh" || cr.UID != uint32(os.Getuid()) {
		t.Fatalf("decoded %+v", cr)
	}
	// Several in a row, each its own channel, on the one SSH connection.
	for range 3 {
		if _, err := remote.Encode(testCtx(t), nil, munge.EncodeOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if fw := f.sshd.Forwards(); len(fw) != 4 || fw[0] != "alice:"+d.Socket {
		t.Fatalf("forwards %q, want 4 of alice:%s", fw, d.Socket)
	}
	// The relay session is still the only session.
	if n := len(f.sshd.Commands()); n != 1 {
		t.Fatalf("%d remote commands, want the relay only", n)
	}
	// A socket that is not there: the server's refusal, wrapped.
	_, err = c.DialHostSocket(testCtx(t), filepath.Join(t.TempDir(), "absent"))
	if err == nil || !strings.Contains(err.Error(), "forwarding to") {
		t.Fatalf("absent socket: %v", err)
	}
	// The broker connection is unaffected.
	var out map[string]int
	if err := c.RPC(testCtx(t), "echo", map[string]int{"x": 1}, &out); err != nil || out["x"] != 1 {
		t.Fatalf("RPC after forwards = %v, %v", out, err)
	}
}

// TestDialHostSocketRefused: a server that does not forward unix sockets
// (sshd with AllowStreamLocalForwarding no) refuses with its reason.
func TestDialHostSocketRefused(t *testing.T) {
	f := newSSHFixtureOpts(t, fluxtest.SSHServerOptions{})
	c, err := Dial(testCtx(t), f.uri(), WithSSH(f.config()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.DialHostSocket(testCtx(t), "/run/munge/munge.socket.2")
	if err == nil || !strings.Contains(err.Error(), "unix-socket forwarding disabled") {
		t.Fatalf("DialHostSocket = %v", err)
	}
}

// TestDialHostSocketLocal: a local:// Conn dials the socket here; a Conn
// over a stream of unknown origin cannot, and says so.
func TestDialHostSocketLocal(t *testing.T) {
	srv := newFakeServer(t, transportHandler)
	c, err := Dial(testCtx(t), "local://"+srv.path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ln, err := net.Listen("unix", filepath.Join(t.TempDir(), "s"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		if nc, err := ln.Accept(); err == nil {
			_, _ = nc.Write([]byte("hi"))
			_ = nc.Close()
		}
	}()
	nc, err := c.DialHostSocket(testCtx(t), ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2)
	if _, err := nc.Read(buf); err != nil || string(buf) != "hi" {
		t.Fatalf("read %q, %v", buf, err)
	}
	_ = nc.Close()

	a, b := net.Pipe()
	defer b.Close()
	go func() { _, _ = b.Write([]byte{0}) }() // the accept byte
	sc, err := DialStream(testCtx(t), "local:///elsewhere", a)
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	if _, err := sc.DialHostSocket(testCtx(t), ln.Addr().String()); !errors.Is(err, ErrNoHostSocket) {
		t.Fatalf("stream Conn: %v, want ErrNoHostSocket", err)
	}
}
