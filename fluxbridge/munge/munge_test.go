package munge_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/munge"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/munge/mungetest"
)

// TestEncodeDecodeRealMunged checks both directions against Debian's
// munged and its own clients: a credential we encode is what unmunge
// decodes (payload, our uid), one munge encodes is what we decode, and a
// second decode of the same credential is munged's replay refusal.
func TestEncodeDecodeRealMunged(t *testing.T) {
	d := mungetest.Start(t, mungetest.Options{})
	c := &munge.Client{Socket: d.Socket}
	ctx := context.Background()

	payload := []byte("\x01binary\x00payload\xff")
	cred, err := c.Encode(ctx, payload, munge.EncodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(cred, "MUNGE:") || !strings.HasSuffix(cred, ":") {
		t.Fatalf("credential %q is not MUNGE:...:", cred)
	}
	out, err := d.Unmunge(cred)
	if err != nil {
		t.Fatalf("unmunge refused our credential: %v\n%s", err, out)
	}
	if !strings.Contains(out, "STATUS:          Success (0)") {
		t.Errorf("unmunge: %s", out)
	}
	uid := os.Getuid()
	if !strings.Contains(out, "UID:") || !strings.Contains(out, "("+itoa(uid)+")") {
		t.Errorf("unmunge does not show uid %d: %s", uid, out)
	}
	if !bytes.HasSuffix([]byte(out), payload) {
		t.Errorf("unmunge payload: %q, want suffix %q", out, payload)
	}

	theirs, err := d.Munge("from munge(1)")
	if err != nil {
		t.Fatal(err)
	}
	before := time.Now().Add(-2 * time.Second)
	cr, err := c.Decode(ctx, theirs)
	if err != nil {
		t.Fatal(err)
	}
	if string(cr.Payload) != "from munge(1)" || cr.UID != uint32(uid) || cr.GID != uint32(os.Getgid()) {
		t.Errorf("decoded %+v", cr)
	}
	if cr.EncodeTime.Before(before.Truncate(time.Second)) || cr.EncodeTime.After(time.Now()) {
		t.Errorf("encode time %v, now %v", cr.EncodeTime, time.Now())
	}
	if cr.TTL != 300 || cr.AuthUID != munge.UIDAny {
		t.Errorf("ttl %d auth uid %d, want munged's defaults 300 and any", cr.TTL, cr.AuthUID)
	}

	// munged remembers decoded credentials: the second decode is a replay,
	// returned with the credential, as munge_decode does.
	cr2, err := c.Decode(ctx, theirs)
	if !munge.IsCode(err, munge.ErrCredReplayed) || cr2 == nil || string(cr2.Payload) != "from munge(1)" {
		t.Fatalf("second decode: %+v, %v; want the credential and a replay error", cr2, err)
	}

	// Our own credential round trip, with options on the wire.
	ttl := uint32(60)
	authUID := uint32(uid)
	cred, err = c.Encode(ctx, nil, munge.EncodeOptions{TTL: ttl, AuthUID: &authUID})
	if err != nil {
		t.Fatal(err)
	}
	cr, err = c.Decode(ctx, cred)
	if err != nil {
		t.Fatal(err)
	}
	if len(cr.Payload) != 0 || cr.TTL != ttl || cr.AuthUID != authUID {
		t.Errorf("decoded %+v", cr)
	}

	// A damaged credential: munged's own refusal, no credential.
	bad := cred[:len(cred)/2] + "AAAA" + cred[len(cred)/2+4:]
	cr, err = c.Decode(ctx, bad)
	var me *munge.Error
	if cr != nil || !errors.As(err, &me) || me.Code == munge.ErrSuccess || me.Message == "" {
		t.Fatalf("damaged credential: %+v, %v", cr, err)
	}

	// A credential of another key (another cluster's munged) is invalid.
	other := mungetest.Start(t, mungetest.Options{})
	foreign, err := (&munge.Client{Socket: other.Socket}).Encode(ctx, []byte("x"), munge.EncodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Decode(ctx, foreign); !munge.IsCode(err, munge.ErrCredInvalid) {
		t.Fatalf("foreign credential: %v, want EMUNGE_CRED_INVALID", err)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// fakeMunged serves one connection per accept with respond, which gets
// the request bytes and returns what to write (nil: write nothing and
// hold the connection open until the client goes).
func fakeMunged(t *testing.T, respond func(req []byte) []byte) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "m.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer nc.Close()
				hdr := make([]byte, 11)
				if _, err := ioReadFull(nc, hdr); err != nil {
					return
				}
				body := make([]byte, binary.BigEndian.Uint32(hdr[7:]))
				if _, err := ioReadFull(nc, body); err != nil {
					return
				}
				out := respond(append(hdr, body...))
				if out == nil {
					buf := make([]byte, 1)
					_, _ = nc.Read(buf) // until the client closes
					return
				}
				_, _ = nc.Write(out)
			}()
		}
	}()
	return sock
}

