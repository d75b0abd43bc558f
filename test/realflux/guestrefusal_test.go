package realflux

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/kvs"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/testbroker"
	"github.com/fluxjob/fluxjob-operator/internal/broker"
)

// A guest is a user other than the instance owner connecting to the
// broker's local socket (flux-core src/modules/connector-local/local.c:
// rolemask USER when [access] allow-guest-user is true, else the accept
// byte EPERM). The controller's guarantees for a guest (no instance
// identity, no job-manager.getinfo catch-up, signed submissions) rest on
// what flux-core refuses a guest, so TestGuestRefusals connects as a real
// other uid — this test binary run again as guestUID (guest_test.go) (TestMain's guest
// mode, syscall.Credential) — to a real broker and to the test broker, and
// compares every answer.

// guestClientEnv, when set in the environment, makes this test binary a
// guest client (runGuestClient) instead of running tests.
const guestClientEnv = "REALFLUX_GUEST_CLIENT"

// guestRequest is what the test sends the guest client on its stdin.
type guestRequest struct {
	URI    string `json:"uri"`
	Victim job.ID `json:"victim"` // a job of the owner's
}

// guestObservation is one answer the guest client saw.
type guestObservation struct {
	What   string `json:"what"`
	Answer string `json:"answer"`
}

// runGuestClient is the guest mode of the test binary: it reads a
// guestRequest from stdin, connects to its URI and writes what each
// request got, as JSON, to stdout. It returns the exit code.
func runGuestClient() int {
	var req guestRequest
	if err := json.NewDecoder(os.Stdin).Decode(&req); err != nil {
		fmt.Fprintln(os.Stderr, "guest client: reading the request:", err)
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var obs []guestObservation
	add := func(what string, answer string) { obs = append(obs, guestObservation{what, answer}) }
	defer func() { _ = json.NewEncoder(os.Stdout).Encode(obs) }()

	dctx, dcancel := context.WithTimeout(ctx, 30*time.Second)
	c, err := flux.Dial(dctx, req.URI)
	dcancel()
	var ce *flux.ConnectError
	switch {
	case errors.As(err, &ce):
		add("dial", fmt.Sprintf("refused: errno %d (%s)", int(ce.Errno), ce.Errno.Error()))
		return 0
	case err != nil:
		add("dial", "error: "+err.Error())
		return 0
	}
	defer c.Close()
	add("dial", "ok")
	// each request is bounded: a refusal comes at once, and a request that
	// waits is an answer of its own ("no answer in 10s")
	rctx := func() (context.Context, context.CancelFunc) { return context.WithTimeout(ctx, 10*time.Second) }
	do := func(what string, f func(ctx context.Context) error) {
		cctx, ccancel := rctx()
		defer ccancel()
		err := f(cctx)
		if errors.Is(err, context.DeadlineExceeded) {
			add(what, "no answer in 10s")
			return
		}
		add(what, errObs(err))
	}

	do("instance identity (broker.InstanceIdentity)", func(ctx context.Context) error {
		id, err := broker.InstanceIdentity(ctx, c)
		if err == nil && id != "" {
			return fmt.Errorf("a guest got an identity %q", id)
		}
		return err
	})
	do("kvs.lookup of the identity key", func(ctx context.Context) error {
		_, err := kvs.Get(ctx, c, broker.InstanceIDKey)
		return err
	})
	do("kvs.commit of the identity key", func(ctx context.Context) error {
		return kvs.Put(ctx, c, broker.InstanceIDKey, []byte("guest"))
	})
	do("job-manager.getinfo", func(ctx context.Context) error {
		var info map[string]any
		return c.RPC(ctx, "job-manager.getinfo", nil, &info)
	})
	do("job-manager.events-journal", func(ctx context.Context) error {
		w, err := job.WatchJournal(ctx, c, job.JournalOptions{})
		if err != nil {
			return err
		}
		defer w.Close()
		_, err = w.Next()
		return err
	})
	js, err := job.FromCommand([]string{"true"}, job.CommandOptions{Cwd: "/"})
	if err != nil {
		add("jobspec", err.Error())
		return 0
	}
	for _, tc := range []struct {
		what string
		opts job.SubmitOptions
	}{
		{"submit sign-type none", job.SubmitOptions{}},
		{"submit sign-type none, urgency 20", job.SubmitOptions{Urgency: job.Urgency(20)}},
		{"submit sign-type none, waitable", job.SubmitOptions{Waitable: true}},
		{"submit sign-type none, novalidate", job.SubmitOptions{NoValidate: true}},
	} {
		do(tc.what, func(ctx context.Context) error {
			_, err := job.SubmitJobspec(ctx, c, js, tc.opts)
			return err
		})
	}
	v := req.Victim
	do("raise on the owner's job", func(ctx context.Context) error { return job.Raise(ctx, c, v, "cancel", 0, "guest") })
	do("kill on the owner's job", func(ctx context.Context) error { return job.Kill(ctx, c, v, syscall.SIGTERM) })
	do("urgency on the owner's job", func(ctx context.Context) error {
		_, err := job.SetUrgency(ctx, c, v, 1)
		return err
	})
	do("job-info.lookup of the owner's job", func(ctx context.Context) error {
		var resp map[string]any
		return c.RPC(ctx, "job-info.lookup", map[string]any{"id": v, "keys": []string{"eventlog"}, "flags": 0}, &resp)
	})
	do("eventlog-watch of the owner's job", func(ctx context.Context) error {
		w, err := job.WatchEvents(ctx, c, v, job.WatchOptions{})
		if err != nil {
			return err
		}
		defer w.Close()
		_, err = w.Next()
		return err
	})
	do("job-list.list-id of the owner's job", func(ctx context.Context) error {
		_, err := job.ListID(ctx, c, v, "state")
		return err
	})
	cctx, ccancel := rctx()
	jobs, err := job.List(cctx, c, job.ListOptions{Attrs: []string{"state"}})
	ccancel()
	add("job-list.list", fmt.Sprintf("%d jobs listed, %s", len(jobs), errObs(err)))
	return 0
}

// guestDir makes a directory the guest can enter and read (0755), removed
// at cleanup.
func guestDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "realflux-guest-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(d) })
	if err := os.Chmod(d, 0o755); err != nil {
		t.Fatal(err)
	}
	return d
}

