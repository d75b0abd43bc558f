package sign_test

import (
	"context"
	"encoding/base64"
	"errors"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/munge"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/munge/mungetest"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/sign"
)

var b64 = base64.StdEncoding

var payloads = [][]byte{
	nil,
	[]byte("a"),
	[]byte("ab"),
	[]byte("abc"),
	[]byte("\x00\xff\x10binary"),
	[]byte(`{"resources":[{"type":"slot","count":1,"label":"task","with":[{"type":"core","count":1}]}],"tasks":[{"command":["hostname"],"slot":"task","count":{"per_slot":1}}],"attributes":{"system":{"duration":0}},"version":1}`),
}

// TestWrapNone: our "none" envelopes are flux-security's, byte for byte.
func TestWrapNone(t *testing.T) {
	ctx := context.Background()
	config := secConfig(t, 60, "")
	for _, uid := range []uint32{0, 1, 1000, 65534, 4294967295} {
		for _, p := range payloads {
			got, err := sign.None{UserID: uid}.Wrap(ctx, p)
			if err != nil {
				t.Fatal(err)
			}
			if want := libWrap(t, config, "none", int64(uid), p); got != want {
				t.Errorf("uid %d payload %q:\n got %s\nwant %s", uid, p, got, want)
			}
		}
	}
}

// TestWrapNoneFixed pins the format where the library is not built.
func TestWrapNoneFixed(t *testing.T) {
	got, err := sign.None{UserID: 0}.Wrap(context.Background(), []byte("hello"))
	if err != nil {
		t.Fatal(err)
	}
	// "version\0i1\0mechanism\0snone\0userid\0i0\0" . "hello" . none
	const want = "dmVyc2lvbgBpMQBtZWNoYW5pc20Ac25vbmUAdXNlcmlkAGkwAA==.aGVsbG8=.none"
	if got != want {
		t.Fatalf("got %s\nwant %s", got, want)
	}
	e, err := sign.Parse(got)
	if err != nil || e.Mechanism != "none" || e.UserID != 0 || string(e.Payload) != "hello" || e.Signature != "none" || e.Signed+".none" != got {
		t.Fatalf("Parse: %+v, %v", e, err)
	}
}

// header builds an envelope from raw header bytes.
func env(hdr, payload, sig string) string {
	return b64.EncodeToString([]byte(hdr)) + "." + b64.EncodeToString([]byte(payload)) + "." + sig
}

const goodHdr = "version\x00i1\x00mechanism\x00snone\x00userid\x00i5\x00"

