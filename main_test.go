package main

import (
	"reflect"
	"testing"

	"go.uber.org/zap/zapcore"
)

func TestParseFlags(t *testing.T) {
	t.Setenv("FLUX_URI", "local:///tmp/x/local")
	c, err := parseFlags([]string{"--watch-namespaces=a, b,", "--allowed-namespaces=a", "--executor-workers=3"})
	if err != nil {
		t.Fatal(err)
	}
	if c.fluxURI != "local:///tmp/x/local" || c.workers != 3 || c.metricsAddr != ":8443" || !c.metricsSecure || c.probeAddr != ":8081" || c.leaderElect {
		t.Fatalf("config %+v", c)
	}
	if got := splitList(c.watchNamespaces); !reflect.DeepEqual(got, []string{"a", "b"}) {
		t.Fatalf("watch namespaces %v", got)
	}
	if c.execNamespaces != "" || c.allowExecCommand {
		t.Fatalf("exec is on by default: --exec-namespaces=%q --allow-exec-command=%v", c.execNamespaces, c.allowExecCommand)
	}
	if c.pprofAddr != "0" {
		t.Fatalf("pprof is on by default: --pprof-bind-address=%q", c.pprofAddr)
	}
	if c, _ = parseFlags([]string{"--pprof-bind-address=127.0.0.1:6060"}); c.pprofAddr != "127.0.0.1:6060" {
		t.Fatalf("--pprof-bind-address ignored: %q", c.pprofAddr)
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

func TestParseFlagsLeaderElectionAndLogLevel(t *testing.T) {
	t.Setenv("POD_NAMESPACE", "fluxjob-system")
	c, err := parseFlags([]string{"--leader-elect"})
	if err != nil {
		t.Fatal(err)
	}
	if !c.leaderElect || c.leaderElectionNamespace != "fluxjob-system" {
		t.Fatalf("leader election %v in %q, want true in fluxjob-system ($POD_NAMESPACE)", c.leaderElect, c.leaderElectionNamespace)
	}
	if c, _ = parseFlags([]string{"--leader-election-namespace=elsewhere"}); c.leaderElectionNamespace != "elsewhere" {
		t.Fatalf("--leader-election-namespace ignored: %q", c.leaderElectionNamespace)
	}
	// Verbosity 8 and up would let client-go log request bodies (FluxJob
	// env values): it is capped at maxLogVerbosity.
	for _, lvl := range []string{"7", "8", "10"} {
		c, err := parseFlags([]string{"--zap-log-level=" + lvl})
		if err != nil {
			t.Fatal(err)
		}
		if c.zap.Level.Enabled(zapcore.Level(-(maxLogVerbosity + 1))) {
			t.Errorf("--zap-log-level=%s enables V(%d)", lvl, maxLogVerbosity+1)
		}
		if !c.zap.Level.Enabled(zapcore.Level(-maxLogVerbosity)) {
			t.Errorf("--zap-log-level=%s disables V(%d)", lvl, maxLogVerbosity)
		}
	}
}
