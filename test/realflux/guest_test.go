package realflux

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux/fluxtest"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/munge"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/munge/mungetest"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/sign"
	"github.com/fluxjob/fluxjob-operator/test/fluxendpoint"
)

// A multi-user Flux instance, as at an HPC centre: the broker runs as a
// system account (here "daemon"), guests may connect (access.allow-guest-user),
// root has the owner role (access.allow-root-owner, so that this test can
// watch every job), and jobs of guests run through the IMP, flux-security's
// setuid-root flux-imp, which verifies the job's signed J and runs the job
// shell as the J's user. The guest is uid 65534 (nobody), running this
// project's Go client (./guestclient) with its own munge credentials from a
// private munged.
//
// What needs root: starting the broker as another user, the setuid IMP,
// running the client as another uid, and a private mount namespace for the
// broker. In that namespace /run is a tmpfs whose /run/munge is the test
// munged's directory (flux-security names munged's default socket), a home
// directory the guest cannot traverse (the build cache under /root) is
// replaced by one it can, with the cache bind-mounted back, and the
// flux-security installation's etc/flux, where the IMP and libflux-security
// read their configuration (compiled-in paths), holds this test's. Nothing
// outside the test's temporary directory is changed.

const (
	guestUID  = 65534
	ownerName = "daemon"
)

// guestInstance is the running multi-user instance and what the tests
// need around it.
type guestInstance struct {
	inst    *fluxendpoint.Instance
	uri     string
	munged  *mungetest.Daemon
	client  string // guestclient, runnable by the guest
	base    string // the test's directory
	impConf string // flux-security's [sign] configuration file ("" without an IMP)
	owner   *flux.Conn
}

// needGuestInstance skips unless the machine can run the multi-user test.
func needGuestInstance(t *testing.T) {
	t.Helper()
	needFlux(t)
	if os.Getuid() != 0 {
		t.Skip("needs root: the broker runs as " + ownerName + ", the client as uid 65534, the IMP setuid root")
	}
	out, err := exec.Command("flux", "version").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "flux-security") {
		t.Skipf("flux-core is not built with flux-security (flux version: %s)", out)
	}
	if mungetest.Path() == "" {
		t.Skip("munged not installed (Debian package munge)")
	}
	for _, tool := range []string{"unshare", "setpriv", "go"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not found", tool)
		}
	}
}

// securityPrefixOf returns the flux-security installation flux-core at
// prefix was built against: the file flux-security-prefix that
// hack/flux-core.sh writes, else $FLUX_SECURITY_PREFIX. "" if unknown.
func securityPrefixOf(prefix string) string {
	if b, err := os.ReadFile(filepath.Join(prefix, "flux-security-prefix")); err == nil {
		if p := strings.TrimSpace(string(b)); p != "" {
			return p
		}
	}
	return os.Getenv("FLUX_SECURITY_PREFIX")
}

