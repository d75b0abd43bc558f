package testbroker_test

import (
	"syscall"
	"testing"
	"time"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/testbroker"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/wire"
)

// A client that sends garbage loses its connection; others are served.
func TestGarbageClosesOnlyThatConnection(t *testing.T) {
	srv := startServer(t, testbroker.Options{})
	good := dialRaw(t, srv)
	bad := dialRaw(t, srv)
	if _, err := bad.nc.Write([]byte("GET / HTTP/1.1\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, bad)
	// A length field larger than the bound is refused without allocating.
	huge := []byte{0x12, 0x00, 0xee, 0xff, 0x7f, 0xff, 0xff, 0xff}
	bad2 := dialRaw(t, srv)
	if _, err := bad2.nc.Write(huge); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, bad2)
	if m := good.rpc("job-list.list-id", map[string]any{"id": 5, "attrs": []string{}}); m.Errnum() != uint32(syscall.ENOENT) {
		t.Fatalf("good client: errno %d", m.Errnum())
	}
}

// Requests whose payload is not NUL-terminated JSON get EPROTO, as
// flux_request_unpack answers.
func TestMalformedPayloads(t *testing.T) {
	srv := startServer(t, testbroker.Options{})
	c := dialRaw(t, srv)
	tests := []struct {
		name    string
		topic   string
		payload []byte
		errno   syscall.Errno
		text    string
	}{
		{"no NUL", "job-manager.kill", []byte(`{"id":1,"signum":15}`), syscall.EPROTO, ""},
		{"no payload", "job-manager.raise", nil, syscall.EPROTO, ""},
		{"wrong type", "job-manager.urgency", []byte("{\"id\":\"x\",\"urgency\":1}\x00"), syscall.EPROTO, ""},
		{"submit not JSON", "job-ingest.submit", []byte("nope\x00"), syscall.EPROTO, "error decoding job request: Protocol error"},
		{"submit bad flags", "job-ingest.submit", []byte("{\"J\":\"x.y.none\",\"urgency\":16,\"flags\":1}\x00"), syscall.EPROTO, "invalid job flags"},
		{"wait malformed", "job-manager.wait", []byte("{}\x00"), syscall.EPROTO, "malformed wait request"},
		{"kill bad signal", "job-manager.kill", []byte("{\"id\":1,\"signum\":0}\x00"), syscall.EINVAL, "Invalid signal number"},
		{"raise bad severity", "job-manager.raise", []byte("{\"id\":1,\"type\":\"t\",\"severity\":9}\x00"), syscall.EPROTO, "invalid exception severity"},
		{"urgency out of range", "job-manager.urgency", []byte("{\"id\":1,\"urgency\":32}\x00"), syscall.EINVAL, "urgency value is out of range"},
		{"list negative max", "job-list.list", []byte("{\"max_entries\":-1,\"attrs\":[]}\x00"), syscall.EPROTO, "invalid payload: max_entries < 0 not allowed"},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tag := uint32(1000 + i)
			c.send(wire.NewRequest(tc.topic, tc.payload, tag))
			m := c.wait(tag, 1, 5*time.Second)[0]
			if m.Errnum() != uint32(tc.errno) || m.PayloadString() != tc.text {
				t.Fatalf("got %d %q, want %d %q", m.Errnum(), m.PayloadString(), tc.errno, tc.text)
			}
		})
	}
	// A NORESPONSE request gets nothing back, even on error.
	m := wire.NewRequest("job-manager.kill", []byte("{}\x00"), 0)
	m.Flags |= wire.FlagNoResponse
	c.send(m)
	c.rpc("job-list.list-id", map[string]any{"id": 5, "attrs": []string{}})
	c.mu.Lock()
	n := len(c.byTag[0])
	c.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d responses to a NORESPONSE request", n)
	}
}
