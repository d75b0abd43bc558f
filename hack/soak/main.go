// Command soak runs the manager kill/restart soak test (issue 8):
// TestManagerKillSoak in test/e2e with SOAK_KILLS kill points (default
// 100) and SOAK_JOBS FluxJobs (default 600), against a real kube-apiserver
// and etcd, the test broker, and the manager binary ($MANAGER_BIN, which
// `make soak` builds first; else the test builds it). Most kills are aimed
// at the window between a submission and its status write; the test fails
// if fewer than -min-window of them landed there. It streams the test's
// output and ends with the counts line:
//
//	soak: seed=.. kills=100 aimedKills=.. killsBetweenSubmitAndStatusWrite=.. jobsBetweenSubmitAndStatusWrite=.. jobsBetweenMarkerAndSubmit=.. FluxJobs=600 brokerJobs=600 duplicates=0 missing=0 orphans=0 mismatched=0 adopted=.. lost=0
//
// Usage (from the repository root): go run ./hack/soak [-kills N] [-jobs N] [-min-window N] [-seed S] [-race]
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("soak", flag.ContinueOnError)
	kills := fs.Int("kills", 100, "number of times the manager is SIGKILLed and restarted")
	jobs := fs.Int("jobs", 600, "number of FluxJobs created across the kills")
	race := fs.Bool("race", false, "build the test with the race detector")
	minWindow := fs.Int("min-window", 10, "fail unless at least this many kills land between a submission and its status write")
	seed := fs.String("seed", "", "replay the kill schedule of this seed (printed by every run)")
	timeout := fs.Duration("timeout", 2*time.Hour, "bound on the whole run")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *kills < 1 || *jobs < 1 {
		return fmt.Errorf("-kills and -jobs must be at least 1 (got %d, %d)", *kills, *jobs)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()

	goArgs := []string{"test", "-v", "-count=1", "-run", "^TestManagerKillSoak$", "-timeout", timeout.String()}
	if *race {
		goArgs = append(goArgs, "-race")
	}
	goArgs = append(goArgs, "./test/e2e/")
	cmd := exec.CommandContext(ctx, goCommand(), goArgs...)
	cmd.Env = append(os.Environ(), fmt.Sprintf("SOAK_KILLS=%d", *kills), fmt.Sprintf("SOAK_JOBS=%d", *jobs),
		fmt.Sprintf("SOAK_MIN_WINDOW_KILLS=%d", *minWindow))
	if *seed != "" {
		cmd.Env = append(cmd.Env, "SOAK_SEED="+*seed)
	}
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return fmt.Errorf("running go test: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("running go test: %w", err)
	}
	summary, scanErr := relay(out, os.Stdout)
	waitErr := cmd.Wait()
	if summary != "" {
		fmt.Println()
		fmt.Println(summary)
	}
	switch {
	case waitErr != nil:
		return fmt.Errorf("the soak test failed (%d kills, %d jobs): %w", *kills, *jobs, waitErr)
	case scanErr != nil:
		return fmt.Errorf("reading the test's output: %w", scanErr)
	case summary == "":
		return fmt.Errorf("the soak test printed no counts (skipped? set KUBEBUILDER_ASSETS or run `make envtest`)")
	}
	return nil
}

// relay copies r to w line by line and returns the last "soak: " line.
func relay(r io.Reader, w io.Writer) (string, error) {
	var summary string
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64*1024), 16<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "soak: ") && strings.Contains(line, "duplicates=") {
			summary = line
		}
		if _, err := fmt.Fprintln(w, line); err != nil {
			return summary, err
		}
	}
	return summary, sc.Err()
}

func goCommand() string {
	if g := os.Getenv("GO"); g != "" {
		return g
	}
	return "go"
}
