// Package wire encodes and decodes flux-core messages as flux-core 0.88
// puts them on a broker's local:// unix socket.
//
// An encoded message is a list of frames followed by a fixed 20-byte header
// ("proto") frame (flux-core src/common/libflux/message.c flux_msg_encode,
// flux_msg_decode; src/common/libflux/message_iovec.c iovec_to_msg;
// src/common/libflux/message_proto.c). On a stream socket every message is
// preceded by an 8-byte prefix: the constant 0xffee0012 in the sender's
// native (little-endian on x86) byte order and the big-endian length of the
// encoded message (src/common/librouter/sendfd.c).
//
// This package only deals with bytes; the client lives in fluxbridge/flux.
package wire

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
)

// Type is a message type (header byte 2).
type Type uint8

// Message types, from flux-core src/common/libflux/message.h.
const (
	TypeRequest  Type = 0x01
	TypeResponse Type = 0x02
	TypeEvent    Type = 0x04
	TypeControl  Type = 0x08
)

// Valid reports whether t is one of the four message types flux-core accepts.
func (t Type) Valid() bool {
	switch t {
	case TypeRequest, TypeResponse, TypeEvent, TypeControl:
		return true
	}
	return false
}

// String returns the type's name as flux-core spells it.
func (t Type) String() string {
	switch t {
	case TypeRequest:
		return "request"
	case TypeResponse:
		return "response"
	case TypeEvent:
		return "event"
	case TypeControl:
		return "control"
	}
	return fmt.Sprintf("type(0x%02x)", uint8(t))
}

// Flags is the message flag byte (header byte 3).
type Flags uint8

// Message flags, from flux-core src/common/libflux/message.h (FLUX_MSGFLAG_*).
const (
	FlagTopic      Flags = 0x01
	FlagPayload    Flags = 0x02
	FlagNoResponse Flags = 0x04
	FlagRoute      Flags = 0x08
	FlagUpstream   Flags = 0x10
	FlagPrivate    Flags = 0x20
	FlagStreaming  Flags = 0x40
	FlagUser1      Flags = 0x80
)

var flagNames = [8]string{"TOPIC", "PAYLOAD", "NORESPONSE", "ROUTE", "UPSTREAM", "PRIVATE", "STREAMING", "USER1"}

// String returns the set flags joined by "|", e.g. "TOPIC|PAYLOAD|ROUTE".
func (f Flags) String() string {
	if f == 0 {
		return "0"
	}
	var parts []string
	for i, n := range flagNames {
		if f&(1<<i) != 0 {
			parts = append(parts, n)
		}
	}
	return strings.Join(parts, "|")
}

// Header and framing constants.
const (
	// ProtoMagic is the first byte of the header frame.
	ProtoMagic = 0x8e
	// ProtoVersion is the second byte of the header frame.
	ProtoVersion = 0x01
	// HeaderSize is the size of the header frame.
	HeaderSize = 20
	// StreamMagic starts every message on a stream socket, written in
	// little-endian order (bytes 12 00 ee ff) as flux-core on x86 does.
	StreamMagic uint32 = 0xffee0012
	// PrefixSize is the size of the stream prefix (magic + length).
	PrefixSize = 8
	// DefaultMaxSize is the largest encoded message a Reader accepts when
	// it is given no limit: 4 MiB. A broker is untrusted input and the
	// client runs in a 256 MiB container with a Reader per connection,
	// several connections per Flux instance. What a client legitimately
	// receives is far smaller: one eventlog entry per eventlog-watch
	// response (contexts of a few hundred bytes), job-list answers of a
	// few jobs, KVS values of a few bytes, a whole main eventlog from
	// job-info.lookup (tens of KiB for a long-lived job); the largest are
	// job output entries (guest.output), one per line of output, at most
	// flux-core's 4 MiB subprocess buffer of a line without a newline
	// (rare; such an entry ends the Conn that reads it). Requests are
	// bounded by what the client sends: jobspecs of at most 256 KiB.
	DefaultMaxSize = 4 << 20
	// MaxRoutes is the most route frames a decoded message may carry.
	// flux-core adds one per broker hop (a tree-based overlay a few
	// levels deep); a client receives responses with none. The bound
	// keeps a hostile message of empty frames from costing a slice entry
	// per byte.
	MaxRoutes = 32

	// UserIDUnknown is FLUX_USERID_UNKNOWN: what a client puts in userid.
	UserIDUnknown uint32 = 0xffffffff
	// RoleNone is FLUX_ROLE_NONE: what a client puts in rolemask.
	RoleNone uint32 = 0
	// NodeIDAny is FLUX_NODEID_ANY: a request's destination when any rank will do.
	NodeIDAny uint32 = 0xffffffff
	// MatchtagNone is FLUX_MATCHTAG_NONE, used by requests that expect no response.
	MatchtagNone uint32 = 0
)

