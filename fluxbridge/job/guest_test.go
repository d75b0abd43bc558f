package job

import (
	"errors"
	"strings"
	"syscall"
	"testing"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/sign"
)

// TestGuestRefusal: the checks flux-core's job-ingest makes of a guest, in
// its order and with its messages (src/modules/job-ingest/job.c).
func TestGuestRefusal(t *testing.T) {
	munge := &sign.Munge{}
	tests := []struct {
		name  string
		opts  SubmitOptions
		errno syscall.Errno
		msg   string
	}{
		{"munge", SubmitOptions{Signer: munge}, 0, ""},
		{"munge, urgency 16", SubmitOptions{Signer: munge, Urgency: Urgency(16)}, 0, ""},
		{"munge, held", SubmitOptions{Signer: munge, Urgency: Urgency(0)}, 0, ""},
		{"presigned", SubmitOptions{PreSigned: true}, 0, ""},
		{"default signature", SubmitOptions{}, syscall.EPERM, "only instance owner can use sign-type=none"},
		{"none", SubmitOptions{Signer: sign.None{UserID: 5}}, syscall.EPERM, "only instance owner can use sign-type=none"},
		{"urgency 17", SubmitOptions{Signer: munge, Urgency: Urgency(17)}, syscall.EINVAL, "only the instance owner can submit with urgency >16"},
		{"waitable", SubmitOptions{Signer: munge, Waitable: true}, syscall.EINVAL, "only the instance owner can submit with FLUX_JOB_WAITABLE"},
		{"novalidate first", SubmitOptions{Signer: munge, NoValidate: true, Waitable: true}, syscall.EPERM, "only the instance owner can submit with FLUX_JOB_NOVALIDATE"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := GuestRefusal(tc.opts)
			if tc.errno == 0 {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, tc.errno) || err == nil || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("GuestRefusal = %v, want %v %q", err, tc.errno, tc.msg)
			}
		})
	}
}
