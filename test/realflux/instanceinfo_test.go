package realflux

import (
	"testing"
	"time"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
	"github.com/fluxjob/fluxjob-operator/internal/broker"
)

// TestInstanceInfo reads what a FluxEndpoint's status shows (attr.get
// version and size, job-list.job-stats) from the real broker and from the
// test broker after one job ran to the end: the same counts, a one-broker
// instance, the real broker's flux-core version.
func TestInstanceInfo(t *testing.T) {
	for _, tg := range targets(t) {
		t.Run(tg.name, func(t *testing.T) {
			c := dial(t, tg.uri)
			before, err := broker.ReadInstanceInfo(ctxT(t), c, 10*time.Second)
			if err != nil {
				t.Fatalf("ReadInstanceInfo: %v", err)
			}
			id, err := job.SubmitJobspec(ctxT(t), c, fromCommand(t, "true"), job.SubmitOptions{Waitable: true})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := job.Wait(ctxT(t), c, id); err != nil {
				t.Fatal(err)
			}
			var after broker.InstanceInfo
			deadline := time.Now().Add(30 * time.Second)
			for {
				if after, err = broker.ReadInstanceInfo(ctxT(t), c, 10*time.Second); err != nil {
					t.Fatal(err)
				}
				// job-stats follows job-list, which learns of the job's end
				// from the journal a moment later.
				if after.Jobs.Successful > before.Jobs.Successful || time.Now().After(deadline) {
					break
				}
				time.Sleep(50 * time.Millisecond)
			}
			t.Logf("%s: %+v", tg.name, after)
			if after.Size != 1 || after.Version == "" {
				t.Fatalf("size %d version %q, want 1 and a version", after.Size, after.Version)
			}
			if tg.real && after.Version != "0.88.0" {
				t.Errorf("real broker version %q, want 0.88.0", after.Version)
			}
			if d := after.Jobs.Successful - before.Jobs.Successful; d != 1 {
				t.Errorf("successful jobs %d -> %d, want one more", before.Jobs.Successful, after.Jobs.Successful)
			}
			if after.Jobs.Total != after.Jobs.Pending+after.Jobs.Running+after.Jobs.Inactive {
				t.Errorf("total %d is not pending+running+inactive: %+v", after.Jobs.Total, after.Jobs)
			}
		})
	}
}