// parseCases are envelopes whose decoding (without verification) must be
// flux-security's: accepted with the same claims and payload, or refused
// with the same reason.
func parseCases() []string {
	js := []string{
		env(goodHdr, "{}", "none"),
		env(goodHdr, "", "none"),
		env(goodHdr, "{}", ""),
		env(goodHdr, "{}", "x.y.z"),
		b64.EncodeToString([]byte(goodHdr)) + "..none",
		b64.EncodeToString([]byte(goodHdr)) + ".e30=",
		b64.EncodeToString([]byte(goodHdr)),
		"",
		".",
		"..",
		".e30=.none",
		"=.e30=.none",
		"====.e30=.none",
		b64.EncodeToString([]byte(goodHdr)) + ".e30.none",
		b64.EncodeToString([]byte(goodHdr)) + ".e3==.none",
		b64.EncodeToString([]byte(goodHdr)) + ".e30==.none",
		b64.EncodeToString([]byte(goodHdr)) + ".e30=e30=.none",
		b64.EncodeToString([]byte(goodHdr)) + ".e3 0=.none",
		b64.EncodeToString([]byte(goodHdr)) + ".e3\n0=.none",
		b64.EncodeToString([]byte(goodHdr)) + ".-_-_.none",
		b64.EncodeToString([]byte(goodHdr)) + ".e31=.none", // non-zero trailing bits
		strings.TrimRight(b64.EncodeToString([]byte(goodHdr)), "=") + ".e30=.none",
		b64.EncodeToString([]byte(goodHdr)) + "=.e30=.none",
	}
	hdrs := []string{
		"",
		"\x00",
		"\x00\x00",
		goodHdr,
		"version\x00i1\x00userid\x00i5\x00mechanism\x00snone\x00", // flux-core's own order
		"version\x00i1\x00mechanism\x00smunge\x00userid\x00i5\x00",
		"version\x00i1\x00mechanism\x00scurve\x00userid\x00i5\x00",
		"version\x00i1\x00mechanism\x00snonsense\x00userid\x00i5\x00",
		"version\x00i1\x00mechanism\x00sNone\x00userid\x00i5\x00",
		"version\x00i2\x00mechanism\x00snone\x00userid\x00i5\x00",
		"version\x00i0\x00mechanism\x00snone\x00userid\x00i5\x00",
		"version\x00i4294967297\x00mechanism\x00snone\x00userid\x00i5\x00",
		"version\x00s1\x00mechanism\x00snone\x00userid\x00i5\x00",
		"version\x00i 1\x00mechanism\x00snone\x00userid\x00i5\x00",
		"version\x00i+1\x00mechanism\x00snone\x00userid\x00i5\x00",
		"version\x00i1 \x00mechanism\x00snone\x00userid\x00i5\x00",
		"version\x00i01\x00mechanism\x00snone\x00userid\x00i5\x00",
		"version\x00i0x1\x00mechanism\x00snone\x00userid\x00i5\x00",
		"version\x00i\x00mechanism\x00snone\x00userid\x00i5\x00",
		"version\x00i2\x00version\x00i1\x00mechanism\x00snone\x00userid\x00i5\x00",
		"version\x00i1\x00version\x00i2\x00mechanism\x00snone\x00userid\x00i5\x00",
		"version\x00i1\x00mechanism\x00i5\x00userid\x00i5\x00",
		"version\x00i1\x00mechanism\x00snone\x00",
		"version\x00i1\x00userid\x00i5\x00",
		"mechanism\x00snone\x00userid\x00i5\x00",
		"version\x00i1\x00mechanism\x00snone\x00userid\x00i-1\x00",
		"version\x00i1\x00mechanism\x00snone\x00userid\x00i\t\n 7\x00",
		"version\x00i1\x00mechanism\x00snone\x00userid\x00i-9223372036854775808\x00",
		"version\x00i1\x00mechanism\x00snone\x00userid\x00i9223372036854775808\x00",
		"version\x00i1\x00mechanism\x00snone\x00userid\x00i99999999999999999999\x00",
		"version\x00i1\x00mechanism\x00snone\x00userid\x00i--5\x00",
		"version\x00i1\x00mechanism\x00snone\x00userid\x00i+\x00",
		"version\x00i1\x00mechanism\x00snone\x00userid\x00s5\x00",
		"version\x00i1\x00mechanism\x00snone\x00userid\x00i5",
		"version\x00i1\x00mechanism\x00snone\x00userid\x00i5\x00\x00",
		"version\x00i1\x00mechanism\x00snone\x00userid\x00i5\x00\x00\x00",
		"version\x00i1\x00mechanism\x00snone\x00userid\x00i5\x00x\x00",
		"version\x00i1\x00mechanism\x00snone\x00userid\x00i5\x00x\x00\x00\x00",
		"\x00sx\x00version\x00i1\x00mechanism\x00snone\x00userid\x00i5\x00",
		"a\x00\x00version\x00i1\x00mechanism\x00snone\x00userid\x00i5\x00",
		"a\x00zq\x00version\x00i1\x00mechanism\x00snone\x00userid\x00i5\x00",
		"a\x00d1.5\x00b\x00btrue\x00c\x00t2020-01-01T00:00:00Z\x00" + goodHdr,
		"version\x00i1\x00mechanism\x00s\x00userid\x00i5\x00",
		"version\x00i1\x00mechanism\x00snone\x00userid\x00i5\x00\x00sx\x00",
		"version\x00i1\x00mechanism\x00snone\x00userid\x00i5\x00sx\x00\x00",
		"version\x00i1\x00\x00\x00mechanism\x00snone\x00userid\x00i5\x00",
		"version\x00i1\x00mechanism\x00snone\x00userid\x00i5\x00a\x00b\x00c\x00d\x00",
		"version\x00i1\x00mechanism\x00snone\x00userid\x00i5\x00ab\x00\x00\x00",
	}
	for _, h := range hdrs {
		js = append(js, env(h, "{}", "none"))
	}
	// Deterministic mutations of valid envelopes: truncations and
	// single-byte changes anywhere.
	rng := rand.New(rand.NewPCG(23, 0x15))
	bases := []string{env(goodHdr, `{"a":1}`, "none"), env("version\x00i1\x00mechanism\x00smunge\x00userid\x00i1000\x00", "xy", "MUNGE:AwQ=:")}
	subst := []byte("./=+-_ \n\tAQg0")
	for _, base := range bases {
		for i := 0; i <= len(base); i++ {
			js = append(js, base[:i])
		}
		for n := 0; n < 300; n++ {
			b := []byte(base)
			b[rng.IntN(len(b))] = subst[rng.IntN(len(subst))]
			js = append(js, string(b))
		}
	}
	return js
}

