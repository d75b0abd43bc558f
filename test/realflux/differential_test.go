package realflux

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/kvs"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/testbroker"
	"github.com/fluxjob/fluxjob-operator/internal/broker"
)

// Differential tests: one scenario, run against a real flux-core broker
// and against fluxbridge/testbroker, whose observations are compared line
// by line (compare). Each covers a flux-core behaviour one of the
// controller's guarantees rests on; when they differ, the test broker is
// what has to change (it stands in for flux-core in every other test).

// freshTargets returns a fresh real instance started with brokerArgs and a
// fresh test broker started with opts, each stopped at cleanup: for
// scenarios that need an empty history or a configured job manager.
func freshTargets(t *testing.T, brokerArgs []string, opts testbroker.Options) []target {
	t.Helper()
	inst := ownInstance(t, startOptions{Args: brokerArgs})
	if opts.Hostname == "" {
		opts.Hostname = "testbroker"
	}
	srv := testbroker.New(opts)
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	return []target{{name: "real", uri: inst.URI, real: true}, {name: "testbroker", uri: srv.URI()}}
}

// labeller names job IDs by the order a scenario made them, so that lists
// from two brokers (different IDs) compare.
type labeller map[job.ID]string

func (l labeller) names(jobs []job.JobInfo) string {
	var out []string
	for _, j := range jobs {
		name, ok := l[j.ID]
		if !ok {
			name = "unknown job " + j.ID.F58()
		}
		out = append(out, name)
	}
	return "[" + strings.Join(out, " ") + "]"
}

// TestListNameSince checks the lookup the controller makes before it
// submits a FluxJob again (internal/broker/lookup.go): job-list.list
// with a name constraint and "since". flux-core returns pending, then
// running, then inactive jobs, the inactive ones newest first and only
// those that became inactive after "since" (src/modules/job-list/list.c
// get_jobs_from_list); active jobs whatever "since" says. The scenario:
// three jobs of one name (the first ends, the second is held, the third
// ends) and one of another name.
func TestListNameSince(t *testing.T) {
	obs := map[string][]string{}
	name := fmt.Sprintf("since-%d", time.Now().UnixNano())
	for _, tg := range targets(t) {
		ctx := ctxT(t)
		c := dial(t, tg.uri)
		named := func(n string, opts job.SubmitOptions) job.ID {
			js := fromCommand(t, "true")
			js.SetJobName(n)
			return submit(t, c, js, opts)
		}
		l := labeller{}
		first := named(name, job.SubmitOptions{})
		l[first] = "first(inactive)"
		events(t, c, first, "clean")
		held := named(name, job.SubmitOptions{Urgency: job.Urgency(job.UrgencyHold)})
		l[held] = "held(pending)"
		third := named(name, job.SubmitOptions{})
		l[third] = "third(inactive)"
		events(t, c, third, "clean")
		other := named(name+"-other", job.SubmitOptions{})
		l[other] = "other-name"
		events(t, c, other, "clean")
		t.Cleanup(func() { _ = job.Cancel(context.Background(), c, held, "") })
		// job-list learns of states from the journal: wait until it lists
		// each job in its final state for this scenario
		waitListed(t, c, first, job.StateInactive)
		waitListed(t, c, third, job.StateInactive)
		waitListed(t, c, other, job.StateInactive)
		waitListed(t, c, held, job.StateSched)
		tFirst, err := job.ListID(ctx, c, first, "t_inactive")
		if err != nil {
			t.Fatal(err)
		}
		tThird, err := job.ListID(ctx, c, third, "t_inactive")
		if err != nil {
			t.Fatal(err)
		}
		var o []string
		for _, tc := range []struct {
			what  string
			since float64
			max   int
		}{
			{"since 0", 0, 0},
			{"since the first's t_inactive", tFirst.TInactive, 0},
			{"since just before the first's t_inactive", tFirst.TInactive - 0.0001, 0},
			{"since the third's t_inactive", tThird.TInactive, 0},
			{"since now+1h", float64(time.Now().Add(time.Hour).UnixNano()) / 1e9, 0},
			{"since 0, max 2", 0, 2},
			{"since the first's t_inactive, max 1", tFirst.TInactive, 1},
		} {
			jobs, err := job.List(ctx, c, job.ListOptions{Attrs: []string{"name"}, Constraint: job.Name(name), Since: tc.since, MaxEntries: tc.max})
			o = append(o, fmt.Sprintf("%s: %s %s", tc.what, l.names(jobs), errObs(err)))
		}
		_, err = job.List(ctx, c, job.ListOptions{Constraint: job.Name(name), Since: -1})
		o = append(o, "since -1 (refused by the client): "+errObs(err))
		var raw map[string]any
		err = c.RPC(ctx, "job-list.list", map[string]any{"max_entries": 0, "attrs": []string{"name"}, "since": -1.0}, &raw)
		o = append(o, "raw since -1: "+errObs(err))
		obs[tg.name] = o
	}
	compare(t, "list name+since", obs)
}

