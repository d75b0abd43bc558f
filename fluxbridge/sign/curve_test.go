package sign_test

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/sign"
)

// issue makes a user certificate for userid issued by ca, with the
// metadata flux-security's CA gives one (libca ca_sign) and ca's
// signature, valid from nvb for ttl.
func issue(t *testing.T, ca *sign.Cert, userid int64, nvb time.Time, ttl time.Duration) *sign.Cert {
	t.Helper()
	c, err := sign.NewCert()
	if err != nil {
		t.Fatal(err)
	}
	ts := func(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05Z") }
	c.SetMeta("uuid", sign.KindString, fmt.Sprintf("6e0c1c4c-6f6a-4c3a-9d2e-%012d", userid))
	c.SetMeta("userid", sign.KindInt64, fmt.Sprint(userid))
	c.SetMeta("ctime", sign.KindTimestamp, ts(nvb))
	c.SetMeta("not-valid-before-time", sign.KindTimestamp, ts(nvb))
	c.SetMeta("xtime", sign.KindTimestamp, ts(nvb.Add(ttl)))
	c.SetMeta("max-sign-ttl", sign.KindInt64, "3600")
	c.SetMeta("domain", sign.KindString, "fluxjob.test")
	if ca != nil {
		if err := sign.SignCert(ca, c); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

func newCA(t *testing.T) *sign.Cert {
	t.Helper()
	ca, err := sign.NewCert()
	if err != nil {
		t.Fatal(err)
	}
	ca.SetMeta("ca-capability", sign.KindBool, "true")
	ca.SetMeta("domain", sign.KindString, "fluxjob.test")
	return ca
}

// curveConfig writes a flux-security configuration for curve signing
// with require-ca: the signing certificate (NAME, NAME.pub) and the CA's
// public certificate, as files of flux-security's format.
func curveConfig(t *testing.T, maxTTL int, signer, ca *sign.Cert) string {
	t.Helper()
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	write("sig.pub", signer.MarshalPublic())
	write("sig", signer.MarshalSecret())
	write("ca.pub", ca.MarshalPublic())
	if err := os.Mkdir(filepath.Join(dir, "revoke"), 0o755); err != nil {
		t.Fatal(err)
	}
	conf := fmt.Sprintf("[sign]\nmax-ttl = %d\ndefault-type = \"curve\"\nallowed-types = [ \"curve\" ]\n"+
		"[sign.curve]\nrequire-ca = true\ncert-path = %q\n"+
		"[ca]\nmax-cert-ttl = 86400\nmax-sign-ttl = 3600\ncert-path = %q\nrevoke-dir = %q\nrevoke-allow = false\ndomain = \"fluxjob.test\"\n",
		maxTTL, filepath.Join(dir, "sig"), filepath.Join(dir, "ca"), filepath.Join(dir, "revoke"))
	write("sign.toml", []byte(conf))
	return filepath.Join(dir, "*.toml")
}

// TestCurveCertFiles: a certificate written and read back in
// flux-security's TOML form is the same certificate.
func TestCurveCertFiles(t *testing.T) {
	ca := newCA(t)
	c := issue(t, ca, 1234, time.Unix(1_700_000_000, 0), time.Hour)
	got, err := sign.ParseCert(c.MarshalPublic(), c.MarshalSecret())
	if err != nil {
		t.Fatal(err)
	}
	if string(got.MarshalPublic()) != string(c.MarshalPublic()) || !got.Secret.Equal(c.Secret) {
		t.Fatalf("read back:\n%s\nwant\n%s", got.MarshalPublic(), c.MarshalPublic())
	}
	if err := sign.VerifyCert(ca, got); err != nil {
		t.Fatal(err)
	}
	other, _ := sign.NewCert()
	if _, err := sign.ParseCert(c.MarshalPublic(), other.MarshalSecret()); err == nil {
		t.Fatal("a secret key of another certificate was accepted")
	}
	for _, bad := range []string{"[curve]\npublic-key = \"AAAA\"\n", "[metadata]\n[curve]\npublic-key = \"AAAA\"\n", "[metadata]\nx = [1]\n"} {
		if _, err := sign.ParseCert([]byte(bad), nil); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}

// TestCurveAgainstLibrary: flux-security 0.15's curve mechanism
// (testdata/fsign.c, the real library, with require-ca and a CA made
// here) and this package's agree both ways: the library's envelope is
// the one Curve makes byte for byte at the same second (ed25519 is
// deterministic), each verifies the other's, and both refuse the same
// forgeries for the same reasons.
func TestCurveAgainstLibrary(t *testing.T) {
	ca := newCA(t)
	uid := int64(osGetuid())
	now := time.Now().Truncate(time.Second)
	user := issue(t, ca, uid, now.Add(-time.Minute), time.Hour)
	config := curveConfig(t, 600, user, ca)
	payload := []byte(`{"version":1,"resources":[],"tasks":[],"attributes":{"system":{"duration":0}}}`)
	verifier := &sign.CurveVerifier{CA: ca, MaxTTL: 600 * time.Second}
	ctx := context.Background()

	// library -> Go
	libJ := strings.TrimSpace(libWrap(t, config, "curve", uid, payload))
	e, err := sign.Unwrap(ctx, libJ, map[string]sign.Verifier{sign.MechCurve: verifier})
	if err != nil {
		t.Fatalf("the library's curve envelope does not verify here: %v", err)
	}
	if string(e.Payload) != string(payload) || e.UserID != uid || e.Mechanism != sign.MechCurve {
		t.Fatalf("unwrapped %+v", e)
	}
	var ctime time.Time
	for _, f := range e.Header {
		if f.Key == "curve.ctime" {
			ctime, _ = time.Parse("2006-01-02T15:04:05Z", f.Value)
		}
	}
	signer := &sign.Curve{Cert: user, UserID: uint32(uid), MaxTTL: 600 * time.Second, Now: func() time.Time { return ctime }}
	goJ, err := signer.Wrap(ctx, payload)
	if err != nil {
		t.Fatal(err)
	}
	if goJ != libJ {
		hdr := func(j string) string {
			b, _ := base64.StdEncoding.DecodeString(strings.Split(j, ".")[0])
			return strings.ReplaceAll(string(b), "\x00", "|")
		}
		t.Fatalf("envelopes differ:\nGo:      %s\nlibrary: %s", hdr(goJ), hdr(libJ))
	}

	// Go -> library, and forgeries.
	signer.Now = nil
	fresh, err := signer.Wrap(ctx, payload)
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(fresh, ".")
	swapped := parts[0] + "." + base64.StdEncoding.EncodeToString([]byte(`{"version":1,"evil":true}`)) + "." + parts[2]
	selfMade := issue(t, nil, uid, now.Add(-time.Minute), time.Hour) // no CA signature
	otherCA := issue(t, newCA(t), uid, now.Add(-time.Minute), time.Hour)
	wrap := func(c *sign.Cert, claim int64, at time.Time) string {
		j, err := (&sign.Curve{Cert: c, UserID: uint32(claim), MaxTTL: 600 * time.Second, Now: func() time.Time { return at }}).Wrap(ctx, payload)
		if err != nil {
			t.Fatal(err)
		}
		return j
	}
	notYet := issue(t, ca, uid, now.Add(time.Hour), time.Hour)
	cases := []struct {
		name, j, want string
	}{
		{"fresh", fresh, ""},
		{"payload swapped", swapped, "verification failure"},
		{"no CA signature", wrap(selfMade, uid, now), "ca: signature verification failed"},
		{"another CA", wrap(otherCA, uid, now), "ca: signature verification failed"},
		{"claims another uid", wrap(user, uid+1, now), "ca: userid mismatch"},
		{"signed 20 minutes ago (max-ttl 10)", wrap(user, uid, now.Add(-20*time.Minute)), "xtime or max-ttl exceeded"},
		{"signed in the future", wrap(user, uid, now.Add(10*time.Minute)), "ctime is in the future"},
		{"cert not valid yet", wrap(notYet, uid, now), "ca: cert is not yet valid"},
		{"signed 2 hours ago (max-sign-ttl 1h)", wrap(user, uid, now.Add(-2*time.Hour)), "ca: max-sign-ttl exceeded"},
	}
	js := make([]string, len(cases))
	for i, c := range cases {
		js[i] = c.j
	}
	lib := libUnwrap(t, config, true, js)
	for i, c := range cases {
		_, goErr := sign.Unwrap(ctx, c.j, map[string]sign.Verifier{sign.MechCurve: verifier})
		switch {
		case c.want == "":
			if goErr != nil || lib[i].Err != "" || lib[i].Payload != base64.StdEncoding.EncodeToString(payload) {
				t.Errorf("%s: Go %v, library %+v; want both to verify", c.name, goErr, lib[i])
			}
		default:
			if goErr == nil || !strings.Contains(goErr.Error(), c.want) || !strings.Contains(lib[i].Err, c.want) {
				t.Errorf("%s: Go %v, library %q; want both %q", c.name, goErr, lib[i].Err, c.want)
			}
		}
	}
	_ = ed25519.PublicKeySize
}
