package broker

import (
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
)

func TestTail(t *testing.T) {
	tests := []struct {
		name   string
		max    int
		writes []string
		want   string
		total  int64
	}{
		{"short", 8, []string{"ab", "cd"}, "abcd", 4},
		{"exact", 4, []string{"ab", "cd"}, "abcd", 4},
		{"cut", 4, []string{"abc", "def", "g"}, "defg", 7},
		{"one huge write", 4, []string{"a", strings.Repeat("x", 1000) + "tail"}, "tail", 1005},
		{"many small", 3, strings.Split(strings.Repeat("0123456789", 10), ""), "789", 100},
		{"empty", 4, nil, "", 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tl := tail{max: tc.max}
			for _, w := range tc.writes {
				tl.write([]byte(w))
				if len(tl.buf) > 2*tc.max {
					t.Fatalf("buffer grew to %d for max %d", len(tl.buf), tc.max)
				}
			}
			if got := string(tl.bytes()); got != tc.want || tl.total != tc.total {
				t.Fatalf("tail %q total %d, want %q %d", got, tl.total, tc.want, tc.total)
			}
		})
	}
}

func TestRenderTail(t *testing.T) {
	tests := []struct {
		name string
		raw  string
		max  int
		cut  bool
		want string
	}{
		{"utf-8 kept", "héllo\n", 16, false, "héllo\n"},
		{"control bytes kept", "a\x00\x1b[0m", 16, false, "a\x00\x1b[0m"},
		{"invalid escaped", "a\xffb\xfe", 16, false, `a\xffb\xfe`},
		{"cut inside a character", "\xa9llo", 16, true, "llo"},
		{"uncut invalid start escaped", "\xa9llo", 16, false, `\xa9llo`},
		{"escapes longer than max drop oldest", "ab\xff\xffcd", 8, false, `\xffcd`},
		{"escape never split", "\xff\xff", 5, false, `\xff`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := renderTail([]byte(tc.raw), tc.max, tc.cut)
			if got != tc.want {
				t.Fatalf("renderTail(%q) = %q, want %q", tc.raw, got, tc.want)
			}
			if len(got) > tc.max {
				t.Fatalf("%d bytes, max %d", len(got), tc.max)
			}
		})
	}
}

func TestOutputCollector(t *testing.T) {
	now := time.Unix(1000, 0)
	data := func(stream, s string) job.OutputEvent {
		return job.OutputEvent{Name: "data", Data: &job.OutputData{Stream: stream, Rank: "0", Data: []byte(s)}}
	}
	tests := []struct {
		name   string
		events []job.OutputEvent
		end    error
		at     time.Time
		want   *fluxjobv1.FluxJobOutput
		max    int // tail size; 0 means 64
	}{
		{"streams and shell log", []job.OutputEvent{
			{Name: "header", Header: &job.OutputHeader{Version: 1}},
			data("stdout", "out\n"), data("stderr", "err\n"),
			{Name: "log", Log: &job.OutputLog{Rank: 0, Level: 3, Message: "boom"}},
			{Name: "data", Data: &job.OutputData{Stream: "stdout", Rank: "0", EOF: true}},
		}, io.EOF, now, &fluxjobv1.FluxJobOutput{Stdout: "out\n", Stderr: "err\nflux-shell[0]: ERROR: boom\n", StdoutBytes: 4, StderrBytes: 31}, 0},
		{"cut to the tail", []job.OutputEvent{data("stdout", "0123456789"), data("stdout", "abcdefghij")}, io.EOF, now,
			&fluxjobv1.FluxJobOutput{Stdout: "cdefghij", StdoutBytes: 20}, 8},
		{"redirect", []job.OutputEvent{{Name: "redirect", Redirect: &job.OutputRedirect{Stream: "stdout", Rank: "[0-1]", Path: "/data/out"}}}, io.EOF, now,
			&fluxjobv1.FluxJobOutput{Message: "stdout of tasks [0-1] went to /data/out"}, 0},
		{"read failed", []job.OutputEvent{data("stdout", "x")}, errors.New("disconnected"), now,
			&fluxjobv1.FluxJobOutput{Stdout: "x", StdoutBytes: 1, Message: "output incomplete: disconnected"}, 0},
		{"deadline", []job.OutputEvent{data("stderr", "y")}, nil, now.Add(time.Minute),
			&fluxjobv1.FluxJobOutput{Stderr: "y", StderrBytes: 1, Message: "output incomplete: the output eventlog did not end in time"}, 0},
		{"not over yet", []job.OutputEvent{data("stderr", "y")}, nil, now, nil, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			max := tc.max
			if max == 0 {
				max = 64
			}
			c := newOutputCollector(max, now.Add(10*time.Second))
			c.markStarted()
			for _, ev := range tc.events {
				if c.handle(ev, nil) {
					t.Fatal("an event ended the read")
				}
			}
			if tc.end != nil && !c.handle(job.OutputEvent{}, tc.end) {
				t.Fatal("the end did not end the read")
			}
			got, over := c.result(tc.at)
			if tc.want == nil {
				if over {
					t.Fatalf("over before the end or deadline: %+v", got)
				}
				return
			}
			if !over || *got != *tc.want {
				t.Fatalf("result %+v (over %v), want %+v", got, over, tc.want)
			}
		})
	}
}