// hiddenAncestors returns, for each path, its first ancestor others cannot
// search (mode without o+x) and that ancestor's child on the way to it.
func hiddenAncestors(paths ...string) map[string]string {
	out := map[string]string{}
	for _, p := range paths {
		parts := strings.Split(filepath.Clean(p), "/")
		cur := "/"
		for i := 1; i < len(parts)-1; i++ {
			cur = filepath.Join(cur, parts[i])
			fi, err := os.Stat(cur)
			if err != nil {
				break
			}
			if fi.Mode().Perm()&0o001 == 0 {
				out[cur] = filepath.Join(cur, parts[i+1])
				break
			}
		}
	}
	return out
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// impConfig is the IMP's configuration: who may use it (the instance
// owner) and which shell it runs.
func impConfig(shell string) string {
	return fmt.Sprintf("[exec]\nallowed-users = [ %q ]\nallowed-shells = [ %q ]\n", ownerName, shell)
}

// signConfig is flux-security's [sign] table, what the IMP and the job
// shell verify J with (flux-security's shipped one, with max-ttl).
func signConfig(maxTTL int) string {
	return fmt.Sprintf("[sign]\nmax-ttl = %d\ndefault-type = \"munge\"\nallowed-types = [ \"munge\" ]\n", maxTTL)
}

func startGuestInstance(t *testing.T) *guestInstance {
	t.Helper()
	needGuestInstance(t)
	owner, err := user.Lookup(ownerName)
	if err != nil {
		t.Skipf("no %s account: %v", ownerName, err)
	}
	ouid, _ := strconv.Atoi(owner.Uid)
	ogid, _ := strconv.Atoi(owner.Gid)
	fluxBin, err := exec.LookPath("flux")
	if err != nil {
		t.Fatal(err)
	}
	if fluxBin, err = filepath.EvalSymlinks(fluxBin); err != nil {
		t.Fatal(err)
	}
	prefix := filepath.Dir(filepath.Dir(fluxBin))
	shell := filepath.Join(prefix, "libexec", "flux", "flux-shell")

	base, err := os.MkdirTemp("", "realflux-guest-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(base) })
	g := &guestInstance{base: base}
	mkdir := func(name string, mode os.FileMode, uid, gid int) string {
		p := filepath.Join(base, name)
		if err := os.MkdirAll(p, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(p, uid, gid); err != nil {
			t.Fatal(err)
		}
		return p
	}
	_ = os.Chmod(base, 0o755)
	rundir := mkdir("run", 0o755, ouid, ogid)
	home := mkdir("home", 0o700, ouid, ogid)
	tmp := mkdir("tmp", 0o777|os.ModeSticky, 0, 0)
	conf := mkdir("conf", 0o755, 0, 0)
	bin := mkdir("bin", 0o755, 0, 0)

	// The guest's client, built where the guest can run it.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	g.client = filepath.Join(bin, "guestclient")
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", g.client, "./guestclient").CombinedOutput(); err != nil {
		t.Fatalf("go build ./guestclient: %v: %s", err, out)
	}
	_ = os.Chmod(g.client, 0o755)

	g.munged = mungetest.Start(t, mungetest.Options{})

	brokerConf := "[access]\nallow-guest-user = true\nallow-root-owner = true\n"
	env := []string{"HOME=" + home, "TMPDIR=" + tmp, "PATH=" + filepath.Dir(fluxBin) + ":/usr/bin:/bin", "FLUX_URI="}
	// The IMP: a setuid-root copy of the flux-security installation's
	// flux-imp. Its configuration paths are compiled in (under the
	// installation's etc/flux); the namespace below mounts this test's
	// imp/conf.d and security/conf.d there.
	sec := securityPrefixOf(prefix)
	var secEtc string
	if imp := filepath.Join(sec, "libexec", "flux", "flux-imp"); sec != "" && fileExists(imp) {
		impDir := mkdir("imp", 0o755, 0, 0)
		data, err := os.ReadFile(imp)
		if err != nil {
			t.Fatal(err)
		}
		impPath := filepath.Join(impDir, "flux-imp")
		if err := os.WriteFile(impPath, data, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(impPath, 0o755|os.ModeSetuid); err != nil {
			t.Fatal(err)
		}
		impConfDir := mkdir("impconf", 0o755, 0, 0)
		if err := os.WriteFile(filepath.Join(impConfDir, "imp.toml"), []byte(impConfig(shell)), 0o644); err != nil {
			t.Fatal(err)
		}
		g.impConf = filepath.Join(mkdir("secconf", 0o755, 0, 0), "sign.toml")
		g.setIMPMaxTTL(t, 60)
		brokerConf += fmt.Sprintf("[exec]\nimp = %q\n", impPath)
		secEtc = filepath.Join(sec, "etc", "flux")
	} else {
		t.Logf("no flux-imp in the flux-security installation (%q): guest jobs are accepted but cannot run", sec)
	}
	if err := os.WriteFile(filepath.Join(conf, "access.toml"), []byte(brokerConf), 0o644); err != nil {
		t.Fatal(err)
	}

	// The broker's mount namespace.
	script := "set -e\nmount -t tmpfs -o mode=0755 tmpfs /run\nmkdir /run/munge\n" +
		"mount --bind " + shellQuote(g.munged.Dir) + " /run/munge\n"
	i := 0
	for anc, child := range hiddenAncestors(prefix, shell) {
		keep := mkdir(fmt.Sprintf("keep%d", i), 0o700, 0, 0)
		i++
		script += fmt.Sprintf("mount --bind %s %s\nmount -t tmpfs -o mode=0711 tmpfs %s\nmkdir -p %s\nmount --bind %s %s\n",
			shellQuote(child), shellQuote(keep), shellQuote(anc), shellQuote(child), shellQuote(keep), shellQuote(child))
	}
	if secEtc != "" {
		// etc/flux becomes a tmpfs holding this test's configuration.
		keep := mkdir("keepetc", 0o700, 0, 0)
		q := func(p string) string { return shellQuote(filepath.Join(secEtc, p)) }
		script += fmt.Sprintf("mount --bind %s %s\nmount -t tmpfs -o mode=0755 tmpfs %s\nmkdir -p %s %s\nmount --bind %s %s\nmount --bind %s %s\n",
			q(""), shellQuote(keep), q(""), q("security/conf.d"), q("imp/conf.d"),
			shellQuote(filepath.Dir(g.impConf)), q("security/conf.d"),
			shellQuote(filepath.Join(base, "impconf")), q("imp/conf.d"))
	}
	script += fmt.Sprintf("exec setpriv --reuid=%d --regid=%d --clear-groups \"$@\"\n", ouid, ogid)

	sctx, scancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer scancel()
	inst, err := fluxendpoint.Start(sctx, fluxendpoint.Options{
		Prefix: []string{"unshare", "--mount", "--propagation", "private", "sh", "-c", script, "guest-ns"},
		Args:   []string{"--test-rundir=" + rundir, "--config-path=" + conf},
		Env:    env,
	})
	if err != nil {
		t.Fatal(err)
	}
	g.inst, g.uri = inst, inst.URI
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("broker stderr:\n%s", inst.Stderr())
		}
		if err := inst.Stop(time.Minute); err != nil {
			t.Error(err)
		}
	})
	g.owner = dial(t, g.uri)
	return g
}

