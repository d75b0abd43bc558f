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
// With -array-kills N (default 20; 0: none) it also runs
// TestManagerKillSoakArrays: one array FluxJob per kill, the manager killed
// inside array submission batches, and ends with its counts line too:
//
//	soak: arrays seed=.. kills=20 killsInsideBatch=.. arrays=20 indexes=.. brokerJobs=.. duplicates=0 missing=0 mismatched=0
//
// Usage (from the repository root): go run ./hack/soak [-kills N] [-jobs N] [-array-kills N] [-min-window N] [-seed S] [-race]
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
	arrayKills := fs.Int("array-kills", 20, "kills of the array soak (TestManagerKillSoakArrays); 0 skips it")
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

	pattern := "^TestManagerKillSoak$"
	if *arrayKills > 0 {
		pattern = "^TestManagerKillSoak(Arrays)?$"
	}
	goArgs := []string{"test", "-v", "-count=1", "-run", pattern, "-timeout", timeout.String()}
	if *race {
		goArgs = append(goArgs, "-race")
	}
	goArgs = append(goArgs, "./test/e2e/")
	cmd := exec.CommandContext(ctx, goCommand(), goArgs...)
	cmd.Env = append(os.Environ(), fmt.Sprintf("SOAK_KILLS=%d", *kills), fmt.Sprintf("SOAK_JOBS=%d", *jobs),
		fmt.Sprintf("SOAK_MIN_WINDOW_KILLS=%d", *minWindow), fmt.Sprintf("SOAK_ARRAY_KILLS=%d", *arrayKills))
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
	summaries, scanErr := relay(out, os.Stdout)
	waitErr := cmd.Wait()
	if len(summaries) > 0 {
		fmt.Println()
		fmt.Println(strings.Join(summaries, "\n"))
	}
	switch {
	case waitErr != nil:
		return fmt.Errorf("the soak test failed (%d kills, %d jobs): %w", *kills, *jobs, waitErr)
	case scanErr != nil:
		return fmt.Errorf("reading the test's output: %w", scanErr)
	case len(summaries) == 0:
		return fmt.Errorf("the soak test printed no counts (skipped? set KUBEBUILDER_ASSETS or run `make envtest`)")
	}
	return nil
}

// relay copies r to w line by line and returns the "soak: " counts lines.
func relay(r io.Reader, w io.Writer) ([]string, error) {
	var summary []string
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64*1024), 16<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "soak: ") && strings.Contains(line, "duplicates=") {
			summary = append(summary, line)
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
