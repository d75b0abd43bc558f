package sign

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// The "curve" mechanism (flux-security src/lib/sign_curve.c, src/libca
// sigcert.c): an ed25519 signature (libsodium crypto_sign_detached) of
// HEADER.PAYLOAD by the signer's certificate, the certificate's public
// part travelling in the header:
//
//	curve.cert.meta.KEY   the certificate's metadata, in its order
//	curve.cert.curve.public-key   base64 of the ed25519 public key
//	curve.cert.curve.signature    base64 of a CA's signature of the
//	                              certificate, if it has one
//	curve.ctime, curve.xtime      timestamps: when signed, and when the
//	                              signature expires (ctime + max-ttl)
//
// and the signature is the base64 of the 64-byte ed25519 signature. A
// verifier (the IMP, with [sign.curve] require-ca) checks the signature
// with the header's key, that a CA it trusts signed the certificate for
// the header's userid (or, without require-ca, that the certificate is the
// one in the user's ~/.flux/curve/sig.pub), and the times.

// Cert is a flux-security signing certificate: metadata, an ed25519
// public key, a CA's signature of both (optional) and, to sign, the
// secret key. Its files are flux-security's: NAME.pub ([metadata] and
// [curve] public-key, signature) and NAME ([curve] secret-key), TOML.
type Cert struct {
	// Meta is the certificate's metadata, in order (flux-security's own
	// certificates have "algorithm" = "ed25519"; a CA adds uuid,
	// userid, ctime, xtime, not-valid-before-time, max-sign-ttl...).
	Meta []Field
	// Public is the ed25519 public key.
	Public ed25519.PublicKey
	// Signature is a CA's signature of the certificate, nil if none.
	Signature []byte
	// Secret is the ed25519 secret key (libsodium's 64-byte form, which
	// is Go's), nil in a public certificate.
	Secret ed25519.PrivateKey
}

// NewCert makes a certificate with a new key pair and the metadata
// flux-security gives one (sigcert_create: algorithm = "ed25519").
func NewCert() (*Cert, error) {
	pub, sec, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("sign: curve: %w", err)
	}
	return &Cert{Meta: []Field{{"algorithm", KindString, "ed25519"}}, Public: pub, Secret: sec}, nil
}

// SetMeta sets a metadata entry (replacing one of the same key in place).
func (c *Cert) SetMeta(key string, kind byte, value string) {
	for i := range c.Meta {
		if c.Meta[i].Key == key {
			c.Meta[i] = Field{key, kind, value}
			return
		}
	}
	c.Meta = append(c.Meta, Field{key, kind, value})
}

// UserID is the uid a CA issued the certificate for (metadata "userid").
func (c *Cert) UserID() (int64, bool) { return metaInt(c, "userid") }

// maxCertFile bounds a certificate file, as flux-security's reader does.
const maxCertFile = 1 << 20

// ParseCert reads a certificate from its public file (NAME.pub) and,
// when secret is not nil, its secret file (NAME), as sigcert_load does.
func ParseCert(public, secret []byte) (*Cert, error) {
	if len(public) > maxCertFile || len(secret) > maxCertFile {
		return nil, fmt.Errorf("sign: curve: certificate file over %d bytes: %w", maxCertFile, ErrInvalid)
	}
	tables, err := parseCertTOML(public)
	if err != nil {
		return nil, fmt.Errorf("sign: curve: public certificate: %w", err)
	}
	meta, ok := tables["metadata"]
	if !ok {
		return nil, fmt.Errorf("sign: curve: public certificate has no [metadata]: %w", ErrInvalid)
	}
	curve, ok := tables["curve"]
	if !ok {
		return nil, fmt.Errorf("sign: curve: public certificate has no [curve]: %w", ErrInvalid)
	}
	c := &Cert{}
	for _, f := range meta {
		c.Meta = append(c.Meta, f)
	}
	if c.Public, err = tomlKey(curve, "public-key", ed25519.PublicKeySize); err != nil {
		return nil, err
	}
	if _, has := lookup(curve, "signature", KindString); has {
		if c.Signature, err = tomlKey(curve, "signature", ed25519.SignatureSize); err != nil {
			return nil, err
		}
	}
	if secret != nil {
		st, err := parseCertTOML(secret)
		if err != nil {
			return nil, fmt.Errorf("sign: curve: secret certificate: %w", err)
		}
		sk, err := tomlKey(st["curve"], "secret-key", ed25519.PrivateKeySize)
		if err != nil {
			return nil, err
		}
		c.Secret = ed25519.PrivateKey(sk)
		if !bytes.Equal(c.Secret.Public().(ed25519.PublicKey), c.Public) {
			return nil, fmt.Errorf("sign: curve: the secret key is not the public certificate's: %w", ErrInvalid)
		}
	}
	return c, nil
}

