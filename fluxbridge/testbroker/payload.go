package testbroker

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"syscall"
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
	var b bytes.Buffer
	b.WriteByte('{')
	for i, e := range o {
		if i > 0 {
			b.WriteByte(',')
		}
		k, err := marshal(e.k)
		if err != nil {
			return nil, err
		}
		b.Write(k)
		b.WriteByte(':')
		v, err := marshal(e.v)
		if err != nil {
			return nil, fmt.Errorf("key %q: %w", e.k, err)
		}
		b.Write(v)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// real is a float64 that always encodes with a decimal point or exponent,
// as jansson's json_real does (0.0, not 0).
type real float64

// MarshalJSON encodes r like the captured broker output: the shortest
// round-trip digits in plain decimal (1795576032.443094, never an exponent),
// and ".0" when that would otherwise read as an integer.
func (r real) MarshalJSON() ([]byte, error) {
	f := float64(r)
	if math.IsInf(f, 0) || math.IsNaN(f) {
		return nil, fmt.Errorf("testbroker: cannot encode %v as JSON", f)
	}
	b := strconv.AppendFloat(nil, f, 'f', -1, 64)
	if !bytes.ContainsAny(b, ".e") {
		b = append(b, '.', '0')
	}
	return b, nil
}

// marshal encodes v without HTML escaping (jansson does not escape <, >, &).
func marshal(v any) ([]byte, error) {
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

// get returns the value of key k, and whether it is present.
func (o obj) get(k string) (any, bool) {
	for _, e := range o {
		if e.k == k {
			return e.v, true
		}
	}
	return nil, false
}
