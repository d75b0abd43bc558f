// Command image writes a container image as a `docker save` tarball, with no
// Docker engine and no registry: one layer made of the files, directories
// and symbolic links named on the command line (and, with -rootfs, a whole
// directory tree), and an image config. containerd imports the result with
// `ctr -n k8s.io images import` (hack/node.sh import). The node e2e test
// builds its images with it: the manager, the test-broker sidecar, the pod
// sandbox's pause image and, when a flux-core build is available, flux-core.
//
//	go run ./hack/image -o manager.tar -tag fluxjob.local/manager:e2e \
//	    -file bin/manager:/manager -entrypoint /manager -user 65532:65532
//
// The layer is reproducible: entries are sorted, owned by root (or -owner),
// and dated at the epoch.
package main

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// listFlag is a repeatable string flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(s string) error { *l = append(*l, s); return nil }

// Spec is what an image is made of.
type Spec struct {
	// Tag is the image's name, e.g. fluxjob.local/manager:e2e.
	Tag string
	// Files maps a path in the image to a file on this machine; the mode
	// is the file's unless Modes names it.
	Files map[string]string
	// Dirs are empty directories to create, with their modes.
	Dirs map[string]os.FileMode
	// Symlinks maps a path in the image to its target.
	Symlinks map[string]string
	// Rootfs, if set, is a directory whose whole tree is added at /
	// (before Trees, Files, Dirs and Symlinks, which win).
	Rootfs string
	// Trees maps a path in the image to a directory on this machine whose
	// whole tree is added there.
	Trees map[string]string
	// Entrypoint, Cmd, Env, User and WorkingDir are the image config. Env
	// gets a default PATH unless it sets one.
	Entrypoint []string
	Cmd        []string
	Env        []string
	User       string
	WorkingDir string
}

func main() {
	var (
		out, tag, user, workdir, rootfs string
		files, dirs, links, env, trees  listFlag
		entrypoint, cmd                 string
	)
	flag.StringVar(&out, "o", "", "the tarball to write")
	flag.StringVar(&tag, "tag", "", "the image name, e.g. fluxjob.local/manager:e2e")
	flag.Var(&files, "file", "SRC:DST, a file to add (repeatable)")
	flag.Var(&dirs, "dir", "DST[:MODE], an empty directory to add, MODE in octal (repeatable)")
	flag.Var(&links, "symlink", "DST:TARGET, a symbolic link to add (repeatable)")
	flag.StringVar(&rootfs, "rootfs", "", "a directory whose whole tree is added at /")
	flag.Var(&trees, "tree", "SRC:DST, a directory whose whole tree is added at DST (repeatable)")
	flag.StringVar(&entrypoint, "entrypoint", "", "the entrypoint, comma-separated")
	flag.StringVar(&cmd, "cmd", "", "the command (arguments to the entrypoint), comma-separated")
	flag.Var(&env, "env", "NAME=VALUE in the image's environment (repeatable)")
	flag.StringVar(&user, "user", "", "the user, e.g. 65532:65532")
	flag.StringVar(&workdir, "workdir", "/", "the working directory")
	flag.Parse()
	if out == "" || tag == "" {
		fmt.Fprintln(os.Stderr, "image: -o and -tag are required")
		flag.Usage()
		os.Exit(2)
	}
	s := Spec{Tag: tag, Files: map[string]string{}, Dirs: map[string]os.FileMode{}, Symlinks: map[string]string{},
		Trees: map[string]string{}, Rootfs: rootfs, Env: env, User: user, WorkingDir: workdir}
	for _, tr := range trees {
		src, dst, ok := strings.Cut(tr, ":")
		if !ok {
			fatal(fmt.Errorf("-tree %q: want SRC:DST", tr))
		}
		s.Trees[dst] = src
	}
	for _, f := range files {
		src, dst, ok := strings.Cut(f, ":")
		if !ok {
			fatal(fmt.Errorf("-file %q: want SRC:DST", f))
		}
		s.Files[dst] = src
	}
	for _, d := range dirs {
		p, m, ok := strings.Cut(d, ":")
		mode := os.FileMode(0o755)
		if ok {
			v, err := strconv.ParseUint(m, 8, 32)
			if err != nil {
				fatal(fmt.Errorf("-dir %q: mode: %w", d, err))
			}
			mode = os.FileMode(v)
		}
		s.Dirs[p] = mode
	}
	for _, l := range links {
		dst, target, ok := strings.Cut(l, ":")
		if !ok {
			fatal(fmt.Errorf("-symlink %q: want DST:TARGET", l))
		}
		s.Symlinks[dst] = target
	}
	if entrypoint != "" {
		s.Entrypoint = strings.Split(entrypoint, ",")
	}
	if cmd != "" {
		s.Cmd = strings.Split(cmd, ",")
	}
	if err := Write(out, s); err != nil {
		fatal(err)
	}
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "image:", err)
	os.Exit(1)
}

