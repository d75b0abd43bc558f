package broker

import (
	"errors"
	"fmt"
	"syscall"
	"testing"

	"github.com/fluxjob/fluxjob-operator/fluxbridge"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux"
)

func TestClassify(t *testing.T) {
	tests := []struct {
		name string
		res  int
		err  error
		want OutcomeKind
	}{
		{"exit 0", 0, nil, OutcomeExited},
		{"signal", -9, nil, OutcomeExited},
		{"exception", 0, &fluxbridge.JobException{Type: "cancel"}, OutcomeException},
		{"rejected", 0, &fluxbridge.InvalidJobspecError{Message: "Missing key (tasks)", Err: syscall.EPERM}, OutcomeInvalidJobspec},
		{"no such job", 0, fmt.Errorf("job x: %w", fluxbridge.ErrNoSuchJob), OutcomeNoSuchJob},
		{"cancelled future", 0, fluxbridge.ErrCancelled, OutcomeAborted},
		{"disconnected", 0, fmt.Errorf("fluxbridge: connection lost: %w", flux.ErrDisconnected), OutcomeLost},
		{"broken", 0, fmt.Errorf("%w: worker 0: %w", fluxbridge.ErrBroken, flux.ErrDisconnected), OutcomeLost},
		{"other", 0, errors.New("boom"), OutcomeError},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := Classify(tc.res, tc.err)
			if got.Kind != tc.want {
				t.Fatalf("kind %d, want %d", got.Kind, tc.want)
			}
			if tc.want == OutcomeInvalidJobspec && got.Message != "Missing key (tasks)" {
				t.Fatalf("message %q, want the broker's", got.Message)
			}
			if tc.want == OutcomeExited && got.ExitCode != tc.res {
				t.Fatalf("exit %d", got.ExitCode)
			}
		})
	}
}
