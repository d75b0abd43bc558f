package testbroker

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"syscall"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
)

// obj is a JSON object that keeps its keys in the order given, so payloads
// and eventlog entries come out in the order flux-core's jansson code packs
// them (e.g. submit's context is userid, urgency, flags, version).
type obj []kv

type kv struct {
	k string
	v any
}

// MarshalJSON encodes o with its keys in order.
func (o obj) MarshalJSON() ([]byte, error) {
	return appendJSON(nil, o)
}

// real is a float64 that always encodes with a decimal point or exponent,
// as jansson's json_real does (0.0, not 0).
type real float64

// MarshalJSON encodes r like the captured broker output: the shortest
// round-trip digits in plain decimal (1795576032.443094, never an exponent),
// and ".0" when that would otherwise read as an integer.
func (r real) MarshalJSON() ([]byte, error) {
	return r.appendJSON(nil)
}

func (r real) appendJSON(b []byte) ([]byte, error) {
	f := float64(r)
	if math.IsInf(f, 0) || math.IsNaN(f) {
		return b, fmt.Errorf("testbroker: cannot encode %v as JSON", f)
	}
	start := len(b)
	b = strconv.AppendFloat(b, f, 'f', -1, 64)
	if !bytes.ContainsAny(b[start:], ".e") {
		b = append(b, '.', '0')
	}
	return b, nil
}

// marshal encodes v without HTML escaping (jansson does not escape <, >, &).
func marshal(v any) ([]byte, error) {
	return appendJSON(nil, v)
}

// appendJSON appends v's encoding to b, producing exactly the bytes
// encoding/json (without HTML escaping) would, but encoding the types the
// broker's payloads are made of by hand: the event lines and responses of
// every job are built here. Other types go through encoding/json.
func appendJSON(b []byte, v any) ([]byte, error) {
	var err error
	switch x := v.(type) {
	case nil:
		return append(b, "null"...), nil
	case string:
		return appendJSONString(b, x)
	case bool:
		return strconv.AppendBool(b, x), nil
	case int:
		return strconv.AppendInt(b, int64(x), 10), nil
	case int64:
		return strconv.AppendInt(b, x, 10), nil
	case int32:
		return strconv.AppendInt(b, int64(x), 10), nil
	case uint32:
		return strconv.AppendUint(b, uint64(x), 10), nil
	case uint64:
		return strconv.AppendUint(b, x, 10), nil
	case job.ID:
		return strconv.AppendUint(b, uint64(x), 10), nil
	case real:
		return x.appendJSON(b)
	case json.Number:
		if !isJSONNumber(string(x)) {
			break
		}
		return append(b, x...), nil
	case json.RawMessage:
		if x == nil {
			return append(b, "null"...), nil
		}
		var buf bytes.Buffer
		if err := json.Compact(&buf, x); err != nil {
			break
		}
		return append(b, buf.Bytes()...), nil
	case obj:
		b = append(b, '{')
		for i, e := range x {
			if i > 0 {
				b = append(b, ',')
			}
			if b, err = appendJSONString(b, e.k); err != nil {
				return b, err
			}
			b = append(b, ':')
			if b, err = appendJSON(b, e.v); err != nil {
				return b, fmt.Errorf("key %q: %w", e.k, err)
			}
		}
		return append(b, '}'), nil
	case []obj:
		return appendJSONArray(b, len(x), x == nil, func(b []byte, i int) ([]byte, error) { return appendJSON(b, x[i]) })
	case []any:
		return appendJSONArray(b, len(x), x == nil, func(b []byte, i int) ([]byte, error) { return appendJSON(b, x[i]) })
	case []json.RawMessage:
		return appendJSONArray(b, len(x), x == nil, func(b []byte, i int) ([]byte, error) { return appendJSON(b, x[i]) })
	case []string:
		return appendJSONArray(b, len(x), x == nil, func(b []byte, i int) ([]byte, error) { return appendJSONString(b, x[i]) })
	}
	std, err := marshalStd(v)
	if err != nil {
		return b, err
	}
	return append(b, std...), nil
}

func appendJSONArray(b []byte, n int, isNil bool, elem func([]byte, int) ([]byte, error)) ([]byte, error) {
	if isNil {
		return append(b, "null"...), nil
	}
	b = append(b, '[')
	var err error
	for i := 0; i < n; i++ {
		if i > 0 {
			b = append(b, ',')
		}
		if b, err = elem(b, i); err != nil {
			return b, err
		}
	}
	return append(b, ']'), nil
}

// appendJSONString quotes s as encoding/json does without HTML escaping.
// Plain ASCII, quotes, backslashes, newlines, carriage returns and tabs are
// escaped here; a string with other control characters or non-ASCII bytes
// goes through encoding/json (its \u escapes and UTF-8 repair).
func appendJSONString[S ~string | ~[]byte](b []byte, s S) ([]byte, error) {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 0x80 || (c < 0x20 && c != '\n' && c != '\r' && c != '\t') {
			std, err := marshalStd(string(s))
			return append(b, std...), err
		}
	}
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		var esc string
		switch s[i] {
		case '"':
			esc = `\"`
		case '\\':
			esc = `\\`
		case '\n':
			esc = `\n`
		case '\r':
			esc = `\r`
		case '\t':
			esc = `\t`
		default:
			continue
		}
		b = append(b, s[start:i]...)
		b = append(b, esc...)
		start = i + 1
	}
	b = append(b, s[start:]...)
	return append(b, '"'), nil
}

