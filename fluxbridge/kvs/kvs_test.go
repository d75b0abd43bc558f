package kvs_test

import (
	"context"
	"errors"
	"syscall"
	"testing"
	"time"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/kvs"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/testbroker"
)

func TestGetPut(t *testing.T) {
	srv := testbroker.New(testbroker.Options{})
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := flux.Dial(ctx, srv.URI())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := kvs.Get(ctx, c, "a.b"); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("Get of a missing key: %v, want ENOENT", err)
	}
	for _, v := range []string{"one", "two", ""} {
		if err := kvs.Put(ctx, c, "a.b", []byte(v)); err != nil {
			t.Fatal(err)
		}
		got, err := kvs.Get(ctx, c, "a.b")
		if err != nil || string(got) != v {
			t.Fatalf("Get = %q, %v; want %q", got, err, v)
		}
	}
}
