package podexec

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
	"k8s.io/client-go/rest"

	"github.com/fluxjob/fluxjob-operator/fluxbridge"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux/fluxtest"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/testbroker"
	"github.com/fluxjob/fluxjob-operator/podexec/podexectest"
)

// BenchmarkTransport measures the executor through each transport against
// the test broker: jobs/s (b.N jobs of `true` with zero run time,
// submitted at once, every result awaited, after an untimed warm-up of up
// to 2,000 jobs) and the client's CPU time per job and peak RSS. The
// client runs in a child process (this test binary), so its CPU time is
// its own: the broker, the SSH server with its in-process relay, the exec
// server and its relay processes are all elsewhere; it counts its CPU time
// over the timed round only. One op is one job.
//
//   - local: the broker's unix socket (raw socket I/O);
//
//   - ssh: ssh:// through an SSH server (x/crypto/ssh) whose sessions
//     relay to the socket;
//
//   - pod-exec: podexec through the exec server kubelet would run
//     (remotecommand.ServeExec over TLS, WebSocket v5 refused so SPDY),
//     each connection a relay process.
//
//     go test -run '^$' -bench Transport -benchtime 10000x ./podexec/
func BenchmarkTransport(b *testing.B) {
	srv := testbroker.New(testbroker.Options{Cores: 1 << 20, TimeScale: 0.001})
	if err := srv.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	sock, err := fluxtest.SocketPath(srv.URI())
	if err != nil {
		b.Fatal(err)
	}
	for _, tr := range []string{"local", "ssh", "pod-exec"} {
		b.Run("transport="+tr+"/workers=4", func(b *testing.B) {
			env := benchChildEnv(b, tr, srv.URI(), sock)
			row, err := runBenchChild(b.N, env)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(row.JobsPerS, "jobs/s")
			b.ReportMetric(float64(row.CPU.Microseconds())/float64(b.N), "cpu-µs/job")
			b.ReportMetric(float64(row.MaxRSSKB)/1024, "rss-MB")
		})
	}
}

// benchChildEnv starts what the transport needs and returns the child's
// environment naming it.
func benchChildEnv(b *testing.B, tr, uri, sock string) []string {
	b.Helper()
	switch tr {
	case "ssh":
		key, keyPEM, err := fluxtest.NewKey()
		if err != nil {
			b.Fatal(err)
		}
		sshd, err := fluxtest.StartSSHServer(fluxtest.SSHServerOptions{AuthorizedKeys: []ssh.PublicKey{key.PublicKey()}})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(sshd.Close)
		// the child uses the zero SSHConfig: keys and known_hosts in ~/.ssh
		home := b.TempDir()
		if err := os.Mkdir(filepath.Join(home, ".ssh"), 0o700); err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(home, ".ssh", "id_ed25519"), keyPEM, 0o600); err != nil {
			b.Fatal(err)
		}
		kh := knownhosts.Line([]string{knownhosts.Normalize(sshd.Addr)}, sshd.HostKey.PublicKey()) + "\n"
		if err := os.WriteFile(filepath.Join(home, ".ssh", "known_hosts"), []byte(kh), 0o600); err != nil {
			b.Fatal(err)
		}
		return []string{"HOME=" + home, "SSH_AUTH_SOCK=", benchEnvURI + "=" + sshd.URI("bench", sock)}
	case "pod-exec":
		shim := b.TempDir()
		if err := fluxtest.WriteRelayShim(shim); err != nil {
			b.Fatal(err)
		}
		k, err := podexectest.StartKubelet(&podexectest.Runtime{Env: []string{podexectest.PathWith(shim)}})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(k.Close)
		u := k.ExecURL("n", "p", "flux", Target{Namespace: "n", Pod: "p", SocketPath: sock}.argv())
		return []string{benchEnvURI + "=pod://n/p/flux", benchEnvExecURL + "=" + u.String()}
	}
	return []string{benchEnvURI + "=" + uri}
}