// setIMPMaxTTL rewrites the [sign] configuration the IMP and the job
// shell read (each reads it afresh per job).
func (g *guestInstance) setIMPMaxTTL(t *testing.T, maxTTL int) {
	t.Helper()
	g.setSignConfig(t, signConfig(maxTTL))
}

// setSignConfig replaces flux-security's configuration (sign.toml) the
// IMP, the job shell and job-ingest read.
func (g *guestInstance) setSignConfig(t *testing.T, conf string) {
	t.Helper()
	if err := os.WriteFile(g.impConf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// guestResult is what guestclient printed.
type guestResult struct {
	ID      string `json:"id"`
	J       string `json:"J"`
	Error   string `json:"error"`
	Message string `json:"message"` // the broker's, when it refused
	Errno   int    `json:"errno"`
	Adjust  []struct {
		Urgency int    `json:"urgency"`
		Message string `json:"message"`
		Errno   int    `json:"errno"`
	} `json:"adjust"`
}

// submitAsGuest runs guestclient as uid 65534 with stdin in.
func (g *guestInstance) submitAsGuest(t *testing.T, mode, mungeSocket string, in []byte, flags ...string) guestResult {
	t.Helper()
	return g.submitAsGuestTo(t, g.uri, mode, mungeSocket, in, flags...)
}

// submitAsGuestTo is submitAsGuest to the broker at uri.
func (g *guestInstance) submitAsGuestTo(t *testing.T, uri, mode, mungeSocket string, in []byte, flags ...string) guestResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, g.client, append([]string{"-uri", uri, "-sign", mode, "-munge", mungeSocket}, flags...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: guestUID, Gid: guestUID}}
	cmd.Stdin = strings.NewReader(string(in))
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=/"}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("guestclient -sign %s: %v: %s", mode, err, stderrOf(err))
	}
	var r guestResult
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("guestclient output %q: %v", out, err)
	}
	return r
}

// submitOverSSH starts guestclient -sshd as the guest, logs in to it over
// ssh:// from this process and submits spec signed by job.MungeSigner on
// that connection. It returns the job and the uid the signer claimed.
func (g *guestInstance) submitOverSSH(t *testing.T, spec []byte) (job.ID, uint32) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	key, keyPEM, err := fluxtest.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, g.client, "-sshd", string(ssh.MarshalAuthorizedKey(key.PublicKey())))
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: guestUID, Gid: guestUID}}
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=/"}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = stdin.Close()
		_ = cmd.Wait()
	}()
	var srv struct {
		Addr       string `json:"addr"`
		KnownHosts string `json:"known_hosts"`
	}
	if err := json.NewDecoder(stdout).Decode(&srv); err != nil {
		t.Fatalf("guestclient -sshd: %v (stderr: %s)", err, stderr.String())
	}
	uri := "ssh://nobody@" + srv.Addr + strings.TrimPrefix(g.uri, "local://")
	c, err := flux.Dial(ctx, uri, flux.WithSSH(flux.SSHConfig{PrivateKeys: [][]byte{keyPEM}, KnownHosts: []byte(srv.KnownHosts), NoAgent: true, KeepAlive: -1}))
	if err != nil {
		t.Fatalf("dial %s: %v", uri, err)
	}
	defer c.Close()
	m := job.MungeSigner(c, g.munged.Socket)
	uid, err := m.UID(ctx)
	if err != nil {
		t.Fatal(err)
	}
	id, err := job.Submit(ctx, c, spec, job.SubmitOptions{Signer: m})
	if err != nil {
		t.Fatalf("submit over ssh as the guest: %v", err)
	}
	return id, uid
}

