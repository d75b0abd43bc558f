package testbroker_test

import (
	"reflect"
	"testing"
	"time"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/testbroker"
)

func TestDefaultOutcome(t *testing.T) {
	tests := []struct {
		cmd  []string
		want testbroker.Outcome
	}{
		{nil, testbroker.Outcome{NotFound: true}},
		{[]string{"/usr/bin/true"}, testbroker.Outcome{}},
		{[]string{"false"}, testbroker.Outcome{Status: 256}},
		{[]string{"sleep", "1.5"}, testbroker.Outcome{Run: 1500 * time.Millisecond}},
		{[]string{"sleep", "2m"}, testbroker.Outcome{Run: 2 * time.Minute}},
		{[]string{"sleep", "junk"}, testbroker.Outcome{}},
		{[]string{"sleep", "inf"}, testbroker.Outcome{Run: 100 * 365 * 24 * time.Hour}},
		{[]string{"exit", "300"}, testbroker.Outcome{Status: (300 & 0xff) << 8}},
		{[]string{"kill-self", "USR1"}, testbroker.Outcome{Status: (128 + 10) << 8}},
		{[]string{"kill-self", "NOPE"}, testbroker.Outcome{Status: 256}},
		{[]string{"kill-shell", "SIGSEGV"}, testbroker.Outcome{Status: 11}},
		{[]string{"sh", "-c", "sleep 1 && exit 4"}, testbroker.Outcome{Run: time.Second, Status: 4 << 8}},
		{[]string{"bash", "-c", "kill -s KILL $$"}, testbroker.Outcome{Status: (128 + 9) << 8}},
		{[]string{"sh", "-c", "false; true"}, testbroker.Outcome{}},
		{[]string{"sh", "-c", "nosuchcmd"}, testbroker.Outcome{Status: 127 << 8}},
		{[]string{"sh", "-c", "false; exit"}, testbroker.Outcome{Status: 1 << 8}},
		{[]string{"hostname"}, testbroker.Outcome{}},
		{[]string{"./my-app", "--flag"}, testbroker.Outcome{NotFound: true}},
		{[]string{"echo", "hello", "world"}, testbroker.Outcome{Output: []testbroker.OutputChunk{{Stream: "stdout", Data: []byte("hello world\n")}}}},
		{[]string{"echo", "-n"}, testbroker.Outcome{}},
		{[]string{"printf", `a\x00\xff\101%s%%\n`, "b"}, testbroker.Outcome{Output: []testbroker.OutputChunk{{Stream: "stdout", Data: []byte("a\x00\xffAb%\n")}}}},
		{[]string{"sh", "-c", `echo 'to out;put' && sleep 2; echo "err \"x\"" >&2; printf 'no newline'; exit 3`}, testbroker.Outcome{
			Run: 2 * time.Second, Status: 3 << 8,
			Output: []testbroker.OutputChunk{
				{Stream: "stdout", Data: []byte("to out;put\n")},
				{At: 2 * time.Second, Stream: "stderr", Data: []byte("err \"x\"\n")},
				{At: 2 * time.Second, Stream: "stdout", Data: []byte("no newline")},
			},
		}},
	}
	for _, tc := range tests {
		if got := testbroker.DefaultOutcome(tc.cmd); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("DefaultOutcome(%q) = %+v, want %+v", tc.cmd, got, tc.want)
		}
	}
}

func TestCustomOutcome(t *testing.T) {
	srv := startServer(t, testbroker.Options{Outcome: func(cmd []string) testbroker.Outcome {
		return testbroker.Outcome{Status: 42 << 8}
	}})
	c := dialRaw(t, srv)
	ev := c.events(c.submit(16, 0, "true"))
	if ctx := ev[6]["context"].(map[string]any); ev[6]["name"] != "finish" || ctx["status"] != float64(42<<8) {
		t.Fatalf("finish = %v", ev[6])
	}
}
