package job

import (
	"encoding/json"
	"errors"
	"testing"
)

// Pairs from flux-core v0.88.0 src/common/libjob/test/job.c
// (jobid_parse_tests): every encoding of the same ID, as
// flux_job_id_encode produces it.
var jobIDEncodings = []struct {
	id                           ID
	dec, hex, dothex, kvs, words string
	f58                          string
}{
	{0, "0", "0x0", "0000.0000.0000.0000", "job.0000.0000.0000.0000", "academy-academy-academy--academy-academy-academy", "ƒ1"},
	{1, "1", "0x1", "0000.0000.0000.0001", "job.0000.0000.0000.0001", "acrobat-academy-academy--academy-academy-academy", "ƒ2"},
	{65535, "65535", "0xffff", "0000.0000.0000.ffff", "job.0000.0000.0000.ffff", "nevada-archive-academy--academy-academy-academy", "ƒLUv"},
	{6787342413402046, "6787342413402046", "0x181d0d4d850fbe", "0018.1d0d.4d85.0fbe", "job.0018.1d0d.4d85.0fbe", "cake-plume-nepal--neuron-pencil-academy", "ƒuzzybunny"},
}

func TestIDEncodeParseRoundTrip(t *testing.T) {
	for _, tc := range jobIDEncodings {
		enc := map[string]string{
			"dec": tc.dec, "hex": tc.hex, "dothex": tc.dothex, "kvs": tc.kvs,
			"words": tc.words, "f58": tc.f58, "f58plain": "f" + tc.f58[len("ƒ"):],
		}
		for kind, want := range enc {
			got, err := tc.id.Format(kind)
			if err != nil || got != want {
				t.Errorf("ID(%d).Format(%q) = %q, %v; want %q", uint64(tc.id), kind, got, err, want)
			}
			back, err := ParseID(want)
			if err != nil || back != tc.id {
				t.Errorf("ParseID(%q) = %d, %v; want %d", want, uint64(back), err, uint64(tc.id))
			}
		}
		if s := tc.id.String(); s != tc.f58 {
			t.Errorf("ID(%d).String() = %q, want %q", uint64(tc.id), s, tc.f58)
		}
	}
}

// F58 pairs from flux-core v0.88.0 src/common/libutil/test/fluid.c
// (f58_tests).
var f58Pairs = []struct {
	id  ID
	f58 string
}{
	{0, "ƒ1"}, {1, "ƒ2"}, {57, "ƒz"}, {1234, "ƒNH"}, {1888, "ƒZZ"}, {3363, "ƒzz"},
	{3364, "ƒ211"}, {4369, "ƒ2JL"}, {65535, "ƒLUv"}, {4294967295, "ƒ7YXq9G"},
	{633528662, "ƒxyzzy"}, {6731191091817518, "ƒuZZybuNNy"},
	{18446744073709551614, "ƒjpXCZedGfVP"}, {18446744073709551615, "ƒjpXCZedGfVQ"},
}

func TestF58(t *testing.T) {
	for _, tc := range f58Pairs {
		if got := tc.id.F58(); got != tc.f58 {
			t.Errorf("ID(%d).F58() = %q, want %q", uint64(tc.id), got, tc.f58)
		}
		ascii := "f" + tc.f58[len("ƒ"):]
		if got := tc.id.F58ASCII(); got != ascii {
			t.Errorf("ID(%d).F58ASCII() = %q, want %q", uint64(tc.id), got, ascii)
		}
		for _, in := range []string{tc.f58, ascii} {
			if got, err := ParseID(in); err != nil || got != tc.id {
				t.Errorf("ParseID(%q) = %d, %v; want %d", in, uint64(got), err, uint64(tc.id))
			}
		}
	}
}

// Inputs from flux-core v0.88.0 src/common/libutil/test/fluid.c
// (fluid_parse_tests, plus f58_alt_tests' "f111") and
// the IDs of real jobs in ../shared/flux-wire/list.decoded.txt.
func TestParseID(t *testing.T) {
	tests := []struct {
		in   string
		want ID
	}{
		{"f111", 0},
		{"1234", 1234}, {"1888", 1888}, {"3363", 3363}, {"3364", 3364}, {"4369", 4369},
		{"6731191091817518", 6731191091817518},
		{"18446744073709551614", 18446744073709551614},
		{"18446744073709551615", 18446744073709551615},
		{"0x0", 0}, {"0x1", 1}, {"0x39", 57}, {"0x4d2", 1234}, {"0x760", 1888}, {"0xd23", 3363},
		{"0x1111", 4369}, {"0xffff", 65535}, {"0xffffffff", 4294967295}, {"0x25c2e156", 633528662},
		{"0x17e9fb8df16c2e", 6731191091817518}, {"0xffffffffffffffff", 18446744073709551615},
		{"0.0.0.0", 0}, {"0000.0000.0000.0001", 1}, {"0.0.0.0039", 57}, {"0000.0000.0000.04d2", 1234},
		{"0000.0000.0000.0760", 1888}, {"0000.0000.0000.1111", 4369}, {"0.0.0.ffff", 65535},
		{"0000.0000.ffff.ffff", 4294967295}, {"ffff.ffff.ffff.ffff", 18446744073709551615},
		{"ffff.0000.0000.0000", 18446462598732840960}, {"0000.ffff.0000.0000", 281470681743360},
		{"0000.0000.ffff.0000", 4294901760}, {"0000.0000.0000.ffff", 65535},
		{"a.b.c.d", 2814797012533261}, {"1.2.3.4", 281483566841860},
		{" 0xffff   ", 65535}, {"  1234  ", 1234},
		{"ACROBAT-Academy-academy--academy-academy-academy", 1},
		{"24779948032", 24779948032}, {"job.0000.0005.c500.0000", 24779948032},
	}
	for _, tc := range tests {
		got, err := ParseID(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseID(%q) = %d, %v; want %d", tc.in, uint64(got), err, uint64(tc.want))
		}
	}
}