func tomlKey(fields []Field, key string, size int) ([]byte, error) {
	v, ok := lookup(fields, key, KindString)
	if !ok {
		return nil, fmt.Errorf("sign: curve: certificate has no %s: %w", key, ErrInvalid)
	}
	b, err := decodeB64(v)
	if err != nil || len(b) != size {
		return nil, fmt.Errorf("sign: curve: certificate %s is not %d bytes of base64: %w", key, size, ErrInvalid)
	}
	return b, nil
}

// MarshalPublic is the certificate's public file (NAME.pub), as
// sigcert_fwrite_public writes it.
func (c *Cert) MarshalPublic() []byte {
	var b bytes.Buffer
	b.WriteString("[metadata]\n")
	for _, f := range c.Meta {
		switch f.Kind {
		case KindString:
			fmt.Fprintf(&b, "    %s = \"%s\"\n", f.Key, f.Value)
		default:
			fmt.Fprintf(&b, "    %s = %s\n", f.Key, f.Value)
		}
	}
	b.WriteString("\n[curve]\n")
	fmt.Fprintf(&b, "    public-key = \"%s\"\n", b64.EncodeToString(c.Public))
	if c.Signature != nil {
		fmt.Fprintf(&b, "    signature = \"%s\"\n", b64.EncodeToString(c.Signature))
	}
	return b.Bytes()
}

// MarshalSecret is the certificate's secret file (NAME), as
// sigcert_fwrite_secret writes it.
func (c *Cert) MarshalSecret() []byte {
	return []byte("[curve]\n    secret-key = \"" + b64.EncodeToString(c.Secret) + "\"\n")
}

// encode is the certificate's kv form (sigcert_encode): meta.KEY entries,
// curve.public-key, curve.signature.
func (c *Cert) encode() []Field {
	out := make([]Field, 0, len(c.Meta)+2)
	for _, f := range c.Meta {
		out = append(out, Field{"meta." + f.Key, f.Kind, f.Value})
	}
	out = append(out, Field{"curve.public-key", KindString, b64.EncodeToString(c.Public)})
	if c.Signature != nil {
		out = append(out, Field{"curve.signature", KindString, b64.EncodeToString(c.Signature)})
	}
	return out
}

// signedForm is what a CA signs of a certificate (sigcert_sign_cert):
// curve.public_key (sic) and the meta.KEY entries.
func (c *Cert) signedForm() ([]byte, error) {
	fields := []Field{{"curve.public_key", KindString, b64.EncodeToString(c.Public)}}
	for _, f := range c.Meta {
		fields = append(fields, Field{"meta." + f.Key, f.Kind, f.Value})
	}
	return encodeKV(fields)
}

// SignCert signs c with the CA certificate ca (sigcert_sign_cert), setting
// c.Signature. Issuing (the metadata a CA adds) is the caller's.
func SignCert(ca, c *Cert) error {
	if ca.Secret == nil {
		return fmt.Errorf("sign: curve: the CA certificate has no secret key: %w", ErrInvalid)
	}
	m, err := c.signedForm()
	if err != nil {
		return fmt.Errorf("sign: curve: %w", err)
	}
	c.Signature = ed25519.Sign(ca.Secret, m)
	return nil
}

