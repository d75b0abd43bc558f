package pending

import (
	"strings"
	"testing"
	"time"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
	"github.com/fluxjob/fluxjob-operator/internal/broker"
)

// pev is an eventlog event at time ts with a context of key, value pairs.
func pev(ts float64, name string, kv ...any) job.Event {
	e := job.Event{Timestamp: ts, Name: name}
	if len(kv) > 0 {
		e.Context = map[string]any{}
		for i := 0; i+1 < len(kv); i += 2 {
			e.Context[kv[i].(string)] = kv[i+1]
		}
	}
	return e
}

// The eventlogs below are the ones flux-core 0.88 wrote for each case
// (test/realflux TestPendingReasons records them; numbers are JSON
// float64 as decoded).
func submitted(urgency float64) []job.Event {
	return []job.Event{pev(100, "submit", "userid", float64(1000), "urgency", urgency, "flags", float64(0), "version", float64(1))}
}

func inSched(urgency, priority float64) []job.Event {
	return append(submitted(urgency), pev(101, "validate"), pev(102, "depend"), pev(103, "priority", "priority", priority))
}

func TestOf(t *testing.T) {
	const id = job.ID(1 << 30)
	queues := func(qs map[string]broker.QueueState) broker.Waiting {
		return broker.Waiting{At: time.Unix(200, 0), Queues: qs, Jobs: map[job.ID]broker.SchedInfo{}}
	}
	started := broker.QueueState{Enabled: true, Started: true}
	stopped := broker.QueueState{Enabled: true, StopReason: "maintenance window"}
	cases := []struct {
		name      string
		events    []job.Event
		queue     string
		w         broker.Waiting
		want      string // reason, "" for not waiting
		since     float64
		msg       string // a substring of the message
		estimated float64
	}{
		{name: "new: not validated yet", events: submitted(16)},
		{name: "held: urgency 0 in SCHED", events: inSched(0, 0), want: fluxjobv1.PendingHeld, since: 100, msg: "urgency 0"},
		{name: "held: urgency 0 set later", events: append(inSched(16, 16), pev(110, "urgency", "userid", float64(1000), "urgency", float64(0)), pev(110, "priority", "priority", float64(0))),
			want: fluxjobv1.PendingHeld, since: 110},
		{name: "held while in DEPEND", events: append(submitted(0), pev(101, "dependency-add", "description", "after-success=ƒ53DZYCf"), pev(101, "validate")),
			want: fluxjobv1.PendingHeld},
		{name: "priority 0 from a plugin", events: inSched(16, 0), want: fluxjobv1.PendingHeld, since: 103, msg: "priority 0"},
		{name: "afterok dependency", events: append(submitted(16), pev(101, "dependency-add", "description", "after-success=ƒ53DZYCf"), pev(101.5, "validate")),
			want: fluxjobv1.PendingDependency, since: 101, msg: "after-success=ƒ53DZYCf"},
		{name: "singleton", events: append(submitted(16), pev(101, "dependency-add", "description", "singleton"), pev(101.5, "validate")),
			want: fluxjobv1.PendingDependency, msg: "singleton"},
		{name: "begin time", events: append(submitted(16), pev(101, "dependency-add", "description", "begin-time=1796578114.617"), pev(101.5, "validate")),
			want: fluxjobv1.PendingBeginTime, since: 101, msg: "2026-12-06T17:28:34Z"},
		{name: "accounting limit after the job dependency is met", events: append(submitted(16),
			pev(101, "dependency-add", "description", "after-success=ƒ53DZYCf"), pev(101.5, "validate"),
			pev(102, "dependency-add", "description", "max-running-jobs-user-limit"),
			pev(103, "dependency-remove", "description", "after-success=ƒ53DZYCf")),
			want: fluxjobv1.PendingLimit, since: 102, msg: "max-running-jobs-user-limit"},
		{name: "job dependency and limit: the job dependency first", events: append(submitted(16),
			pev(101, "dependency-add", "description", "after-success=ƒ53DZYCf"), pev(101.5, "validate"),
			pev(102, "dependency-add", "description", "max-running-jobs-user-limit")),
			want: fluxjobv1.PendingDependency, msg: "after-success=ƒ53DZYCf, max-running-jobs-user-limit"},
		{name: "dependencies removed, depend not posted yet", events: append(submitted(16),
			pev(101, "dependency-add", "description", "singleton"), pev(101.5, "validate"), pev(102, "dependency-remove", "description", "singleton")),
			want: fluxjobv1.PendingDependency, msg: "(state DEPEND)"},
		{name: "waiting for a priority", events: append(submitted(16), pev(101, "validate"), pev(102, "depend")),
			want: fluxjobv1.PendingPriority, since: 102},
		{name: "SCHED, nothing read", events: inSched(16, 16), want: fluxjobv1.PendingScheduling, since: 103, msg: "priority 16"},
		{name: "SCHED, anonymous queue started", events: inSched(16, 16), w: queues(map[string]broker.QueueState{"": started}),
			want: fluxjobv1.PendingScheduling},
		{name: "SCHED, anonymous queue stopped", events: inSched(16, 16), w: queues(map[string]broker.QueueState{"": stopped}),
			want: fluxjobv1.PendingQueueStopped, msg: "Flux queue is stopped: maintenance window"},
		{name: "scheduler offline", events: inSched(16, 16), w: queues(map[string]broker.QueueState{"": {Enabled: true, StopReason: "Scheduler is offline"}}),
			want: fluxjobv1.PendingQueueStopped, msg: "Scheduler is offline"},
		{name: "spec queue stopped", events: inSched(16, 16), queue: "debug",
			w: queues(map[string]broker.QueueState{"batch": started, "debug": stopped}), want: fluxjobv1.PendingQueueStopped, msg: `"debug" is stopped: maintenance window`},
		{name: "other queue stopped", events: inSched(16, 16), queue: "batch",
			w: queues(map[string]broker.QueueState{"batch": started, "debug": stopped}), want: fluxjobv1.PendingScheduling},
		{name: "default queue from job-list stopped", events: inSched(16, 16),
			w: func() broker.Waiting {
				w := queues(map[string]broker.QueueState{"batch": started, "debug": stopped})
				w.Jobs[id] = broker.SchedInfo{Queue: "debug"}
				return w
			}(), want: fluxjobv1.PendingQueueStopped},
		{name: "default queue unknown, all stopped", events: inSched(16, 16),
			w: queues(map[string]broker.QueueState{"batch": stopped, "debug": stopped}), want: fluxjobv1.PendingQueueStopped},
		{name: "t_estimate", events: inSched(16, 16),
			w: func() broker.Waiting {
				w := queues(map[string]broker.QueueState{"": started})
				w.Jobs[id] = broker.SchedInfo{TEstimate: 1796575259.387324}
				return w
			}(), want: fluxjobv1.PendingResources, since: 103, msg: "2026-12-06T16:40:59Z", estimated: 1796575259.387324},
		{name: "reason_pending", events: inSched(16, 16),
			w: func() broker.Waiting {
				w := queues(map[string]broker.QueueState{"": started})
				w.Jobs[id] = broker.SchedInfo{ReasonPending: "insufficient resources", JobsAhead: 2}
				return w
			}(), want: fluxjobv1.PendingResources, msg: "insufficient resources (2 jobs ahead)"},
		{name: "allocated", events: append(inSched(16, 16), pev(104, "alloc"))},
		{name: "fatal exception", events: append(inSched(16, 16), pev(104, "exception", "type", "cancel", "severity", float64(0)))},
		{name: "ended", events: append(inSched(16, 16), pev(104, "clean"))},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, waits := Of(id, job.NewSummary(tc.events), tc.queue, tc.w)
			if !waits {
				if tc.want != "" {
					t.Fatalf("not waiting, want %s", tc.want)
				}
				return
			}
			if got.Reason != tc.want {
				t.Fatalf("reason %q (%s), want %q", got.Reason, got.Message, tc.want)
			}
			if tc.since != 0 && got.Since != tc.since {
				t.Errorf("since %v, want %v", got.Since, tc.since)
			}
			if !strings.Contains(got.Message, tc.msg) {
				t.Errorf("message %q does not say %q", got.Message, tc.msg)
			}
			if got.Estimate != tc.estimated {
				t.Errorf("estimate %v, want %v", got.Estimate, tc.estimated)
			}
			if WantsWaiting(job.NewSummary(tc.events)) != (got.Reason == fluxjobv1.PendingScheduling || got.Reason == fluxjobv1.PendingQueueStopped || got.Reason == fluxjobv1.PendingResources) {
				t.Errorf("wantsWaiting disagrees with reason %s", got.Reason)
			}
		})
	}
}

