// Package sign is flux-security's signed envelope ("J") in pure Go: the
// form in which a jobspec reaches flux-core's job-ingest, saying which user
// submits it and proving it with a signature the instance trusts. It is
// byte-compatible with flux-security 0.15 (flux_sign_wrap_as and
// flux_sign_unwrap_anymech) for the mechanisms "none", "munge" and
// "curve" (curve.go).
//
// An envelope is three parts joined by '.':
//
//	base64(HEADER) "." base64(PAYLOAD) "." SIGNATURE
//
// with base64 the standard alphabet, padded. HEADER is a kv dictionary
// (see Field) of "version" (integer 1), "mechanism" (string) and
// "userid" (integer), in that order as flux-security writes it.
// SIGNATURE covers the bytes before the second '.':
//
//   - none: the literal "none"; only the user the verifier runs as may
//     claim it, and flux-core accepts it only from the instance owner.
//   - munge: a MUNGE credential whose payload is the byte 1 (SHA-256)
//     followed by the SHA-256 digest of HEADER.PAYLOAD. It proves the
//     user: munged writes the uid of the process that asked for it, and a
//     verifier checks it equals the header's userid and that the
//     credential is not older than its max-ttl.
//
// flux-core 0.88's job-ingest decodes the envelope without verifying the
// signature (as Parse does) and checks only that the header's userid is
// the submitting connection's and that a guest did not use "none"; the
// signature is verified where the job is run as its user (the IMP, and
// the job shell). Unwrap verifies, as they do.
//
// A Signer (None, Munge, Curve) is what job.Submit takes to wrap a jobspec as a
// given user.
package sign

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Version is the envelope header's version.
const Version = 1

// MaxSize bounds an envelope accepted by Parse and Unwrap, and a payload
// given to Wrap (a jobspec is a few KiB; a Flux message is bounded too).
const MaxSize = 64 << 20

// Mechanism names.
const (
	MechNone  = "none"
	MechMunge = "munge"
	MechCurve = "curve"
)

// ErrInvalid is wrapped by every error about a malformed envelope or a
// signature that does not verify.
var ErrInvalid = errors.New("invalid signed envelope")

// A Mechanism signs an envelope's HEADER.PAYLOAD bytes.
type Mechanism interface {
	// Name is the mechanism's name in the header ("none", "munge").
	Name() string
	// Sign returns the signature of input (base64 header, '.', base64
	// payload). A verifier reads everything after the envelope's second
	// '.' as the signature.
	Sign(ctx context.Context, input []byte) (string, error)
}

// A Signer wraps a payload (a jobspec) into a signed envelope as one user:
// what job.Submit takes (job.SubmitOptions.Signer). None and Munge are
// Signers; a controller picks one per Flux connection and account.
type Signer interface {
	Wrap(ctx context.Context, payload []byte) (string, error)
}

var b64 = base64.StdEncoding.Strict()

// A preparer is a Mechanism that adds its own entries to the header, after
// version, mechanism and userid (flux-security's mech->prep): curve.
type preparer interface {
	prep() ([]Field, error)
}

// Wrap makes an envelope of payload signed with mech, claiming userid, as
// flux_sign_wrap_as does: the same header, encoding and signed bytes.
func Wrap(ctx context.Context, mech Mechanism, userid int64, payload []byte) (string, error) {
	if userid < 0 {
		return "", fmt.Errorf("sign: wrap: userid %d: %w", userid, ErrInvalid)
	}
	if len(payload) > MaxSize {
		return "", fmt.Errorf("sign: wrap: payload of %d bytes exceeds %d: %w", len(payload), MaxSize, ErrInvalid)
	}
	fields := []Field{
		{"version", KindInt64, strconv.Itoa(Version)},
		{"mechanism", KindString, mech.Name()},
		{"userid", KindInt64, strconv.FormatInt(userid, 10)},
	}
	if p, ok := mech.(preparer); ok {
		extra, err := p.prep()
		if err != nil {
			return "", fmt.Errorf("sign: wrap: %w", err)
		}
		fields = append(fields, extra...)
	}
	hdr, err := encodeKV(fields)
	if err != nil {
		return "", fmt.Errorf("sign: wrap: %w", err)
	}
	hl, pl := b64.EncodedLen(len(hdr)), b64.EncodedLen(len(payload))
	buf := make([]byte, hl+1+pl, hl+1+pl+1+128)
	b64.Encode(buf, hdr)
	buf[hl] = '.'
	b64.Encode(buf[hl+1:], payload)
	sig, err := mech.Sign(ctx, buf)
	if err != nil {
		return "", fmt.Errorf("sign: wrap: %s: %w", mech.Name(), err)
	}
	buf = append(buf, '.')
	buf = append(buf, sig...)
	return string(buf), nil
}

// Envelope is a decoded envelope.
type Envelope struct {
	// Version, Mechanism and UserID are the header's claims.
	Version   int64
	Mechanism string
	UserID    int64
	// Header is every header entry, in order.
	Header []Field
	// Payload is the decoded payload (the jobspec).
	Payload []byte
	// Signed is HEADER.PAYLOAD as sent: the bytes the signature covers.
	Signed string
	// Signature is everything after the second '.'.
	Signature string
}

