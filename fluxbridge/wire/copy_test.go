package wire_test

import (
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/wire/wiretest"
)

// TestTranscriptCopyMatchesShared checks that the committed transcripts are
// a byte-for-byte copy of the project's shared ../shared/flux-wire, where
// that folder exists (it does beside the working tree, not in every
// checkout; the committed copy is what the other tests read).
func TestTranscriptCopyMatchesShared(t *testing.T) {
	shared, err := wiretest.SharedDir()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(shared); err != nil {
		t.Skipf("no shared transcript folder to compare the committed copy with: %v", err)
	}
	root, err := wiretest.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	copyDir := filepath.Join(root, wiretest.CopyDir)
	seen := 0
	err = filepath.WalkDir(shared, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(shared, path)
		want, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		got, err := os.ReadFile(filepath.Join(copyDir, rel))
		if err != nil {
			t.Errorf("%s is missing from %s: %v", rel, wiretest.CopyDir, err)
			return nil
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s differs from %s", filepath.Join(wiretest.CopyDir, rel), path)
		}
		seen++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if seen == 0 {
		t.Fatalf("%s holds no files", shared)
	}
}
