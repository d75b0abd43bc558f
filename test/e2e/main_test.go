package e2e

import (
	"os"
	"testing"

	"github.com/go-logr/logr"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
)

func TestMain(m *testing.M) {
	// envtest logs through controller-runtime's logger; these tests read
	// the manager's own output instead, so discard it rather than let
	// controller-runtime complain that no logger was set.
	logf.SetLogger(logr.Discard())
	os.Exit(m.Run())
}
