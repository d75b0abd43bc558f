package realflux

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/sign"
)

// curveCA is a flux-security certificate authority made here, and the
// files of the certificates it issued.
type curveCA struct {
	cert *sign.Cert
	dir  string // 0755: the IMP, the job shell and the guest read it
}

func newCurveCA(t *testing.T) *curveCA {
	t.Helper()
	c, err := sign.NewCert()
	if err != nil {
		t.Fatal(err)
	}
	c.SetMeta("ca-capability", sign.KindBool, "true")
	c.SetMeta("domain", sign.KindString, "fluxjob.test")
	return &curveCA{cert: c, dir: guestDir(t)}
}

// issue writes a certificate for userid (NAME.pub, and NAME owned by
// owner, mode 0600) signed by the CA (nil: by no CA), as flux-security's
// CA issues one; it returns NAME.
func (ca *curveCA) issue(t *testing.T, signer *curveCA, name string, userid int64, owner int) string {
	t.Helper()
	c, err := sign.NewCert()
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().Add(-time.Minute).UTC()
	ts := func(t time.Time) string { return t.Format("2006-01-02T15:04:05Z") }
	c.SetMeta("uuid", sign.KindString, fmt.Sprintf("0b8a2f7e-8b1c-4f7e-9a51-%012d", userid))
	c.SetMeta("userid", sign.KindInt64, fmt.Sprint(userid))
	c.SetMeta("ctime", sign.KindTimestamp, ts(now))
	c.SetMeta("not-valid-before-time", sign.KindTimestamp, ts(now))
	c.SetMeta("xtime", sign.KindTimestamp, ts(now.Add(time.Hour)))
	c.SetMeta("max-sign-ttl", sign.KindInt64, "3600")
	c.SetMeta("domain", sign.KindString, "fluxjob.test")
	if signer != nil {
		if err := sign.SignCert(signer.cert, c); err != nil {
			t.Fatal(err)
		}
	}
	p := filepath.Join(ca.dir, name)
	if err := os.WriteFile(p+".pub", c.MarshalPublic(), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, c.MarshalSecret(), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(p, owner, owner); err != nil {
		t.Fatal(err)
	}
	return p
}

// curveSignConfig is flux-security's [sign] with curve allowed (require-ca,
// this CA) besides munge.
func (ca *curveCA) signConfig(maxTTL int) string {
	if err := os.WriteFile(filepath.Join(ca.dir, "ca.pub"), ca.cert.MarshalPublic(), 0o644); err != nil {
		panic(err)
	}
	_ = os.MkdirAll(filepath.Join(ca.dir, "revoke"), 0o755)
	return fmt.Sprintf("[sign]\nmax-ttl = %d\ndefault-type = \"munge\"\nallowed-types = [ \"munge\", \"curve\" ]\n"+
		"[sign.curve]\nrequire-ca = true\n"+
		"[ca]\nmax-cert-ttl = 86400\nmax-sign-ttl = 3600\ncert-path = %q\nrevoke-dir = %q\nrevoke-allow = false\ndomain = \"fluxjob.test\"\n",
		maxTTL, filepath.Join(ca.dir, "ca"), filepath.Join(ca.dir, "revoke"))
}

// TestGuestCurve: a guest's job signed with flux-security's curve
// mechanism by this project's Go signer (sign.Curve, a certificate a CA
// issued for the guest's uid) on the real multi-user flux-core 0.88 with
// flux-security 0.15's IMP configured for curve with require-ca: accepted
// and run as the guest; a certificate of another CA, one issued for
// another uid, and a self-made one are accepted by job-ingest (which does
// not verify) and refused by the IMP, the job never running.
func TestGuestCurve(t *testing.T) {
	g := startGuestInstance(t)
	if g.impConf == "" {
		t.Skip("no IMP: curve signatures are verified only when a job starts")
	}
	ca := newCurveCA(t)
	g.setSignConfig(t, ca.signConfig(60))
	defer g.setIMPMaxTTL(t, 60)
	js, err := job.FromCommand([]string{"sh", "-c", fmt.Sprintf(`test "$(id -u)" = %d`, guestUID)},
		job.CommandOptions{Cwd: "/tmp", Environment: map[string]string{"PATH": "/usr/bin:/bin"}})
	if err != nil {
		t.Fatal(err)
	}
	spec, err := js.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	good := ca.issue(t, ca, "guest", guestUID, guestUID)
	ok := g.submitAsGuest(t, "curve", "", spec, "-cert", good)
	if ok.Error != "" || ok.ID == "" {
		t.Fatalf("curve-signed guest job refused: %+v", ok)
	}
	if e, err := sign.Parse(ok.J); err != nil || e.Mechanism != sign.MechCurve || e.UserID != guestUID {
		t.Fatalf("the guest's J: %+v, %v", e, err)
	}
	if o := g.outcome(t, ok.ID); o.userid != guestUID || o.status != 0 || len(o.exceptions) > 0 {
		t.Fatalf("curve-signed guest job: %+v; want it run as uid %d", o, guestUID)
	}

	other := newCurveCA(t)
	for _, c := range []struct {
		name, cert, want string
	}{
		{"another CA", ca.issue(t, other, "other-ca", guestUID, guestUID), "ca: signature verification failed"},
		{"issued for another uid", ca.issue(t, ca, "uid0", 0, guestUID), "ca: userid mismatch"},
		{"self-made", ca.issue(t, nil, "self", guestUID, guestUID), "ca: signature verification failed"},
	} {
		r := g.submitAsGuest(t, "curve", "", spec, "-cert", c.cert)
		if r.ID == "" {
			t.Errorf("%s: refused at submission (%s); flux-core 0.88 checks it only at start", c.name, r.Error)
			continue
		}
		o := g.outcome(t, r.ID)
		if o.status == 0 || !containsAny(append(o.exceptions, o.logs...), c.want) {
			t.Errorf("%s: status %d exceptions %q logs %q, want it not run, and %q", c.name, o.status, o.exceptions, o.logs, c.want)
		} else {
			t.Logf("%s: refused when starting: exceptions %q, IMP: %q", c.name, o.exceptions, o.logs)
		}
	}
}