// guestBinary copies this test binary where the guest can run it (the
// go test build directory is the owner's, mode 0700).
func guestBinary(t *testing.T) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(guestDir(t), "realflux-guest")
	in, err := os.Open(self)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	return dst
}

// runGuest runs the guest client as guestUID against uri and returns its
// observations, each normalised: the owner's job ID and the guest's uid
// replaced by names.
func runGuest(t *testing.T, bin, uri string, victim job.ID) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	in, err := json.Marshal(guestRequest{URI: uri, Victim: victim})
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, bin)
	cmd.Dir = filepath.Dir(bin)
	cmd.Env = []string{guestClientEnv + "=1", "HOME=/", "PATH=/usr/bin:/bin"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: guestUID, Gid: guestUID}}
	cmd.Stdin = bytes.NewReader(in)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("guest client (uid %d) against %s: %v\nstderr: %s", guestUID, uri, err, stderr.String())
	}
	var obs []guestObservation
	if err := json.Unmarshal(out, &obs); err != nil {
		t.Fatalf("guest client output %q: %v (stderr: %s)", out, err, stderr.String())
	}
	repl := strings.NewReplacer(victim.F58(), "VICTIM", victim.Decimal(), "VICTIM", fmt.Sprint(guestUID), "GUEST")
	var lines []string
	for _, o := range obs {
		lines = append(lines, o.What+": "+repl.Replace(o.Answer))
	}
	return lines
}

// needGuest skips unless this process may run another uid's process.
func needGuest(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skipf("running a guest client as uid %d needs root (uid %d here)", guestUID, os.Geteuid())
	}
}

// openRundir makes a real instance's socket directory reachable by the
// guest: flux-core creates it 0700 (src/broker/rundir.c mkdtemp), while
// the socket itself is 0777 and access is decided at accept
// (connector-local), as a system instance's /run/flux is 0755.
func openRundir(t *testing.T, inst *instance) {
	t.Helper()
	dir := attr(t, inst, "rundir")
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
}

// TestGuestRefusals connects as another uid (guestUID) to a real broker
// and to the test broker, in each access mode — guests allowed ([access]
// allow-guest-user = true; Options.AllowGuests), guests allowed in private
// mode (private-mode = true as well; Options.PrivateMode), and guests not
// allowed — after the owner stored the instance identity and submitted a
// held job, and compares every answer: the refused connection (the accept
// byte), the owner-only RPCs (KVS, getinfo, the journal), submissions
// signed with mechanism none, and the owner's job touched by the guest
// (raise, kill, urgency, lookup, eventlog, list-id, list).
func TestGuestRefusals(t *testing.T) {
	needFlux(t)
	needGuest(t)
	bin := guestBinary(t)
	// owner prepares an instance: the identity stored, a held job
	owner := func(t *testing.T, uri string) job.ID {
		c := dial(t, uri)
		if id, err := broker.InstanceIdentity(ctxT(t), c); err != nil || id == "" {
			t.Fatalf("owner's InstanceIdentity: %q %v", id, err)
		}
		js := fromCommand(t, "sleep", "inf")
		js.SetJobName("guest-victim")
		id := submit(t, c, js, job.SubmitOptions{Urgency: job.Urgency(job.UrgencyHold)})
		waitListed(t, c, id, job.StateSched)
		t.Cleanup(func() { _ = job.Cancel(context.Background(), c, id, "") })
		return id
	}
	for _, mode := range []struct {
		name        string
		conf        []string
		allow, priv bool
	}{
		{"guests", []string{"--conf=access.allow-guest-user=true"}, true, false},
		{"private", []string{"--conf=access.allow-guest-user=true", "--conf=access.private-mode=true"}, true, true},
		{"no guests", nil, false, false},
	} {
		t.Run(mode.name, func(t *testing.T) {
			obs := map[string][]string{}
			inst := ownInstance(t, startOptions{Args: mode.conf})
			openRundir(t, inst)
			var victim job.ID
			if mode.allow {
				victim = owner(t, inst.URI)
			}
			obs["real"] = runGuest(t, bin, inst.URI, victim)

			srv := testbroker.New(testbroker.Options{Dir: guestDir(t), AllowGuests: mode.allow, PrivateMode: mode.priv, Hostname: "testbroker"})
			if err := srv.Start(context.Background()); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = srv.Close() })
			victim = 0
			if mode.allow {
				victim = owner(t, srv.URI())
			}
			obs["testbroker"] = runGuest(t, bin, srv.URI(), victim)
			compare(t, "guest, "+mode.name, obs)
		})
	}
}