// Invalid inputs from flux-core v0.88.0 src/common/libutil/test/fluid.c and
// src/common/libjob/test/job.c, plus overflow cases flux-core's C lets wrap.
func TestParseIDInvalid(t *testing.T) {
	for _, in := range []string{
		"", "  ", "boo", "f", "flux", "f1230", "x1", "-1", "aaa",
		"0.0.0", "0.0.0.0.0", "0.0.0.g", "0.0.0.", ".0.0.0", "00000.0.0.0",
		"f0", "fO", "fI", "fl", "ƒ", "fjpXCZedGfVR", "fzzzzzzzzzzzz", "fzzzzzzzzzzz",
		"invalid-words-test", "foo-bar-baz--qux-quux-corge", "a-a-a--a-a-a",
		"academy-academy-academy--academy-academy", // 5 words
		"academy-academy-academy--academy-academy-academy-academy",
		"yes-academy-academy--academy-academy-academy", // a 24-bit remainder word
		"academy-academy-yes--academy-academy-academy",
		"academy-academy-amen--academy-academy-academy", "verbal-verbal-verbal--academy-academy-academy", // > 2^32
		"18446744073709551616", "0x10000000000000000", "0x", "+5", "12a", "1 2",
		"🦄", "😃x", "🚺💗💧👗😷📷📚", "😃😃😃😃😃😃😃😃",
	} {
		id, err := ParseID(in)
		if err == nil {
			t.Errorf("ParseID(%q) = %d, want an error", in, uint64(id))
			continue
		}
		var ie *IDError
		if !errors.Is(err, ErrInvalidID) || !errors.As(err, &ie) || ie.Input != in {
			t.Errorf("ParseID(%q) error %v: want an *IDError matching ErrInvalidID", in, err)
		}
	}
}

func TestIDJSONAndText(t *testing.T) {
	id := ID(6787342413402046)
	b, err := json.Marshal(struct {
		ID ID `json:"id"`
	}{id})
	if err != nil || string(b) != `{"id":6787342413402046}` {
		t.Fatalf("json.Marshal = %s, %v", b, err)
	}
	for _, in := range []string{`6787342413402046`, `"ƒuzzybunny"`, `"fuzzybunny"`, `"0x181d0d4d850fbe"`, `"job.0018.1d0d.4d85.0fbe"`} {
		var got ID
		if err := json.Unmarshal([]byte(in), &got); err != nil || got != id {
			t.Errorf("json.Unmarshal(%s) = %d, %v", in, uint64(got), err)
		}
	}
	for _, in := range []string{`-1`, `1.5`, `"nope"`, `true`} {
		var got ID
		if err := json.Unmarshal([]byte(in), &got); err == nil {
			t.Errorf("json.Unmarshal(%s) succeeded: %d", in, uint64(got))
		}
	}
	txt, err := id.MarshalText()
	if err != nil || string(txt) != "ƒuzzybunny" {
		t.Fatalf("MarshalText = %s, %v", txt, err)
	}
	var back ID
	if err := back.UnmarshalText(txt); err != nil || back != id {
		t.Fatalf("UnmarshalText(%s) = %d, %v", txt, uint64(back), err)
	}
	if _, err := id.Format("bogus"); err == nil {
		t.Error(`Format("bogus") succeeded`)
	}
}

func TestWordsRoundTripExtremes(t *testing.T) {
	for _, id := range []ID{0, 1, 1<<32 - 1, 1 << 32, 1<<64 - 1, 0x8000000080000000, 24779948032} {
		for _, enc := range []string{id.Words(), id.F58()} {
			got, err := ParseID(enc)
			if err != nil || got != id {
				t.Errorf("ParseID(%q) = %d, %v; want %d", enc, uint64(got), err, uint64(id))
			}
		}
	}
}

func FuzzParseID(f *testing.F) {
	for _, tc := range jobIDEncodings {
		f.Add(tc.dec)
		f.Add(tc.words)
		f.Add(tc.f58)
		f.Add(tc.kvs)
	}
	f.Add("0xffffffffffffffff")
	f.Fuzz(func(t *testing.T, s string) {
		id, err := ParseID(s)
		if err != nil {
			return
		}
		// Whatever parses must round-trip through every encoding.
		for _, kind := range []string{"dec", "hex", "dothex", "kvs", "words", "f58", "f58plain"} {
			enc, _ := id.Format(kind)
			back, err := ParseID(enc)
			if err != nil || back != id {
				t.Fatalf("%q -> %d -> %s %q -> %d, %v", s, uint64(id), kind, enc, uint64(back), err)
			}
		}
	})
}