func stderrOf(err error) string {
	if ee, ok := err.(*exec.ExitError); ok {
		return string(ee.Stderr)
	}
	return ""
}

// outcome is how a job ended, seen by the owner: its submit userid, the
// finish status (-1 if none), and every exception note.
type outcome struct {
	userid     int64
	status     int
	exceptions []string
	logs       []string // the exec eventlog's stderr lines (IMP, shell)
}

func (g *guestInstance) outcome(t *testing.T, id string) outcome {
	t.Helper()
	jid, err := job.ParseID(id)
	if err != nil {
		t.Fatal(err)
	}
	o := outcome{status: -1, userid: -1}
	for _, ev := range events(t, g.owner, jid, "clean") {
		switch ev.Name {
		case "submit":
			if u, ok := ev.Context["userid"].(float64); ok {
				o.userid = int64(u)
			}
		case "finish":
			if s, ok := ev.Context["status"].(float64); ok {
				o.status = int(s)
			}
		case "exception":
			o.exceptions = append(o.exceptions, fmt.Sprint(ev.Context["type"], ": ", ev.Context["note"]))
		}
	}
	// What the IMP and the shell wrote to stderr is in the exec eventlog
	// ("log" entries), kept as guest.exec.eventlog once the job is over.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if w, err := job.WatchEvents(ctx, g.owner, jid, job.WatchOptions{Path: "guest.exec.eventlog"}); err == nil {
		defer w.Close()
		for {
			ev, err := w.Next()
			if err != nil {
				break
			}
			if ev.Name == "log" {
				o.logs = append(o.logs, fmt.Sprint(ev.Context["component"], ": ", ev.Context["data"]))
			}
		}
	}
	return o
}

