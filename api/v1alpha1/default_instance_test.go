package v1alpha1

import (
	"reflect"
	"testing"
)

func TestChooseDefaultInstance(t *testing.T) {
	tests := []struct {
		marked       []string
		implicit     string
		name, reason string
		candidates   []string
	}{
		{nil, "default", "default", "", nil},
		{[]string{"hpc"}, "default", "hpc", "", nil},
		{[]string{"hpc"}, "", "hpc", "", nil},
		{[]string{"z", "a"}, "default", "", ReasonAmbiguousDefaultInstance, []string{"a", "z"}},
		{nil, "", "", ReasonNoDefaultInstance, nil},
	}
	for _, tc := range tests {
		marked := append([]string(nil), tc.marked...)
		name, reason, candidates := ChooseDefaultInstance(marked, tc.implicit)
		if name != tc.name || reason != tc.reason || !reflect.DeepEqual(candidates, tc.candidates) {
			t.Errorf("%q, implicit %q: %q %q %q, want %q %q %q", tc.marked, tc.implicit, name, reason, candidates, tc.name, tc.reason, tc.candidates)
		}
		if !reflect.DeepEqual(marked, tc.marked) && len(tc.marked) > 0 {
			t.Errorf("%q: the caller's slice was changed to %q", tc.marked, marked)
		}
	}
}
