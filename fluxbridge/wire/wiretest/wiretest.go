// Package wiretest loads the byte transcripts captured from a real
// flux-core 0.88 broker for tests (NAME.jsonl files and bin-hex/NAME.bin
// files, see their READMEs): the copy committed in
// fluxbridge/wire/testdata/flux-wire of the project's ../shared/flux-wire.
//
// It splits each connection's byte streams into messages using only the
// stream prefix, so tests can check decoders against the raw bytes.
package wiretest

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// EnvDir overrides the transcript directory when set.
const EnvDir = "FLUX_WIRE_DIR"

// Conn is one captured client connection.
type Conn struct {
	ID int
	// Accept holds the byte(s) the broker wrote before its first message
	// (flux-core writes exactly one: 0 = accepted).
	Accept []byte
	// Client and Broker are the framed messages (stream prefix included)
	// sent by each side, in order.
	Client, Broker [][]byte
	// ClientStream and BrokerStream are the whole byte streams; BrokerStream
	// excludes Accept.
	ClientStream, BrokerStream []byte
}

// Scenario is one transcript file.
type Scenario struct {
	Name  string // e.g. "submit" or "bin-hex/a-submit"
	Path  string
	Conns []*Conn
}

// Dir returns the transcript directory: $FLUX_WIRE_DIR, else the copy
// committed at <module root>/fluxbridge/wire/testdata/flux-wire, found by
// walking up from the working directory to the nearest go.mod. It does not
// check that it exists: Load fails if it does not.
func Dir() string {
	if d := os.Getenv(EnvDir); d != "" {
		return d
	}
	if root, err := ModuleRoot(); err == nil {
		return filepath.Join(root, CopyDir)
	}
	return CopyDir
}

// CopyDir is where the transcripts are committed, relative to the module
// root: a byte-for-byte copy of the project's shared ../shared/flux-wire, so
// that the tests run wherever the repository is checked out.
const CopyDir = "fluxbridge/wire/testdata/flux-wire"

// SharedDir returns the project's shared transcript folder, the source of
// the committed copy: <module root>/../shared/flux-wire.
func SharedDir() (string, error) {
	root, err := ModuleRoot()
	if err != nil {
		return "", err
	}
	return filepath.Join(filepath.Dir(root), "shared", "flux-wire"), nil
}

// ModuleRoot returns the nearest directory at or above the working
// directory that holds a go.mod.
func ModuleRoot() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("wiretest: %w", err)
	}
	for d := wd; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", errors.New("wiretest: no go.mod above the working directory")
		}
	}
}

// Load reads every NAME.jsonl in dir and every bin-hex/NAME.bin. It fails if
// dir is missing or holds no transcript.
func Load(dir string) ([]*Scenario, error) {
	if _, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("wiretest: transcript directory: %w", err)
	}
	jsonl, err := filepath.Glob(filepath.Join(dir, "*.jsonl"))
	if err != nil {
		return nil, err
	}
	bins, err := filepath.Glob(filepath.Join(dir, "bin-hex", "*.bin"))
	if err != nil {
		return nil, err
	}
	sort.Strings(jsonl)
	sort.Strings(bins)
	var out []*Scenario
	for _, p := range jsonl {
		s, err := loadJSONL(p)
		if err != nil {
			return nil, err
		}
		s.Name = strings.TrimSuffix(filepath.Base(p), ".jsonl")
		out = append(out, s)
	}
	for _, p := range bins {
		s, err := loadBin(p)
		if err != nil {
			return nil, err
		}
		s.Name = "bin-hex/" + strings.TrimSuffix(filepath.Base(p), ".bin")
		out = append(out, s)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("wiretest: no transcripts in %s", dir)
	}
	return out, nil
}

type builder struct {
	conns map[int]*Conn
	order []int
}

func (b *builder) add(id int, fromClient bool, data []byte) {
	if b.conns == nil {
		b.conns = map[int]*Conn{}
	}
	c := b.conns[id]
	if c == nil {
		c = &Conn{ID: id}
		b.conns[id] = c
		b.order = append(b.order, id)
	}
	if fromClient {
		c.ClientStream = append(c.ClientStream, data...)
	} else {
		c.BrokerStream = append(c.BrokerStream, data...)
	}
}

func (b *builder) finish(path string) (*Scenario, error) {
	s := &Scenario{Path: path}
	for _, id := range b.order {
		c := b.conns[id]
		if len(c.BrokerStream) > 0 {
			c.Accept = c.BrokerStream[:1:1]
			c.BrokerStream = c.BrokerStream[1:]
		}
		var err error
		if c.Client, err = Split(c.ClientStream); err != nil {
			return nil, fmt.Errorf("wiretest: %s conn %d client stream: %w", path, id, err)
		}
		if c.Broker, err = Split(c.BrokerStream); err != nil {
			return nil, fmt.Errorf("wiretest: %s conn %d broker stream: %w", path, id, err)
		}
		s.Conns = append(s.Conns, c)
	}
	return s, nil
}

// Split cuts a stream into framed messages using the 8-byte prefixes.
func Split(stream []byte) ([][]byte, error) {
	var out [][]byte
	for len(stream) > 0 {
		if len(stream) < 8 {
			return nil, fmt.Errorf("%d trailing bytes", len(stream))
		}
		n := int(binary.BigEndian.Uint32(stream[4:8]))
		if len(stream) < 8+n {
			return nil, fmt.Errorf("message of %d bytes, %d left", n, len(stream)-8)
		}
		out = append(out, stream[:8+n:8+n])
		stream = stream[8+n:]
	}
	return out, nil
}

func loadJSONL(path string) (*Scenario, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("wiretest: %w", err)
	}
	defer f.Close()
	var b builder
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	line := 0
	for sc.Scan() {
		line++
		if len(bytes.TrimSpace(sc.Bytes())) == 0 {
			continue
		}
		var rec struct {
			Conn int    `json:"conn"`
			Dir  string `json:"dir"`
			Hex  string `json:"hex"`
		}
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			return nil, fmt.Errorf("wiretest: %s:%d: %w", path, line, err)
		}
		data, err := hex.DecodeString(rec.Hex)
		if err != nil {
			return nil, fmt.Errorf("wiretest: %s:%d: %w", path, line, err)
		}
		switch rec.Dir {
		case "c2b":
			b.add(rec.Conn, true, data)
		case "b2c":
			b.add(rec.Conn, false, data)
		default:
			return nil, fmt.Errorf("wiretest: %s:%d: unknown dir %q", path, line, rec.Dir)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("wiretest: %s: %w", path, err)
	}
	return b.finish(path)
}

func loadBin(path string) (*Scenario, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("wiretest: %w", err)
	}
	var b builder
	r := bytes.NewReader(data)
	for r.Len() > 0 {
		var hdr [15]byte
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return nil, fmt.Errorf("wiretest: %s: record header: %w", path, err)
		}
		id := int(binary.BigEndian.Uint16(hdr[1:3]))
		n := int(binary.BigEndian.Uint32(hdr[11:15]))
		if n > r.Len() {
			return nil, fmt.Errorf("wiretest: %s: record of %d bytes, %d left", path, n, r.Len())
		}
		buf := make([]byte, n)
		_, _ = io.ReadFull(r, buf)
		switch hdr[0] {
		case 'C':
			b.add(id, true, buf)
		case 'B':
			b.add(id, false, buf)
		case 'c', 'b':
			b.add(id, true, nil)
		default:
			return nil, errors.New("wiretest: " + path + ": unknown record direction")
		}
	}
	return b.finish(path)
}
