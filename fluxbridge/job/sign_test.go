package job

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/munge"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/munge/mungetest"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/sign"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/wire"
)

// signedBroker answers every job-ingest.submit with an ID and keeps the
// J of each.
func signedBroker(t *testing.T) (*fakeBroker, func() []string) {
	fb := newFakeBroker(t)
	var mu sync.Mutex
	var js []string
	fb.setHandle(func(req *wire.Message) []*wire.Message {
		var p struct{ J string }
		if err := req.DecodeJSON(&p); err != nil {
			t.Error(err)
		}
		mu.Lock()
		js = append(js, p.J)
		mu.Unlock()
		return []*wire.Message{wire.NewResponse(req, []byte(`{"id":42}`))}
	})
	return fb, func() []string { mu.Lock(); defer mu.Unlock(); return append([]string(nil), js...) }
}

type failingSigner struct{}

func (failingSigner) Wrap(context.Context, []byte) (string, error) {
	return "", errors.New("no credential today")
}

// TestSubmitSigner: a Signer's J is what job-ingest gets (none and munge
// with a real munged reached through the Conn); a Signer that fails fails
// the submission before anything is sent; PreSigned wins over Signer.
func TestSubmitSigner(t *testing.T) {
	fb, got := signedBroker(t)
	c := fb.dial(t)
	ctx := testCtx(t)
	spec := []byte(`{"version":1}`)

	if _, err := Submit(ctx, c, spec, SubmitOptions{Signer: sign.None{UserID: 77}}); err != nil {
		t.Fatal(err)
	}
	want, _ := sign.None{UserID: 77}.Wrap(ctx, spec)
	if js := got(); len(js) != 1 || js[0] != want {
		t.Fatalf("J %q, want %q", js, want)
	}

	d := mungetest.Start(t, mungetest.Options{})
	// munged is reached beside the broker: through a local:// Conn's host
	// (a stream transport has none, FLUXBRIDGE_TEST_TRANSPORT or not).
	lctx, lcancel := context.WithTimeout(ctx, 5*time.Second)
	local, err := flux.Dial(lctx, fb.uri)
	lcancel()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = local.Close() })
	signer := MungeSigner(local, d.Socket)
	done := make(chan error, 1)
	if err := StartSubmit(ctx, c, spec, SubmitOptions{Signer: signer}, func(id ID, err error) { done <- err }); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	js := got()
	e, err := sign.Unwrap(ctx, js[1], map[string]sign.Verifier{"munge": &sign.MungeVerifier{Client: &munge.Client{Socket: d.Socket}, MaxTTL: time.Minute}})
	if err != nil {
		t.Fatalf("munge J does not verify: %v", err)
	}
	if string(e.Payload) != string(spec) {
		t.Fatalf("payload %q", e.Payload)
	}

	_, err = Submit(ctx, c, spec, SubmitOptions{Signer: failingSigner{}})
	if err == nil || !strings.Contains(err.Error(), "job: submit: signing the jobspec: no credential today") {
		t.Fatalf("failing signer: %v", err)
	}
	err = StartSubmit(ctx, c, spec, SubmitOptions{Signer: failingSigner{}}, func(ID, error) { t.Error("handler called") })
	if err == nil {
		t.Fatal("StartSubmit with a failing signer queued the request")
	}
	if n := len(got()); n != 2 {
		t.Fatalf("%d submissions reached the broker, want 2", n)
	}

	if _, err := Submit(ctx, c, []byte("PRE.SIGNED.J"), SubmitOptions{PreSigned: true, Signer: failingSigner{}}); err != nil {
		t.Fatal(err)
	}
	if js := got(); js[2] != "PRE.SIGNED.J" {
		t.Fatalf("pre-signed J %q", js[2])
	}

	// The default stays "none" as the process's uid, in flux-core's own
	// field order (SignNone).
	if _, err := Submit(ctx, c, spec, SubmitOptions{}); err != nil {
		t.Fatal(err)
	}
	if js := got(); js[3] != SignNone(spec, processUID()) {
		t.Fatalf("default J %q", js[3])
	}
}
