// Package munge is a pure-Go client of munged, the MUNGE authentication
// daemon: it asks munged to encode a credential (what munge_encode does)
// or to decode one (munge_decode), speaking munged's own protocol on its
// unix socket. munged learns the requesting uid and gid from the socket's
// peer credentials, so a credential says who asked for it: the process
// that connected, or, through an SSH connection's forwarded socket
// (flux.Conn.DialHostSocket), the SSH user on the remote host.
//
// The protocol is MUNGE 0.5's client–server message format, version 4
// (munge src/libcommon/m_msg.c): an 11-byte header — magic 0x00606D4B,
// version, type, retry count, body length, big-endian — then a body of
// fixed-width big-endian integers and length-prefixed strings. One
// request and one response per connection.
package munge

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"
)

// DefaultSocket is munged's default socket (munge_defs.h MUNGE_SOCKET_NAME
// with RUNSTATEDIR /run, as Debian builds it).
const DefaultSocket = "/run/munge/munge.socket.2"

// Protocol constants (munge 0.5.15 src/libcommon/m_msg.h, munge_defs.h).
const (
	msgMagic   = 0x00606D4B
	msgVersion = 4
	hdrSize    = 11

	typeEncReq = 2
	typeEncRsp = 3
	typeDecReq = 4
	typeDecRsp = 5

	// MaxMessage bounds a request or response body, as munged bounds a
	// request (MUNGE_MAXIMUM_REQ_LEN, 1 MiB).
	MaxMessage = 1 << 20
	// DefaultTimeout bounds one request when the context has no deadline
	// (libmunge waits 2 s per socket read or write).
	DefaultTimeout = 5 * time.Second
)

// Error numbers munged answers with (munge.h munge_err_t).
const (
	ErrSuccess          = 0
	ErrSnafu            = 1
	ErrBadArg           = 2
	ErrBadLength        = 3
	ErrSocket           = 6
	ErrBadCred          = 8
	ErrBadVersion       = 9
	ErrBadCipher        = 10
	ErrBadMAC           = 11
	ErrBadZip           = 12
	ErrBadRealm         = 13
	ErrCredInvalid      = 14
	ErrCredExpired      = 15
	ErrCredRewound      = 16
	ErrCredReplayed     = 17
	ErrCredUnauthorized = 18
)

// UIDAny and GIDAny leave a credential's decoding unrestricted
// (MUNGE_UID_ANY, MUNGE_GID_ANY).
const (
	UIDAny = ^uint32(0)
	GIDAny = ^uint32(0)
)

// Error is munged's refusal of a request: its error number and message.
type Error struct {
	Code    int
	Message string
}

func (e *Error) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("munge: error %d", e.Code)
	}
	return fmt.Sprintf("munge: %s (%d)", e.Message, e.Code)
}

// IsCode reports whether err is a munged *Error with the given code.
func IsCode(err error, code int) bool {
	var me *Error
	return errors.As(err, &me) && me.Code == code
}

// Client asks munged for credentials. The zero value uses DefaultSocket.
// A Client holds no connection: each request dials, so it is safe for
// concurrent use.
type Client struct {
	// Socket is munged's socket path; empty means DefaultSocket. Unused
	// when Dial is set.
	Socket string
	// Dial, when set, opens the connection to munged instead of dialling
	// Socket here: flux.Conn.DialHostSocket reaches the munged of the
	// host a broker runs on, as the user the Conn logs in as.
	Dial func(ctx context.Context) (net.Conn, error)
	// Timeout bounds each request when ctx has no earlier deadline; zero
	// means DefaultTimeout.
	Timeout time.Duration
}

// EncodeOptions are munge_encode's context options. The zero value is
// munge_ctx_create's: munged's default cipher, MAC, compression and TTL,
// decodable by anyone.
type EncodeOptions struct {
	Cipher, MAC, Zip uint8  // 0 means munged's default (1 on the wire)
	TTL              uint32 // seconds; 0 means munged's default (300)
	// AuthUID and AuthGID restrict who may decode; nil means anyone.
	AuthUID, AuthGID *uint32
}

// Credential is a decoded credential: what munge_decode returns, with its
// context (MUNGE_OPT_ENCODE_TIME and so on).
type Credential struct {
	// UID and GID are the identity of the process that encoded it.
	UID, GID uint32
	// Payload is the data munged into it.
	Payload []byte
	// EncodeTime and DecodeTime are munged's clocks at encode and decode.
	EncodeTime, DecodeTime time.Time
	// TTL is the credential's time-to-live in seconds.
	TTL uint32
	// Cipher, MAC and Zip are the mechanisms it was made with.
	Cipher, MAC, Zip uint8
	// Addr is the IPv4 address of the host that encoded it, if given.
	Addr net.IP
	// AuthUID and AuthGID restrict who may decode it (UIDAny: anyone).
	AuthUID, AuthGID uint32
}