// Sentinel errors returned (wrapped, with detail) by decoding functions.
var (
	// ErrBadMagic: a stream prefix did not start with StreamMagic.
	ErrBadMagic = errors.New("wire: bad stream magic")
	// ErrTooLarge: a length field exceeds the configured maximum (or 32 bits).
	ErrTooLarge = errors.New("wire: message too large")
	// ErrTruncated: the data ended inside a frame, a message, or before a
	// frame that the flags require.
	ErrTruncated = errors.New("wire: truncated message")
	// ErrBadHeader: the header frame is malformed (magic, version, size,
	// type) or the frames do not agree with the flags.
	ErrBadHeader = errors.New("wire: bad message header")
	// ErrMalformed: a Reader read a whole message (as long as its length
	// prefix said) whose frames or header do not decode; the error also
	// matches ErrBadHeader or ErrTruncated. Unlike a stream that ended
	// inside a message, this is the sender's fault.
	ErrMalformed = errors.New("wire: malformed message")
	// ErrNoPayload: DecodeJSON was called on a message without a payload.
	ErrNoPayload = errors.New("wire: message has no payload")
)

// maxFrames is the most frames a message can have: MaxRoutes routes, the
// route delimiter, topic, payload and header.
const maxFrames = MaxRoutes + 4

// topicCache hands out the same string for the same topic bytes: a
// connection sees a handful of topics, and a string per message is an
// allocation per message. It is bounded; not safe for concurrent use.
type topicCache struct{ m map[string]string }

// topicCacheSize bounds a topicCache; it is emptied when full.
const topicCacheSize = 64

func (c *topicCache) get(b []byte) string {
	if c == nil {
		return string(b)
	}
	if s, ok := c.m[string(b)]; ok {
		return s
	}
	s := string(b)
	if c.m == nil || len(c.m) >= topicCacheSize {
		c.m = make(map[string]string)
	}
	c.m[s] = s
	return s
}

// Message is one flux message. Which optional frames are encoded is decided
// by Flags (FlagRoute, FlagTopic, FlagPayload), exactly as on the wire;
// AppendBinary refuses a Message whose fields and flags disagree.
type Message struct {
	Type  Type
	Flags Flags
	// Routes is the route stack (only with FlagRoute). flux-core clients
	// send FlagRoute with no routes: just the empty delimiter frame.
	Routes []string
	// Topic is the topic string (only with FlagTopic).
	Topic string
	// Payload holds the payload frame's bytes exactly (only with
	// FlagPayload). JSON payloads and error strings carry a trailing NUL.
	Payload []byte
	// UserID and Rolemask are the credentials fields.
	UserID, Rolemask uint32
	// Aux1 is the nodeid of a request, the errnum of a response and the
	// sequence number of an event. Aux2 is the matchtag.
	Aux1, Aux2 uint32
}

// NewRequest returns a request as flux-core's clients send it: flags
// TOPIC|ROUTE (and PAYLOAD when payload is non-nil), userid unknown,
// rolemask none, nodeid any, the given matchtag.
func NewRequest(topic string, payload []byte, matchtag uint32) *Message {
	m := &Message{
		Type:     TypeRequest,
		Flags:    FlagTopic | FlagRoute,
		Topic:    topic,
		UserID:   UserIDUnknown,
		Rolemask: RoleNone,
		Aux1:     NodeIDAny,
		Aux2:     matchtag,
	}
	if payload != nil {
		m.Flags |= FlagPayload
		m.Payload = payload
	}
	return m
}

