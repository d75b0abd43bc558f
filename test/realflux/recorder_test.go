package realflux

import (
	"encoding/hex"
	"encoding/json"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// recorder is a recording proxy between flux commands and a broker's
// local:// socket, in the format of the project's shared byte
// transcripts (fluxbridge/wire/testdata/flux-wire/README.md): one JSON
// object a line, {"conn": N, "dir": "c2b"|"b2c", "t": seconds, "hex": ...},
// one line per read, in the order the proxy read the chunks. Nothing is
// altered on the way.
type recorder struct {
	ln     net.Listener
	target string // the broker's socket path

	mu    sync.Mutex
	lines []string
	conns int

	wg sync.WaitGroup
}

// chunk is one line of a transcript.
type chunk struct {
	Conn int     `json:"conn"`
	Dir  string  `json:"dir"`
	T    float64 `json:"t"`
	Hex  string  `json:"hex"`
}

// startRecorder listens on a socket in a temporary directory and relays
// each connection to the broker at brokerURI. Point a flux command at
// rec.URI(). Close stops it once every relayed connection ended.
func startRecorder(t *testing.T, brokerURI string) *recorder {
	t.Helper()
	target, ok := strings.CutPrefix(brokerURI, "local://")
	if !ok {
		t.Fatalf("recorder: %q is not a local:// URI", brokerURI)
	}
	// a short directory: unix socket paths are limited to 108 bytes
	dir, err := os.MkdirTemp("", "rec")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	ln, err := net.Listen("unix", filepath.Join(dir, "local"))
	if err != nil {
		t.Fatal(err)
	}
	r := &recorder{ln: ln, target: target}
	r.wg.Add(1)
	go r.serve()
	t.Cleanup(r.Close)
	return r
}

// URI is the local:// URI of the proxy.
func (r *recorder) URI() string { return "local://" + r.ln.Addr().String() }

func (r *recorder) serve() {
	defer r.wg.Done()
	for {
		c, err := r.ln.Accept()
		if err != nil {
			return
		}
		r.mu.Lock()
		r.conns++
		n := r.conns
		r.mu.Unlock()
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			r.relay(n, c)
		}()
	}
}

// relay copies both ways between the client c and a new connection to the
// broker, recording every read, until both directions ended.
func (r *recorder) relay(n int, c net.Conn) {
	defer c.Close()
	b, err := net.Dial("unix", r.target)
	if err != nil {
		return
	}
	defer b.Close()
	var wg sync.WaitGroup
	wg.Go(func() { r.copy(n, "c2b", b.(*net.UnixConn), c) })
	wg.Go(func() { r.copy(n, "b2c", c.(*net.UnixConn), b) })
	wg.Wait()
}

// copy reads from src and writes to dst until src ends, then shuts dst's
// write side so the other end sees the end too.
func (r *recorder) copy(n int, dir string, dst *net.UnixConn, src net.Conn) {
	defer func() { _ = dst.CloseWrite() }()
	buf := make([]byte, 64<<10)
	for {
		k, err := src.Read(buf)
		if k > 0 {
			r.record(n, dir, buf[:k])
			if _, werr := dst.Write(buf[:k]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (r *recorder) record(n int, dir string, data []byte) {
	now := time.Now()
	line, _ := json.Marshal(chunk{Conn: n, Dir: dir, T: float64(now.UnixNano()) / 1e9, Hex: hex.EncodeToString(data)})
	r.mu.Lock()
	r.lines = append(r.lines, string(line))
	r.mu.Unlock()
}

// Close stops accepting and waits for the relayed connections to end.
func (r *recorder) Close() {
	_ = r.ln.Close()
	r.wg.Wait()
}

// transcript returns the lines recorded so far and empties the recording.
func (r *recorder) transcript() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.lines
	r.lines = nil
	return out
}

// writeLines writes lines, one a line, to path.
func writeLines(path string, lines []string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.WriteString(f, strings.Join(lines, "\n")+"\n"); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
