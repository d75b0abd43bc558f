// Command testbroker runs fluxbridge/testbroker, the test double of a
// flux-core broker, on a socket directory, for the demo and local e2e runs.
// It prints the URI to use as FLUX_URI and serves until SIGINT or SIGTERM.
//
//	go run ./hack/testbroker -dir /tmp/flux
//	FLUX_URI=local:///tmp/flux/local ...
//
// With -hostile MODE it behaves until it receives SIGUSR1, then turns
// hostile in that mode (testbroker.SetHostile) for every message it sends
// from then on, on every connection: MODE is oversized-frame, garbage,
// slow-drip, endless-stream or huge-contexts (fluxbridge/testbroker's
// HostileModes). The controllers' BenchmarkManagerHostileBroker uses it.
//
//	go run ./hack/testbroker -dir /tmp/flux -hostile garbage &
//	kill -USR1 $!
//
// It is not a Flux instance: jobs are simulated (see the package doc of
// fluxbridge/testbroker for how a command decides a job's outcome).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/testbroker"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "testbroker:", err)
		os.Exit(1)
	}
}

func run() error {
	dir := flag.String("dir", "", "directory for the broker socket (created if missing; empty: a temporary directory)")
	realistic := flag.Bool("realistic", true, "use phase delays close to a real flux-core broker's")
	scale := flag.Float64("time-scale", 1, "multiply command run times (sleep N) by this factor")
	cores := flag.Int("cores", 8, "number of cores of the simulated node")
	guests := flag.Bool("allow-guests", false, "accept connections from users other than the instance owner")
	verbose := flag.Bool("v", false, "log connections and jobs")
	uriFile := flag.String("uri-file", "", "also write the URI to this file (for scripts waiting on the broker)")
	queues := flag.String("queues", "", "comma-separated named queues (like [queues] in a flux-core config); empty: the anonymous queue only")
	defaultQueue := flag.String("default-queue", "", "queue of a job that names none (policy.jobspec.defaults.system.queue)")
	hostileName := flag.String("hostile", "", "turn hostile in this mode on SIGUSR1 (oversized-frame, garbage, slow-drip, endless-stream, huge-contexts)")
	flag.Parse()

	hostile := testbroker.HostileNone
	for _, h := range testbroker.HostileModes {
		if h.String() == *hostileName {
			hostile = h
		}
	}
	if *hostileName != "" && hostile == testbroker.HostileNone {
		return fmt.Errorf("-hostile %q: not one of %v", *hostileName, testbroker.HostileModes)
	}

	if *dir != "" {
		if err := os.MkdirAll(*dir, 0o755); err != nil {
			return fmt.Errorf("socket directory: %w", err)
		}
	}
	opts := testbroker.Options{
		Dir:          *dir,
		TimeScale:    *scale,
		Cores:        *cores,
		AllowGuests:  *guests,
		Logger:       logr.Discard(),
		DefaultQueue: *defaultQueue,
	}
	if *queues != "" {
		opts.Queues = strings.Split(*queues, ",")
	}
	if *realistic {
		opts.Delays = testbroker.RealisticDelays()
	}
	if *verbose {
		opts.Logger = funcr.New(func(prefix, args string) {
			fmt.Fprintln(os.Stderr, prefix, args)
		}, funcr.Options{Verbosity: 1})
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	srv := testbroker.New(opts)
	if err := srv.Start(ctx); err != nil {
		return err
	}
	if hostile != testbroker.HostileNone {
		usr1 := make(chan os.Signal, 1)
		signal.Notify(usr1, syscall.SIGUSR1)
		defer signal.Stop(usr1)
		go func() {
			select {
			case <-usr1:
				srv.SetHostile(hostile)
				fmt.Fprintln(os.Stderr, "testbroker: hostile:", hostile)
			case <-ctx.Done():
			}
		}()
	}
	fmt.Println(srv.URI())
	if *uriFile != "" {
		if err := os.WriteFile(*uriFile, []byte(srv.URI()+"\n"), 0o644); err != nil {
			_ = srv.Close()
			return fmt.Errorf("uri file: %w", err)
		}
	}
	<-ctx.Done()
	return srv.Close()
}