// isJSONNumber reports whether s is a number in JSON's grammar
// (RFC 8259 section 6), as encoding/json requires of a json.Number.
func isJSONNumber(s string) bool {
	i := 0
	if i < len(s) && s[i] == '-' {
		i++
	}
	digits := func() int {
		n := 0
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
			n++
		}
		return n
	}
	switch {
	case i < len(s) && s[i] == '0':
		i++
	case digits() == 0:
		return false
	}
	if i < len(s) && s[i] == '.' {
		i++
		if digits() == 0 {
			return false
		}
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		if digits() == 0 {
			return false
		}
	}
	return i == len(s)
}

// marshalStd encodes v with encoding/json without HTML escaping.
func marshalStd(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimRight(b.Bytes(), "\n"), nil
}

// errProto is a request whose payload does not unpack: flux_request_unpack
// fails with EPROTO (src/common/libflux/request.c).
var errProto = &rpcError{errno: syscall.EPROTO}

// rpcError is an error response: an errno and an optional message
// (no message means no payload frame, as flux_respond_error with NULL).
type rpcError struct {
	errno syscall.Errno
	msg   string
}

// Error returns the message, or the errno's text when there is none.
func (e *rpcError) Error() string {
	if e.msg == "" {
		return e.errno.Error()
	}
	return e.msg
}

func errorf(errno syscall.Errno, format string, args ...any) *rpcError {
	return &rpcError{errno: errno, msg: fmt.Sprintf(format, args...)}
}

// request is a decoded JSON request payload, read the way jansson's
// json_unpack reads it: keys looked up by name, types checked strictly.
type request map[string]json.RawMessage

// decodeRequest parses a request payload. flux-core requires the JSON to be
// NUL-terminated inside the payload frame (flux_msg_get_string); anything
// else is EPROTO.
func decodeRequest(payload []byte, hasPayload bool) (request, error) {
	if !hasPayload || len(payload) == 0 || payload[len(payload)-1] != 0 {
		return nil, errProto
	}
	body := payload[:len(payload)-1]
	if bytes.IndexByte(body, 0) >= 0 {
		return nil, errProto
	}
	var r request
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&r); err != nil || r == nil {
		return nil, errProto
	}
	return r, nil
}

var errMissing = errors.New("missing key")

// has reports whether key is present.
func (r request) has(key string) bool {
	_, ok := r[key]
	return ok
}

// int64 reads an integer ("I" or "i" in json_unpack): a JSON number without
// fraction or exponent.
func (r request) int64(key string) (int64, error) {
	raw, ok := r[key]
	if !ok {
		return 0, errMissing
	}
	s := string(bytes.TrimSpace(raw))
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, errProto
	}
	return n, nil
}

// int reads a 32-bit integer ("i").
func (r request) int(key string) (int, error) {
	n, err := r.int64(key)
	if err != nil {
		return 0, err
	}
	if n < math.MinInt32 || n > math.MaxInt32 {
		return 0, errProto
	}
	return int(n), nil
}

// str reads a string ("s").
func (r request) str(key string) (string, error) {
	raw, ok := r[key]
	if !ok {
		return "", errMissing
	}
	var s string
	if len(raw) == 0 || raw[0] != '"' || json.Unmarshal(raw, &s) != nil {
		return "", errProto
	}
	return s, nil
}

// bool reads a boolean ("b").
func (r request) bool(key string) (bool, error) {
	raw, ok := r[key]
	if !ok {
		return false, errMissing
	}
	switch string(bytes.TrimSpace(raw)) {
	case "true":
		return true, nil
	case "false":
		return false, nil
	}
	return false, errProto
}

// float reads a real or integer ("F").
func (r request) float(key string) (float64, error) {
	raw, ok := r[key]
	if !ok {
		return 0, errMissing
	}
	f, err := strconv.ParseFloat(string(bytes.TrimSpace(raw)), 64)
	if err != nil {
		return 0, errProto
	}
	return f, nil
}

// value decodes key into a generic JSON value ("o").
func (r request) value(key string) (any, error) {
	raw, ok := r[key]
	if !ok {
		return nil, errMissing
	}
	var v any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		return nil, errProto
	}
	return v, nil
}

// required turns errMissing into EPROTO (a required key is missing).
func required[T any](v T, err error) (T, error) {
	if err != nil {
		return v, errProto
	}
	return v, nil
}

// optional treats a missing key as its zero value.
func optional[T any](v T, err error) (T, error) {
	if errors.Is(err, errMissing) {
		var zero T
		return zero, nil
	}
	return v, err
}

// decodeOrdered decodes JSON keeping object keys in document order (as obj)
// and numbers as json.Number, so a document re-encodes as jansson would
// re-encode what it parsed.
func decodeOrdered(data []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	v, err := decodeOrderedValue(dec)
	if err != nil {
		return nil, err
	}
	return v, nil
}

func decodeOrderedValue(dec *json.Decoder) (any, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	d, ok := tok.(json.Delim)
	if !ok {
		return tok, nil
	}
	switch d {
	case '{':
		o := obj{}
		for dec.More() {
			kt, err := dec.Token()
			if err != nil {
				return nil, err
			}
			k, ok := kt.(string)
			if !ok {
				return nil, fmt.Errorf("testbroker: object key %v", kt)
			}
			v, err := decodeOrderedValue(dec)
			if err != nil {
				return nil, err
			}
			o = append(o, kv{k, v})
		}
		if _, err := dec.Token(); err != nil {
			return nil, err
		}
		return o, nil
	case '[':
		a := []any{}
		for dec.More() {
			v, err := decodeOrderedValue(dec)
			if err != nil {
				return nil, err
			}
			a = append(a, v)
		}
		if _, err := dec.Token(); err != nil {
			return nil, err
		}
		return a, nil
	}
	return nil, fmt.Errorf("testbroker: unexpected %v", d)
}
