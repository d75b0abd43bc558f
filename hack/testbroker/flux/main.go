// Command flux is the `flux` of the test-broker sidecar image that the node
// e2e test (test/e2e, hack/node.sh) builds when no flux-core build is
// available: it answers the few `flux` command lines that config/default,
// the e2e scenarios and the kubectl plugin run in the flux container, with
// fluxbridge/testbroker (a test double: it runs no job) instead of a broker.
//
//	flux start -Srundir=DIR -Slocal-uri=local://SOCKET ...
//	    serve the test broker on SOCKET until SIGTERM (other options are
//	    accepted and ignored: the test broker keeps no state on disk, so a
//	    restarted container is a fresh instance)
//	flux python -c CODE
//	    the probes of config/default: succeeds once the broker at $FLUX_URI
//	    accepts a connection and answers a job-list request (CODE is not run)
//	flux jobs -a -n -o FORMAT
//	    print every job, one a line, FORMAT with {id} (f58) and {name}
//	    replaced
//	flux job eventlog --format=json ID
//	    print the job's eventlog, one RFC 18 event a line
//	flux relay SOCKET
//	    copy bytes between standard input and output and SOCKET, as
//	    flux-core's relay does (the manager and the kubectl plugin reach a
//	    broker this way through pods/exec)
//
// Anything else fails with a message that says so.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/testbroker"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "flux (test broker):", err)
		os.Exit(1)
	}
}

// errUnsupported is returned for a command line this stand-in does not
// answer.
var errUnsupported = errors.New("not supported by the test-broker sidecar (it is not flux-core)")

func run(args []string) error {
	if len(args) == 0 {
		return fmt.Errorf("no command: %w", errUnsupported)
	}
	switch args[0] {
	case "start":
		return start(args[1:])
	case "python":
		return probe()
	case "jobs":
		return jobs(args[1:])
	case "job":
		if len(args) >= 3 && args[1] == "eventlog" {
			return eventlog(args[len(args)-1])
		}
	case "relay":
		if len(args) == 2 {
			return relay(args[1])
		}
	}
	return fmt.Errorf("flux %s: %w", strings.Join(args, " "), errUnsupported)
}

// start serves the test broker on the socket of -Slocal-uri (or
// RUNDIR/local) until SIGTERM or SIGINT.
func start(args []string) error {
	var rundir, uri string
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, "-Srundir="); ok {
			rundir = v
		}
		if v, ok := strings.CutPrefix(a, "-Slocal-uri="); ok {
			uri = v
		}
	}
	sock := filepath.Join(rundir, testbroker.SocketName)
	if uri != "" {
		p, ok := strings.CutPrefix(uri, "local://")
		if !ok {
			return fmt.Errorf("start: -Slocal-uri=%s is not local://PATH", uri)
		}
		sock = p
	}
	if filepath.Base(sock) != testbroker.SocketName || sock == testbroker.SocketName {
		return fmt.Errorf("start: the socket must be DIR/%s, not %q", testbroker.SocketName, sock)
	}
	dir := filepath.Dir(sock)
	// As flux-core's rundir: owned by the instance owner, 0700.
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("start: %w", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	srv := testbroker.New(testbroker.Options{Dir: dir, Delays: testbroker.RealisticDelays()})
	if err := srv.Start(ctx); err != nil {
		return fmt.Errorf("start: %w", err)
	}
	fmt.Fprintln(os.Stderr, "test broker serving", srv.URI())
	<-ctx.Done()
	if err := srv.Close(); err != nil {
		return fmt.Errorf("stopping: %w", err)
	}
	return nil
}

// dial connects to $FLUX_URI with a deadline.
func dial() (*flux.Conn, context.Context, context.CancelFunc, error) {
	uri := os.Getenv("FLUX_URI")
	if uri == "" {
		return nil, nil, nil, errors.New("FLUX_URI is not set")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	c, err := flux.Dial(ctx, uri)
	if err != nil {
		cancel()
		return nil, nil, nil, fmt.Errorf("connecting to %s: %w", uri, err)
	}
	return c, ctx, cancel, nil
}

func probe() error {
	c, ctx, cancel, err := dial()
	if err != nil {
		return err
	}
	defer cancel()
	defer c.Close()
	if _, err := job.List(ctx, c, job.ListOptions{MaxEntries: 1, Attrs: []string{"state"}}); err != nil {
		return fmt.Errorf("probe: %w", err)
	}
	return nil
}

func jobs(args []string) error {
	format := "{id}"
	for i, a := range args {
		if a == "-o" && i+1 < len(args) {
			format = args[i+1]
		}
	}
	c, ctx, cancel, err := dial()
	if err != nil {
		return err
	}
	defer cancel()
	defer c.Close()
	list, err := job.List(ctx, c, job.ListOptions{Attrs: []string{"name"}})
	if err != nil {
		return err
	}
	for _, j := range list {
		fmt.Println(strings.NewReplacer("{id}", j.ID.String(), "{name}", j.Name).Replace(format))
	}
	return nil
}

func eventlog(arg string) error {
	id, err := job.ParseID(arg)
	if err != nil {
		return err
	}
	c, ctx, cancel, err := dial()
	if err != nil {
		return err
	}
	defer cancel()
	defer c.Close()
	var resp struct {
		Eventlog string `json:"eventlog"`
	}
	req := map[string]any{"id": id, "keys": []string{"eventlog"}, "flags": 0}
	if err := c.RPC(ctx, "job-info.lookup", req, &resp); err != nil {
		return fmt.Errorf("job-info.lookup eventlog of %s: %w", id, err)
	}
	evs, err := job.ParseEventlog([]byte(resp.Eventlog))
	if err != nil {
		return err
	}
	for _, e := range evs {
		b, err := json.Marshal(e)
		if err != nil {
			return err
		}
		fmt.Println(string(b))
	}
	return nil
}

// relay copies bytes both ways between stdin/stdout and the socket until
// either side ends.
func relay(sock string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	var d net.Dialer
	nc, err := d.DialContext(ctx, "unix", sock)
	cancel()
	if err != nil {
		return fmt.Errorf("relay: local://%s: %w", sock, err)
	}
	go func() {
		_, _ = io.Copy(nc, os.Stdin)
		_ = nc.Close()
	}()
	_, _ = io.Copy(os.Stdout, nc)
	_ = nc.Close()
	return nil
}