// TestParseMatchesLibrary decodes every case with Parse and with
// flux_sign_unwrap_anymech(FLUX_SIGN_NOVERIFY) — job-ingest's call — and
// requires the same outcome: same mechanism, userid and payload, or an
// error that starts with the library's message.
func TestParseMatchesLibrary(t *testing.T) {
	config := secConfig(t, 60, "")
	js := parseCases()
	res := libUnwrap(t, config, false, js)
	accepted := 0
	for i, j := range js {
		e, err := sign.Parse(j)
		lib := res[i]
		switch {
		case lib.Err != "" && err == nil:
			t.Errorf("%q: library refused (%s), Parse accepted %+v", j, lib.Err, e)
		case lib.Err == "" && err != nil:
			t.Errorf("%q: library accepted (%+v), Parse refused: %v", j, lib, err)
		case err != nil:
			if !strings.HasPrefix(err.Error(), lib.Err) {
				t.Errorf("%q: error %q, library's %q", j, err, lib.Err)
			}
			if !errors.Is(err, sign.ErrInvalid) {
				t.Errorf("%q: error %v does not wrap ErrInvalid", j, err)
			}
		default:
			accepted++
			if e.Mechanism != lib.Mech || strconv.FormatInt(e.UserID, 10) != lib.UserID || b64.EncodeToString(e.Payload) != lib.Payload {
				t.Errorf("%q: Parse %s %d %q, library %+v", j, e.Mechanism, e.UserID, e.Payload, lib)
			}
			if e.Signed+"."+e.Signature != j {
				t.Errorf("%q: Signed %q + Signature %q", j, e.Signed, e.Signature)
			}
		}
	}
	t.Logf("%d envelopes compared, %d accepted by both", len(js), accepted)
	if accepted < 10 || accepted == len(js) {
		t.Fatalf("%d of %d accepted: the cases do not exercise both outcomes", accepted, len(js))
	}
}

// TestNoneVerifyMatchesLibrary verifies "none" envelopes as the library
// does in this process's uid: its own claim passes, another uid or a
// signature other than "none" fails with the library's reason.
func TestNoneVerifyMatchesLibrary(t *testing.T) {
	ctx := context.Background()
	config := secConfig(t, 60, "")
	uid := uint32(osGetuid())
	js := []string{
		env(hdrFor("none", int64(uid)), "{}", "none"),
		env(hdrFor("none", int64(uid)+1), "{}", "none"),
		env(hdrFor("none", int64(uid)), "{}", "nonE"),
		env(hdrFor("none", int64(uid)), "{}", "none."),
		env(hdrFor("none", int64(uid)), "{}", ""),
	}
	res := libUnwrap(t, config, true, js)
	allowed := map[string]sign.Verifier{"none": sign.NoneVerifier{UID: uid}}
	for i, j := range js {
		e, err := sign.Unwrap(ctx, j, allowed)
		if (res[i].Err == "") != (err == nil) || (err != nil && !strings.HasPrefix(err.Error(), res[i].Err)) {
			t.Errorf("%q: Unwrap %v, %v; library %+v", j, e, err, res[i])
		}
	}
	// Not allowed: flux_sign_unwrap refuses a mechanism outside
	// allowed-types; Unwrap one without a Verifier.
	if _, err := sign.Unwrap(ctx, js[0], map[string]sign.Verifier{"munge": &sign.MungeVerifier{}}); err == nil || !strings.Contains(err.Error(), "header mechanism=none not allowed") {
		t.Fatalf("none not allowed: %v", err)
	}
}