// VerifyCert checks that ca signed c (sigcert_verify_cert).
func VerifyCert(ca, c *Cert) error {
	m, err := c.signedForm()
	if err != nil || c.Signature == nil || !ed25519.Verify(ca.Public, m, c.Signature) {
		return fmt.Errorf("sign: curve: signature verification failed: %w", ErrInvalid)
	}
	return nil
}

// Curve is the "curve" mechanism and a Signer with it, signing with
// Cert's secret key as UserID.
type Curve struct {
	// Cert signs; it must have its secret key.
	Cert *Cert
	// UserID is the uid the envelope claims: the submitting connection's
	// user (job-ingest refuses another), whose certificate Cert is.
	UserID uint32
	// MaxTTL is the signer's sign.max-ttl: xtime = ctime + MaxTTL. Zero
	// means DefaultMaxTTL.
	MaxTTL time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Name implements Mechanism.
func (*Curve) Name() string { return MechCurve }

// prep implements preparer: the certificate and the times (op_prep).
func (c *Curve) prep() ([]Field, error) {
	if c.Cert == nil || c.Cert.Secret == nil {
		return nil, fmt.Errorf("sign: curve: no certificate with a secret key: %w", ErrInvalid)
	}
	now := time.Now
	if c.Now != nil {
		now = c.Now
	}
	ttl := c.MaxTTL
	if ttl == 0 {
		ttl = DefaultMaxTTL
	}
	ctime := now().Unix()
	xtime := ctime + int64(ttl/time.Second)
	fields := make([]Field, 0, len(c.Cert.Meta)+4)
	for _, f := range c.Cert.encode() {
		fields = append(fields, Field{"curve.cert." + f.Key, f.Kind, f.Value})
	}
	return append(fields, Field{"curve.ctime", KindTimestamp, timestamp(ctime)}, Field{"curve.xtime", KindTimestamp, timestamp(xtime)}), nil
}

// Sign implements Mechanism: the base64 ed25519 signature of input.
func (c *Curve) Sign(_ context.Context, input []byte) (string, error) {
	if c.Cert == nil || c.Cert.Secret == nil {
		return "", fmt.Errorf("no certificate with a secret key: %w", ErrInvalid)
	}
	return b64.EncodeToString(ed25519.Sign(c.Cert.Secret, input)), nil
}

// Wrap implements Signer.
func (c *Curve) Wrap(ctx context.Context, payload []byte) (string, error) {
	return Wrap(ctx, c, int64(c.UserID), payload)
}

// timestamp is flux-security's kv timestamp form (timestamp_tostr).
func timestamp(t int64) string { return time.Unix(t, 0).UTC().Format("2006-01-02T15:04:05Z") }

func parseTimestamp(s string) (int64, bool) {
	t, err := time.Parse("2006-01-02T15:04:05Z", s)
	if err != nil {
		return 0, false
	}
	return t.Unix(), true
}

// CurveVerifier verifies "curve" envelopes as flux-security's sign_curve
// does: the signature with the header's certificate key; the certificate
// signed by CA for the header's userid, signing within its max-sign-ttl
// (require-ca = true), or, with CA nil, equal to UserCert(userid) (the
// user's ~/.flux/curve/sig.pub); then xtime and ctime + MaxTTL not past,
// and ctime not in the future.
type CurveVerifier struct {
	// CA is the certificate authority's certificate (require-ca).
	CA *Cert
	// UserCert returns the certificate of a user, when CA is nil.
	UserCert func(userid int64) (*Cert, error)
	// MaxTTL is sign.max-ttl; zero means DefaultMaxTTL.
	MaxTTL time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Verify implements Verifier.
func (v *CurveVerifier) Verify(_ context.Context, e *Envelope) error {
	fail := func(msg string) error { return fmt.Errorf("sign-curve-verify: %s: %w", msg, ErrInvalid) }
	now := time.Now
	if v.Now != nil {
		now = v.Now
	}
	t := now().Unix()
	cert, ok := headerCert(e.Header)
	ctimeS, ok1 := lookup(e.Header, "curve.ctime", KindTimestamp)
	xtimeS, ok2 := lookup(e.Header, "curve.xtime", KindTimestamp)
	ctime, ok3 := parseTimestamp(ctimeS)
	xtime, ok4 := parseTimestamp(xtimeS)
	if !ok || !ok1 || !ok2 || !ok3 || !ok4 {
		return fail("incomplete header")
	}
	sig, err := decodeB64(e.Signature)
	if err != nil || len(sig) != ed25519.SignatureSize || !ed25519.Verify(cert.Public, []byte(e.Signed), sig) {
		return fail("verification failure")
	}
	if v.CA != nil {
		if capable, ok := lookup(v.CA.Meta, "ca-capability", KindBool); !ok || capable != "true" {
			return fail("ca: ca certificate lacks ca-capability")
		}
		if err := VerifyCert(v.CA, cert); err != nil {
			return fail("ca: signature verification failed")
		}
		_, hasUUID := lookup(cert.Meta, "uuid", KindString)
		nb, ok1 := metaTime(cert, "not-valid-before-time")
		_, ok2 := metaTime(cert, "ctime")
		cx, ok3 := metaTime(cert, "xtime")
		uid, ok4 := metaInt(cert, "userid")
		maxSign, ok5 := metaInt(cert, "max-sign-ttl")
		if !hasUUID || !ok1 || !ok2 || !ok3 || !ok4 || !ok5 {
			return fail("ca: required metadata is missing from cert")
		}
		if cx < t {
			return fail("ca: cert has expired")
		}
		if nb > t {
			return fail("ca: cert is not yet valid")
		}
		if uid != e.UserID {
			return fail("ca: userid mismatch")
		}
		if ctime+maxSign < t {
			return fail("ca: max-sign-ttl exceeded")
		}
	} else {
		var want *Cert
		if v.UserCert != nil {
			want, err = v.UserCert(e.UserID)
		}
		if want == nil || err != nil {
			return fail("error loading the user's cert")
		}
		if !sameCert(want, cert) {
			return fail("cert verification failed")
		}
	}
	ttl := v.MaxTTL
	if ttl == 0 {
		ttl = DefaultMaxTTL
	}
	if xtime < t || ctime+int64(ttl/time.Second) < t {
		return fail("xtime or max-ttl exceeded")
	}
	if ctime > t {
		return fail("ctime is in the future")
	}
	return nil
}

// headerCert is the certificate in an envelope's header (header_get_cert).
func headerCert(h []Field) (*Cert, bool) {
	const prefix = "curve.cert."
	c := &Cert{}
	var pub, sig string
	var hasPub, hasSig bool
	for _, f := range h {
		k, ok := strings.CutPrefix(f.Key, prefix)
		if !ok || k == "" {
			continue
		}
		switch {
		case strings.HasPrefix(k, "meta.") && len(k) > len("meta."):
			c.Meta = append(c.Meta, Field{k[len("meta."):], f.Kind, f.Value})
		case k == "curve.public-key" && f.Kind == KindString && !hasPub:
			pub, hasPub = f.Value, true
		case k == "curve.signature" && f.Kind == KindString && !hasSig:
			sig, hasSig = f.Value, true
		}
	}
	p, err := decodeB64(pub)
	if !hasPub || err != nil || len(p) != ed25519.PublicKeySize {
		return nil, false
	}
	c.Public = p
	if hasSig {
		s, err := decodeB64(sig)
		if err != nil || len(s) != ed25519.SignatureSize {
			return nil, false
		}
		c.Signature = s
	}
	return c, true
}

// sameCert is sigcert_equal for two public certificates.
func sameCert(a, b *Cert) bool {
	if !bytes.Equal(a.Public, b.Public) || len(a.Meta) != len(b.Meta) {
		return false
	}
	for _, f := range a.Meta {
		if v, ok := lookup(b.Meta, f.Key, f.Kind); !ok || v != f.Value {
			return false
		}
	}
	return true
}

func metaInt(c *Cert, key string) (int64, bool) {
	v, ok := lookup(c.Meta, key, KindInt64)
	if !ok {
		return 0, false
	}
	return parseStrtoll(v)
}

func metaTime(c *Cert, key string) (int64, bool) {
	v, ok := lookup(c.Meta, key, KindTimestamp)
	if !ok {
		return 0, false
	}
	return parseTimestamp(v)
}

// parseCertTOML reads the subset of TOML flux-security's certificate
// files use: [table] headers and KEY = VALUE lines, VALUE a basic string,
// true/false, an integer, a float or an RFC 3339 UTC timestamp; comments
// and blank lines. Each table's entries keep their order, typed as
// parse_toml_meta_set types them.
func parseCertTOML(b []byte) (map[string][]Field, error) {
	out := map[string][]Field{}
	table := ""
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 4096), maxCertFile)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		if line[0] == '[' {
			name, ok := strings.CutSuffix(line, "]")
			name = strings.TrimSpace(name[1:])
			if !ok || name == "" || strings.ContainsAny(name, "[]\" ") {
				return nil, fmt.Errorf("line %d: bad table header: %w", n, ErrInvalid)
			}
			if _, dup := out[name]; dup {
				return nil, fmt.Errorf("line %d: table %s twice: %w", n, name, ErrInvalid)
			}
			table = name
			out[table] = nil
			continue
		}
		key, raw, ok := strings.Cut(line, "=")
		key, raw = strings.TrimSpace(key), strings.TrimSpace(raw)
		if !ok || key == "" || table == "" || strings.ContainsAny(key, " \"'") {
			return nil, fmt.Errorf("line %d: not KEY = VALUE in a table: %w", n, ErrInvalid)
		}
		f, err := tomlValue(key, raw)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		if _, dup := lookup(out[table], key, f.Kind); dup {
			return nil, fmt.Errorf("line %d: key %s twice: %w", n, key, ErrInvalid)
		}
		out[table] = append(out[table], f)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%v: %w", err, ErrInvalid)
	}
	return out, nil
}

