package reload

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fsnotify/fsnotify"
)

// waitLimit bounds every wait for the watcher's goroutine.
const waitLimit = 10 * time.Second

// fakeClock hands out debounce channels that only the test fires.
type fakeClock struct {
	mu      sync.Mutex
	latest  chan time.Time // the channel the watcher waits on, if any
	calls   int            // After calls so far
	changed chan struct{}  // closed and replaced on every After call
}

func newFakeClock() *fakeClock { return &fakeClock{changed: make(chan struct{})} }

func (c *fakeClock) After(time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls++
	c.latest = make(chan time.Time, 1)
	close(c.changed)
	c.changed = make(chan struct{})
	return c.latest
}

// count returns how many times the watcher started (or restarted) a
// quiet period.
func (c *fakeClock) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls
}

// waitCount waits until the watcher started at least n quiet periods.
func (c *fakeClock) waitCount(t *testing.T, n int) {
	t.Helper()
	deadline := time.After(waitLimit)
	for {
		c.mu.Lock()
		calls, changed := c.calls, c.changed
		c.mu.Unlock()
		if calls >= n {
			return
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("quiet periods started: %d, want at least %d", calls, n)
		}
	}
}

// fire ends the current quiet period, reporting false when none is
// pending.
func (c *fakeClock) fire() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.latest == nil {
		return false
	}
	c.latest <- time.Now()
	c.latest = nil
	return true
}

// rig is one running Watcher with a fake clock. Its file events are
// mirrored to seen, so that the test can tell when the watcher has taken
// in everything that happened before a sentinel file appeared.
type rig struct {
	t       *testing.T
	dir     string
	clock   *fakeClock
	changes chan struct{}
	errs    chan error
	seen    chan string
	syncs   int
	done    chan error
	cancel  context.CancelFunc
	once    sync.Once
}

// startRig watches path (which must exist unless it is empty) with the
// sentinels created in dir, and runs the watcher until t ends.
func startRig(t *testing.T, dir, path string, signals <-chan os.Signal) *rig {
	t.Helper()
	r := &rig{
		t:       t,
		dir:     dir,
		clock:   newFakeClock(),
		changes: make(chan struct{}, 64),
		errs:    make(chan error, 64),
		seen:    make(chan string, 4096),
		done:    make(chan error, 1),
	}
	w, err := New(Options{
		Path:     path,
		Signals:  signals,
		OnChange: func() { r.changes <- struct{}{} },
		OnError:  func(err error) { r.errs <- err },
		After:    r.clock.After,
	})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	w.seen = func(ev fsnotify.Event) { r.seen <- filepath.Base(ev.Name) }
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() { r.done <- w.Run(ctx) }()
	t.Cleanup(func() { r.stop() })
	return r
}

// stop cancels Run and waits for it to return nil. It is idempotent.
func (r *rig) stop() {
	r.t.Helper()
	r.once.Do(func() {
		r.cancel()
		select {
		case err := <-r.done:
			if err != nil {
				r.t.Errorf("Run: got %v, want nil", err)
			}
		case <-time.After(waitLimit):
			r.t.Fatal("Run did not return after its context was cancelled")
		}
		for range len(r.errs) {
			r.t.Errorf("watcher error: %v", <-r.errs)
		}
	})
}

// settle creates a sentinel file and waits until the watcher has seen
// it: one inotify instance delivers all its watches' events in order, so
// every earlier event was handled. (This ordering is Linux's; the tests
// run on Linux.)
func (r *rig) settle() {
	r.t.Helper()
	r.syncs++
	name := fmt.Sprintf("sentinel-%d", r.syncs)
	write(r.t, filepath.Join(r.dir, name), "x")
	deadline := time.After(waitLimit)
	for {
		select {
		case got := <-r.seen:
			if got == name {
				return
			}
		case <-deadline:
			r.t.Fatalf("the watcher never saw %s", name)
		}
	}
}

// fire ends the pending quiet period and waits for the one OnChange call
// it must cause.
func (r *rig) fire() {
	r.t.Helper()
	if !r.clock.fire() {
		r.t.Fatal("no reload pending, want one")
	}
	select {
	case <-r.changes:
	case <-time.After(waitLimit):
		r.t.Fatal("OnChange was not called after the quiet period")
	}
}

