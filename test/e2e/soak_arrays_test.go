package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/testbroker"
)

// TestManagerKillSoakArrays SIGKILLs the manager while array FluxJobs are
// being submitted: most kills come once the broker holds some but not all
// of an array's marked indexes (the manager is inside a submission batch),
// with the broker answering late so that the batch takes a while. Then one
// manager runs until every array ended, and the broker must hold exactly
// one Flux job per index of every array (0 duplicate, 0 missing), and each
// array's status must count what its jobs did. One array is created per
// kill; SOAK_ARRAY_KILLS (default 8) sizes it; SOAK_SEED replays a
// schedule (the seed is printed).
//
// With SOAK_SEED=8843305946324683751 it found every index job the broker
// held at the first kill submitted again: the informer cache dropped the
// first array's marker annotation (no anchor on a fresh instance), and
// with it the high-water mark. markerInStatus keeps it now.
func TestManagerKillSoakArrays(t *testing.T) {
	kills := envInt("SOAK_ARRAY_KILLS", 8)
	seed := rand.Uint64()
	if v, err := strconv.ParseUint(os.Getenv("SOAK_SEED"), 10, 64); err == nil {
		seed = v
	}
	t.Logf("soak seed %d (SOAK_SEED=%d reproduces the schedule)", seed, seed)
	fmt.Printf("soak: arrays seed=%d kills=%d\n", seed, kills)
	w := newProcWorld(t, 10*time.Minute+time.Duration(kills)*20*time.Second,
		testbroker.Options{TimeScale: 0.01, Delays: testbroker.RealisticDelays(), Cores: 64}, "soak-arrays")
	w.broker.SetResponseDelay(2 * time.Millisecond)
	rng := rand.New(rand.NewPCG(seed, 21))

	// One array per kill, created as the manager comes up: 300 to 1,500
	// indexes, some failing (exit {cc}: index 0 succeeds, and every 256th),
	// some with parallelism.
	total := 0
	want := map[string]int{}
	create := func(i int) {
		n := 300 + rng.IntN(1200)
		spec := fluxjobv1.FluxJobSpec{Command: []string{"true"}, Array: &fluxjobv1.ArraySpec{Indexes: fmt.Sprintf("0-%d", n-1)}}
		if i%2 == 1 {
			spec.Command = []string{"exit", "{cc}"}
		}
		if i%3 == 2 {
			p := int32(50 + rng.IntN(200))
			spec.Array.Parallelism = &p
		}
		obj := &fluxjobv1.FluxJob{ObjectMeta: metav1.ObjectMeta{Namespace: w.ns, Name: fmt.Sprintf("array-%d", i)}, Spec: spec}
		if err := w.k.Create(w.ctx, obj); err != nil {
			t.Fatal(err)
		}
		want[obj.Name] = n
		total += n
	}

	midBatch := 0
	for k := range kills {
		p, readyz := w.startManager()
		aim := k%4 != 3
		if aim {
			if err := waitReady(w.ctx, readyz, p); err != nil {
				t.Fatalf("kill %d: the manager never became ready: %v\n%s", k, err, tail(p.Output(), 8000))
			}
			// The broker answers late: a batch takes long enough to be
			// caught in the middle.
			w.broker.SetResponseDelay(time.Duration(2+rng.IntN(8)) * time.Millisecond)
			create(k)
			w.waitMidBatch(5 * time.Second)
			time.Sleep(time.Duration(rng.IntN(300)) * time.Millisecond)
		} else {
			create(k)
			time.Sleep(time.Duration(rng.IntN(2000)) * time.Millisecond)
		}
		_ = p.Kill()
		w.broker.SetResponseDelay(2 * time.Millisecond)
		if strings.Contains(p.Output(), "panic:") {
			t.Fatalf("kill %d: the manager panicked\n%s", k, tail(p.Output(), 8000))
		}
		mid := w.arraysMidBatch()
		if mid > 0 {
			midBatch++
		}
		t.Logf("kill %d/%d (aimed %v): %d arrays inside a submission batch, broker holds %d of %d index jobs",
			k+1, kills, aim, mid, len(w.broker.Jobs()), total)
	}
	arrays := kills
	last, _ := w.startManager()
	w.waitSettled(arrays, 5*time.Minute+time.Duration(total/100)*time.Second)

	byName := w.brokerByName()
	duplicates, missing, mismatched := 0, 0, 0
	for _, o := range w.list() {
		n := want[o.Name]
		ok := 0
		for i := range n {
			ids := byName[fmt.Sprintf("%s%s-%d", fluxjobv1.FluxJobNamePrefix, o.UID, i)]
			switch {
			case len(ids) == 0:
				missing++
			case len(ids) > 1:
				duplicates += len(ids) - 1
			}
			if len(ids) > 0 {
				if ph, _, ended := w.truth(ids[0]); ended && ph == fluxjobv1.PhaseSucceeded {
					ok++
				}
			}
		}
		a := o.Status.Array
		if a == nil || int(a.Indexes) != n || int(a.Succeeded) != ok || int(a.Succeeded+a.Failed) != n {
			mismatched++
			st, _ := json.Marshal(a)
			t.Errorf("array %s (%d indexes, %d succeeded at the broker): status %s, phase %s", o.Name, n, ok, st, o.Status.Phase)
		}
	}
	summary := fmt.Sprintf("soak: arrays seed=%d kills=%d killsInsideBatch=%d arrays=%d indexes=%d brokerJobs=%d duplicates=%d missing=%d mismatched=%d",
		seed, kills, midBatch, arrays, total, len(w.broker.Jobs()), duplicates, missing, mismatched)
	t.Log(summary)
	fmt.Println(summary)
	if duplicates != 0 || missing != 0 || mismatched != 0 || len(w.broker.Jobs()) != total {
		t.Errorf("the broker and the arrays disagree: %s", summary)
	}
	if midBatch < kills/3 {
		t.Errorf("only %d of %d kills landed inside a submission batch, want at least %d: the soak did not test what it is for", midBatch, kills, kills/3)
	}
	if err := last.Stop(30 * time.Second); err != nil {
		t.Errorf("the last manager did not exit cleanly on SIGTERM: %v\n%s", err, tail(last.Output(), 4000))
	}
}

// arraysMidBatch counts the arrays whose marker's high-water mark is above
// the index jobs the broker holds for them, which are not zero: a manager
// killed now was inside a submission batch.
func (w *procWorld) arraysMidBatch() int {
	byName := w.brokerByName()
	per := map[string]int{}
	for name := range byName {
		if i := strings.LastIndexByte(name, '-'); i > 0 {
			per[name[:i]]++
		}
	}
	mid := 0
	for _, o := range w.list() {
		var m struct {
			Through int `json:"through"`
		}
		if v, ok := o.Annotations[fluxjobv1.SubmitAttemptAnnotation]; !ok || json.Unmarshal([]byte(v), &m) != nil {
			continue
		}
		have := per[fluxjobv1.FluxJobNamePrefix+string(o.UID)]
		if have > 0 && have < m.Through {
			mid++
		}
	}
	return mid
}

// waitMidBatch returns once some array is inside a submission batch (see
// arraysMidBatch), or after timeout.
func (w *procWorld) waitMidBatch(timeout time.Duration) {
	ctx, cancel := context.WithTimeout(w.ctx, timeout)
	defer cancel()
	start := len(w.broker.Jobs())
	for ctx.Err() == nil {
		if n := len(w.broker.Jobs()); n > start {
			return // submissions are flowing: the kill lands inside them
		}
		time.Sleep(2 * time.Millisecond)
	}
}
