package sign

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/munge"
)

// DefaultMaxTTL is the sign.max-ttl of flux-security's shipped etc/sign.toml (2 weeks):
// how old a munge signature may be when it is verified.
const DefaultMaxTTL = 14 * 24 * time.Hour

// Munge is the "munge" mechanism and a Signer with it: the signature is a
// credential from munged (through Client) carrying the digest of the
// header and payload, so it proves the user munged saw on its socket.
//
// The header must claim that same user. UserID, when set, is it;
// otherwise the first Wrap asks munged (a credential encoded and decoded
// through Client, two requests, remembered for the Munge's lifetime), so
// that through an SSH connection's forwarded socket the claim is the
// remote account's uid without the caller knowing it.
type Munge struct {
	// Client reaches munged: the local socket, or, for an ssh:// Flux
	// instance, the remote host's through the SSH connection
	// (munge.Client.Dial = flux.Conn.DialHostSocket).
	Client *munge.Client
	// UserID is the uid munged will put in the credential; nil means ask
	// munged.
	UserID *uint32
	// Options are the credential's munge options (zero: munged's
	// defaults, as flux-security uses).
	Options munge.EncodeOptions

	mu  sync.Mutex
	uid *uint32 // learned from munged
}

// Name implements Mechanism.
func (*Munge) Name() string { return MechMunge }

// Sign implements Mechanism: a credential whose payload is the SHA-256
// hash type byte and digest of input.
func (m *Munge) Sign(ctx context.Context, input []byte) (string, error) {
	return m.client().Encode(ctx, mungeDigest(input), m.Options)
}

func (m *Munge) client() *munge.Client {
	if m.Client == nil {
		return &munge.Client{}
	}
	return m.Client
}

// Wrap implements Signer.
func (m *Munge) Wrap(ctx context.Context, payload []byte) (string, error) {
	uid, err := m.UID(ctx)
	if err != nil {
		return "", err
	}
	return Wrap(ctx, m, int64(uid), payload)
}

// UID returns the uid the credentials are made for: UserID, else the uid
// munged reports for a credential of its own.
func (m *Munge) UID(ctx context.Context) (uint32, error) {
	if m.UserID != nil {
		return *m.UserID, nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.uid != nil {
		return *m.uid, nil
	}
	c := m.client()
	cred, err := c.Encode(ctx, nil, munge.EncodeOptions{})
	if err != nil {
		return 0, fmt.Errorf("sign: munge: learning the uid: %w", err)
	}
	cr, err := c.Decode(ctx, cred)
	if err != nil {
		return 0, fmt.Errorf("sign: munge: learning the uid: %w", err)
	}
	uid := cr.UID
	m.uid = &uid
	return uid, nil
}

// MungeVerifier verifies "munge" envelopes as flux-security does: munged
// (through Client) decodes the credential — a replayed or expired
// credential still counts, flux-security relying on MaxTTL instead —
// whose payload must be the digest of the envelope's header and payload,
// whose uid must be the header's userid, and which must have been
// encoded no more than MaxTTL before Now.
type MungeVerifier struct {
	Client *munge.Client
	// MaxTTL is sign.max-ttl; zero means DefaultMaxTTL.
	MaxTTL time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Verify implements Verifier.
func (v *MungeVerifier) Verify(ctx context.Context, e *Envelope) error {
	c := v.Client
	if c == nil {
		c = &munge.Client{}
	}
	cr, err := c.Decode(ctx, e.Signature)
	if err != nil && !munge.IsCode(err, munge.ErrCredReplayed) && !munge.IsCode(err, munge.ErrCredExpired) {
		return fmt.Errorf("sign-munge-verify: munge_decode: %w: %w", err, ErrInvalid)
	}
	if err := checkMungeDigest(cr.Payload, []byte(e.Signed)); err != nil {
		return err
	}
	if e.UserID != int64(cr.UID) {
		return fmt.Errorf("sign-munge-verify: uid mismatch: %w", ErrInvalid)
	}
	maxTTL, now := v.MaxTTL, time.Now
	if maxTTL <= 0 {
		maxTTL = DefaultMaxTTL
	}
	if v.Now != nil {
		now = v.Now
	}
	return checkMungeTTL(cr.EncodeTime, maxTTL, now())
}
