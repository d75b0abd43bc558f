package pending

import (
	"strings"
	"testing"
	"time"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
	"github.com/fluxjob/fluxjob-operator/internal/broker"
)

func TestArray(t *testing.T) {
	const id = job.ID(1 << 30)
	started := broker.QueueState{Enabled: true, Started: true}
	stopped := broker.QueueState{Enabled: true, StopReason: "drain"}
	waiting := func(q broker.QueueState, jobs map[job.ID]broker.SchedInfo) broker.Waiting {
		return broker.Waiting{At: time.Unix(200, 0), Queues: map[string]broker.QueueState{"batch": started, "debug": q}, Jobs: jobs}
	}
	sample := func(evs []job.Event) Sample {
		return Sample{Waiting: 812, Indexes: 1000, Index: 188, ID: id, Summary: job.NewSummary(evs)}
	}
	cases := []struct {
		name      string
		s         Sample
		queue     string
		w         broker.Waiting
		want      string // reason, "" for none
		msg       []string
		since     float64
		estimated float64
	}{
		{name: "no index waits", s: Sample{Indexes: 1000, Index: 3, ID: id, Summary: job.NewSummary(inSched(0, 0))}},
		{name: "no sample yet", s: Sample{Waiting: 5, Indexes: 5}},
		{name: "sample not read yet", s: sample(nil)},
		{name: "sample not validated yet", s: sample(submitted(16))},
		{name: "sample allocated since", s: sample(append(inSched(16, 16), pev(104, "alloc")))},
		{name: "held: spec.urgency 0", s: sample(inSched(0, 0)), want: fluxjobv1.PendingHeld, since: 100,
			msg: []string{"812 of 1000 indexes wait in Flux; the first, index 188 (job " + id.F58() + "): Held in Flux at urgency 0"}},
		{name: "every index after a job", s: sample(append(submitted(16), pev(101, "dependency-add", "description", "after-success=ƒ53DZYCf"), pev(101.5, "validate"))),
			want: fluxjobv1.PendingDependency, since: 101, msg: []string{"index 188", "after-success=ƒ53DZYCf"}},
		{name: "begin time", s: sample(append(submitted(16), pev(101, "dependency-add", "description", "begin-time=1796578114.617"), pev(101.5, "validate"))),
			want: fluxjobv1.PendingBeginTime, since: 101, msg: []string{"2026-12-06T17:28:34Z"}},
		{name: "stopped queue", s: sample(inSched(16, 16)), queue: "debug", w: waiting(stopped, nil),
			want: fluxjobv1.PendingQueueStopped, msg: []string{"812 of 1000", `Flux queue "debug" is stopped: drain`}},
		{name: "the sample's queue from job-list", s: sample(inSched(16, 16)), w: waiting(stopped, map[job.ID]broker.SchedInfo{id: {Queue: "debug"}}),
			want: fluxjobv1.PendingQueueStopped, msg: []string{`"debug"`}},
		{name: "resources with an estimate", s: sample(inSched(16, 16)), queue: "batch", w: waiting(started, map[job.ID]broker.SchedInfo{id: {Queue: "batch", TEstimate: 1796578114}}),
			want: fluxjobv1.PendingResources, since: 103, estimated: 1796578114, msg: []string{"index 188", "2026-12-06T17:28:34Z"}},
		{name: "scheduling", s: sample(inSched(16, 16)), queue: "batch", w: waiting(started, nil),
			want: fluxjobv1.PendingScheduling, since: 103, msg: []string{"812 of 1000", "SCHED"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r, ok := Array(tc.s, tc.queue, tc.w)
			if ok != (tc.want != "") || r.Reason != tc.want {
				t.Fatalf("Array = %+v, %v; want reason %q", r, ok, tc.want)
			}
			for _, m := range tc.msg {
				if !strings.Contains(r.Message, m) {
					t.Errorf("message %q does not contain %q", r.Message, m)
				}
			}
			if r.Since != tc.since || r.Estimate != tc.estimated {
				t.Errorf("since %v estimate %v, want %v %v", r.Since, r.Estimate, tc.since, tc.estimated)
			}
		})
	}
}