// NewResponse returns a success response to req carrying payload (nil: no
// payload frame). It keeps req's routes, topic, matchtag, credentials and
// STREAMING flag, as flux_response_derive does.
func NewResponse(req *Message, payload []byte) *Message {
	m := &Message{
		Type:     TypeResponse,
		Flags:    req.Flags &^ (FlagPayload | FlagNoResponse),
		Routes:   append([]string(nil), req.Routes...),
		Topic:    req.Topic,
		UserID:   req.UserID,
		Rolemask: req.Rolemask,
		Aux2:     req.Aux2,
	}
	if payload != nil {
		m.Flags |= FlagPayload
		m.Payload = payload
	}
	return m
}

// NewErrorResponse returns an error response to req with the errno and,
// when text is non-empty, the NUL-terminated error string as payload.
func NewErrorResponse(req *Message, errnum uint32, text string) *Message {
	var p []byte
	if text != "" {
		p = append([]byte(text), 0)
	}
	m := NewResponse(req, p)
	m.Aux1 = errnum
	return m
}

// Errnum returns a response's errno (aux1); 0 means success.
func (m *Message) Errnum() uint32 { return m.Aux1 }

// NodeID returns a request's destination node id (aux1).
func (m *Message) NodeID() uint32 { return m.Aux1 }

// Seq returns an event's sequence number (aux1).
func (m *Message) Seq() uint32 { return m.Aux1 }

// Matchtag returns the matchtag (aux2).
func (m *Message) Matchtag() uint32 { return m.Aux2 }

// PayloadString returns the payload as a string without its trailing NUL.
func (m *Message) PayloadString() string {
	return string(trimNUL(m.Payload))
}

// DecodeJSON unmarshals the JSON payload (trailing NUL ignored) into v.
func (m *Message) DecodeJSON(v any) error {
	if m.Flags&FlagPayload == 0 {
		return fmt.Errorf("decode %s %q: %w", m.Type, m.Topic, ErrNoPayload)
	}
	if err := json.Unmarshal(trimNUL(m.Payload), v); err != nil {
		return fmt.Errorf("decode %s %q payload: %w", m.Type, m.Topic, err)
	}
	return nil
}

// String summarises the message for logs (payload abbreviated).
func (m *Message) String() string {
	p := m.PayloadString()
	if len(p) > 120 {
		p = p[:120] + "..."
	}
	return fmt.Sprintf("%s flags=%s topic=%q userid=0x%x rolemask=0x%x aux1=0x%x matchtag=%d routes=%q payload=%q",
		m.Type, m.Flags, m.Topic, m.UserID, m.Rolemask, m.Aux1, m.Aux2, m.Routes, p)
}

func trimNUL(b []byte) []byte {
	if n := len(b); n > 0 && b[n-1] == 0 {
		return b[:n-1]
	}
	return b
}

// JSONPayload marshals v to JSON and appends the NUL terminator flux-core
// expects. HTML characters are not escaped (jansson does not escape them).
func JSONPayload(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, fmt.Errorf("wire: encode JSON payload: %w", err)
	}
	b := buf.Bytes()
	b[len(b)-1] = 0 // Encode ends with '\n'
	return b, nil
}

// frameLen returns the encoded size of a frame of n data bytes: one length
// byte below 255, else 0xff and a 4-byte big-endian length (message.c
// encode_frame).
func frameLen(n int) int {
	if n < 0xff {
		return 1 + n
	}
	return 5 + n
}

func appendFrame(b []byte, data []byte) []byte {
	if len(data) < 0xff {
		b = append(b, byte(len(data)))
	} else {
		b = append(b, 0xff)
		b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	}
	return append(b, data...)
}

func appendStringFrame(b []byte, s string) []byte {
	if len(s) < 0xff {
		b = append(b, byte(len(s)))
	} else {
		b = append(b, 0xff)
		b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
	}
	return append(b, s...)
}

