package job

import (
	"context"
	"fmt"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux"
)

// MaxLookupEventlog bounds the eventlog LookupEventlog decodes (a broker
// is untrusted input): a waiting job's main eventlog is a few hundred
// bytes; one beyond this is refused rather than decoded.
const MaxLookupEventlog = 1 << 20

// LookupEventlog reads a job's main eventlog once (job-info.lookup of its
// "eventlog" key, flux-core src/modules/job-info/lookup.c), as `flux job
// eventlog` without -f does. An unknown job is an error matching
// syscall.ENOENT.
func LookupEventlog(ctx context.Context, c *flux.Conn, id ID) ([]Event, error) {
	req := struct {
		ID    ID       `json:"id"`
		Keys  []string `json:"keys"`
		Flags int      `json:"flags"`
	}{ID: id, Keys: []string{"eventlog"}, Flags: 0}
	var resp struct {
		Eventlog string `json:"eventlog"`
	}
	if err := c.RPC(ctx, "job-info.lookup", req, &resp); err != nil {
		return nil, fmt.Errorf("job %s: reading its eventlog: %w", id, err)
	}
	if len(resp.Eventlog) > MaxLookupEventlog {
		return nil, fmt.Errorf("job %s: eventlog of %d bytes, more than %d", id, len(resp.Eventlog), MaxLookupEventlog)
	}
	evs, err := ParseEventlog([]byte(resp.Eventlog))
	if err != nil {
		return nil, fmt.Errorf("job %s: eventlog: %w", id, err)
	}
	return evs, nil
}
