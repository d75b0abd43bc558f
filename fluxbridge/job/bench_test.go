package job

import (
	"encoding/json"
	"testing"
)

func BenchmarkParseIDF58(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseID("ƒuzzybunny"); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseIDWords(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseID("cake-plume-nepal--neuron-pencil-academy"); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkIDF58(b *testing.B) {
	b.ReportAllocs()
	id := ID(6787342413402046)
	for b.Loop() {
		_ = id.F58()
	}
}

func BenchmarkParseEvent(b *testing.B) {
	b.ReportAllocs()
	line := []byte(eventSeeds[0])
	for b.Loop() {
		if _, err := ParseEvent(line); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkFromCommandMarshal(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		js, err := FromCommand([]string{"sleep", "1"}, CommandOptions{NumTasks: 4, Cwd: "/"})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := json.Marshal(js); err != nil {
			b.Fatal(err)
		}
	}
}
