package sign

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
)

// The envelope's header is flux-security's "kv" serialisation of a small
// dictionary: each entry is KEY NUL TYPE VALUE NUL, where TYPE is one
// character: 's' string, 'i' 64-bit integer (decimal), 'd' double, 'b'
// bool, 't' timestamp. Entries keep their insertion order, and a key put
// twice keeps only its last value.

// Kinds of header values (the TYPE character).
const (
	KindString    = 's'
	KindInt64     = 'i'
	KindDouble    = 'd'
	KindBool      = 'b'
	KindTimestamp = 't'
)

// Field is one header entry: its key, kind and value as written (the
// decimal form of an integer).
type Field struct {
	Key   string
	Kind  byte
	Value string
}

var errKV = errors.New("invalid header encoding")

// encodeKV serialises fields. A key must be non-empty and neither key nor
// value may contain NUL.
func encodeKV(fields []Field) ([]byte, error) {
	var b []byte
	for _, f := range fields {
		if f.Key == "" || containsNUL(f.Key) || containsNUL(f.Value) || !validKind(f.Kind) {
			return nil, fmt.Errorf("header field %q: %w", f.Key, errKV)
		}
		b = append(b, f.Key...)
		b = append(b, 0, f.Kind)
		b = append(b, f.Value...)
		b = append(b, 0)
	}
	return b, nil
}

func containsNUL(s string) bool { return bytes.IndexByte([]byte(s), 0) >= 0 }

func validKind(k byte) bool {
	switch k {
	case KindString, KindInt64, KindDouble, KindBool, KindTimestamp:
		return true
	}
	return false
}

// cstrlen is the length of the NUL-terminated string at b[off:], bounded
// by max (max when no NUL is found within it).
func cstrlen(b []byte, off, max int) int {
	end := min(off+max, len(b))
	if i := bytes.IndexByte(b[off:end], 0); i >= 0 {
		return i
	}
	return end - off
}

// entryLen is the length of the entry at b[off:] (key, NUL, type and
// value, NUL), or -1 if it has an empty key or value-with-type, or runs
// off the end.
func entryLen(b []byte, off int) int {
	max := len(b) - off
	klen := cstrlen(b, off, max)
	if klen == 0 || klen == max {
		return -1
	}
	off += klen + 1
	max -= klen + 1
	vlen := cstrlen(b, off, max)
	if vlen == 0 || vlen == max {
		return -1
	}
	return klen + vlen + 2
}

// nextEntry is the offset of the entry after the one at off (off < 0:
// the first), or -1 at the end. Like flux-security's iteration, it stops
// at the first malformed entry.
func nextEntry(b []byte, off int) int {
	if len(b) == 0 {
		return -1
	}
	if off < 0 {
		return 0
	}
	n := entryLen(b, off)
	if n < 0 || off+n == len(b) {
		return -1
	}
	return off + n
}

// keyAt returns the key of the entry at off and its kind character (0 if
// the entry has none within b).
func keyAt(b []byte, off int) (string, byte) {
	klen := cstrlen(b, off, len(b)-off)
	key := string(b[off : off+klen])
	if t := off + klen + 1; t < len(b) {
		return key, b[t]
	}
	return key, 0
}

// valueAt returns the value string of the entry at off.
func valueAt(b []byte, off int) string {
	klen := cstrlen(b, off, len(b)-off)
	v := off + klen + 2
	if v > len(b) {
		return ""
	}
	return string(b[v : v+cstrlen(b, v, len(b)-v)])
}

// decodeKV checks an encoded header as flux-security does before using
// it: NUL-terminated, an even number of NULs, and every entry reached by
// iteration with a non-empty key and a known kind. It returns the
// entries iteration reaches.
func decodeKV(b []byte) ([]Field, error) {
	if len(b) > 0 && b[len(b)-1] != 0 {
		return nil, fmt.Errorf("not NUL-terminated: %w", errKV)
	}
	if bytes.Count(b, []byte{0})%2 != 0 {
		return nil, fmt.Errorf("odd number of NULs: %w", errKV)
	}
	var fields []Field
	for off := nextEntry(b, -1); off >= 0; off = nextEntry(b, off) {
		key, kind := keyAt(b, off)
		if key == "" {
			return nil, fmt.Errorf("empty key: %w", errKV)
		}
		if !validKind(kind) {
			return nil, fmt.Errorf("key %q: unknown type %q: %w", key, kind, errKV)
		}
		fields = append(fields, Field{Key: key, Kind: kind, Value: valueAt(b, off)})
	}
	return fields, nil
}

// lookup finds key as flux-security does: the first entry with that key,
// which must be of kind want.
func lookup(fields []Field, key string, want byte) (string, bool) {
	for _, f := range fields {
		if f.Key == key {
			return f.Value, f.Kind == want
		}
	}
	return "", false
}

// lookupInt64 finds an integer entry and parses it as C's strtoll does in
// base 10: leading white space, an optional sign, at least one digit and
// nothing after them; out of range is an error.
func lookupInt64(fields []Field, key string) (int64, bool) {
	v, ok := lookup(fields, key, KindInt64)
	if !ok {
		return 0, false
	}
	return parseStrtoll(v)
}

func parseStrtoll(s string) (int64, bool) {
	i := 0
	for i < len(s) && isCSpace(s[i]) {
		i++
	}
	s = s[i:]
	digits := s
	if len(digits) > 0 && (digits[0] == '+' || digits[0] == '-') {
		digits = digits[1:]
	}
	if digits == "" {
		return 0, false
	}
	for j := 0; j < len(digits); j++ {
		if digits[j] < '0' || digits[j] > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseInt(s, 10, 64) // accepts the sign strtoll does
	if err != nil {
		return 0, false
	}
	return n, true
}

// isCSpace is C's isspace in the C locale.
func isCSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r'
}