// check validates that m can be encoded and returns its encoded size.
func (m *Message) check() (int, error) {
	if !m.Type.Valid() {
		return 0, fmt.Errorf("%w: invalid type 0x%02x", ErrBadHeader, uint8(m.Type))
	}
	size := frameLen(HeaderSize)
	if m.Flags&FlagRoute != 0 {
		if len(m.Routes) > MaxRoutes {
			return 0, fmt.Errorf("%w: %d routes, at most %d", ErrTooLarge, len(m.Routes), MaxRoutes)
		}
		size += frameLen(0)
		for _, r := range m.Routes {
			if r == "" {
				return 0, fmt.Errorf("%w: empty route id", ErrBadHeader)
			}
			if len(r) > math.MaxUint32 {
				return 0, fmt.Errorf("%w: route id of %d bytes", ErrTooLarge, len(r))
			}
			size += frameLen(len(r))
		}
	} else if len(m.Routes) > 0 {
		return 0, fmt.Errorf("%w: routes without ROUTE flag", ErrBadHeader)
	}
	if m.Flags&FlagTopic != 0 {
		if len(m.Topic) > math.MaxUint32 {
			return 0, fmt.Errorf("%w: topic of %d bytes", ErrTooLarge, len(m.Topic))
		}
		size += frameLen(len(m.Topic))
	} else if m.Topic != "" {
		return 0, fmt.Errorf("%w: topic without TOPIC flag", ErrBadHeader)
	}
	if m.Flags&FlagPayload != 0 {
		if len(m.Payload) > math.MaxUint32 {
			return 0, fmt.Errorf("%w: payload of %d bytes", ErrTooLarge, len(m.Payload))
		}
		size += frameLen(len(m.Payload))
	} else if len(m.Payload) > 0 {
		return 0, fmt.Errorf("%w: payload without PAYLOAD flag", ErrBadHeader)
	}
	if size > math.MaxUint32 {
		return 0, fmt.Errorf("%w: %d bytes", ErrTooLarge, size)
	}
	return size, nil
}

// EncodedSize returns the size of m's encoding without the stream prefix.
func (m *Message) EncodedSize() (int, error) { return m.check() }

// AppendBinary appends m's encoding (frames and header, no stream prefix)
// to b. It implements encoding.BinaryAppender.
func (m *Message) AppendBinary(b []byte) ([]byte, error) {
	size, err := m.check()
	if err != nil {
		return b, err
	}
	b = grow(b, size)
	return m.appendUnchecked(b), nil
}

func grow(b []byte, n int) []byte {
	// slices.Grow grows geometrically, so appending many messages to one
	// buffer (a connection's write queue) copies each byte O(1) times.
	return slices.Grow(b, n)
}

func (m *Message) appendUnchecked(b []byte) []byte {
	if m.Flags&FlagRoute != 0 {
		for _, r := range m.Routes {
			b = appendStringFrame(b, r)
		}
		b = append(b, 0)
	}
	if m.Flags&FlagTopic != 0 {
		b = appendStringFrame(b, m.Topic)
	}
	if m.Flags&FlagPayload != 0 {
		b = appendFrame(b, m.Payload)
	}
	b = append(b, HeaderSize, ProtoMagic, ProtoVersion, byte(m.Type), byte(m.Flags))
	b = binary.BigEndian.AppendUint32(b, m.UserID)
	b = binary.BigEndian.AppendUint32(b, m.Rolemask)
	b = binary.BigEndian.AppendUint32(b, m.Aux1)
	b = binary.BigEndian.AppendUint32(b, m.Aux2)
	return b
}

// MarshalBinary returns m's encoding (frames and header, no stream prefix).
func (m *Message) MarshalBinary() ([]byte, error) {
	return m.AppendBinary(nil)
}

// UnmarshalBinary decodes one encoded message (no stream prefix) into m,
// replacing its contents. The payload is copied out of data.
//
// Unlike flux-core, which ignores surplus frames, it rejects frames the
// flags do not account for, so that every accepted message re-encodes to
// the same bytes when its frame lengths are in canonical form.
func (m *Message) UnmarshalBinary(data []byte) error {
	return m.unmarshal(data, nil, false)
}

