package v1alpha1

import (
	"encoding/json"
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
)

// equality.Semantic (what controllers compare objects with) compares
// PreciseTimes as instants, as it does metav1.Times; without this it
// refuses the unexported fields of time.Time.
func init() {
	if err := equality.Semantic.AddFunc(func(a, b PreciseTime) bool { return a.Equal(b.Time) }); err != nil {
		panic(err)
	}
}

// PreciseTime is a timestamp that keeps nanoseconds over the wire: it is
// written in RFC 3339 with up to nine fractional digits (UTC) and read from
// RFC 3339 with or without a fraction. metav1.Time keeps whole seconds, and
// metav1.MicroTime cannot read a value without exactly six fractional
// digits, so switching status.submitAttemptTime to it would have made
// objects written by an earlier controller (second precision) unreadable;
// PreciseTime reads both. The schema stays a date-time string.
//
// +kubebuilder:validation:Type=string
// +kubebuilder:validation:Format=date-time
type PreciseTime struct {
	time.Time `json:"-"`
}

// NewPreciseTime returns t as a PreciseTime.
func NewPreciseTime(t time.Time) PreciseTime { return PreciseTime{Time: t} }

// DeepCopyInto copies t into out.
func (t *PreciseTime) DeepCopyInto(out *PreciseTime) { *out = *t }

// DeepCopy returns a copy of t.
func (t *PreciseTime) DeepCopy() *PreciseTime {
	if t == nil {
		return nil
	}
	out := new(PreciseTime)
	t.DeepCopyInto(out)
	return out
}

// MarshalJSON writes RFC 3339 with nanoseconds, in UTC; the zero time is
// null.
func (t PreciseTime) MarshalJSON() ([]byte, error) {
	if t.IsZero() {
		return []byte("null"), nil
	}
	return json.Marshal(t.UTC().Format(time.RFC3339Nano))
}

// UnmarshalJSON reads RFC 3339 with or without fractional seconds, or null.
func (t *PreciseTime) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		t.Time = time.Time{}
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("PreciseTime: %w", err)
	}
	pt, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return fmt.Errorf("PreciseTime: %w", err)
	}
	t.Time = pt.Local()
	return nil
}

// ToUnstructured is what the unstructured converter (server-side apply,
// client-side merge patches of typed objects) uses instead of JSON.
func (t PreciseTime) ToUnstructured() any {
	if t.IsZero() {
		return nil
	}
	return t.UTC().Format(time.RFC3339Nano)
}

// OpenAPISchemaType and OpenAPISchemaFormat describe the type to
// kube-openapi, as metav1.Time does.
func (PreciseTime) OpenAPISchemaType() []string { return []string{"string"} }

// OpenAPISchemaFormat is "date-time".
func (PreciseTime) OpenAPISchemaFormat() string { return "date-time" }
