package job

import (
	"fmt"
	"syscall"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/sign"
)

// GuestRefusal returns the error flux-core 0.88's job-ingest would answer
// a guest (a user other than the instance owner) submitting with opts, or
// nil: urgency above 16, the waitable and novalidate flags, and a jobspec
// signed with "none" (no Signer, or sign.None). The messages and errnos
// are the broker's, so a caller can refuse before submitting, with the
// reason the broker would give. A PreSigned J is not inspected.
func GuestRefusal(opts SubmitOptions) error {
	refuse := func(errno syscall.Errno, msg string) error {
		return fmt.Errorf("job: submit as a guest: %s: %w", msg, errno)
	}
	if opts.NoValidate {
		return refuse(syscall.EPERM, "only the instance owner can submit with FLUX_JOB_NOVALIDATE")
	}
	if opts.Urgency != nil && *opts.Urgency > UrgencyDefault {
		return refuse(syscall.EINVAL, fmt.Sprintf("only the instance owner can submit with urgency >%d", UrgencyDefault))
	}
	if opts.Waitable {
		return refuse(syscall.EINVAL, "only the instance owner can submit with FLUX_JOB_WAITABLE")
	}
	if opts.PreSigned {
		return nil
	}
	switch opts.Signer.(type) {
	case nil, sign.None, *sign.None:
		return refuse(syscall.EPERM, "only instance owner can use sign-type=none")
	}
	return nil
}
