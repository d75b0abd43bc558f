package realflux

import (
	"context"
	"errors"
	"syscall"
	"testing"
	"time"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
	"github.com/fluxjob/fluxjob-operator/internal/broker"
)

// TestInstanceIdentityAndJobChecks runs what the controller asks before it
// trusts a job ID (internal/broker/identity.go) and before it resubmits
// (job-manager.getinfo, controllers/submit.go catchUp) against both
// brokers: the identity kept in the KVS reads back the same, max_jobid
// covers a job just submitted, and VerifyJob tells our job, another's and
// a missing one apart.
func TestInstanceIdentityAndJobChecks(t *testing.T) {
	for _, tg := range targets(t) {
		t.Run(tg.name, func(t *testing.T) {
			ctx := ctxT(t)
			c := dial(t, tg.uri)
			id1, err := broker.InstanceIdentity(ctx, c)
			if err != nil || id1 == "" {
				t.Fatalf("InstanceIdentity: %q %v", id1, err)
			}
			if id2, err := broker.InstanceIdentity(ctx, c); err != nil || id2 != id1 {
				t.Fatalf("second InstanceIdentity: %q %v, want %q", id2, err, id1)
			}
			js := fromCommand(t, "true")
			js.SetJobName("fluxjob-identity-check")
			id := submit(t, c, js, job.SubmitOptions{})
			var info struct {
				MaxJobID job.ID `json:"max_jobid"`
			}
			if err := c.RPC(ctx, "job-manager.getinfo", nil, &info); err != nil || info.MaxJobID < id {
				t.Fatalf("getinfo: %+v %v, want max_jobid >= %s", info, err, id)
			}
			for _, tc := range []struct {
				id    job.ID
				name  string
				want  broker.JobCheck
				other string
			}{
				{id, "fluxjob-identity-check", broker.JobOurs, ""},
				{id, "fluxjob-someone-else", broker.JobOther, "fluxjob-identity-check"},
				{id + 1<<40, "fluxjob-identity-check", broker.JobGone, ""},
			} {
				got, other, err := broker.VerifyJob(ctx, c, tc.id, tc.name, 10*time.Second)
				if err != nil || got != tc.want || other != tc.other {
					t.Errorf("VerifyJob(%s, %s) = %v %q %v, want %v %q", tc.id, tc.name, got, other, err, tc.want, tc.other)
				}
			}
		})
	}
}

// TestRestartOnStatedirKeepsPendingJobs stops a real instance cleanly and
// starts it again on the same statedir, then starts a fresh one, and
// checks what the test broker's RestartAs(RestartClean) and
// RestartAs(RestartFresh) claim: a pending job survives with its ID (and,
// waiting for resources, gets flux-restart), a finished one stays
// finished, new IDs continue after the old ones, and the controller's
// instance identity stays, while a fresh instance has none of it.
func TestRestartOnStatedirKeepsPendingJobs(t *testing.T) {
	needFlux(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	dir := t.TempDir()
	startOn := func(statedir string) (*instance, *flux.Conn) {
		inst, err := startOwnInstance(ctx, "-Sstatedir="+statedir, "-Sstatedir-cleanup=0")
		if err != nil {
			t.Fatal(err)
		}
		c, err := flux.Dial(ctx, inst.URI)
		if err != nil {
			inst.Kill()
			t.Fatal(err)
		}
		return inst, c
	}
	inst, c := startOn(dir)
	identity, err := broker.InstanceIdentity(ctx, c)
	if err != nil || identity == "" {
		t.Fatal(identity, err)
	}
	done := submit(t, c, fromCommand(t, "true"), job.SubmitOptions{})
	events(t, c, done, "")
	held := 0
	pending := submit(t, c, fromCommand(t, "true"), job.SubmitOptions{Urgency: &held})
	events(t, c, pending, "priority")
	_ = c.Close()
	if err := inst.Stop(time.Minute); err != nil {
		t.Fatal(err)
	}

	inst, c = startOn(dir)
	defer func() { _ = c.Close(); _ = inst.Stop(time.Minute) }()
	if got, err := broker.InstanceIdentity(ctx, c); err != nil || got != identity {
		t.Errorf("identity after a restart on the same statedir: %q %v, want %q", got, err, identity)
	}
	st, err := job.ListID(ctx, c, pending, "state")
	if err != nil || st.State&job.StatePending == 0 {
		t.Errorf("held job after the restart: %+v %v, want pending", st, err)
	}
	evs := events(t, c, pending, "flux-restart")
	if n := len(evs); n == 0 || evs[n-1].Name != "flux-restart" {
		t.Errorf("held job's eventlog %v has no flux-restart", names(evs))
	}
	if st, err := job.ListID(ctx, c, done, "state"); err != nil || st.State != job.StateInactive {
		t.Errorf("finished job after the restart: %+v %v, want inactive", st, err)
	}
	if id := submit(t, c, fromCommand(t, "true"), job.SubmitOptions{}); id <= pending {
		t.Errorf("new job ID %s after the restart, want > %s", id, pending)
	}

	fresh, fc := startOn(t.TempDir())
	defer func() { _ = fc.Close(); _ = fresh.Stop(time.Minute) }()
	if got, err := broker.InstanceIdentity(ctx, fc); err != nil || got == identity || got == "" {
		t.Errorf("a fresh instance's identity %q %v, want a new one (not %q)", got, err, identity)
	}
	if _, err := job.ListID(ctx, fc, pending, "state"); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("a fresh instance knows the old job %s: %v", pending, err)
	}

}
