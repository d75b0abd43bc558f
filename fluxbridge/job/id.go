// Package job is Flux's job vocabulary in Go: job IDs and their text
// encodings, Jobspec V1, eventlog events and wait statuses, and the RPCs
// of flux-core's job services (job-ingest, job-manager, job-info,
// job-list) on top of a *flux.Conn.
//
// Behaviour follows flux-core v0.88.0; comments name the source file a
// rule comes from. No flux-core code is copied: the algorithms are
// re-implemented from reading it.
package job

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"strconv"
	"strings"
	"unicode/utf8"
)

// ID is a Flux job ID: a 64-bit FLUID (flux-core src/common/libutil/fluid.c:
// 40 bits of timestamp, 14 bits of generator id, 10 bits of sequence).
//
// Its String form is F58 with the Unicode "ƒ" prefix, as `flux jobs`
// prints it in a UTF-8 locale. In JSON an ID is a number, as in every Flux
// RPC payload; it unmarshals from a number or from a string in any
// encoding ParseID accepts. As text (encoding.TextMarshaler) it is F58.
type ID uint64

// ErrInvalidID is matched (errors.Is) by every error ParseID returns.
var ErrInvalidID = errors.New("invalid job ID")

// IDError is the error ParseID returns: the input and why it was refused.
type IDError struct {
	Input  string // the string given to ParseID
	Reason string // what is wrong with it
}

// Error returns "invalid job ID \"S\": REASON".
func (e *IDError) Error() string {
	return fmt.Sprintf("invalid job ID %q: %s", e.Input, e.Reason)
}

// Is reports whether target is ErrInvalidID.
func (e *IDError) Is(target error) bool { return target == ErrInvalidID }

const (
	f58Prefix      = "ƒ" // U+0192, flux-core's default F58 prefix
	f58ASCIIPrefix = "f" // the prefix in a non-UTF-8 locale (fluid.c f58_alt_prefix)
	maxB58Len      = 12  // fluid.c MAX_B58_STRLEN
	b58Digits      = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
	kvsPrefix      = "job." // flux-core src/common/libjob/id.c
)

// b58Value maps an ASCII byte to its base58 digit value, or -1.
var b58Value = func() (m [256]int8) {
	for i := range m {
		m[i] = -1
	}
	for i := 0; i < len(b58Digits); i++ {
		m[b58Digits[i]] = int8(i)
	}
	return m
}()

// ParseID parses a job ID in any encoding flux-core's flux_job_id_parse
// accepts (src/common/libjob/id.c, src/common/libutil/fluid.c):
//
//   - decimal: "6787342413402046"
//   - F58 with the Unicode or ASCII prefix: "ƒuzzybunny", "fuzzybunny"
//   - hexadecimal with a "0x" prefix: "0x181d0d4d850fbe"
//   - dotted hex, four groups of up to four hex digits: "0018.1d0d.4d85.0fbe"
//   - the KVS path form, dotted hex after "job.": "job.0018.1d0d.4d85.0fbe"
//   - mnemonic words: "cake-plume-nepal--neuron-pencil-academy"
//
// The encoding is detected as flux-core does: a '.' means dotted hex, a
// '-' means words, a leading "ƒ" or "f" means F58, "0x" hex, else decimal.
// flux-core's emoji encoding is not supported (its digit table is
// flux-core's own data, which this project does not reproduce). Surrounding
// white space is ignored.
//
// ParseID is stricter than flux-core where flux-core's C accepts garbage
// by accident: F58 or words that overflow 64 bits, trailing unknown words
// and signs on numbers are refused. Errors are *IDError and match
// ErrInvalidID.
func ParseID(s string) (ID, error) {
	p := strings.TrimSpace(s)
	p = strings.TrimPrefix(p, kvsPrefix)
	fail := func(format string, args ...any) (ID, error) {
		return 0, &IDError{Input: s, Reason: fmt.Sprintf(format, args...)}
	}
	switch {
	case p == "":
		return fail("empty")
	case strings.Contains(p, "."):
		id, reason := parseDotHex(p)
		if reason != "" {
			return fail("dotted hex: %s", reason)
		}
		return id, nil
	case strings.Contains(p, "-"):
		id, reason := parseWords(p)
		if reason != "" {
			return fail("words: %s", reason)
		}
		return id, nil
	case strings.HasPrefix(p, f58Prefix):
		return parseF58(s, p[len(f58Prefix):])
	case strings.HasPrefix(p, f58ASCIIPrefix):
		return parseF58(s, p[len(f58ASCIIPrefix):])
	case strings.HasPrefix(p, "0x"):
		return parseUint(s, p[2:], 16)
	}
	return parseUint(s, p, 10)
}