const (
	benchEnvJobs    = "PODEXEC_BENCH_JOBS"     // set: this process is a benchmark child
	benchEnvURI     = "PODEXEC_BENCH_URI"      // the URI to dial
	benchEnvExecURL = "PODEXEC_BENCH_EXEC_URL" // set: dial it with podexec.Open
	benchResult     = "PODEXEC_BENCH_RESULT "
)

// benchRow is a child's measurement.
type benchRow struct {
	JobsPerS float64       `json:"jobs_per_s"`
	CPU      time.Duration `json:"cpu"` // the child's, over the timed round
	MaxRSSKB int64         `json:"-"`
}

func runBenchChild(n int, env []string) (benchRow, error) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(append(os.Environ(), benchEnvJobs+"="+strconv.Itoa(n)), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 10 * time.Second
	if err := cmd.Run(); err != nil {
		return benchRow{}, fmt.Errorf("benchmark child: %w\n%s%s", err, stdout.String(), stderr.String())
	}
	var row benchRow
	_, line, ok := strings.Cut(stdout.String(), benchResult)
	if !ok {
		return benchRow{}, fmt.Errorf("benchmark child printed no result\n%s%s", stdout.String(), stderr.String())
	}
	line, _, _ = strings.Cut(line, "\n")
	if err := json.Unmarshal([]byte(line), &row); err != nil {
		return benchRow{}, err
	}
	row.MaxRSSKB = cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss
	return row, nil
}

// runBenchChildIfAsked is the child of BenchmarkTransport: it runs the
// jobs through the transport its environment names, prints the result
// and exits. Otherwise it returns at once.
func runBenchChildIfAsked() {
	ns := os.Getenv(benchEnvJobs)
	if ns == "" {
		return
	}
	n, _ := strconv.Atoi(ns)
	row, err := benchChild(n, os.Getenv(benchEnvURI), os.Getenv(benchEnvExecURL))
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchmark child:", err)
		os.Exit(1)
	}
	out, _ := json.Marshal(row)
	fmt.Println(benchResult + string(out))
	os.Exit(0)
}

func benchChild(n int, uri, execURL string) (benchRow, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	var opts []flux.Option
	if execURL != "" {
		u, err := url.Parse(execURL)
		if err != nil {
			return benchRow{}, err
		}
		cfg := &rest.Config{Host: "https://" + u.Host, TLSClientConfig: rest.TLSClientConfig{Insecure: true}}
		opts = append(opts, flux.WithDialer(func(ctx context.Context, _ string) (io.ReadWriteCloser, error) { return Open(ctx, cfg, u) }))
	}
	e, err := fluxbridge.NewExecutor(ctx, fluxbridge.ExecutorOptions{Workers: 4, URI: uri, DialOptions: opts})
	if err != nil {
		return benchRow{}, err
	}
	defer e.Close()
	js, err := job.FromCommand([]string{"true"}, job.CommandOptions{})
	if err != nil {
		return benchRow{}, err
	}
	round := func(n int) error {
		fs := make([]*fluxbridge.Future, n)
		for i := range fs {
			if fs[i], err = e.Submit(ctx, js, job.SubmitOptions{}); err != nil {
				return err
			}
		}
		for _, f := range fs {
			if r, err := f.Result(ctx); r != 0 || err != nil {
				return fmt.Errorf("result %d, %w", r, err)
			}
		}
		return nil
	}
	if err := round(min(n, 2000)); err != nil {
		return benchRow{}, err
	}
	cpu0 := cpuTime()
	start := time.Now()
	if err := round(n); err != nil {
		return benchRow{}, err
	}
	row := benchRow{JobsPerS: float64(n) / time.Since(start).Seconds(), CPU: cpuTime() - cpu0}
	if p := os.Getenv("PODEXEC_BENCH_MEMPROFILE"); p != "" {
		f, err := os.Create(p)
		if err != nil {
			return benchRow{}, err
		}
		defer f.Close()
		if err := pprof.WriteHeapProfile(f); err != nil {
			return benchRow{}, err
		}
	}
	return row, nil
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(syscall.TimevalToNsec(ru.Utime) + syscall.TimevalToNsec(ru.Stime))
}