// entry is one file system object of the layer.
type entry struct {
	hdr *tar.Header
	src string // file contents, for regular files
}

// Write writes the image s as a `docker save` tarball at out.
func Write(out string, s Spec) error {
	entries := map[string]*entry{}
	addParents := func(p string) {
		for d := path.Dir(p); d != "/" && d != "."; d = path.Dir(d) {
			name := strings.TrimPrefix(d, "/") + "/"
			if _, ok := entries[name]; !ok {
				entries[name] = &entry{hdr: &tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: 0o755}}
			}
		}
	}
	if s.Rootfs != "" {
		if err := addTree(entries, s.Rootfs, ""); err != nil {
			return err
		}
	}
	for dst, src := range s.Trees {
		if !path.IsAbs(dst) {
			return fmt.Errorf("image path %q is not absolute", dst)
		}
		addParents(path.Join(dst, "x"))
		if err := addTree(entries, src, strings.TrimPrefix(path.Clean(dst), "/")); err != nil {
			return err
		}
	}
	for dst, src := range s.Files {
		if !path.IsAbs(dst) {
			return fmt.Errorf("image path %q is not absolute", dst)
		}
		fi, err := os.Stat(src)
		if err != nil {
			return fmt.Errorf("adding %s: %w", dst, err)
		}
		if !fi.Mode().IsRegular() {
			return fmt.Errorf("adding %s: %s is not a regular file", dst, src)
		}
		addParents(dst)
		entries[strings.TrimPrefix(dst, "/")] = &entry{
			hdr: &tar.Header{Typeflag: tar.TypeReg, Name: strings.TrimPrefix(dst, "/"), Mode: int64(fi.Mode().Perm()), Size: fi.Size()},
			src: src,
		}
	}
	for dst, mode := range s.Dirs {
		addParents(dst)
		name := strings.TrimPrefix(path.Clean(dst), "/") + "/"
		entries[name] = &entry{hdr: &tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: int64(mode & os.ModePerm)}}
		if mode&os.ModeSticky != 0 || mode&0o1000 != 0 {
			entries[name].hdr.Mode |= 0o1000
		}
	}
	for dst, target := range s.Symlinks {
		addParents(dst)
		name := strings.TrimPrefix(dst, "/")
		entries[name] = &entry{hdr: &tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, Mode: 0o777}}
	}

	tmp, err := os.MkdirTemp(filepath.Dir(out), ".image-")
	if err != nil {
		return fmt.Errorf("image: %w", err)
	}
	defer os.RemoveAll(tmp)
	layerPath := filepath.Join(tmp, "layer.tar")
	diffID, err := writeLayer(layerPath, entries)
	if err != nil {
		return err
	}
	config := map[string]any{
		"architecture": "amd64",
		"os":           "linux",
		"created":      time.Unix(0, 0).UTC().Format(time.RFC3339),
		"config": map[string]any{
			"Entrypoint": s.Entrypoint,
			"Cmd":        s.Cmd,
			"Env":        withPath(s.Env),
			"User":       s.User,
			"WorkingDir": s.WorkingDir,
		},
		"rootfs":  map[string]any{"type": "layers", "diff_ids": []string{"sha256:" + diffID}},
		"history": []map[string]any{{"created": time.Unix(0, 0).UTC().Format(time.RFC3339), "created_by": "hack/image"}},
	}
	cb, err := json.Marshal(config)
	if err != nil {
		return fmt.Errorf("image config: %w", err)
	}
	configSum := sha256.Sum256(cb)
	configName := hex.EncodeToString(configSum[:]) + ".json"
	manifest := []map[string]any{{
		"Config":   configName,
		"RepoTags": []string{s.Tag},
		"Layers":   []string{diffID + "/layer.tar"},
	}}
	mb, err := json.Marshal(manifest)
	if err != nil {
		return fmt.Errorf("image manifest: %w", err)
	}

	f, err := os.Create(out)
	if err != nil {
		return fmt.Errorf("image: %w", err)
	}
	tw := tar.NewWriter(f)
	epoch := time.Unix(0, 0)
	writeBytes := func(name string, b []byte) error {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(b)), ModTime: epoch}); err != nil {
			return err
		}
		_, err := tw.Write(b)
		return err
	}
	err = errors.Join(
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: diffID + "/", Mode: 0o755, ModTime: epoch}),
		copyInto(tw, diffID+"/layer.tar", layerPath, epoch),
		writeBytes(configName, cb),
		writeBytes("manifest.json", mb),
		writeBytes("repositories", repositories(s.Tag, diffID)),
		tw.Close(),
		f.Close(),
	)
	if err != nil {
		_ = os.Remove(out)
		return fmt.Errorf("writing %s: %w", out, err)
	}
	return nil
}