func parseUint(input, digits string, base int) (ID, error) {
	if digits == "" {
		return 0, &IDError{Input: input, Reason: "no digits"}
	}
	for _, c := range []byte(digits) {
		if !isDigit(c, base) {
			if base == 16 {
				return 0, &IDError{Input: input, Reason: fmt.Sprintf("%q is not a hex digit", c)}
			}
			return 0, &IDError{Input: input, Reason: fmt.Sprintf("%q is not a digit (and no known encoding matched)", c)}
		}
	}
	v, err := strconv.ParseUint(digits, base, 64)
	if err != nil {
		return 0, &IDError{Input: input, Reason: "does not fit in 64 bits"}
	}
	return ID(v), nil
}

func isDigit(c byte, base int) bool {
	switch {
	case c >= '0' && c <= '9':
		return true
	case base == 16 && (c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'):
		return true
	}
	return false
}

func parseF58(input, b58 string) (ID, error) {
	if b58 == "" {
		return 0, &IDError{Input: input, Reason: "F58: no digits after the prefix"}
	}
	if len(b58) > maxB58Len {
		return 0, &IDError{Input: input, Reason: fmt.Sprintf("F58: more than %d digits", maxB58Len)}
	}
	var v uint64
	for i := 0; i < len(b58); i++ {
		d := b58Value[b58[i]]
		if d < 0 {
			r, _ := utf8.DecodeRuneInString(b58[i:])
			return 0, &IDError{Input: input, Reason: fmt.Sprintf("F58: %q is not a base58 digit", r)}
		}
		hi, lo := bits.Mul64(v, 58)
		lo, carry := bits.Add64(lo, uint64(d), 0)
		if hi != 0 || carry != 0 {
			return 0, &IDError{Input: input, Reason: "F58: does not fit in 64 bits"}
		}
		v = lo
	}
	return ID(v), nil
}

// parseDotHex decodes "XXXX.XXXX.XXXX.XXXX" (each group 1-4 hex digits),
// as fluid.c fluid_decode_dothex does with sscanf "%4x.%4x.%4x.%4x".
func parseDotHex(s string) (ID, string) {
	groups := strings.Split(s, ".")
	if len(groups) != 4 {
		return 0, fmt.Sprintf("want 4 groups separated by '.', got %d", len(groups))
	}
	var v uint64
	for i, g := range groups {
		if g == "" || len(g) > 4 {
			return 0, fmt.Sprintf("group %d: want 1 to 4 hex digits, got %q", i+1, g)
		}
		for _, c := range []byte(g) {
			if !isDigit(c, 16) {
				return 0, fmt.Sprintf("group %d: %q is not a hex digit", i+1, c)
			}
		}
		n, _ := strconv.ParseUint(g, 16, 16)
		v = v<<16 | n
	}
	return ID(v), ""
}

// Mnemonic encoding (Oren Tirosh's, flux-core src/common/libutil/mnemonic.c)
// of the 8 bytes of an ID in little-endian order: each 4-byte group is a
// number below 2^32 written as three base-1626 digits, least significant
// first, each digit a word. Format "x-x-x--" gives w-w-w--w-w-w.
const (
	mnBase      = 1626
	mnWordCount = mnBase + 7 // seven extra words encode 24-bit remainders
)

var mnIndex = func() map[string]int {
	m := make(map[string]int, mnWordCount)
	for i, w := range mnWords {
		m[w] = i
	}
	return m
}()

func parseWords(s string) (ID, string) {
	// Words are runs of ASCII letters, separated by runs of anything else.
	var idx []int
	for w := range strings.FieldsFuncSeq(s, func(r rune) bool { return !isASCIILetter(r) }) {
		i, ok := mnIndex[strings.ToLower(w)]
		if !ok {
			return 0, fmt.Sprintf("%q is not a word of the mnemonic word list", w)
		}
		if i >= mnBase {
			return 0, fmt.Sprintf("%q encodes a 24-bit remainder, which a job ID never has", w)
		}
		idx = append(idx, i)
	}
	if len(idx) != 6 {
		return 0, fmt.Sprintf("want 6 words, got %d", len(idx))
	}
	var v uint64
	for g := 1; g >= 0; g-- {
		x := uint64(idx[3*g]) + uint64(idx[3*g+1])*mnBase + uint64(idx[3*g+2])*mnBase*mnBase
		if x > math.MaxUint32 {
			return 0, fmt.Sprintf("words %d-%d do not encode a 32-bit group", 3*g+1, 3*g+3)
		}
		v = v<<32 | x
	}
	return ID(v), ""
}

func isASCIILetter(r rune) bool { return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' }

// String returns the F58 encoding with the Unicode "ƒ" prefix.
func (id ID) String() string { return id.F58() }

// F58 returns the F58 encoding with the Unicode "ƒ" prefix: "ƒuzzybunny".
func (id ID) F58() string { return f58Prefix + id.base58() }

// F58ASCII returns the F58 encoding with the ASCII "f" prefix, as flux-core
// prints it in a non-UTF-8 locale or with FLUX_F58_FORCE_ASCII set:
// "fuzzybunny".
func (id ID) F58ASCII() string { return f58ASCIIPrefix + id.base58() }

func (id ID) base58() string {
	var buf [maxB58Len]byte
	i := len(buf)
	v := uint64(id)
	for {
		i--
		buf[i] = b58Digits[v%58]
		v /= 58
		if v == 0 {
			break
		}
	}
	return string(buf[i:])
}

// Decimal returns the decimal encoding: "6787342413402046".
func (id ID) Decimal() string { return strconv.FormatUint(uint64(id), 10) }

// Hex returns the hexadecimal encoding with a "0x" prefix: "0x181d0d4d850fbe".
func (id ID) Hex() string { return "0x" + strconv.FormatUint(uint64(id), 16) }

// DotHex returns the dotted hex encoding: "0018.1d0d.4d85.0fbe".
func (id ID) DotHex() string {
	v := uint64(id)
	return fmt.Sprintf("%04x.%04x.%04x.%04x", v>>48&0xffff, v>>32&0xffff, v>>16&0xffff, v&0xffff)
}

// KVS returns the job's KVS directory relative to the KVS root, the dotted
// hex encoding after "job.": "job.0018.1d0d.4d85.0fbe".
func (id ID) KVS() string { return kvsPrefix + id.DotHex() }

// Words returns the mnemonic encoding:
// "cake-plume-nepal--neuron-pencil-academy".
func (id ID) Words() string {
	var b strings.Builder
	v := uint64(id)
	for g := 0; g < 2; g++ {
		x := v & math.MaxUint32
		v >>= 32
		if g == 1 {
			b.WriteString("--")
		}
		for k := 0; k < 3; k++ {
			if k > 0 {
				b.WriteByte('-')
			}
			b.WriteString(mnWords[x%mnBase])
			x /= mnBase
		}
	}
	return b.String()
}

// Format returns the encoding named by kind, as flux_job_id_encode and
// `flux job id --to=KIND` name them: "dec", "hex", "dothex", "kvs",
// "words", "f58", "f58plain" (case-insensitive; "" means "dec", as a
// NULL type does in flux_job_id_encode). Other kinds are an error.
func (id ID) Format(kind string) (string, error) {
	switch strings.ToLower(kind) {
	case "dec", "":
		return id.Decimal(), nil
	case "hex":
		return id.Hex(), nil
	case "dothex":
		return id.DotHex(), nil
	case "kvs":
		return id.KVS(), nil
	case "words":
		return id.Words(), nil
	case "f58":
		return id.F58(), nil
	case "f58plain":
		return id.F58ASCII(), nil
	}
	return "", fmt.Errorf("job ID encoding %q not supported (want dec, hex, dothex, kvs, words, f58 or f58plain)", kind)
}

// MarshalText returns the F58 encoding.
func (id ID) MarshalText() ([]byte, error) { return []byte(id.F58()), nil }

// UnmarshalText parses any encoding ParseID accepts.
func (id *ID) UnmarshalText(b []byte) error {
	v, err := ParseID(string(b))
	if err != nil {
		return err
	}
	*id = v
	return nil
}

// MarshalJSON encodes the ID as a JSON number, as Flux payloads carry it.
func (id ID) MarshalJSON() ([]byte, error) {
	return strconv.AppendUint(nil, uint64(id), 10), nil
}

// UnmarshalJSON accepts a JSON number (an unsigned integer) or a JSON
// string in any encoding ParseID accepts.
func (id *ID) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return fmt.Errorf("job ID: %w", err)
		}
		return id.UnmarshalText([]byte(s))
	}
	v, err := strconv.ParseUint(string(b), 10, 64)
	if err != nil {
		return &IDError{Input: string(b), Reason: "not an unsigned 64-bit integer"}
	}
	*id = ID(v)
	return nil
}