// Encode asks munged for a credential carrying payload and returns it
// ("MUNGE:...:"). The credential's uid and gid are those munged sees on
// the socket.
func (c *Client) Encode(ctx context.Context, payload []byte, opts EncodeOptions) (string, error) {
	if len(payload) > MaxMessage-64 {
		return "", fmt.Errorf("munge: encode: payload of %d bytes exceeds %d: %w", len(payload), MaxMessage-64, errTooLong)
	}
	body := make([]byte, 0, 24+len(payload))
	orDefault := func(v uint8) uint8 {
		if v == 0 {
			return 1 // MUNGE_*_DEFAULT
		}
		return v
	}
	body = append(body, orDefault(opts.Cipher), orDefault(opts.MAC), orDefault(opts.Zip), 0) // realm_len 0: no realm
	body = binary.BigEndian.AppendUint32(body, opts.TTL)
	auth := func(p *uint32) uint32 {
		if p == nil {
			return UIDAny
		}
		return *p
	}
	body = binary.BigEndian.AppendUint32(body, auth(opts.AuthUID))
	body = binary.BigEndian.AppendUint32(body, auth(opts.AuthGID))
	body = binary.BigEndian.AppendUint32(body, uint32(len(payload)))
	body = append(body, payload...)
	rsp, err := c.roundTrip(ctx, typeEncReq, typeEncRsp, body)
	if err != nil {
		return "", fmt.Errorf("munge: encode: %w", err)
	}
	d := decoder{b: rsp}
	code, msg := d.u8(), d.str8()
	data := d.bytes32()
	if d.err != nil {
		return "", fmt.Errorf("munge: encode: response: %w", d.err)
	}
	if code != ErrSuccess {
		return "", fmt.Errorf("munge: encode: %w", &Error{Code: int(code), Message: msg})
	}
	cred := string(trimNUL(data))
	if cred == "" {
		return "", fmt.Errorf("munge: encode: empty credential: %w", errProtocol)
	}
	return cred, nil
}

// Decode asks munged to decode cred. Like munge_decode, a credential that
// munged decoded but refuses (expired, rewound, replayed) is returned
// along with the *Error saying why; any other error returns nil.
func (c *Client) Decode(ctx context.Context, cred string) (*Credential, error) {
	if cred == "" {
		return nil, fmt.Errorf("munge: decode: empty credential: %w", errBadArg)
	}
	if len(cred) > MaxMessage-8 {
		return nil, fmt.Errorf("munge: decode: credential of %d bytes exceeds %d: %w", len(cred), MaxMessage-8, errTooLong)
	}
	body := make([]byte, 0, 5+len(cred))
	body = binary.BigEndian.AppendUint32(body, uint32(len(cred)+1))
	body = append(body, cred...)
	body = append(body, 0)
	rsp, err := c.roundTrip(ctx, typeDecReq, typeDecRsp, body)
	if err != nil {
		return nil, fmt.Errorf("munge: decode: %w", err)
	}
	d := decoder{b: rsp}
	code, msg := d.u8(), d.str8()
	var cr Credential
	cr.Cipher, cr.MAC, cr.Zip = d.u8(), d.u8(), d.u8()
	_ = d.str8() // realm
	cr.TTL = d.u32()
	if addr := d.bytes8(); len(addr) == 4 {
		cr.Addr = net.IP(append([]byte(nil), addr...))
	}
	cr.EncodeTime = time.Unix(int64(d.u32()), 0)
	cr.DecodeTime = time.Unix(int64(d.u32()), 0)
	cr.UID, cr.GID = d.u32(), d.u32()
	cr.AuthUID, cr.AuthGID = d.u32(), d.u32()
	cr.Payload = append([]byte(nil), d.bytes32()...)
	if d.err == nil && len(d.b) != 0 {
		d.err = fmt.Errorf("%d bytes after the payload: %w", len(d.b), errProtocol)
	}
	if d.err != nil {
		return nil, fmt.Errorf("munge: decode: response: %w", d.err)
	}
	if code != ErrSuccess {
		err := fmt.Errorf("munge: decode: %w", &Error{Code: int(code), Message: msg})
		switch code {
		case ErrCredExpired, ErrCredRewound, ErrCredReplayed:
			return &cr, err
		}
		return nil, err
	}
	return &cr, nil
}

