package sign_test

import (
	"bufio"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
)

// The real flux-security library, for comparison: testdata/fsign.c is
// compiled against it at test time. It is found through
// $FLUX_SECURITY_PREFIX, else pkg-config (flux-security), else the
// project's build cache convention
// ${XDG_CACHE_HOME:-$HOME/.cache}/fluxjob-operator/flux-security-0.15.0-*/prefix.
// Without it (or gcc) those tests skip.

var (
	fsignOnce sync.Once
	fsignPath string
	fsignWhy  string
)

func securityPrefix() string {
	if p := os.Getenv("FLUX_SECURITY_PREFIX"); p != "" {
		return p
	}
	if out, err := exec.Command("pkg-config", "--variable=prefix", "flux-security").Output(); err == nil {
		if p := strings.TrimSpace(string(out)); p != "" {
			return p
		}
	}
	cache := os.Getenv("XDG_CACHE_HOME")
	if cache == "" {
		home, _ := os.UserHomeDir()
		cache = filepath.Join(home, ".cache")
	}
	m, _ := filepath.Glob(filepath.Join(cache, "fluxjob-operator", "flux-security-0.15.0-*", "prefix"))
	sort.Strings(m)
	for i := len(m) - 1; i >= 0; i-- {
		if _, err := os.Stat(filepath.Join(m[i], "include", "flux", "security", "sign.h")); err == nil {
			return m[i]
		}
	}
	return ""
}

// fsign returns the compiled helper, or skips the test.
func fsign(t testing.TB) string {
	t.Helper()
	fsignOnce.Do(func() {
		prefix := securityPrefix()
		if prefix == "" {
			fsignWhy = "flux-security not found ($FLUX_SECURITY_PREFIX, pkg-config flux-security, or the fluxjob-operator build cache)"
			return
		}
		gcc, err := exec.LookPath("gcc")
		if err != nil {
			fsignWhy = "gcc not found"
			return
		}
		dir, err := os.MkdirTemp("", "fsign-")
		if err != nil {
			fsignWhy = err.Error()
			return
		}
		out := filepath.Join(dir, "fsign")
		lib := filepath.Join(prefix, "lib")
		cmd := exec.Command(gcc, "-Wall", "-o", out, filepath.Join("testdata", "fsign.c"),
			"-I"+filepath.Join(prefix, "include"), "-L"+lib, "-lflux-security", "-Wl,-rpath,"+lib)
		if b, err := cmd.CombinedOutput(); err != nil {
			fsignWhy = fmt.Sprintf("compiling testdata/fsign.c against %s: %v\n%s", prefix, err, b)
			return
		}
		fsignPath = out
	})
	if fsignPath == "" {
		if strings.HasPrefix(fsignWhy, "compiling") {
			t.Fatal(fsignWhy) // the library is there: a build failure is a failure
		}
		t.Skip(fsignWhy)
	}
	return fsignPath
}

// secConfig writes a flux-security configuration and returns its glob.
func secConfig(t testing.TB, maxTTL int, mungeSocket string) string {
	t.Helper()
	dir := t.TempDir()
	conf := fmt.Sprintf("[sign]\nmax-ttl = %d\ndefault-type = \"none\"\nallowed-types = [ \"none\", \"munge\" ]\n", maxTTL)
	if mungeSocket != "" {
		conf += fmt.Sprintf("[sign.munge]\nsocket-path = %q\n", mungeSocket)
	}
	if err := os.WriteFile(filepath.Join(dir, "sign.toml"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, "*.toml")
}

// libWrap wraps payload with the library as userid.
func libWrap(t testing.TB, config, mech string, userid int64, payload []byte) string {
	t.Helper()
	cmd := exec.Command(fsign(t), config, "wrap", mech, fmt.Sprint(userid))
	cmd.Stdin = strings.NewReader(string(payload))
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("library wrap: %v: %s", err, stderrOf(err))
	}
	return string(out)
}

func stderrOf(err error) string {
	if ee, ok := err.(*exec.ExitError); ok {
		return string(ee.Stderr)
	}
	return ""
}

// libResult is the library's answer for one envelope: Err is its error
// message, else Mech ("-" when verified with flux_sign_unwrap), UserID
// and the payload in base64.
type libResult struct {
	Err     string
	Mech    string
	UserID  string
	Payload string
}

// libUnwrap runs the library on every envelope in one process: verify
// uses flux_sign_unwrap, else flux_sign_unwrap_anymech with
// FLUX_SIGN_NOVERIFY (what job-ingest calls).
func libUnwrap(t testing.TB, config string, verify bool, js []string) []libResult {
	t.Helper()
	mode := "noverify"
	if verify {
		mode = "verify"
	}
	var in strings.Builder
	for _, j := range js {
		fmt.Fprintf(&in, "%s %s\n", mode, hex.EncodeToString([]byte(j)))
	}
	cmd := exec.Command(fsign(t), config, "batch")
	cmd.Stdin = strings.NewReader(in.String())
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("library batch: %v: %s", err, stderrOf(err))
	}
	var res []libResult
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	sc.Buffer(nil, 1<<26)
	for sc.Scan() {
		line := sc.Text()
		if msg, ok := strings.CutPrefix(line, "err "); ok {
			res = append(res, libResult{Err: msg})
			continue
		}
		f := strings.SplitN(strings.TrimPrefix(line, "ok "), " ", 3)
		if len(f) != 3 {
			t.Fatalf("library batch: bad line %q", line)
		}
		res = append(res, libResult{Mech: f[0], UserID: f[1], Payload: f[2]})
	}
	if len(res) != len(js) {
		t.Fatalf("library batch: %d results for %d envelopes", len(res), len(js))
	}
	return res
}

func osGetuid() int { return os.Getuid() }