// wantCalls fails unless exactly n more OnChange calls happened since
// the last look. Only fire ends a quiet period, so none is in flight.
func (r *rig) wantCalls(n int) {
	r.t.Helper()
	if got := len(r.changes); got != n {
		r.t.Errorf("OnChange calls: got %d, want %d", got, n)
	}
	for range len(r.changes) {
		<-r.changes
	}
}

func write(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}

func symlink(t *testing.T, target, link string) {
	t.Helper()
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
}

func rename(t *testing.T, from, to string) {
	t.Helper()
	if err := os.Rename(from, to); err != nil {
		t.Fatal(err)
	}
}

// TestReloadFileChanges: each way of changing the file starts exactly one
// reload, and the watcher keeps working after the file was replaced.
func TestReloadFileChanges(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		change func(t *testing.T, path string)
	}{
		{"write in place", func(t *testing.T, path string) {
			write(t, path, "version = 2")
		}},
		{"truncate", func(t *testing.T, path string) {
			if err := os.Truncate(path, 0); err != nil {
				t.Fatal(err)
			}
		}},
		{"rename over", func(t *testing.T, path string) {
			tmp := path + ".tmp"
			write(t, tmp, "version = 3")
			rename(t, tmp, path)
		}},
		{"remove and recreate", func(t *testing.T, path string) {
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
			write(t, path, "version = 4")
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			path := filepath.Join(dir, "config.toml")
			write(t, path, "version = 1")
			r := startRig(t, dir, path, nil)

			for round := range 2 {
				tt.change(t, path)
				r.settle()
				r.fire()
				r.settle()
				if r.clock.fire() {
					t.Errorf("round %d: a second reload was pending", round)
				}
				r.wantCalls(0)
			}
		})
	}
}

// TestReloadBurstCoalesced: ten writes in a row are one reload.
func TestReloadBurstCoalesced(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "config.toml")
	write(t, path, "n = 0")
	r := startRig(t, dir, path, nil)

	for i := range 10 {
		write(t, path, fmt.Sprintf("n = %d", i+1))
	}
	r.settle()
	if n := r.clock.count(); n < 10 {
		t.Errorf("quiet periods started: got %d, want one per event (>= 10)", n)
	}
	r.fire()
	r.settle()
	r.wantCalls(0)
	if r.clock.fire() {
		t.Error("a second reload was pending after the burst")
	}
}

// TestReloadUnrelatedFilesIgnored: an editor's swap file or any other file in
// the directory does not reload.
func TestReloadUnrelatedFilesIgnored(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "config.toml")
	write(t, path, "a = 1")
	r := startRig(t, dir, path, nil)

	write(t, filepath.Join(dir, ".config.toml.swp"), "junk")
	write(t, filepath.Join(dir, "other.toml"), "b = 2")
	rename(t, filepath.Join(dir, "other.toml"), filepath.Join(dir, "other2.toml"))
	r.settle()
	if n := r.clock.count(); n != 0 {
		t.Errorf("quiet periods started: got %d, want 0", n)
	}
	if r.clock.fire() {
		t.Error("a reload is pending after changes to other files")
	}
	r.wantCalls(0)
}

