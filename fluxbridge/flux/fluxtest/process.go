package fluxtest

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/fluxjob/fluxjob-operator/internal/tail"
)

// envRelaySocket tells a re-executed test binary to act as the relay of
// that socket (RunRelayIfChild).
const envRelaySocket = "FLUXTEST_RELAY_SOCKET"

// RunRelayIfChild makes the test binary act as a relay when DialProcess
// started it: it relays between its standard input and output and the
// socket, then exits (status 1, with the error on standard error, if the
// socket cannot be reached, as `flux relay` does). Otherwise it returns
// at once. Call it first in TestMain of a package whose tests use
// DialProcess.
func RunRelayIfChild() {
	sock := os.Getenv(envRelaySocket)
	if sock == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	_, err := Relay(ctx, sock, os.Stdin, os.Stdout)
	cancel()
	if err != nil {
		fmt.Fprintf(os.Stderr, "fluxtest relay: local://%s: %v\n", sock, err)
		os.Exit(1)
	}
	os.Exit(0)
}

// processStream is the standard input and output of a relay process.
type processStream struct {
	cmd    *exec.Cmd
	in     *os.File // the child's standard input, our end
	out    *os.File // the child's standard output, our end
	stderr *tail.Buffer

	exited chan struct{} // closed when the child was waited for
	once   sync.Once
}

func (p *processStream) Read(b []byte) (int, error)  { return p.out.Read(b) }
func (p *processStream) Write(b []byte) (int, error) { return p.in.Write(b) }

// Pid returns the relay process's id (to stop it with SIGSTOP, say).
func (p *processStream) Pid() int { return p.cmd.Process.Pid }

// Close closes the child's standard input and output (the relay then
// exits) and waits for it, killing it if it has not exited after 10s.
func (p *processStream) Close() error {
	p.once.Do(func() {
		_ = p.in.Close()
		_ = p.out.Close()
		select {
		case <-p.exited:
		case <-time.After(10 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
	})
	return nil
}

// Stderr returns what the relay wrote to its standard error, once it
// exited or ctx ended (flux.StderrStream).
func (p *processStream) Stderr(ctx context.Context) string {
	select {
	case <-p.exited:
	case <-ctx.Done():
	}
	return p.stderr.String()
}

// DialProcess is a Dialer: the stream is the standard input and output of
// a child process, the test binary re-executed as a relay (the package's
// TestMain must call RunRelayIfChild).
func DialProcess(ctx context.Context, uri string) (io.ReadWriteCloser, error) {
	sock, err := SocketPath(uri)
	if err != nil {
		return nil, err
	}
	return StartProcess(ctx, exec.Command(os.Args[0], "-test.run=^$"), []string{envRelaySocket + "=" + sock})
}

// StartProcess starts cmd (with env added to the current environment)
// and returns its standard input and output as a stream that keeps its
// standard error. The process is the stream's: Close ends it. ctx is
// only checked before starting.
func StartProcess(ctx context.Context, cmd *exec.Cmd, env []string) (io.ReadWriteCloser, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		_, _ = inR.Close(), inW.Close()
		return nil, err
	}
	p := &processStream{cmd: cmd, in: inW, out: outR, stderr: &tail.Buffer{}, exited: make(chan struct{})}
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, outW, p.stderr
	err = cmd.Start()
	_, _ = inR.Close(), outW.Close() // the child has them
	if err != nil {
		_, _ = inW.Close(), outR.Close()
		return nil, fmt.Errorf("fluxtest: starting the relay: %w", err)
	}
	go func() {
		_ = cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

// WriteRelayShim writes an executable `flux` into dir that runs `flux
// relay SOCKET` as this test binary re-executed as a relay (the package's
// TestMain must call RunRelayIfChild); any other subcommand fails. With
// dir on PATH, commands that run `flux relay` (ShellExec, a pod exec)
// reach the test broker.
func WriteRelayShim(dir string) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	script := "#!/bin/sh\n" +
		"if [ \"$1\" != relay ] || [ $# -ne 2 ]; then echo \"fluxtest flux: only 'flux relay PATH' is supported\" >&2; exit 2; fi\n" +
		"exec env " + envRelaySocket + "=\"$2\" '" + strings.ReplaceAll(self, "'", `'\''`) + "' -test.run='^$'\n"
	return os.WriteFile(filepath.Join(dir, "flux"), []byte(script), 0o755)
}
