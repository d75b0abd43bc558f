package e2e

import (
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestLocalMetricsNeedAuth runs the built manager with its default metrics
// settings (HTTPS, --metrics-secure) against a real API server and checks
// that /metrics answers only a caller the API server authenticates and
// authorizes: no token 401, a ServiceAccount token without the
// fluxjob-metrics-reader ClusterRole 403, one bound to it 200. In the
// sidecar layout every Flux job can connect to this port.
func TestLocalMetricsNeedAuth(t *testing.T) {
	ctx := deadline(t, 5*time.Minute)
	l := startLocal(ctx, t)
	c, root := l.c, l.root
	kubectl := func(args ...string) string {
		t.Helper()
		out, err := c.Kubectl(ctx, args...)
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(out))
	}
	kubectl("apply", "-f", filepath.Join(root, "config", "rbac", "metrics_reader_role.yaml"))
	kubectl("create", "serviceaccount", "scraper", "-n", "default")
	kubectl("create", "serviceaccount", "stranger", "-n", "default")
	kubectl("create", "clusterrolebinding", "scraper-metrics", "--clusterrole=metrics-reader", "--serviceaccount=default:scraper")
	scraper := kubectl("create", "token", "scraper", "-n", "default")
	stranger := kubectl("create", "token", "stranger", "-n", "default")

	metrics := freeAddr(t)
	l.startManager(ctx, t, []string{"--metrics-bind-address=" + metrics}, l.managerEnv())

	// The certificate is self-signed: this test checks who may read, not
	// who serves.
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec
	get := func(token string) (int, string) {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+metrics+"/metrics", nil)
		if err != nil {
			t.Fatal(err)
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := hc.Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return resp.StatusCode, string(b)
	}
	// Ready (/readyz) comes before the metrics server listens: it makes
	// its certificate first. Wait until it answers at all.
	for end := time.Now().Add(60 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		code, msg := get("")
		if code != 0 {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("the metrics endpoint never answered: %s", msg)
		}
	}
	for _, tc := range []struct {
		who   string
		token string
		want  int
	}{
		{"no token", "", http.StatusUnauthorized},
		// controller-runtime's filter answers 500 when the TokenReview
		// itself reports an error (an unparseable token), 401 when it
		// says "not authenticated": either way, no metrics.
		{"a token the API server does not know", "not-a-token", -1},
		{"a ServiceAccount without metrics-reader", stranger, http.StatusForbidden},
		{"a ServiceAccount bound to metrics-reader", scraper, http.StatusOK},
	} {
		// RBAC bindings reach the authorizer's cache a moment after
		// they are created: poll the allowed case until it passes.
		var code int
		var body string
		for end := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
			code, body = get(tc.token)
			if code == tc.want || tc.want != http.StatusOK || time.Now().After(end) {
				break
			}
		}
		if tc.want == -1 {
			if code == http.StatusOK || code == 0 {
				t.Errorf("%s: GET /metrics = %d, want a refusal (%s)", tc.who, code, firstLine(body))
			}
			continue
		}
		if code != tc.want {
			t.Errorf("%s: GET /metrics = %d, want %d (%s)", tc.who, code, tc.want, firstLine(body))
			continue
		}
		if code == http.StatusOK && !strings.Contains(body, "fluxjob_executor_connected") {
			t.Errorf("%s: /metrics lacks fluxjob_executor_connected:\n%s", tc.who, firstLine(body))
		}
	}
	// Plain HTTP is not served.
	plain, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+metrics+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(plain); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Error("plain HTTP /metrics answered 200")
		}
	}
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return fmt.Sprintf("%.200s", line)
}