// unmarshal is UnmarshalBinary taking the topic string from topics when it
// holds it (nil: always allocate). With own, data belongs to the message
// from now on and the payload is not copied out of it.
func (m *Message) unmarshal(data []byte, topics *topicCache, own bool) error {
	// Split frames. A message has at most MaxRoutes routes, their
	// delimiter, a topic, a payload and the header: more frames than that
	// is refused before they cost anything (every frame takes at least
	// one byte, so a hostile message could otherwise hold one per byte).
	var (
		frames [8][]byte // enough for messages with up to 4 routes
		fs     = frames[:0]
	)
	for p := 0; p < len(data); {
		if len(fs) == maxFrames {
			return fmt.Errorf("%w: more than %d frames", ErrBadHeader, maxFrames)
		}
		n := int(data[p])
		p++
		if n == 0xff {
			if len(data)-p < 4 {
				return fmt.Errorf("%w: frame length field cut at offset %d", ErrTruncated, p-1)
			}
			n64 := uint64(binary.BigEndian.Uint32(data[p:]))
			p += 4
			if n64 > uint64(len(data)-p) {
				return fmt.Errorf("%w: frame of %d bytes at offset %d, %d left", ErrTruncated, n64, p-5, len(data)-p)
			}
			n = int(n64)
		} else if n > len(data)-p {
			return fmt.Errorf("%w: frame of %d bytes at offset %d, %d left", ErrTruncated, n, p-1, len(data)-p)
		}
		fs = append(fs, data[p:p+n])
		p += n
	}
	if len(fs) == 0 {
		return fmt.Errorf("%w: no frames", ErrTruncated)
	}
	h := fs[len(fs)-1]
	fs = fs[:len(fs)-1]
	if len(h) != HeaderSize {
		return fmt.Errorf("%w: header frame of %d bytes, want %d", ErrBadHeader, len(h), HeaderSize)
	}
	if h[0] != ProtoMagic || h[1] != ProtoVersion {
		return fmt.Errorf("%w: magic 0x%02x version %d", ErrBadHeader, h[0], h[1])
	}
	t := Type(h[2])
	if !t.Valid() {
		return fmt.Errorf("%w: invalid type 0x%02x", ErrBadHeader, h[2])
	}
	out := Message{
		Type:     t,
		Flags:    Flags(h[3]),
		UserID:   binary.BigEndian.Uint32(h[4:]),
		Rolemask: binary.BigEndian.Uint32(h[8:]),
		Aux1:     binary.BigEndian.Uint32(h[12:]),
		Aux2:     binary.BigEndian.Uint32(h[16:]),
	}
	i := 0
	if out.Flags&FlagRoute != 0 {
		for ; i < len(fs) && len(fs[i]) > 0; i++ {
			if len(out.Routes) == MaxRoutes {
				return fmt.Errorf("%w: more than %d routes", ErrBadHeader, MaxRoutes)
			}
			out.Routes = append(out.Routes, string(fs[i]))
		}
		if i == len(fs) {
			return fmt.Errorf("%w: route delimiter missing", ErrTruncated)
		}
		i++ // delimiter
	}
	if out.Flags&FlagTopic != 0 {
		if i == len(fs) {
			return fmt.Errorf("%w: topic frame missing", ErrTruncated)
		}
		out.Topic = topics.get(fs[i])
		i++
	}
	if out.Flags&FlagPayload != 0 {
		if i == len(fs) {
			return fmt.Errorf("%w: payload frame missing", ErrTruncated)
		}
		if own {
			out.Payload = fs[i][:len(fs[i]):len(fs[i])]
		} else {
			out.Payload = append(make([]byte, 0, len(fs[i])), fs[i]...)
		}
		i++
	}
	if i != len(fs) {
		return fmt.Errorf("%w: %d frames not accounted for by flags %s", ErrBadHeader, len(fs)-i, out.Flags)
	}
	*m = out
	return nil
}
