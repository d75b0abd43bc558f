// Package tail keeps the end of what a remote command writes to its
// standard error, for the error that reports the command's failure.
package tail

import (
	"strings"
	"sync"
)

// Size is how much a Buffer keeps.
const Size = 4 << 10

// Buffer is an io.Writer that keeps the last Size bytes written to it. It
// is safe for concurrent use; the zero value is ready.
type Buffer struct {
	mu sync.Mutex
	b  []byte
}

// Write appends p, dropping what is older than the last Size bytes.
func (t *Buffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if over := len(t.b) - Size; over > 0 {
		t.b = append(t.b[:0], t.b[over:]...)
	}
	return len(p), nil
}

// String returns what is kept, without leading and trailing white space.
func (t *Buffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.TrimSpace(string(t.b))
}
