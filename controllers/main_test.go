package controllers

import (
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux/fluxtest"
)

// TestMain runs the relay when this binary is a relay child; else it stops the shared envtest (if a test started it), then checks
// that no goroutine outlived the tests.
func TestMain(m *testing.M) {
	// The test binary re-executed as `flux relay` (fluxtest.WriteRelayShim,
	// the pod exec of TestRBACPodExec).
	fluxtest.RunRelayIfChild()
	code := m.Run()
	if err := stopEnvtest(); err != nil {
		fmt.Fprintln(os.Stderr, "stopping envtest:", err)
		code = 1
	}
	if code == 0 {
		if err := goleak.Find(goleakOptions()...); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// goleakOptions ignores process-wide goroutines of client libraries that
// live for the whole process by design.
func goleakOptions() []goleak.Option {
	return []goleak.Option{
		goleak.IgnoreTopFunction("k8s.io/klog/v2.(*flushDaemon).run.func1"),
		// client-go's WebSocket exec (TestRBACPodExec) pings every 5s and
		// notices a closed connection only at its next ping.
		goleak.IgnoreTopFunction("k8s.io/client-go/tools/remotecommand.(*heartbeat).start"),
	}
}