func hdrFor(mech string, uid int64) string {
	return "version\x00i1\x00mechanism\x00s" + mech + "\x00userid\x00i" + strconv.FormatInt(uid, 10) + "\x00"
}

// TestMungeAgainstLibrary: munge envelopes made here verify in the
// library and the other way round, with a real munged; and the library
// and Unwrap refuse the same forgeries for the same reasons.
func TestMungeAgainstLibrary(t *testing.T) {
	ctx := context.Background()
	d := mungetest.Start(t, mungetest.Options{})
	mc := &munge.Client{Socket: d.Socket}
	config := secConfig(t, 60, d.Socket)
	uid := uint32(osGetuid())
	verifier := &sign.MungeVerifier{Client: mc, MaxTTL: time.Minute}
	allowed := map[string]sign.Verifier{"munge": verifier}

	signer := &sign.Munge{Client: mc} // uid learned from munged
	spec := payloads[len(payloads)-1]
	ours, err := signer.Wrap(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := signer.UID(ctx); got != uid {
		t.Fatalf("learned uid %d, want %d", got, uid)
	}
	theirs := libWrap(t, config, "munge", int64(uid), spec)
	// The same header and payload encoding (the credential differs).
	if ours[:strings.LastIndexByte(ours, '.')] != theirs[:strings.LastIndexByte(theirs, '.')] {
		t.Fatalf("signed parts differ:\n ours   %s\n theirs %s", ours, theirs)
	}

	// Forgeries, each a way a J could be made without the user's munged.
	e, _ := sign.Parse(ours)
	otherUID := &sign.Munge{Client: mc, UserID: ptr(uid + 1)} // claims another uid
	asOther, err := otherUID.Wrap(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	foreignD := mungetest.Start(t, mungetest.Options{})
	foreign, err := (&sign.Munge{Client: &munge.Client{Socket: foreignD.Socket}}).Wrap(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	tampered := env(hdrFor("munge", int64(uid)), `{"tampered":true}`, e.Signature) // the credential of another payload
	noneAsMunge := env(hdrFor("munge", int64(uid)), string(spec), "none")
	oldCred, err := mc.Encode(ctx, nil, munge.EncodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	wrongHash := e.Signed + "." + oldCred // a credential without a digest
	badHashType, _ := mc.Encode(ctx, append([]byte{2}, make([]byte, 32)...), munge.EncodeOptions{})
	cases := []struct {
		name, j, want string
	}{
		{"ours", ours, ""},
		{"theirs", libWrap(t, config, "munge", int64(uid), spec), ""},
		{"other uid claimed", asOther, "sign-munge-verify: uid mismatch"},
		{"foreign munge key", foreign, "sign-munge-verify: munge_decode: "},
		{"payload swapped", tampered, "sign-munge-verify: SHA256 hash mismatch"},
		{"no credential", noneAsMunge, "sign-munge-verify: munge_decode: "},
		{"empty digest", wrongHash, "sign-munge-verify: unknown hash type"},
		{"unknown hash type", e.Signed + "." + badHashType, "sign-munge-verify: unknown hash type"},
	}
	js := make([]string, len(cases))
	for i, c := range cases {
		js[i] = c.j
	}
	res := libUnwrap(t, config, true, js)
	// Our side decodes after the library did: replays, accepted by both.
	for i, c := range cases {
		got, err := sign.Unwrap(ctx, c.j, allowed)
		lib := res[i]
		if c.want == "" {
			if lib.Err != "" || err != nil {
				t.Errorf("%s: library %+v, Unwrap %v", c.name, lib, err)
				continue
			}
			if string(got.Payload) != string(spec) || got.UserID != int64(uid) || lib.UserID != strconv.Itoa(int(uid)) {
				t.Errorf("%s: Unwrap %+v, library %+v", c.name, got, lib)
			}
			continue
		}
		if !strings.HasPrefix(lib.Err, c.want) {
			t.Errorf("%s: library says %q, want %q", c.name, lib.Err, c.want)
		}
		if err == nil || !strings.HasPrefix(err.Error(), c.want) || !errors.Is(err, sign.ErrInvalid) {
			t.Errorf("%s: Unwrap %v, want %q", c.name, err, c.want)
		}
	}

	// Replays: munged reports the second decode of a credential as
	// replayed; flux-security accepts it anyway (sign_munge.c: "TTL
	// checking ... provides the primary replay protection"), and so does
	// Unwrap. The library decoded "ours" above; decode it twice more.
	if _, err := mc.Decode(ctx, e.Signature); !munge.IsCode(err, munge.ErrCredReplayed) {
		t.Fatalf("munged did not report the replay: %v", err)
	}
	if r := libUnwrap(t, config, true, []string{ours}); r[0].Err != "" {
		t.Fatalf("library refused a replayed envelope: %s", r[0].Err)
	}
	if _, err := sign.Unwrap(ctx, ours, allowed); err != nil {
		t.Fatalf("Unwrap refused a replayed envelope: %v", err)
	}

	// max-ttl: flux-security's test value -100 makes every credential too
	// old; our verifier's clock two minutes ahead with a one-minute
	// max-ttl does the same.
	expiredConfig := secConfig(t, -100, d.Socket)
	if r := libUnwrap(t, expiredConfig, true, []string{ours}); !strings.HasPrefix(r[0].Err, "sign-munge-verify: max-ttl exceeded") {
		t.Fatalf("library with max-ttl -100: %+v", r[0])
	}
	late := &sign.MungeVerifier{Client: mc, MaxTTL: time.Minute, Now: func() time.Time { return time.Now().Add(2 * time.Minute) }}
	if _, err := sign.Unwrap(ctx, ours, map[string]sign.Verifier{"munge": late}); err == nil || !strings.Contains(err.Error(), "sign-munge-verify: max-ttl exceeded") {
		t.Fatalf("Unwrap two minutes late: %v", err)
	}
}

func ptr[T any](v T) *T { return &v }

// TestWrapErrors: what Wrap refuses, and a mechanism's failure wrapped.
func TestWrapErrors(t *testing.T) {
	ctx := context.Background()
	if _, err := sign.Wrap(ctx, sign.None{}, -1, nil); !errors.Is(err, sign.ErrInvalid) {
		t.Errorf("negative userid: %v", err)
	}
	// A munged that is not there: the signer's error names munge.
	m := &sign.Munge{Client: &munge.Client{Socket: t.TempDir() + "/none"}}
	if _, err := m.Wrap(ctx, []byte("{}")); err == nil || !strings.Contains(err.Error(), "connecting to munged") {
		t.Errorf("no munged: %v", err)
	}
	m.UserID = ptr(uint32(5))
	if _, err := m.Wrap(ctx, []byte("{}")); err == nil || !strings.Contains(err.Error(), "sign: wrap: munge: munge: encode") {
		t.Errorf("no munged, uid given: %v", err)
	}
}

// FuzzParse: Parse never panics, and what it accepts is consistent: the
// envelope is Signed "." Signature, the claims are in Header, and the
// payload re-encodes to the envelope's payload part.
func FuzzParse(f *testing.F) {
	for _, j := range parseCases()[:120] {
		f.Add(j)
	}
	f.Fuzz(func(t *testing.T, j string) {
		e, err := sign.Parse(j)
		if err != nil {
			if !errors.Is(err, sign.ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			return
		}
		if e.Signed+"."+e.Signature != j {
			t.Fatalf("Signed %q Signature %q, envelope %q", e.Signed, e.Signature, j)
		}
		parts := strings.SplitN(e.Signed, ".", 2)
		if b64.EncodeToString(e.Payload) != parts[1] {
			t.Fatalf("payload %q re-encodes to %q, not %q", e.Payload, b64.EncodeToString(e.Payload), parts[1])
		}
		if e.Version != 1 || (e.Mechanism != "none" && e.Mechanism != "munge" && e.Mechanism != "curve") {
			t.Fatalf("accepted %+v", e)
		}
		userid := false
		for _, fl := range e.Header {
			if fl.Key == "" || strings.ContainsRune(fl.Key+fl.Value, 0) {
				t.Fatalf("header field %+v", fl)
			}
			if fl.Key == "userid" && !userid { // the first one counts
				userid = true
				n, err := strconv.ParseInt(strings.TrimLeft(fl.Value, " \t\n\v\f\r"), 10, 64)
				if err != nil || n != e.UserID {
					t.Fatalf("userid %d from %q", e.UserID, fl.Value)
				}
			}
		}
		if !userid {
			t.Fatalf("accepted without a userid: %+v", e)
		}
	})
}