// TestGetinfo checks job-manager.getinfo, which the controller's catch-up
// before a resubmission reads (internal/broker/lookup.go): max_jobid
// is 0 in a fresh instance, the newest job's ID after submissions, and
// stays there when that job ends or is cancelled.
func TestGetinfo(t *testing.T) {
	obs := map[string][]string{}
	for _, tg := range freshTargets(t, nil, testbroker.Options{}) {
		ctx := ctxT(t)
		c := dial(t, tg.uri)
		var o []string
		getinfo := func(what string, want job.ID) {
			var raw map[string]any
			err := c.RPC(ctx, "job-manager.getinfo", nil, &raw)
			var info struct {
				MaxJobID job.ID `json:"max_jobid"`
			}
			if err == nil {
				err = c.RPC(ctx, "job-manager.getinfo", nil, &info)
			}
			rel := "max_jobid = the expected job"
			if info.MaxJobID != want {
				rel = fmt.Sprintf("max_jobid %s, want %s", info.MaxJobID, want)
				t.Errorf("%s: %s: %s", tg.name, what, rel)
			}
			o = append(o, fmt.Sprintf("%s: %s %s %s", what, shape(raw), rel, errObs(err)))
		}
		getinfo("fresh", 0)
		a := submit(t, c, fromCommand(t, "true"), job.SubmitOptions{})
		getinfo("after one submission", a)
		events(t, c, a, "clean")
		b := submit(t, c, fromCommand(t, "true"), job.SubmitOptions{Urgency: job.Urgency(job.UrgencyHold)})
		getinfo("after a second (held)", b)
		if err := job.Cancel(ctx, c, b, ""); err != nil {
			t.Fatal(err)
		}
		events(t, c, b, "clean")
		getinfo("after the second was cancelled", b)
		var raw map[string]any
		o = append(o, "getinfo with a payload {\"x\":1}: "+errObs(c.RPC(ctx, "job-manager.getinfo", map[string]any{"x": 1}, &raw)))
		obs[tg.name] = o
	}
	compare(t, "getinfo", obs)
}

// TestKVSIdentityAnswers checks the KVS requests behind the controller's
// instance identity (internal/broker/identity.go InstanceIdentity): the key
// missing (ENOENT, which makes the controller store one), stored and read
// back, overwritten, and a key below a value.
func TestKVSIdentityAnswers(t *testing.T) {
	obs := map[string][]string{}
	key := fmt.Sprintf("realflux.test-%d", time.Now().UnixNano())
	for _, tg := range targets(t) {
		ctx := ctxT(t)
		c := dial(t, tg.uri)
		var o []string
		_, err := kvs.Get(ctx, c, key)
		if !errors.Is(err, syscall.ENOENT) {
			t.Errorf("%s: a missing key: %v, want ENOENT", tg.name, err)
		}
		o = append(o, "lookup missing: "+errObs(err))
		o = append(o, "put: "+errObs(kvs.Put(ctx, c, key, []byte("one"))))
		v, err := kvs.Get(ctx, c, key)
		o = append(o, fmt.Sprintf("lookup: %q %s", v, errObs(err)))
		o = append(o, "put again: "+errObs(kvs.Put(ctx, c, key, []byte("two"))))
		v, err = kvs.Get(ctx, c, key)
		o = append(o, fmt.Sprintf("lookup: %q %s", v, errObs(err)))
		_, err = kvs.Get(ctx, c, key+".below")
		o = append(o, "lookup below a value: "+errObs(err))
		id1, err := broker.InstanceIdentity(ctx, c)
		id2, err2 := broker.InstanceIdentity(ctx, c)
		o = append(o, fmt.Sprintf("identity: %d hex digits, stable %v, %s %s", len(id1), id1 == id2 && id1 != "", errObs(err), errObs(err2)))
		obs[tg.name] = o
	}
	compare(t, "kvs identity", obs)
}

