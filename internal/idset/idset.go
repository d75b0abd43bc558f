// Package idset reads and writes sets of non-negative integers in the form
// flux-core writes them (libidset's IDSET_FLAG_RANGE encoding, what
// `flux submit --cc` takes): ascending ranges and singletons separated by
// commas, "0-99,200", optionally in brackets. A Set is kept as its ranges,
// so that a large contiguous array costs a few bytes whatever its size;
// Bits is a set of positions within a Set (one bit each), and Encode turns
// the positions back into the compressed form within a byte bound.
package idset

import (
	"errors"
	"fmt"
	"math/bits"
	"sort"
	"strconv"
	"strings"
)

// MaxID is the largest member a Set may hold (flux-core's idset members are
// unsigned ints; FLUX_JOB_CC is printed as one).
const MaxID = 1<<31 - 1

// Range is the members Lo through Hi, both included.
type Range struct{ Lo, Hi uint32 }

// Set is a set of IDs, as sorted disjoint non-adjacent ranges. The zero
// Set is empty.
type Set struct {
	r   []Range
	cum []int // cum[i]: members in r[:i]
	n   int
}

// ErrSyntax is returned, wrapped, for a string that is not an idset.
var ErrSyntax = errors.New("not an idset")

// Parse reads s ("0-99,200", "[1-3,7]", "5"). Ranges may come in any order
// and overlap, as libidset's idset_decode allows; more than max members
// (max > 0) is an error, found before any large allocation.
func Parse(s string, max int) (Set, error) {
	t := strings.TrimSpace(s)
	if strings.HasPrefix(t, "[") {
		if !strings.HasSuffix(t, "]") {
			return Set{}, fmt.Errorf("%q: unbalanced bracket: %w", s, ErrSyntax)
		}
		t = t[1 : len(t)-1]
	}
	if t == "" {
		return Set{}, fmt.Errorf("%q: empty: %w", s, ErrSyntax)
	}
	var rs []Range
	for _, part := range strings.Split(t, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := parseID(lo)
		if err != nil {
			return Set{}, fmt.Errorf("%q: %w", s, err)
		}
		b := a
		if isRange {
			if b, err = parseID(hi); err != nil {
				return Set{}, fmt.Errorf("%q: %w", s, err)
			}
			if b < a {
				return Set{}, fmt.Errorf("%q: range %s-%s is descending: %w", s, lo, hi, ErrSyntax)
			}
		}
		rs = append(rs, Range{a, b})
	}
	set := fromRanges(rs)
	if max > 0 && set.n > max {
		return Set{}, fmt.Errorf("%q has %d members, more than %d", s, set.n, max)
	}
	return set, nil
}

func parseID(s string) (uint32, error) {
	if s == "" || strings.TrimLeft(s, "0123456789") != "" {
		return 0, fmt.Errorf("%q is not a non-negative integer: %w", s, ErrSyntax)
	}
	v, err := strconv.ParseUint(s, 10, 32)
	if err != nil || v > MaxID {
		return 0, fmt.Errorf("%s is larger than %d: %w", s, MaxID, ErrSyntax)
	}
	return uint32(v), nil
}

// fromRanges sorts and merges rs into a Set.
func fromRanges(rs []Range) Set {
	sort.Slice(rs, func(i, j int) bool { return rs[i].Lo < rs[j].Lo })
	var out []Range
	for _, r := range rs {
		if k := len(out) - 1; k >= 0 && uint64(r.Lo) <= uint64(out[k].Hi)+1 {
			out[k].Hi = max(out[k].Hi, r.Hi)
			continue
		}
		out = append(out, r)
	}
	s := Set{r: out, cum: make([]int, len(out))}
	for i, r := range out {
		s.cum[i] = s.n
		s.n += int(r.Hi-r.Lo) + 1
	}
	return s
}

// Len returns the number of members.
func (s Set) Len() int { return s.n }

// Ranges returns the set's ranges, ascending (not to be modified).
func (s Set) Ranges() []Range { return s.r }

// At returns the member at position pos (0 is the smallest), which must
// be in [0, Len()).
func (s Set) At(pos int) uint32 {
	i := sort.Search(len(s.r), func(i int) bool { return s.cum[i] > pos }) - 1
	return s.r[i].Lo + uint32(pos-s.cum[i])
}

// Pos returns the position of id in the set, or false if it is not a
// member.
func (s Set) Pos(id uint32) (int, bool) {
	i := sort.Search(len(s.r), func(i int) bool { return s.r[i].Hi >= id })
	if i == len(s.r) || s.r[i].Lo > id {
		return 0, false
	}
	return s.cum[i] + int(id-s.r[i].Lo), true
}

// Contains reports whether id is a member.
func (s Set) Contains(id uint32) bool { _, ok := s.Pos(id); return ok }

// String encodes the set as flux-core does ("0-99,200"; "" when empty).
func (s Set) String() string {
	var b strings.Builder
	for _, r := range s.r {
		appendRange(&b, r)
	}
	return b.String()
}

func appendRange(b *strings.Builder, r Range) {
	if b.Len() > 0 {
		b.WriteByte(',')
	}
	b.WriteString(strconv.FormatUint(uint64(r.Lo), 10))
	if r.Hi > r.Lo {
		b.WriteByte('-')
		b.WriteString(strconv.FormatUint(uint64(r.Hi), 10))
	}
}

// Bits is a set of positions 0..n-1 of a Set, one bit each.
type Bits []uint64

// NewBits returns an empty Bits for n positions.
func NewBits(n int) Bits { return make(Bits, (n+63)/64) }

// Set adds position i.
func (b Bits) Set(i int) { b[i/64] |= 1 << (i % 64) }

// Clear removes position i.
func (b Bits) Clear(i int) { b[i/64] &^= 1 << (i % 64) }

// Has reports whether position i is in b.
func (b Bits) Has(i int) bool { return b[i/64]&(1<<(i%64)) != 0 }

// Encode writes the members of s at the positions in b, compressed into
// ranges, in at most maxBytes bytes (0: no bound). When the whole set does
// not fit, it stops at the last range that does and reports truncated: the
// result is then a prefix (the smallest members).
func Encode(s Set, b Bits, maxBytes int) (out string, truncated bool) {
	var sb strings.Builder
	var cur Range
	open := false
	flush := func() bool {
		if !open {
			return true
		}
		mark := sb.Len()
		appendRange(&sb, cur)
		if maxBytes > 0 && sb.Len() > maxBytes {
			str := sb.String()[:mark]
			sb.Reset()
			sb.WriteString(str)
			return false
		}
		return true
	}
	for wi, w := range b {
		for w != 0 {
			bit := bits.TrailingZeros64(w)
			w &^= 1 << bit
			pos := wi*64 + bit
			if pos >= s.n {
				break
			}
			id := s.At(pos)
			if open && uint64(id) == uint64(cur.Hi)+1 {
				cur.Hi = id
				continue
			}
			if !flush() {
				return sb.String(), true
			}
			cur, open = Range{id, id}, true
		}
	}
	if !flush() {
		return sb.String(), true
	}
	return sb.String(), false
}
