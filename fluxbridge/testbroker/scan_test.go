package testbroker

import "testing"

// The fast path agrees with decodeRequest on the shapes it takes, and
// leaves every other shape (so every error) to it.
func TestScanSubmitRequest(t *testing.T) {
	tests := []struct {
		name, payload     string
		ok                bool
		j                 string
		urgency, flagsVal int
	}{
		{"canonical", `{"J":"aGk=.e30=.none","urgency":16,"flags":4}` + "\x00", true, "aGk=.e30=.none", 16, 4},
		{"zero flags", `{"J":"x","urgency":0,"flags":0}` + "\x00", true, "x", 0, 0},
		{"no NUL", `{"J":"x","urgency":0,"flags":0}`, false, "", 0, 0},
		{"other key order", `{"urgency":16,"J":"x","flags":0}` + "\x00", false, "", 0, 0},
		{"spaces", `{"J": "x","urgency":16,"flags":0}` + "\x00", false, "", 0, 0},
		{"escape in J", `{"J":"a\"b","urgency":16,"flags":0}` + "\x00", false, "", 0, 0},
		{"negative urgency", `{"J":"x","urgency":-1,"flags":0}` + "\x00", false, "", 0, 0},
		{"leading zero", `{"J":"x","urgency":016,"flags":0}` + "\x00", false, "", 0, 0},
		{"float", `{"J":"x","urgency":1.5,"flags":0}` + "\x00", false, "", 0, 0},
		{"huge", `{"J":"x","urgency":12345678901,"flags":0}` + "\x00", false, "", 0, 0},
		{"trailing key", `{"J":"x","urgency":16,"flags":0,"y":1}` + "\x00", false, "", 0, 0},
		{"truncated", `{"J":"x","urgency":16` + "\x00", false, "", 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			j, u, f, ok := scanSubmitRequest([]byte(tt.payload), true)
			if ok != tt.ok || (ok && (j != tt.j || u != tt.urgency || f != tt.flagsVal)) {
				t.Fatalf("scanSubmitRequest = %q %d %d %v; want %q %d %d %v", j, u, f, ok, tt.j, tt.urgency, tt.flagsVal, tt.ok)
			}
			if !ok {
				return
			}
			r, err := decodeRequest([]byte(tt.payload), true)
			if err != nil {
				t.Fatalf("decodeRequest refused what the fast path took: %v", err)
			}
			rj, _ := r.str("J")
			ru, _ := r.int("urgency")
			rf, _ := r.int("flags")
			if rj != j || ru != u || rf != f {
				t.Fatalf("decodeRequest read %q %d %d, the fast path %q %d %d", rj, ru, rf, j, u, f)
			}
		})
	}
	if _, _, _, ok := scanSubmitRequest([]byte(tests[0].payload), false); ok {
		t.Error("a message without the payload flag was taken")
	}
}
