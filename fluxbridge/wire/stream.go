package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
)

// AppendFramed appends m with its stream prefix (StreamMagic little-endian,
// then the big-endian length of the encoding) to b, as
// src/common/librouter/sendfd.c writes it.
func AppendFramed(b []byte, m *Message) ([]byte, error) {
	size, err := m.check()
	if err != nil {
		return b, err
	}
	b = grow(b, PrefixSize+size)
	b = binary.LittleEndian.AppendUint32(b, StreamMagic)
	b = binary.BigEndian.AppendUint32(b, uint32(size))
	return m.appendUnchecked(b), nil
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// WriteMessage writes m with its stream prefix to w in a single Write call.
func WriteMessage(w io.Writer, m *Message) error {
	bp := bufPool.Get().(*[]byte)
	b, err := AppendFramed((*bp)[:0], m)
	if err != nil {
		bufPool.Put(bp)
		return err
	}
	_, err = w.Write(b)
	if cap(b) <= 64<<10 {
		*bp = b[:0]
		bufPool.Put(bp)
	}
	if err != nil {
		return fmt.Errorf("wire: write message: %w", err)
	}
	return nil
}

// Reader reads stream-framed messages. It is not safe for concurrent use.
type Reader struct {
	r       io.Reader
	maxSize int
	prefix  [PrefixSize]byte
	buf     []byte
	topics  topicCache
}

// readChunk is how much a Reader allocates ahead of data actually received:
// a hostile length field alone never makes it allocate more than this.
const readChunk = 64 << 10

// NewReader returns a Reader on r that rejects (with ErrTooLarge) any
// message whose encoding is larger than maxSize bytes; maxSize <= 0 means
// DefaultMaxSize.
func NewReader(r io.Reader, maxSize int) *Reader {
	if maxSize <= 0 {
		maxSize = DefaultMaxSize
	}
	return &Reader{r: r, maxSize: maxSize}
}

// ReadMessage reads the next message. It returns io.EOF when the stream ends
// cleanly between messages, an error wrapping ErrTruncated (and
// io.ErrUnexpectedEOF or the read error) when it ends inside one,
// ErrBadMagic or ErrTooLarge for a bad prefix (checked before anything is
// allocated for the message), and decoding errors from UnmarshalBinary
// wrapped with ErrMalformed. After an error
// the stream position is undefined: the caller should stop reading.
func (r *Reader) ReadMessage() (*Message, error) {
	if _, err := io.ReadFull(r.r, r.prefix[:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, fmt.Errorf("%w: stream prefix: %w", ErrTruncated, err)
		}
		return nil, err
	}
	if got := binary.LittleEndian.Uint32(r.prefix[:4]); got != StreamMagic {
		return nil, fmt.Errorf("%w: 0x%08x", ErrBadMagic, got)
	}
	n64 := uint64(binary.BigEndian.Uint32(r.prefix[4:]))
	if n64 > uint64(r.maxSize) {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, n64, r.maxSize)
	}
	n := int(n64)
	// Grow the buffer only as data arrives, doubling, so memory follows the
	// bytes received rather than the length field.
	buf := r.buf[:0]
	for len(buf) < n {
		step := n - len(buf)
		if lim := max(len(buf), readChunk); step > lim {
			step = lim
		}
		if cap(buf)-len(buf) < step {
			nb := make([]byte, len(buf), len(buf)+step+len(buf)/2)
			copy(nb, buf)
			buf = nb
		}
		k, err := io.ReadFull(r.r, buf[len(buf):len(buf)+step])
		buf = buf[:len(buf)+k]
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			r.keep(buf)
			return nil, fmt.Errorf("%w: %d of %d message bytes: %w", ErrTruncated, len(buf), n, err)
		}
	}
	// A buffer too large to keep for the next message is handed to the
	// message instead of copying its payload: a large message costs its
	// size once, not twice.
	own := !r.keep(buf)
	m := new(Message)
	if err := m.unmarshal(buf, &r.topics, own); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	return m, nil
}

// keep retains buf for the next message unless it is large, and reports
// whether it did.
func (r *Reader) keep(buf []byte) bool {
	if cap(buf) <= 4*readChunk {
		r.buf = buf[:0]
		return true
	}
	r.buf = nil
	return false
}
