package testbroker_test

import (
	"context"
	"fmt"
	"syscall"
	"testing"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/sign"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/testbroker"
)

// unverifiedMunge is a "munge" mechanism whose signature is not a
// credential: job-ingest does not verify signatures (FLUX_SIGN_NOVERIFY),
// so the test broker, like flux-core 0.88, accepts it.
type unverifiedMunge struct{}

func (unverifiedMunge) Name() string                                 { return "munge" }
func (unverifiedMunge) Sign(context.Context, []byte) (string, error) { return "MUNGE:unverified:", nil }

// TestFluxSecurityIngest: with FluxSecurity, job-ingest decodes J as a
// flux-core built with flux-security does: a guest's munge envelope is
// accepted, its "none" one refused, a claim of another uid refused, and a
// J that does not decode refused with flux-security's message.
func TestFluxSecurityIngest(t *testing.T) {
	mungeJ := func(uid uint32) string {
		j, err := sign.Wrap(context.Background(), unverifiedMunge{}, int64(uid), jobspecFor("true"))
		if err != nil {
			t.Fatal(err)
		}
		return j
	}
	noneJ, _ := sign.None{UserID: myUID()}.Wrap(context.Background(), jobspecFor("true"))
	tests := []struct {
		name     string
		security bool
		J        string
		errno    syscall.Errno
		text     string
	}{
		{"munge from a guest", true, mungeJ(myUID()), 0, ""},
		{"none from a guest", true, noneJ, syscall.EPERM, "only instance owner can use sign-type=none"},
		{"munge claiming another uid", true, mungeJ(myUID() + 1), syscall.EPERM, fmt.Sprintf("signer=%d != requestor=%d", myUID()+1, myUID())},
		{"undecodable", true, "bm90IGt2.e30=.none", syscall.EINVAL, "sign-unwrap: header decode error: Invalid argument"},
		{"unknown mechanism", true, "dmVyc2lvbgBpMQBtZWNoYW5pc20Ac3gAdXNlcmlkAGkwAA==.e30=.x", syscall.EINVAL, "sign-unwrap: header mechanism=x unknown"},
		{"munge without flux-security", false, mungeJ(myUID()), syscall.EINVAL, "could not unwrap jobspec: Invalid argument"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := startServer(t, testbroker.Options{OwnerUID: otherUID(), AllowGuests: true, FluxSecurity: tc.security})
			c := dialRaw(t, srv)
			m := c.rpc("job-ingest.submit", map[string]any{"J": tc.J, "urgency": 16, "flags": 0})
			if m.Errnum() != uint32(tc.errno) {
				t.Fatalf("errno %d %q, want %d %q", m.Errnum(), m.PayloadString(), tc.errno, tc.text)
			}
			if tc.errno != 0 {
				if m.PayloadString() != tc.text {
					t.Fatalf("%q, want %q", m.PayloadString(), tc.text)
				}
				return
			}
			var resp struct{ ID uint64 }
			if err := m.DecodeJSON(&resp); err != nil || resp.ID == 0 {
				t.Fatalf("response %q: %v", m.PayloadString(), err)
			}
		})
	}
}
