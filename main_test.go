package main

import (
	"reflect"
	"testing"
)

func TestParseFlags(t *testing.T) {
	t.Setenv("FLUX_URI", "local:///tmp/x/local")
	c, err := parseFlags([]string{"--watch-namespaces=a, b,", "--allowed-namespaces=a", "--executor-workers=3"})
	if err != nil {
		t.Fatal(err)
	}
	if c.fluxURI != "local:///tmp/x/local" || c.workers != 3 || c.metricsAddr != ":8080" || c.probeAddr != ":8081" || c.leaderElect {
		t.Fatalf("config %+v", c)
	}
	if got := splitList(c.watchNamespaces); !reflect.DeepEqual(got, []string{"a", "b"}) {
		t.Fatalf("watch namespaces %v", got)
	}
	t.Setenv("FLUX_URI", "")
	if c, _ = parseFlags(nil); c.fluxURI != defaultFluxURI {
		t.Fatalf("default URI %q", c.fluxURI)
	}
	for _, bad := range [][]string{{"--executor-workers=0"}, {"--max-concurrent-reconciles=0"}, {"--nope"}} {
		if _, err := parseFlags(bad); err == nil {
			t.Errorf("parseFlags(%v) accepted", bad)
		}
	}
}