var (
	errProtocol = errors.New("munge: protocol error")
	errTooLong  = errors.New("munge: message too long")
	errBadArg   = errors.New("munge: invalid argument")
)

// roundTrip sends one request of type typ and reads the response, which
// must be of type want.
func (c *Client) roundTrip(ctx context.Context, typ, want uint8, body []byte) ([]byte, error) {
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	nc, err := c.dial(ctx)
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	// Deadlines for the streams that have them, and closing the
	// connection when ctx ends for those that do not (an SSH channel).
	if dl, ok := ctx.Deadline(); ok {
		_ = nc.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = nc.Close() })
	defer stop()

	msg := make([]byte, 0, hdrSize+len(body))
	msg = binary.BigEndian.AppendUint32(msg, msgMagic)
	msg = append(msg, msgVersion, typ, 0) // retry 0
	msg = binary.BigEndian.AppendUint32(msg, uint32(len(body)))
	msg = append(msg, body...)
	if _, err := nc.Write(msg); err != nil {
		return nil, ctxOr(ctx, fmt.Errorf("sending request: %w", err))
	}
	var hdr [hdrSize]byte
	if _, err := io.ReadFull(nc, hdr[:]); err != nil {
		return nil, ctxOr(ctx, fmt.Errorf("reading response header: %w", err))
	}
	if m := binary.BigEndian.Uint32(hdr[0:4]); m != msgMagic {
		return nil, fmt.Errorf("response magic %#x, want %#x: %w", m, msgMagic, errProtocol)
	}
	if v := hdr[4]; v != msgVersion {
		return nil, fmt.Errorf("response version %d, want %d: %w", v, msgVersion, errProtocol)
	}
	if t := hdr[5]; t != want {
		return nil, fmt.Errorf("response type %d, want %d: %w", t, want, errProtocol)
	}
	n := binary.BigEndian.Uint32(hdr[7:11])
	if n > MaxMessage {
		return nil, fmt.Errorf("response of %d bytes exceeds %d: %w", n, MaxMessage, errTooLong)
	}
	rsp := make([]byte, n)
	if _, err := io.ReadFull(nc, rsp); err != nil {
		return nil, ctxOr(ctx, fmt.Errorf("reading response body: %w", err))
	}
	return rsp, nil
}

func (c *Client) dial(ctx context.Context) (net.Conn, error) {
	if c.Dial != nil {
		nc, err := c.Dial(ctx)
		if err != nil {
			return nil, fmt.Errorf("connecting to munged: %w", err)
		}
		return nc, nil
	}
	sock := c.Socket
	if sock == "" {
		sock = DefaultSocket
	}
	var d net.Dialer
	nc, err := d.DialContext(ctx, "unix", sock)
	if err != nil {
		return nil, fmt.Errorf("connecting to munged: %w", err)
	}
	return nc, nil
}

// ctxOr returns ctx's error, wrapping err, once ctx has ended (the
// connection was closed because of it), else err.
func ctxOr(ctx context.Context, err error) error {
	switch {
	case ctx.Err() != nil:
		return fmt.Errorf("%w (%v)", ctx.Err(), err)
	case errors.Is(err, os.ErrDeadlineExceeded):
		// the connection's deadline is ctx's, and can fire first
		return fmt.Errorf("%w (%v)", context.DeadlineExceeded, err)
	}
	return err
}

// trimNUL drops a string's NUL terminator, if sent.
func trimNUL(b []byte) []byte {
	for len(b) > 0 && b[len(b)-1] == 0 {
		b = b[:len(b)-1]
	}
	return b
}

// decoder reads a response body; the first short read sets err and makes
// every later read return zero values.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) take(n int) []byte {
	if d.err != nil {
		return nil
	}
	if n < 0 || n > len(d.b) {
		d.err = fmt.Errorf("field of %d bytes with %d left: %w", n, len(d.b), errProtocol)
		return nil
	}
	p := d.b[:n]
	d.b = d.b[n:]
	return p
}

func (d *decoder) u8() uint8 {
	if p := d.take(1); p != nil {
		return p[0]
	}
	return 0
}

func (d *decoder) u32() uint32 {
	if p := d.take(4); p != nil {
		return binary.BigEndian.Uint32(p)
	}
	return 0
}

func (d *decoder) bytes8() []byte { return d.take(int(d.u8())) }

func (d *decoder) bytes32() []byte {
	n := d.u32()
	if d.err == nil && n > uint32(len(d.b)) {
		d.err = fmt.Errorf("field of %d bytes with %d left: %w", n, len(d.b), errProtocol)
		return nil
	}
	return d.take(int(n))
}

func (d *decoder) str8() string { return string(trimNUL(d.bytes8())) }
