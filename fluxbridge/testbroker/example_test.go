package testbroker_test

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/testbroker"
)

// Example starts a test broker, submits `false` with the production client
// and follows the job's eventlog to its end.
func Example() {
	srv := testbroker.New(testbroker.Options{})
	ctx := context.Background()
	if err := srv.Start(ctx); err != nil {
		fmt.Println(err)
		return
	}
	defer srv.Close()

	c, err := flux.Dial(ctx, srv.URI()) // local://<dir>/local
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()

	jobspec := `{"version":1,"resources":[{"type":"slot","count":1,"label":"task","with":[{"type":"core","count":1}]}],` +
		`"tasks":[{"command":["false"],"slot":"task","count":{"per_slot":1}}],"attributes":{"system":{"duration":0}}}`
	header := fmt.Sprintf("version\x00i1\x00userid\x00i%d\x00mechanism\x00snone\x00", os.Getuid())
	J := base64.StdEncoding.EncodeToString([]byte(header)) + "." + base64.StdEncoding.EncodeToString([]byte(jobspec)) + ".none"
	var sub struct {
		ID job.ID `json:"id"`
	}
	if err := c.RPC(ctx, "job-ingest.submit", map[string]any{"J": J, "urgency": 16, "flags": 0}, &sub); err != nil {
		fmt.Println(err)
		return
	}
	st, err := c.Stream(ctx, "job-info.eventlog-watch", map[string]any{"id": sub.ID, "path": "eventlog", "flags": 0})
	if err != nil {
		fmt.Println(err)
		return
	}
	for {
		var resp struct{ Event string }
		if err := st.Recv(&resp); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			fmt.Println(err)
			return
		}
		ev, err := job.ParseEvent([]byte(resp.Event))
		if err != nil {
			fmt.Println(err)
			return
		}
		if ev.Name == "finish" {
			fmt.Println(ev.Name, ev.Context["status"])
		} else {
			fmt.Println(ev.Name)
		}
	}
	// Output:
	// submit
	// validate
	// depend
	// priority
	// alloc
	// start
	// finish 256
	// release
	// free
	// clean
}
