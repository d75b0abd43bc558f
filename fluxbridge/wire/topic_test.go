package wire

import (
	"bytes"
	"fmt"
	"testing"
)

// TestReaderTopicCache: messages read by a Reader get their topics right
// whether or not the topic was seen before, and the cache stays bounded.
func TestReaderTopicCache(t *testing.T) {
	var stream []byte
	var want []string
	for i := range 3 * topicCacheSize {
		topic := fmt.Sprintf("svc.topic-%d", i%(2*topicCacheSize))
		if i%3 == 0 {
			topic = "job-info.eventlog-watch"
		}
		var err error
		if stream, err = AppendFramed(stream, NewRequest(topic, nil, uint32(i))); err != nil {
			t.Fatal(err)
		}
		want = append(want, topic)
	}
	r := NewReader(bytes.NewReader(stream), 0)
	for i, topic := range want {
		m, err := r.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		if m.Topic != topic || m.Matchtag() != uint32(i) {
			t.Fatalf("message %d: topic %q matchtag %d, want %q %d", i, m.Topic, m.Matchtag(), topic, i)
		}
		if n := len(r.topics.m); n > topicCacheSize {
			t.Fatalf("topic cache holds %d, limit %d", n, topicCacheSize)
		}
	}
}
