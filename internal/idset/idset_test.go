package idset

import (
	"errors"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		n        int
		err      bool
	}{
		{in: "0-99,200", want: "0-99,200", n: 101},
		{in: "[1-3,7]", want: "1-3,7", n: 4},
		{in: "5", want: "5", n: 1},
		{in: "7,1-3,2-4,5", want: "1-5,7", n: 6},
		{in: "0-99999", want: "0-99999", n: 100000},
		{in: "", err: true},
		{in: "3-1", err: true},
		{in: "a", err: true},
		{in: "1,,2", err: true},
		{in: "-1", err: true},
		{in: "[1-2", err: true},
		{in: "4294967295", err: true},
	} {
		s, err := Parse(tc.in, 0)
		if tc.err {
			if !errors.Is(err, ErrSyntax) {
				t.Errorf("Parse(%q) = %v, %v; want ErrSyntax", tc.in, s, err)
			}
			continue
		}
		if err != nil || s.String() != tc.want || s.Len() != tc.n {
			t.Errorf("Parse(%q) = %q (%d), %v; want %q (%d)", tc.in, s.String(), s.Len(), err, tc.want, tc.n)
		}
	}
	if _, err := Parse("0-1000000", 100000); err == nil || !strings.Contains(err.Error(), "more than 100000") {
		t.Errorf("a set above the bound: %v", err)
	}
}

func TestAtPos(t *testing.T) {
	s, _ := Parse("2-4,10,20-21", 0)
	want := []uint32{2, 3, 4, 10, 20, 21}
	for i, id := range want {
		if got := s.At(i); got != id {
			t.Errorf("At(%d) = %d, want %d", i, got, id)
		}
		if p, ok := s.Pos(id); !ok || p != i {
			t.Errorf("Pos(%d) = %d, %v; want %d", id, p, ok, i)
		}
	}
	for _, id := range []uint32{0, 1, 5, 11, 22} {
		if s.Contains(id) {
			t.Errorf("Contains(%d)", id)
		}
	}
}

func TestEncode(t *testing.T) {
	s, _ := Parse("0-9,20-29", 0)
	b := NewBits(s.Len())
	for _, p := range []int{0, 1, 2, 5, 9, 10, 11, 19} {
		b.Set(p)
	}
	if got, tr := Encode(s, b, 0); got != "0-2,5,9,20-21,29" || tr {
		t.Errorf("Encode = %q, %v", got, tr)
	}
	if got, tr := Encode(s, b, 8); got != "0-2,5,9" || !tr {
		t.Errorf("Encode bounded = %q, %v", got, tr)
	}
	b.Clear(5)
	if b.Has(5) || !b.Has(9) {
		t.Error("Clear")
	}
	// Alternate members of 100,000: the worst case stays within the bound.
	big, _ := Parse("0-99999", 0)
	bb := NewBits(big.Len())
	for i := 0; i < big.Len(); i += 2 {
		bb.Set(i)
	}
	got, tr := Encode(big, bb, 4096)
	if !tr || len(got) > 4096 || !strings.HasPrefix(got, "0,2,4,") {
		t.Errorf("Encode of 50,000 singletons: %d bytes, truncated %v", len(got), tr)
	}
}
