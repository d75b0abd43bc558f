package realflux

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/fluxjob/fluxjob-operator/test/fluxendpoint"
)

// instance is a running flux-core instance: one we started with
// `flux start --test-size=1`, or the enclosing one named by $FLUX_URI.
type instance = fluxendpoint.Instance

// startOptions are what fluxendpoint.Start adds to `flux start --test-size=1`.
type startOptions = fluxendpoint.Options

// needFlux skips tb unless a `flux` command is on PATH; under CI=true
// (.ci/run) a missing flux fails tb instead, as every other missing tool
// does there: `make test` builds flux-core (hack/flux-core.sh) and puts it
// on PATH, so a CI run without it has lost its real-broker checks.
func needFlux(tb testing.TB) {
	tb.Helper()
	if err := fluxendpoint.Installed(); err != nil {
		if os.Getenv("CI") == "true" {
			tb.Fatalf("CI=true: %v (make test builds it with hack/flux-core.sh)", err)
		}
		tb.Skip(err.Error())
	}
}

// startInstance starts `flux start --test-size=1`, or returns the
// enclosing instance when $FLUX_URI is set. Stop it with Stop.
func startInstance(ctx context.Context) (*instance, error) {
	if uri := os.Getenv("FLUX_URI"); uri != "" {
		return fluxendpoint.Attach(uri), nil
	}
	return startOwnInstance(ctx)
}

// startOwnInstance starts `flux start --test-size=1 <brokerArgs...>`,
// never using $FLUX_URI (tests that restart or configure an instance need
// their own).
func startOwnInstance(ctx context.Context, brokerArgs ...string) (*instance, error) {
	return fluxendpoint.Start(ctx, startOptions{Args: brokerArgs})
}

// useInstance starts an instance for one test or benchmark (or uses
// $FLUX_URI), skipping when flux is not installed, and stops it at cleanup.
func useInstance(tb testing.TB) *instance {
	tb.Helper()
	needFlux(tb)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	inst, err := startInstance(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := inst.Stop(time.Minute); err != nil {
			tb.Error(err)
		}
	})
	return inst
}