func tomlValue(key, raw string) (Field, error) {
	if i := strings.Index(raw, " #"); i >= 0 && !strings.HasPrefix(raw, "\"") {
		raw = strings.TrimSpace(raw[:i])
	}
	switch {
	case strings.HasPrefix(raw, "\""):
		s, err := strconv.Unquote(raw)
		if err != nil || strings.ContainsRune(s, 0) {
			return Field{}, fmt.Errorf("key %s: bad string: %w", key, ErrInvalid)
		}
		return Field{key, KindString, s}, nil
	case raw == "true" || raw == "false":
		return Field{key, KindBool, raw}, nil
	}
	if i, err := strconv.ParseInt(strings.ReplaceAll(raw, "_", ""), 10, 64); err == nil {
		return Field{key, KindInt64, strconv.FormatInt(i, 10)}, nil
	}
	if d, err := strconv.ParseFloat(raw, 64); err == nil && !strings.ContainsAny(raw, "xXpP") {
		return Field{key, KindDouble, strconv.FormatFloat(d, 'f', 6, 64)}, nil
	}
	if t, err := time.Parse(time.RFC3339, raw); err == nil {
		return Field{key, KindTimestamp, timestamp(t.Unix())}, nil
	}
	return Field{}, fmt.Errorf("key %s: value %q is not a string, bool, number or timestamp: %w", key, raw, ErrInvalid)
}
