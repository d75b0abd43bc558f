package flux

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux/fluxtest"
)

func TestMain(m *testing.M) {
	fluxtest.RunRelayIfChild()
	goleak.VerifyTestMain(m)
}
