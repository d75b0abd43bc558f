package realflux

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"syscall"
	"testing"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/sign"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/testbroker"
)

// TestGuestOwnerOnly: what flux-core 0.88 grants its instance owner only,
// asked by a guest whose jobspec is correctly signed with munge (so that
// only the owner-only rule can refuse it), on the real multi-user
// instance and on the test broker as such an instance (FluxSecurity,
// AllowGuests). job-ingest (src/modules/job-ingest/job.c): urgency above
// 16, FLUX_JOB_WAITABLE, FLUX_JOB_NOVALIDATE; job-manager
// (src/modules/job-manager/urgency.c): a guest raising its own job's
// urgency above max(16, its urgency). The broker's messages and errnos
// must be the ones job.GuestRefusal gives (what the controller refuses
// a FluxEndpoint account's FluxJob with, reason OwnerOnly, before
// submitting), and the test broker's the same as the real one's.
func TestGuestOwnerOnly(t *testing.T) {
	g := startGuestInstance(t)
	tb := testbroker.New(testbroker.Options{Dir: guestDir(t), AllowGuests: true, FluxSecurity: true, Hostname: "testbroker"})
	if err := tb.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tb.Close() })
	js, err := job.FromCommand([]string{"true"}, job.CommandOptions{Cwd: "/tmp"})
	if err != nil {
		t.Fatal(err)
	}
	spec, err := js.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	brokers := map[string]string{"real": g.uri, "testbroker": tb.URI()}

	for _, c := range []struct {
		name  string
		flags []string
		opts  job.SubmitOptions
	}{
		{"urgency 17", []string{"-urgency", "17"}, job.SubmitOptions{Urgency: job.Urgency(17)}},
		{"urgency 31", []string{"-urgency", "31"}, job.SubmitOptions{Urgency: job.Urgency(31)}},
		{"waitable", []string{"-waitable"}, job.SubmitOptions{Waitable: true}},
		{"novalidate", []string{"-novalidate"}, job.SubmitOptions{NoValidate: true}},
		{"waitable and urgency 20", []string{"-waitable", "-urgency", "20"}, job.SubmitOptions{Waitable: true, Urgency: job.Urgency(20)}},
	} {
		t.Run(c.name, func(t *testing.T) {
			c.opts.Signer = &sign.Munge{}
			want := job.GuestRefusal(c.opts)
			if want == nil {
				t.Fatal("GuestRefusal accepts it")
			}
			answers := map[string]string{}
			for name, uri := range brokers {
				r := g.submitAsGuestTo(t, uri, "munge", g.munged.Socket, spec, c.flags...)
				if r.ID != "" || r.Message == "" {
					t.Fatalf("%s: %+v, want refused", name, r)
				}
				answers[name] = fmt.Sprintf("%s (errno %d)", r.Message, r.Errno)
				if !strings.Contains(want.Error(), ": "+r.Message+":") || !errors.Is(want, syscall.Errno(r.Errno)) {
					t.Errorf("%s: broker %q (errno %d), GuestRefusal %v", name, r.Message, r.Errno, want)
				}
			}
			if answers["real"] != answers["testbroker"] {
				t.Errorf("real %q, test broker %q", answers["real"], answers["testbroker"])
			}
		})
	}

	// What a guest may do is accepted (GuestRefusal says nil): urgency
	// 0..16, debug. Then its own held job's urgency: never above 16, up to
	// 16 (last: the job may then be scheduled, after which no urgency
	// changes).
	if err := job.GuestRefusal(job.SubmitOptions{Urgency: job.Urgency(0), Debug: true, Signer: &sign.Munge{}}); err != nil {
		t.Fatalf("GuestRefusal refuses what a guest may do: %v", err)
	}
	adjusts := map[string]string{}
	for name, uri := range brokers {
		r := g.submitAsGuestTo(t, uri, "munge", g.munged.Socket, spec, "-urgency", "0", "-adjust", "17,31,0,16")
		if r.ID == "" {
			t.Fatalf("%s: a held guest job refused: %+v", name, r)
		}
		var got []string
		for _, a := range r.Adjust {
			got = append(got, fmt.Sprintf("%d: %q errno %d", a.Urgency, a.Message, a.Errno))
		}
		adjusts[name] = strings.Join(got, "; ")
		if len(r.Adjust) != 4 || r.Adjust[2].Errno != 0 || r.Adjust[3].Errno != 0 ||
			r.Adjust[0].Message != "guests can only adjust urgency <= default" || r.Adjust[0].Errno != int(syscall.EPERM) ||
			r.Adjust[1].Message != r.Adjust[0].Message || r.Adjust[1].Errno != int(syscall.EPERM) {
			t.Errorf("%s: urgency changes %s", name, adjusts[name])
		}
	}
	if adjusts["real"] != adjusts["testbroker"] {
		t.Errorf("urgency changes: real %s\ntest broker %s", adjusts["real"], adjusts["testbroker"])
	}
}
