package controllers

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
		want outcomeKind
	}{
		{"exit 0", 0, nil, outcomeExited},
		{"signal", -9, nil, outcomeExited},
		{"exception", 0, &fluxbridge.JobException{Type: "cancel"}, outcomeException},
		{"rejected", 0, &fluxbridge.InvalidJobspecError{Message: "Missing key (tasks)", Err: syscall.EPERM}, outcomeInvalidJobspec},
		{"no such job", 0, fmt.Errorf("job x: %w", fluxbridge.ErrNoSuchJob), outcomeNoSuchJob},
		{"cancelled future", 0, fluxbridge.ErrCancelled, outcomeAborted},
		{"disconnected", 0, fmt.Errorf("fluxbridge: connection lost: %w", flux.ErrDisconnected), outcomeLost},
		{"broken", 0, fmt.Errorf("%w: worker 0: %w", fluxbridge.ErrBroken, flux.ErrDisconnected), outcomeLost},
		{"other", 0, errors.New("boom"), outcomeError},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := classify(tc.res, tc.err)
			if got.Kind != tc.want {
				t.Fatalf("kind %d, want %d", got.Kind, tc.want)
			}
			if tc.want == outcomeInvalidJobspec && got.Message != "Missing key (tasks)" {
				t.Fatalf("message %q, want the broker's", got.Message)
			}
			if tc.want == outcomeExited && got.ExitCode != tc.res {
				t.Fatalf("exit %d", got.ExitCode)
			}
		})
	}
}