// purgeObservations waits until job-list no longer has gone[i] for each i
// and returns what the brokers then answer about a purged job and the kept
// ones.
func purgeObservations(t *testing.T, c *flux.Conn, l labeller, gone, kept []job.ID) []string {
	t.Helper()
	ctx := ctxT(t)
	for _, id := range gone {
		for {
			// bounded: a list-id that meets a purge half done can wait past
			// it (see TestPurgeConfig)
			cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			_, err := job.ListID(cctx, c, id, "state")
			cancel()
			if errors.Is(err, syscall.ENOENT) {
				break
			}
			if ctx.Err() != nil {
				t.Fatalf("job %s (%s) was not purged: %v", l[id], id, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	var o []string
	for _, id := range gone {
		_, err := job.ListID(ctx, c, id, "state")
		o = append(o, fmt.Sprintf("%s list-id: %s", l[id], strings.ReplaceAll(errObs(err), id.Decimal(), "ID")))
		o = append(o, fmt.Sprintf("%s eventlog: %s", l[id], strings.ReplaceAll(errObs(firstEventErr(ctx, c, id)), id.Decimal(), "ID")))
		var resp map[string]any
		err = c.RPC(ctx, "job-info.lookup", map[string]any{"id": id, "keys": []string{"jobspec"}, "flags": 0}, &resp)
		o = append(o, fmt.Sprintf("%s lookup jobspec: %s", l[id], errObs(err)))
		o = append(o, fmt.Sprintf("%s cancel: %s", l[id], errObs(job.Cancel(ctx, c, id, ""))))
	}
	for _, id := range kept {
		info, err := job.ListID(ctx, c, id, "state", "result")
		o = append(o, fmt.Sprintf("%s: %v %v %s", l[id], info.State, info.Result, errObs(err)))
	}
	jobs, err := job.List(ctx, c, job.ListOptions{Attrs: []string{"state"}})
	o = append(o, "listed: "+l.names(jobs)+" "+errObs(err))
	return o
}

// TestPurgeDifferential configures the purge of inactive jobs the
// controller's PurgeAge and the SubmissionUnknown outcome depend on
// ([job-manager] inactive-num-limit = 2; testbroker Options.Purge
// NumLimit 2) and compares what is left after five jobs ended, and what
// each broker answers about a purged job.
func TestPurgeDifferential(t *testing.T) {
	obs := map[string][]string{}
	for _, tg := range freshTargets(t, []string{"--conf=job-manager.inactive-num-limit=2"},
		testbroker.Options{Purge: &testbroker.Purge{NumLimit: 2}}) {
		c := dial(t, tg.uri)
		l := labeller{}
		var ids []job.ID
		for i := range 5 {
			id := submit(t, c, fromCommand(t, "true"), job.SubmitOptions{})
			events(t, c, id, "clean")
			l[id] = fmt.Sprintf("job%d", i)
			ids = append(ids, id)
		}
		held := submit(t, c, fromCommand(t, "true"), job.SubmitOptions{Urgency: job.Urgency(job.UrgencyHold)})
		l[held] = "held"
		waitListed(t, c, held, job.StateSched)
		obs[tg.name] = purgeObservations(t, c, l, ids[:3], append(ids[3:], held))
		_ = job.Cancel(ctxT(t), c, held, "")
	}
	compare(t, "purge by number", obs)
}

// TestPurgeAgeDifferential is TestPurgeDifferential with an age limit
// ([job-manager] inactive-age-limit = "1s"; Purge.AgeLimit 1s): every
// inactive job goes once it has been inactive for a second, a held one
// stays.
func TestPurgeAgeDifferential(t *testing.T) {
	obs := map[string][]string{}
	for _, tg := range freshTargets(t, []string{`--conf=job-manager.inactive-age-limit="1s"`},
		testbroker.Options{Purge: &testbroker.Purge{AgeLimit: time.Second}}) {
		c := dial(t, tg.uri)
		l := labeller{}
		var ids []job.ID
		for i := range 2 {
			id := submit(t, c, fromCommand(t, "true"), job.SubmitOptions{})
			events(t, c, id, "clean")
			l[id] = fmt.Sprintf("job%d", i)
			ids = append(ids, id)
		}
		held := submit(t, c, fromCommand(t, "true"), job.SubmitOptions{Urgency: job.Urgency(job.UrgencyHold)})
		l[held] = "held"
		waitListed(t, c, held, job.StateSched)
		obs[tg.name] = purgeObservations(t, c, l, ids, []job.ID{held})
		_ = job.Cancel(ctxT(t), c, held, "")
	}
	compare(t, "purge by age", obs)
}

// restartable is a broker a restart scenario can restart: a real instance
// on a state directory, or a test broker.
type restartable struct {
	name    string
	real    bool
	uri     string
	restart func(t *testing.T, c *flux.Conn, kind testbroker.RestartKind) string // returns the new URI
}

// realRestartable starts a real instance on a state directory of its own.
// A clean restart stops it (SIGTERM to its initial program: rc1's cleanup
// phase cancels running jobs, the KVS is checkpointed at exit) and starts
// it again on the same statedir; a crash first makes the KVS checkpoint
// everything so far (a kvs.commit with FLUX_KVS_SYNC: the state
// kvs.checkpoint-period would have saved), then SIGKILLs the broker and
// starts it again; fresh starts an instance on a new statedir.
func realRestartable(t *testing.T) restartable {
	t.Helper()
	dir := t.TempDir()
	args := func(d string) startOptions {
		return startOptions{Args: []string{"-Sstatedir=" + d, "-Sstatedir-cleanup=0"}}
	}
	inst := ownInstance(t, args(dir))
	r := restartable{name: "real", real: true, uri: inst.URI}
	r.restart = func(t *testing.T, c *flux.Conn, kind testbroker.RestartKind) string {
		t.Helper()
		switch kind {
		case testbroker.RestartCrash:
			if err := syncCheckpoint(ctxT(t), c); err != nil {
				t.Fatal(err)
			}
			old := inst.URI
			inst.Kill()
			// the job shells of running jobs are in process groups of
			// their own: they outlive a killed broker
			killLeftovers(t, old)
		case testbroker.RestartClean, testbroker.RestartFresh:
			if err := inst.Stop(time.Minute); err != nil {
				t.Fatal(err)
			}
		}
		if kind == testbroker.RestartFresh {
			dir = t.TempDir()
		}
		inst = ownInstance(t, args(dir))
		return inst.URI
	}
	return r
}

// syncCheckpoint commits nothing with FLUX_KVS_SYNC (4), which flushes
// the content store and checkpoints the KVS root (flux-core
// src/common/libkvs/kvs_commit.h; src/modules/kvs/kvs.c).
func syncCheckpoint(ctx context.Context, c *flux.Conn) error {
	var resp map[string]any
	if err := c.RPC(ctx, "kvs.commit", map[string]any{"namespace": "primary", "flags": 4, "ops": []any{}}, &resp); err != nil {
		return fmt.Errorf("kvs.commit FLUX_KVS_SYNC: %w", err)
	}
	return nil
}

// killLeftovers SIGKILLs every process whose environment has
// FLUX_URI=uri: the shells and tasks of a killed broker's jobs.
func killLeftovers(t *testing.T, uri string) {
	t.Helper()
	want := []byte("FLUX_URI=" + uri + "\x00")
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		env, err := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		if err != nil || !bytes.Contains(env, want) {
			continue
		}
		t.Logf("killing pid %d left over from the killed broker", pid)
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

// testbrokerRestartable is a test broker restarted with RestartAs.
func testbrokerRestartable(t *testing.T) restartable {
	t.Helper()
	srv := testbroker.New(testbroker.Options{Hostname: "testbroker"})
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	return restartable{name: "testbroker", uri: srv.URI(), restart: func(t *testing.T, _ *flux.Conn, kind testbroker.RestartKind) string {
		t.Helper()
		if err := srv.RestartAs(kind); err != nil {
			t.Fatal(err)
		}
		return srv.URI()
	}}
}

// eventSummary describes an eventlog: names, the exceptions (type,
// severity, note with the host name replaced) and the finish status.
func eventSummary(evs []job.Event) string {
	s := strings.Join(names(evs), " ")
	for _, ev := range evs {
		switch ev.Name {
		case "exception":
			ec, err := ev.Exception()
			if err != nil {
				s += " [exception: " + err.Error() + "]"
				continue
			}
			s += fmt.Sprintf(" [exception type=%s severity=%d note=%q]", ec.Type, ec.Severity, hostRE.ReplaceAllString(ec.Note, "(host H)"))
		case "finish":
			fc, err := ev.Finish()
			if err == nil {
				s += fmt.Sprintf(" [finish status %d]", fc.Status)
			}
		}
	}
	return s
}

// TestRestartDifferential runs the restart scenario the controller's
// recovery rests on (internal/broker/identity.go: which jobs and which
// identity survive what) against a real instance and the test broker, for
// each kind of restart RestartAs models: an instance with a finished, a
// held and a running job, and its identity stored, is restarted; then the
// identity, each job's state and eventlog, getinfo's max_jobid and the
// next job ID are compared.
func TestRestartDifferential(t *testing.T) {
	needFlux(t)
	for _, kind := range []testbroker.RestartKind{testbroker.RestartClean, testbroker.RestartCrash, testbroker.RestartFresh} {
		t.Run(kind.String(), func(t *testing.T) {
			obs := map[string][]string{}
			for _, r := range []restartable{realRestartable(t), testbrokerRestartable(t)} {
				tg := target{name: r.name, uri: r.uri, real: r.real}
				c := dial(t, r.uri)
				ctx := ctxT(t)
				identity, err := broker.InstanceIdentity(ctx, c)
				if err != nil || identity == "" {
					t.Fatalf("%s: InstanceIdentity: %q %v", r.name, identity, err)
				}
				l := labeller{}
				done := submit(t, c, fromCommand(t, "true"), job.SubmitOptions{})
				l[done] = "done"
				events(t, c, done, "clean")
				held := submit(t, c, fromCommand(t, "true"), job.SubmitOptions{Urgency: job.Urgency(job.UrgencyHold)})
				l[held] = "held"
				running := submit(t, c, fromCommand(t, "sleep", "inf"), job.SubmitOptions{})
				l[running] = "running"
				waitRunning(t, c, tg, running)
				waitListed(t, c, held, job.StateSched)
				waitListed(t, c, running, job.StateRun)
				uri := r.restart(t, c, kind)
				_ = c.Close()

				c = dial(t, uri)
				var o []string
				got, err := broker.InstanceIdentity(ctx, c)
				o = append(o, fmt.Sprintf("identity: same %v, %s", got == identity, errObs(err)))
				for _, id := range []job.ID{done, held, running} {
					info, err := job.ListID(ctx, c, id, "state", "result")
					if err != nil {
						o = append(o, fmt.Sprintf("%s: %s", l[id], strings.ReplaceAll(errObs(err), id.Decimal(), "ID")))
						continue
					}
					if id == held {
						// a pending job's eventlog goes on: end it first
						if err := job.Cancel(ctx, c, held, ""); err != nil {
							t.Errorf("%s: cancel the held job: %v", r.name, err)
						}
					}
					o = append(o, fmt.Sprintf("%s: %v %v; eventlog %s", l[id], info.State, info.Result, eventSummary(events(t, c, id, ""))))
				}
				var info struct {
					MaxJobID job.ID `json:"max_jobid"`
				}
				err = c.RPC(ctx, "job-manager.getinfo", nil, &info)
				o = append(o, fmt.Sprintf("getinfo: max_jobid is running's %v, 0 %v, %s", info.MaxJobID == running, info.MaxJobID == 0, errObs(err)))
				next := submit(t, c, fromCommand(t, "true"), job.SubmitOptions{Urgency: job.Urgency(job.UrgencyHold)})
				o = append(o, fmt.Sprintf("next job ID above the old ones: %v", next > running))
				_ = job.Cancel(ctx, c, next, "")
				obs[r.name] = o
			}
			compare(t, "restart "+kind.String(), obs)
		})
	}
}