// TestReloadConfigMapSwap plays a Kubernetes ConfigMap volume: config.toml is a
// symlink to ..data/config.toml, and an update writes a new timestamped
// directory and renames a new ..data symlink over the old one. Nothing
// named config.toml changes, yet the path now reads the new file.
func TestReloadConfigMapSwap(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	version := func(n int) {
		ts := fmt.Sprintf("..2026_01_0%d", n)
		if err := os.Mkdir(filepath.Join(dir, ts), 0o700); err != nil {
			t.Fatal(err)
		}
		write(t, filepath.Join(dir, ts, "config.toml"), fmt.Sprintf("v = %d", n))
		symlink(t, ts, filepath.Join(dir, "..data_tmp"))
		rename(t, filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data"))
	}
	version(1)
	path := filepath.Join(dir, "config.toml")
	symlink(t, filepath.Join("..data", "config.toml"), path)
	r := startRig(t, dir, path, nil)

	for n := 2; n <= 3; n++ {
		version(n)
		r.settle()
		r.fire()
		data, err := os.ReadFile(path)
		if err != nil || string(data) != fmt.Sprintf("v = %d", n) {
			t.Fatalf("after swap %d the path reads %q (%v)", n, data, err)
		}
		// Kubernetes then deletes the old version; that may or may not
		// reload once more (its file watch ends), but never twice.
		old := filepath.Join(dir, fmt.Sprintf("..2026_01_0%d", n-1))
		if err := os.RemoveAll(old); err != nil {
			t.Fatal(err)
		}
		r.settle()
		if r.clock.fire() {
			<-r.changes
		}
		r.wantCalls(0)
	}
}

// TestReloadSymlinkTargetElsewhere: the path is a symlink into another
// directory. Writes there are seen through the file's own watch, also
// after the target was replaced by a rename.
func TestReloadSymlinkTargetElsewhere(t *testing.T) {
	t.Parallel()
	dir, elsewhere := t.TempDir(), t.TempDir()
	real := filepath.Join(elsewhere, "real.toml")
	write(t, real, "a = 1")
	path := filepath.Join(dir, "config.toml")
	symlink(t, real, path)
	r := startRig(t, dir, path, nil)

	steps := []struct {
		name   string
		change func()
	}{
		{"write to the target", func() { write(t, real, "a = 2") }},
		{"rename over the target", func() {
			write(t, real+".new", "a = 3")
			rename(t, real+".new", real)
		}},
		{"write to the new target", func() { write(t, real, "a = 4") }},
	}
	for _, st := range steps {
		before := r.clock.count()
		st.change()
		// The file's watch and the directory's share one inotify queue,
		// so the sentinel orders the target's events too.
		r.settle()
		if r.clock.count() == before {
			t.Fatalf("%s: no reload started", st.name)
		}
		r.fire()
		r.wantCalls(0)
	}
}

// TestReloadSignals: reload requests reload with no file at all, a burst of
// them is one reload, and a closed channel is not a request.
func TestReloadSignals(t *testing.T) {
	t.Parallel()
	sig := make(chan os.Signal) // unbuffered: a send returns once taken in
	r := startRig(t, t.TempDir(), "", sig)

	sig <- syscall.SIGHUP
	r.clock.waitCount(t, 1)
	r.fire()
	r.wantCalls(0)

	for range 5 {
		sig <- syscall.SIGHUP
	}
	r.clock.waitCount(t, 6)
	r.fire()
	r.wantCalls(0)

	close(sig)
	r.stop() // Run must not spin on the closed channel, and must stop
	if r.clock.fire() {
		t.Error("a closed signal channel started a reload")
	}
}

// TestReloadSignalsAndFileTogether: a request and a file change in one burst
// are one reload.
func TestReloadSignalsAndFileTogether(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "config.toml")
	write(t, path, "a = 1")
	sig := make(chan os.Signal)
	r := startRig(t, dir, path, sig)

	write(t, path, "a = 2")
	sig <- syscall.SIGHUP
	r.settle()
	r.clock.waitCount(t, 2)
	r.fire()
	r.wantCalls(0)
}

// TestReloadStop: Run returns once its context ends, stops watching, and runs
// only once.
func TestReloadStop(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "config.toml")
	write(t, path, "a = 1")
	called := make(chan struct{}, 8)
	w, err := New(Options{Path: path, OnChange: func() { called <- struct{}{} },
		Quiet: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: got %v, want nil", err)
		}
	case <-time.After(waitLimit):
		t.Fatal("Run did not return after its context was cancelled")
	}
	if err := w.Run(context.Background()); !errors.Is(err, ErrRunning) {
		t.Errorf("second Run: got %v, want ErrRunning", err)
	}
	if err := w.Close(); err != nil {
		t.Errorf("Close after Run: %v", err)
	}
	if len(called) != 0 {
		t.Errorf("OnChange was called %d times without a change", len(called))
	}
}

// TestReloadCloseWithoutRun releases the file watch of a watcher never run.
func TestReloadCloseWithoutRun(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "config.toml")
	write(t, path, "a = 1")
	w, err := New(Options{Path: path, OnChange: func() {}})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if err := w.Close(); err != nil {
			t.Errorf("Close #%d: %v", i+1, err)
		}
	}
}

func TestReloadNewErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "config.toml")
	write(t, path, "a = 1")
	tests := []struct {
		name string
		opts Options
	}{
		{"no callback", Options{Path: path}},
		{"missing file", Options{Path: filepath.Join(dir, "nope.toml"),
			OnChange: func() {}}},
		{"missing directory", Options{Path: filepath.Join(dir, "no", "c.toml"),
			OnChange: func() {}}},
	}
	for _, tt := range tests {
		if w, err := New(tt.opts); err == nil {
			_ = w.Close()
			t.Errorf("%s: got nil error", tt.name)
		}
	}
}