// withPath returns env with a default PATH first unless env sets PATH.
func withPath(env []string) []string {
	for _, e := range env {
		if strings.HasPrefix(e, "PATH=") {
			return env
		}
	}
	return append([]string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}, env...)
}

// repositories is the legacy `docker save` index: {"repo": {"tag": layer}}.
func repositories(tag, layer string) []byte {
	repo, t := tag, "latest"
	if i := strings.LastIndex(tag, ":"); i > strings.LastIndex(tag, "/") {
		repo, t = tag[:i], tag[i+1:]
	}
	b, _ := json.Marshal(map[string]map[string]string{repo: {t: layer}})
	return b
}

func copyInto(tw *tar.Writer, name, src string, mtime time.Time) error {
	fi, err := os.Stat(src)
	if err != nil {
		return err
	}
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: fi.Size(), ModTime: mtime}); err != nil {
		return err
	}
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(tw, f)
	return err
}

// writeLayer writes the layer tarball and returns the hex sha256 of its
// bytes (its diff ID: the layer is not compressed).
func writeLayer(p string, entries map[string]*entry) (string, error) {
	f, err := os.Create(p)
	if err != nil {
		return "", fmt.Errorf("layer: %w", err)
	}
	h := sha256.New()
	tw := tar.NewWriter(io.MultiWriter(f, h))
	names := make([]string, 0, len(entries))
	for n := range entries {
		names = append(names, n)
	}
	sort.Strings(names)
	epoch := time.Unix(0, 0)
	for _, n := range names {
		e := entries[n]
		e.hdr.ModTime = epoch
		e.hdr.Format = tar.FormatPAX
		if err := tw.WriteHeader(e.hdr); err != nil {
			_ = f.Close()
			return "", fmt.Errorf("layer %s: %w", n, err)
		}
		if e.hdr.Typeflag == tar.TypeReg && e.src != "" {
			if err := copyFile(tw, e.src, e.hdr.Size); err != nil {
				_ = f.Close()
				return "", fmt.Errorf("layer %s: %w", n, err)
			}
		}
	}
	if err := errors.Join(tw.Close(), f.Close()); err != nil {
		return "", fmt.Errorf("layer: %w", err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func copyFile(w io.Writer, src string, size int64) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	n, err := io.Copy(w, io.LimitReader(f, size))
	if err == nil && n != size {
		err = fmt.Errorf("%s changed size while being read", src)
	}
	return err
}

// addTree adds every file, directory and symbolic link under root at dst
// (a path in the image without its leading slash; "" for /), with their
// modes and owners (hard links become copies).
func addTree(entries map[string]*entry, root, dst string) error {
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		if rel == "." {
			if dst == "" {
				return nil
			}
			rel = ""
		}
		rel = path.Join(dst, filepath.ToSlash(rel))
		fi, err := d.Info()
		if err != nil {
			return err
		}
		hdr, err := tar.FileInfoHeader(fi, "")
		if err != nil {
			return fmt.Errorf("rootfs %s: %w", rel, err)
		}
		hdr.Name = rel
		hdr.Uname, hdr.Gname = "", ""
		switch {
		case fi.Mode().IsDir():
			hdr.Name += "/"
			entries[hdr.Name] = &entry{hdr: hdr}
		case fi.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			hdr.Linkname = target
			entries[hdr.Name] = &entry{hdr: hdr}
		case fi.Mode().IsRegular():
			entries[hdr.Name] = &entry{hdr: hdr, src: p}
		default:
			// device nodes, sockets, fifos: the runtime provides /dev
		}
		return nil
	})
}