// TestGuestMunge: a guest's job, signed with munge by the Go client, on a
// real multi-user flux-core 0.88 instance built with flux-security 0.15.
func TestGuestMunge(t *testing.T) {
	g := startGuestInstance(t)
	js, err := job.FromCommand([]string{"sh", "-c", fmt.Sprintf(`test "$(id -u)" = %d`, guestUID)},
		job.CommandOptions{Cwd: "/tmp", Environment: map[string]string{"PATH": "/usr/bin:/bin"}})
	if err != nil {
		t.Fatal(err)
	}
	spec, err := js.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	runs := g.impConf != ""

	// Accepted, as the guest; run as the guest by the IMP.
	ok := g.submitAsGuest(t, "munge", g.munged.Socket, spec)
	if ok.Error != "" || ok.ID == "" {
		t.Fatalf("munge-signed guest job refused: %+v", ok)
	}
	e, err := sign.Parse(ok.J)
	if err != nil || e.Mechanism != "munge" || e.UserID != guestUID {
		t.Fatalf("the guest's J: %+v, %v", e, err)
	}
	o := g.outcome(t, ok.ID)
	if o.userid != guestUID {
		t.Errorf("job userid %d, want %d", o.userid, guestUID)
	}
	if runs {
		if o.status != 0 || len(o.exceptions) > 0 {
			t.Errorf("guest job: status %d, exceptions %q, logs %q; want it run as uid %d (status 0)", o.status, o.exceptions, o.logs, guestUID)
		}
	} else if len(o.exceptions) == 0 || !strings.Contains(o.exceptions[0], "IMP") {
		t.Errorf("guest job without an IMP: %+v", o)
	}

	// Over ssh://: this process (root) logs in as the guest to an SSH
	// server running as the guest; the credential comes through that SSH
	// connection (a forwarded unix socket) from munged, which sees the
	// guest, not this process.
	sshID, sshUID := g.submitOverSSH(t, spec)
	if sshUID != guestUID {
		t.Errorf("over ssh the signer learned uid %d, want the SSH user's %d", sshUID, guestUID)
	}
	if o := g.outcome(t, sshID.String()); o.userid != guestUID || (runs && o.status != 0) {
		t.Errorf("job submitted over ssh: %+v", o)
	}

	// Refused by job-ingest, with the broker's own message.
	refused := []struct {
		name, mode string
		in         []byte
		want       string
	}{
		{"none as a guest", "none", spec, "only instance owner can use sign-type=none"},
		{"claiming another uid", "munge-as=0", spec, fmt.Sprintf("signer=0 != requestor=%d", guestUID)},
	}
	// The owner's (root's) own munge-signed J, replayed by the guest.
	rootJ, err := (&sign.Munge{Client: &munge.Client{Socket: g.munged.Socket}}).Wrap(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	refused = append(refused, struct {
		name, mode string
		in         []byte
		want       string
	}{"another user's J", "presigned", []byte(rootJ), fmt.Sprintf("signer=0 != requestor=%d", guestUID)})
	for _, c := range refused {
		r := g.submitAsGuest(t, c.mode, g.munged.Socket, c.in)
		if r.ID != "" || !strings.Contains(r.Error, c.want) {
			t.Errorf("%s: %+v, want refused with %q", c.name, r, c.want)
		}
	}

	// Owner-only powers: the broker's refusals are the ones
	// job.GuestRefusal predicts, word for word.
	for _, c := range []struct {
		flags []string
		opts  job.SubmitOptions
	}{
		{[]string{"-urgency", "17"}, job.SubmitOptions{Urgency: job.Urgency(17), Signer: &sign.Munge{}}},
		{[]string{"-waitable"}, job.SubmitOptions{Waitable: true, Signer: &sign.Munge{}}},
	} {
		r := g.submitAsGuest(t, "munge", g.munged.Socket, spec, c.flags...)
		want := job.GuestRefusal(c.opts)
		if r.ID != "" || r.Message == "" || want == nil || !strings.Contains(want.Error(), ": "+r.Message+":") || !errors.Is(want, syscall.Errno(r.Errno)) {
			t.Errorf("%v: broker %q (errno %d), GuestRefusal %v", c.flags, r.Message, r.Errno, want)
		}
	}

	if !runs {
		t.Skip("no IMP: the signature checks that happen when the job starts are not exercised")
	}

	// Signatures that job-ingest does not check (flux-core 0.88 unwraps J
	// with FLUX_SIGN_NOVERIFY): accepted at submission, refused by the IMP
	// when the job starts, and the job never runs as the guest.
	other := mungetest.Start(t, mungetest.Options{}) // another key: another realm's munged
	foreign := g.submitAsGuest(t, "munge", other.Socket, spec)
	// Another valid jobspec under the first job's credential.
	other2, err := job.FromCommand([]string{"sh", "-c", "echo forged"}, job.CommandOptions{Cwd: "/tmp"})
	if err != nil {
		t.Fatal(err)
	}
	forged, err := other2.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	swapped := e.Signed[:strings.IndexByte(e.Signed, '.')+1] + base64.StdEncoding.EncodeToString(forged) + "." + e.Signature
	atStart := []struct {
		name string
		r    guestResult
		want string
	}{
		{"credential of another munged", foreign, "munge_decode"},
		{"payload swapped under a valid credential", g.submitAsGuest(t, "presigned", "", []byte(swapped)), "SHA256 hash mismatch"},
	}
	for _, c := range atStart {
		if c.r.ID == "" {
			t.Errorf("%s: refused at submission (%s); flux-core 0.88 checks it only at start", c.name, c.r.Error)
			continue
		}
		o := g.outcome(t, c.r.ID)
		if o.status == 0 || !containsAny(append(o.exceptions, o.logs...), c.want) {
			t.Errorf("%s: status %d exceptions %q logs %q, want it not run, and %q", c.name, o.status, o.exceptions, o.logs, c.want)
		} else {
			t.Logf("%s: refused when starting: exceptions %q, IMP: %q", c.name, o.exceptions, o.logs)
		}
	}

	// Replay: the same J again. munged reports a second decode as a replay,
	// but flux-security accepts replays on purpose (sign_munge.c: max-ttl is
	// its replay protection), so the job is accepted and runs again.
	replay := g.submitAsGuest(t, "presigned", "", []byte(ok.J))
	if replay.ID == "" {
		t.Fatalf("replayed J refused at submission: %s", replay.Error)
	}
	if o := g.outcome(t, replay.ID); o.status != 0 {
		t.Errorf("replayed J within max-ttl: status %d exceptions %q (flux-security 0.15 accepts it)", o.status, o.exceptions)
	}

	// Expired: max-ttl -100 (flux-security's value for tests) makes every
	// credential too old for the IMP.
	g.setIMPMaxTTL(t, -100)
	defer g.setIMPMaxTTL(t, 60)
	expired := g.submitAsGuest(t, "munge", g.munged.Socket, spec)
	if expired.ID == "" {
		t.Fatalf("refused at submission: %s", expired.Error)
	}
	if o := g.outcome(t, expired.ID); o.status == 0 || !containsAny(append(o.exceptions, o.logs...), "max-ttl exceeded") {
		t.Errorf("expired credential: status %d exceptions %q logs %q, want max-ttl exceeded", o.status, o.exceptions, o.logs)
	} else {
		t.Logf("expired: refused when starting: exceptions %q, IMP: %q", o.exceptions, o.logs)
	}
}

func containsAny(list []string, sub string) bool {
	for _, s := range list {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}
