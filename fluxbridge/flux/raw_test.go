package flux

import (
	"bytes"
	"io"
	"net"
	"path/filepath"
	"syscall"
	"testing"
)

// TestRawWritevAndRead: rawWritev writes more buffers than one writev
// takes and more bytes than the socket holds (waiting on the poller while
// it is full), and rawReader reads them back, byte for byte.
func TestRawWritevAndRead(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	client, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server := <-accepted
	if server == nil {
		t.Fatal("accept failed")
	}
	defer server.Close()

	var want bytes.Buffer
	var bufs [][]byte
	for i := range 3000 { // > maxIovecs buffers, ~3 MB
		b := bytes.Repeat([]byte{byte(i)}, 1+i%2000)
		if i%7 == 0 {
			b = nil // empty buffers are skipped
		}
		want.Write(b)
		bufs = append(bufs, b)
	}
	got := make(chan []byte, 1)
	sraw, err := server.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		b, _ := io.ReadAll(&rawReader{rc: sraw})
		got <- b
	}()
	rc := client.(syscall.Conn)
	raw, err := rc.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	n, _, err := rawWritev(raw, bufs, nil)
	if err != nil || n != want.Len() {
		t.Fatalf("rawWritev = %d, %v; want %d bytes", n, err, want.Len())
	}
	client.Close()
	if b := <-got; !bytes.Equal(b, want.Bytes()) {
		t.Fatalf("read %d bytes, not the %d written", len(b), want.Len())
	}
	if ok := rawConn(server) != nil; ok == raceEnabled {
		t.Errorf("raw reading of a unix socket = %v with the race detector %v", ok, raceEnabled)
	}
}
