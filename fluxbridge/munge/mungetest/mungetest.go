// Package mungetest starts a private munged (Debian's munge package) for
// tests: its own key, socket, pid, log and seed files in a temporary
// directory, so that it neither needs nor touches the host's munged.
package mungetest

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Daemon is a running munged.
type Daemon struct {
	// Socket is its unix socket (mode 0777 in a directory every user can
	// reach, as munged wants).
	Socket string
	// Dir holds its key, log and socket.
	Dir string
	// Key is its key: a second daemon started with it decodes this
	// one's credentials.
	Key []byte
	cmd *exec.Cmd
	log *bytes.Buffer
}

// Options configure Start.
type Options struct {
	// Key is the daemon's key; nil means a new random 128-byte key.
	Key []byte
	// MaxTTL is munged --max-ttl in seconds (0: munged's default, 3600).
	MaxTTL int
	// SocketName is the socket's name in Dir; empty means
	// "munge.socket.2", the name of munged's default socket, so that Dir
	// can stand in for /run/munge.
	SocketName string
}

// Path returns munged's path, or "" if it is not installed.
func Path() string {
	for _, p := range []string{"munged", "/usr/sbin/munged", "/sbin/munged"} {
		if lp, err := exec.LookPath(p); err == nil {
			return lp
		}
	}
	return ""
}

// Start starts munged in the foreground (-F) for the test's lifetime; the
// test is skipped if munged is not installed. munged runs as the test's
// user; -f lets it run with a key in a temporary directory.
func Start(t testing.TB, opts Options) *Daemon {
	t.Helper()
	bin := Path()
	if bin == "" {
		t.Skip("munged not installed (Debian package munge)")
	}
	// munged wants every directory above the socket searchable by all;
	// t.TempDir's parent is 0700 on some systems, so use os.MkdirTemp.
	dir, err := os.MkdirTemp("", "mungetest-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	key := opts.Key
	if key == nil {
		key = make([]byte, 128)
		_, _ = rand.Read(key)
	}
	if err := os.WriteFile(filepath.Join(dir, "munge.key"), key, 0o600); err != nil {
		t.Fatal(err)
	}
	name := opts.SocketName
	if name == "" {
		name = "munge.socket.2"
	}
	d := &Daemon{Socket: filepath.Join(dir, name), Dir: dir, Key: key, log: &bytes.Buffer{}}
	args := []string{"-F", "-f",
		"--key-file=" + filepath.Join(dir, "munge.key"),
		"--socket=" + d.Socket,
		"--pid-file=" + filepath.Join(dir, "munged.pid"),
		"--log-file=" + filepath.Join(dir, "munged.log"),
		"--seed-file=" + filepath.Join(dir, "munged.seed"),
		"--num-threads=2",
	}
	if opts.MaxTTL > 0 {
		args = append(args, fmt.Sprintf("--max-ttl=%d", opts.MaxTTL))
	}
	d.cmd = exec.Command(bin, args...)
	d.cmd.Stdout, d.cmd.Stderr = d.log, d.log
	if err := d.cmd.Start(); err != nil {
		t.Fatalf("starting munged: %v", err)
	}
	t.Cleanup(d.stop)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if fi, err := os.Stat(d.Socket); err == nil && fi.Mode()&os.ModeSocket != 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("munged did not create %s within 10s: %s", d.Socket, d.log)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := os.Chmod(d.Socket, 0o777); err != nil {
		t.Fatal(err)
	}
	return d
}

// Log returns what munged logged so far (its stderr in the foreground).
func (d *Daemon) Log() string { return d.log.String() }

func (d *Daemon) stop() {
	if d.cmd.Process != nil {
		_ = d.cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { _ = d.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = d.cmd.Process.Kill()
			<-done
		}
	}
}

// Unmunge runs Debian's unmunge against the daemon on cred and returns its
// output (metadata and payload), for checks against munge's own client.
func (d *Daemon) Unmunge(cred string) (string, error) {
	cmd := exec.Command("unmunge", "--socket="+d.Socket)
	cmd.Stdin = strings.NewReader(cred)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// Munge runs Debian's munge client against the daemon with payload and
// returns the credential.
func (d *Daemon) Munge(payload string) (string, error) {
	cmd := exec.Command("munge", "--socket="+d.Socket, "--string="+payload)
	out, err := cmd.Output()
	return strings.TrimSpace(string(out)), err
}