// TestSummaryDependencies checks the fold of dependency-add and
// dependency-remove: one entry per description, and a bound.
func TestSummaryDependencies(t *testing.T) {
	evs := submitted(16)
	for i := 0; i < job.MaxSummaryDependencies+5; i++ {
		evs = append(evs, pev(101, "dependency-add", "description", "d"+string(rune('a'+i))))
	}
	evs = append(evs, pev(101, "dependency-add", "description", "da"), pev(102, "dependency-remove", "description", "da"))
	s := job.NewSummary(evs)
	if len(s.Dependencies) != job.MaxSummaryDependencies-1 || s.Pending != job.MaxSummaryDependencies+4 {
		t.Fatalf("kept %d of %d pending, want %d of %d", len(s.Dependencies), s.Pending, job.MaxSummaryDependencies-1, job.MaxSummaryDependencies+4)
	}
	// removing one that was not kept lowers the count only
	s2 := job.NewSummary(append(evs, pev(103, "dependency-remove", "description", "d"+string(rune('a'+job.MaxSummaryDependencies+2)))))
	if len(s2.Dependencies) != len(s.Dependencies) || s2.Pending != s.Pending-1 {
		t.Fatalf("after removing an unkept one: kept %d of %d", len(s2.Dependencies), s2.Pending)
	}
	if r := dependReason(s); !strings.Contains(r.Message, "and 5 more") {
		t.Fatalf("message %q does not count the rest", r.Message)
	}
}