func ioReadFull(nc net.Conn, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := nc.Read(b[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

func header(typ byte, n uint32) []byte {
	h := binary.BigEndian.AppendUint32(nil, 0x00606D4B)
	h = append(h, 4, typ, 0)
	return binary.BigEndian.AppendUint32(h, n)
}

// TestProtocolFaults: what a broken or hostile peer on munged's socket
// gets from the client — a bounded, wrapped error, never a hang or an
// allocation of its choosing.
func TestProtocolFaults(t *testing.T) {
	encRsp := func(code byte, msg string, data string) []byte {
		b := []byte{code}
		if msg != "" {
			b = append(b, byte(len(msg)+1))
			b = append(b, msg...)
			b = append(b, 0)
		} else {
			b = append(b, 0)
		}
		b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
		b = append(b, data...)
		return append(header(3, uint32(len(b))), b...)
	}
	var gotReq []byte
	tests := []struct {
		name    string
		respond func([]byte) []byte
		timeout time.Duration
		want    string
	}{
		{"ok", func(r []byte) []byte { gotReq = r; return encRsp(0, "", "MUNGE:abc:") }, 0, ""},
		{"refused", func([]byte) []byte { return encRsp(13, "Unrecognized security realm", "") }, 0, "Unrecognized security realm (13)"},
		{"bad magic", func([]byte) []byte { b := encRsp(0, "", "MUNGE:x:"); b[0] = 1; return b }, 0, "magic"},
		{"bad version", func([]byte) []byte { b := encRsp(0, "", "MUNGE:x:"); b[4] = 3; return b }, 0, "version 3"},
		{"wrong type", func([]byte) []byte { b := encRsp(0, "", "MUNGE:x:"); b[5] = 5; return b }, 0, "type 5"},
		{"huge length", func([]byte) []byte { return header(3, 1<<31) }, 0, "exceeds"},
		{"short body", func([]byte) []byte { b := encRsp(0, "", "MUNGE:x:"); return b[:len(b)-2] }, 0, "reading response body"},
		{"field overruns body", func([]byte) []byte {
			b := []byte{0, 0}
			b = binary.BigEndian.AppendUint32(b, 1000)
			return append(header(3, uint32(len(b))), b...)
		}, 0, "field of 1000 bytes"},
		{"empty credential", func([]byte) []byte { return encRsp(0, "", "") }, 0, "empty credential"},
		{"silent", func([]byte) []byte { return nil }, 200 * time.Millisecond, "deadline"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := &munge.Client{Socket: fakeMunged(t, tc.respond), Timeout: tc.timeout}
			start := time.Now()
			cred, err := c.Encode(context.Background(), []byte("pay"), munge.EncodeOptions{})
			if tc.want == "" {
				if err != nil || cred != "MUNGE:abc:" {
					t.Fatalf("Encode: %q, %v", cred, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Encode: %q, %v; want an error with %q", cred, err, tc.want)
			}
			if time.Since(start) > 3*time.Second {
				t.Errorf("took %v", time.Since(start))
			}
		})
	}
	// The request of the "ok" case, byte for byte: header, default
	// cipher/mac/zip (1), no realm, ttl 0, auth uid/gid any, payload.
	want := header(2, 3+1+4+4+4+4+3)
	want = append(want, 1, 1, 1, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 3, 'p', 'a', 'y')
	if !bytes.Equal(gotReq, want) {
		t.Errorf("request\n got %x\nwant %x", gotReq, want)
	}

	// Cancellation ends a request at once, whatever the timeout.
	c := &munge.Client{Socket: fakeMunged(t, func([]byte) []byte { return nil }), Timeout: time.Minute}
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	if _, err := c.Decode(ctx, "MUNGE:x:"); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled decode: %v", err)
	}
	// No daemon.
	c = &munge.Client{Socket: filepath.Join(t.TempDir(), "none")}
	if _, err := c.Encode(context.Background(), nil, munge.EncodeOptions{}); err == nil || !strings.Contains(err.Error(), "connecting to munged") {
		t.Fatalf("no daemon: %v", err)
	}
	if _, err := c.Encode(context.Background(), make([]byte, munge.MaxMessage), munge.EncodeOptions{}); err == nil {
		t.Fatal("oversized payload accepted")
	}
}
