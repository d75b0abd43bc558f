package pending

import (
	"fmt"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
	"github.com/fluxjob/fluxjob-operator/internal/broker"
)

// Why an array's indexes wait. The manager keeps no eventlog per index
// (internal/array): an array is said to wait for what its lowest-position
// waiting index waits for, read from that one index's eventlog (its
// sample) and the instance's Waiting, with how many of its indexes wait.
// The indexes of an array share their jobspec (urgency, queue,
// dependencies, begin time), so the first one's reason is every one's,
// but for what the scheduler says of each (its estimate, its position).

// Sample is an array's lowest-position index that waits in Flux
// (submitted, not started), and how many wait.
type Sample struct {
	// Waiting is how many of the array's Indexes wait in Flux.
	Waiting, Indexes int
	// Index is the sampled index ({cc}), ID its Flux job.
	Index uint32
	ID    job.ID
	// Summary is the sampled index's eventlog as last read (zero: not
	// read yet).
	Summary job.Summary
}

// Array returns why the indexes of an array wait, from its sample s (see
// Of, with the array's queue and the instance's Waiting w), and false when
// none waits in Flux or the sample's eventlog says nothing yet (not read,
// not validated, or already allocated).
func Array(s Sample, queue string, w broker.Waiting) (Reason, bool) {
	if s.Waiting <= 0 || s.ID == 0 {
		return Reason{}, false
	}
	r, ok := Of(s.ID, s.Summary, queue, w)
	if !ok {
		return Reason{}, false
	}
	r.Message = fmt.Sprintf("%d of %d indexes wait in Flux; the first, index %d (job %s): %s", s.Waiting, s.Indexes, s.Index, s.ID.F58(), r.Message)
	return r, true
}
