package realflux

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/testbroker"
)

// TestQueuesAndDependencies runs the same queue and dependency scenarios
// against flux-core (an instance configured with queues batch and debug,
// default batch, started) and the test broker configured alike, through
// the production client, and compares what each answers: refusals (errno
// and message) and the dependants' eventlogs (names, dependency
// descriptions, exception notes), with job IDs written as A, B, C.
func TestQueuesAndDependencies(t *testing.T) {
	needFlux(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	conf := t.TempDir()
	toml := "[queues.batch]\n[queues.debug]\n[policy.jobspec.defaults.system]\nqueue = \"batch\"\n"
	if err := os.WriteFile(filepath.Join(conf, "queues.toml"), []byte(toml), 0o600); err != nil {
		t.Fatal(err)
	}
	inst, err := startOwnInstance(ctx, "--config-path="+conf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := inst.Stop(time.Minute); err != nil {
			t.Error(err)
		}
	})
	if _, err := inst.Flux(ctx, "queue", "start", "--all"); err != nil {
		t.Fatal(err)
	}
	srv := testbroker.New(testbroker.Options{Queues: []string{"batch", "debug"}, DefaultQueue: "batch"})
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })

	obs := map[string][]string{}
	for _, tg := range []target{{name: "real", uri: inst.URI, real: true}, {name: "testbroker", uri: srv.URI()}} {
		obs[tg.name] = batchScenario(t, dial(t, tg.uri))
	}
	compare(t, "queues and dependencies", obs)
}

// batchScenario returns what a broker answers to the scenarios.
func batchScenario(t *testing.T, c *flux.Conn) []string {
	var out []string
	ids := map[job.ID]string{}
	alias := func(s string) string {
		for id, name := range ids {
			s = strings.ReplaceAll(s, id.F58(), name)
		}
		return s
	}
	try := func(what, queue string, deps []job.Dependency, cmd ...string) job.ID {
		js := fromCommand(t, cmd...)
		js.Attributes.System.Queue = queue
		js.Attributes.System.Dependencies = deps
		id, err := job.SubmitJobspec(ctxT(t), c, js, job.SubmitOptions{})
		out = append(out, what+": "+alias(errObs(err)))
		return id
	}
	dep := func(scheme string, id job.ID) []job.Dependency {
		return []job.Dependency{{Scheme: scheme, Value: id.F58()}}
	}
	trace := func(what string, id job.ID) {
		var parts []string
		for _, ev := range events(t, c, id, "clean") {
			p := ev.Name
			if d, ok := ev.Context["description"].(string); ok {
				p += " " + d
			}
			if ev.Name == "exception" {
				p += fmt.Sprintf(" %v/%v %v", ev.Context["type"], ev.Context["severity"], ev.Context["note"])
			}
			switch ev.Name {
			case "release", "free", "priority", "alloc", "start", "finish":
				continue // the lifecycle other tests compare
			}
			parts = append(parts, p)
		}
		out = append(out, what+": "+alias(strings.Join(parts, ", ")))
	}

	try("unknown queue", "nope", nil, "true")
	id := try("default queue", "", nil, "true")
	info, err := job.ListID(ctxT(t), c, id, "queue")
	out = append(out, fmt.Sprintf("default queue is %q (%v)", info.Queue, err))
	try("named queue", "debug", nil, "true")

	a := try("A", "", nil, "false")
	ids[a] = "A"
	events(t, c, a, "clean")
	try("afterok on failed A", "", dep("afterok", a), "true")
	try("afternotok on failed A", "", dep("afternotok", a), "true")
	trace("afterany on failed A", try("afterany on failed A", "", dep("afterany", a), "true"))
	try("unknown scheme", "", dep("whenever", a), "true")
	try("no such job", "", []job.Dependency{{Scheme: "afterok", Value: "ƒ2222"}}, "true")

	b := try("B", "", nil, "sleep", "30")
	ids[b] = "B"
	events(t, c, b, "start")
	d := try("afterok on running B", "", dep("afterok", b), "true")
	if err := job.Cancel(ctxT(t), c, b, ""); err != nil {
		t.Fatal(err)
	}
	trace("afterok on cancelled B", d)
	return out
}