// Parse decodes an envelope without verifying its signature, as
// flux_sign_unwrap_anymech with FLUX_SIGN_NOVERIFY — what flux-core's
// job-ingest does with a submission: the same inputs are refused, with
// flux-security's reasons. The mechanism must be one flux-security knows
// (none, munge, curve).
func Parse(j string) (*Envelope, error) {
	fail := func(format string, args ...any) (*Envelope, error) {
		return nil, fmt.Errorf("sign-unwrap: "+format+": %w", append(args, ErrInvalid)...)
	}
	if len(j) > MaxSize {
		return fail("envelope of %d bytes exceeds %d", len(j), MaxSize)
	}
	// flux-security reads a C string: nothing after a NUL exists for it,
	// and job-ingest never gets one (JSON strings with NUL are refused).
	if i := strings.IndexByte(j, 0); i >= 0 {
		return fail("NUL byte at %d", i)
	}
	hdrEnd := strings.IndexByte(j, '.')
	if hdrEnd <= 0 {
		return fail("header decode error: %s", "Invalid argument")
	}
	raw, err := decodeB64(j[:hdrEnd])
	if err != nil {
		return fail("header decode error: %s", "Invalid argument")
	}
	fields, err := decodeKV(raw)
	if err != nil {
		return fail("header decode error: %s", "Invalid argument")
	}
	e := &Envelope{Header: fields}
	var ok bool
	if e.Version, ok = lookupInt64(fields, "version"); !ok {
		return fail("header version missing")
	}
	if e.Version != Version {
		return fail("header version=%d unknown", int32(e.Version))
	}
	if e.Mechanism, ok = lookup(fields, "mechanism", KindString); !ok {
		return fail("header mechanism missing")
	}
	switch e.Mechanism {
	case MechNone, MechMunge, MechCurve:
	default:
		return fail("header mechanism=%s unknown", e.Mechanism)
	}
	if e.UserID, ok = lookupInt64(fields, "userid"); !ok {
		return fail("header userid missing")
	}
	rest := j[hdrEnd+1:]
	payEnd := strings.IndexByte(rest, '.')
	if payEnd < 0 {
		return fail("payload decode error: %s", "Invalid argument")
	}
	if payEnd > 0 {
		if e.Payload, err = decodeB64(rest[:payEnd]); err != nil {
			return fail("payload decode error: %s", "Invalid argument")
		}
	}
	e.Signed = j[:hdrEnd+1+payEnd]
	e.Signature = rest[payEnd+1:]
	return e, nil
}

// decodeB64 decodes standard padded base64 as libsodium's
// sodium_base642bin (VARIANT_ORIGINAL, nothing ignored) does: strictly,
// with no line breaks (which encoding/base64 would skip).
func decodeB64(s string) ([]byte, error) {
	if strings.ContainsAny(s, "\r\n") {
		return nil, ErrInvalid
	}
	return b64.DecodeString(s)
}

// A Verifier checks an envelope's signature (the header and payload are
// already decoded).
type Verifier interface {
	Verify(ctx context.Context, e *Envelope) error
}

// Unwrap decodes an envelope and verifies its signature with the
// Verifier for its mechanism, as flux_sign_unwrap does with the
// mechanisms allowed by the configuration: a mechanism without a
// Verifier in allowed is refused ("not allowed").
func Unwrap(ctx context.Context, j string, allowed map[string]Verifier) (*Envelope, error) {
	e, err := Parse(j)
	if err != nil {
		return nil, err
	}
	v, ok := allowed[e.Mechanism]
	if !ok || v == nil {
		return nil, fmt.Errorf("sign-unwrap: header mechanism=%s not allowed: %w", e.Mechanism, ErrInvalid)
	}
	if err := v.Verify(ctx, e); err != nil {
		return nil, err
	}
	return e, nil
}

// None is the "none" mechanism and a Signer with it: the envelope claims
// UserID with no proof. flux-core's job-ingest accepts it only from the
// instance owner, whose UserID it must be.
type None struct {
	UserID uint32
}

// Name implements Mechanism.
func (None) Name() string { return MechNone }

// Sign implements Mechanism: the signature is "none".
func (None) Sign(context.Context, []byte) (string, error) { return MechNone, nil }

// Wrap implements Signer.
func (n None) Wrap(ctx context.Context, payload []byte) (string, error) {
	return Wrap(ctx, n, int64(n.UserID), payload)
}

// NoneVerifier verifies "none" envelopes as the user UID: the header must
// claim UID and the signature be "none" (flux-security compares with the
// verifying process's real uid).
type NoneVerifier struct {
	UID uint32
}

// Verify implements Verifier.
func (v NoneVerifier) Verify(_ context.Context, e *Envelope) error {
	if e.UserID != int64(v.UID) {
		return fmt.Errorf("sign-none-verify: header userid %d != real %d: %w", e.UserID, v.UID, ErrInvalid)
	}
	if e.Signature != MechNone {
		return fmt.Errorf("sign-none-verify: signature invalid: %w", ErrInvalid)
	}
	return nil
}

// hashSHA256 is the first byte of a munge signature's payload: the
// digest that follows is SHA-256.
const hashSHA256 = 1

// mungeDigest is what a munge signature's credential carries for input.
func mungeDigest(input []byte) []byte {
	sum := sha256.Sum256(input)
	return append([]byte{hashSHA256}, sum[:]...)
}

// checkMungeDigest compares a credential's payload with input's digest,
// with flux-security's reasons.
func checkMungeDigest(payload, input []byte) error {
	if len(payload) == 0 || payload[0] != hashSHA256 {
		return fmt.Errorf("sign-munge-verify: unknown hash type: %w", ErrInvalid)
	}
	if !bytes.Equal(payload, mungeDigest(input)) {
		return fmt.Errorf("sign-munge-verify: SHA256 hash mismatch: %w", ErrInvalid)
	}
	return nil
}

// checkMungeTTL refuses a credential encoded more than maxTTL before now
// (whole seconds, as flux-security compares).
func checkMungeTTL(encoded time.Time, maxTTL time.Duration, now time.Time) error {
	if encoded.Unix()+int64(maxTTL/time.Second) < now.Unix() {
		return fmt.Errorf("sign-munge-verify: max-ttl exceeded: %w", ErrInvalid)
	}
	return nil
}
