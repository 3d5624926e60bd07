// Package reload tells a program when to reload its configuration file:
// when the file changes on disk, or when the program is asked to (the
// command feeds SIGHUP into it). A burst of changes and requests becomes
// one call once things have been quiet for a moment.
//
// It watches the file and its directory, so an in-place write, an
// editor's write-to-temp-and-rename and a Kubernetes ConfigMap's swap of
// its "..data" symlink are all seen. It neither reads nor parses the file,
// never logs, and installs no signal handler: the caller owns all three.
package reload

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
)

// DefaultQuiet is the debounce used when Options.Quiet is zero: long
// enough to cover an editor's save or a symlink swap, short enough that an
// operator does not wait.
const DefaultQuiet = 250 * time.Millisecond

// ErrRunning is returned by a second call of Run.
var ErrRunning = errors.New("reload: watcher already running")

// Options configure a Watcher.
type Options struct {
	// Path is the file to watch. Empty watches no file: only Signals
	// trigger a reload.
	Path string

	// Signals delivers reload requests; each value received counts as a
	// change. The command feeds SIGHUP here. Nil: none.
	Signals <-chan os.Signal

	// OnChange is called once per burst of changes and requests, from
	// Run's goroutine, so never concurrently with itself. A change that
	// arrives while it runs starts a new burst. Required.
	OnChange func()

	// OnError receives the watcher's own errors, such as a lost event
	// (after which a reload is triggered anyway, since a change may have
	// been missed). It is called from Run's goroutine. Nil drops them.
	OnError func(error)

	// Quiet is how long no change or request must arrive before OnChange
	// runs; each arrival restarts the wait. Zero means DefaultQuiet.
	Quiet time.Duration

	// After is the clock: a channel that receives once d has passed. Nil
	// means time.After. Tests inject one they fire by hand.
	After func(d time.Duration) <-chan time.Time
}

// Watcher turns file changes and reload requests into OnChange calls.
// Create it with New, drive it with Run.
type Watcher struct {
	opts    Options
	path    string // cleaned Options.Path; "" when no file is watched
	fs      *fsnotify.Watcher
	running atomic.Bool

	closeOnce sync.Once
	closeErr  error

	// Owned by the goroutine in Run (and New before it).
	target string      // where path leads once symlinks are resolved
	info   os.FileInfo // the file last watched, to notice a replacement

	// seen, when set (tests only), is called with every file event.
	seen func(fsnotify.Event)
}

// New checks opts and starts watching the file and its directory. Events
// are queued until Run is called; call Close if Run never is.
func New(opts Options) (*Watcher, error) {
	if opts.OnChange == nil {
		return nil, errors.New("reload: OnChange is required")
	}
	if opts.Quiet <= 0 {
		opts.Quiet = DefaultQuiet
	}
	if opts.After == nil {
		opts.After = time.After
	}
	w := &Watcher{opts: opts}
	if opts.Path == "" {
		return w, nil
	}
	w.path = filepath.Clean(opts.Path)

	fw, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fmt.Errorf("reload: watch %s: %w", w.path, err)
	}
	w.fs = fw
	// The directory shows renames and creations over the file; the file
	// itself shows writes through a symlink into another directory.
	if err := fw.Add(filepath.Dir(w.path)); err != nil {
		_ = fw.Close()
		return nil, fmt.Errorf("reload: watch directory of %s: %w", w.path, err)
	}
	if err := fw.Add(w.path); err != nil {
		_ = fw.Close()
		return nil, fmt.Errorf("reload: watch %s: %w", w.path, err)
	}
	w.target = resolve(w.path)
	w.info, _ = os.Stat(w.path)
	return w, nil
}

// Run delivers OnChange calls until ctx ends, then stops watching and
// returns nil. It may be called once; it returns an error when the file
// watcher fails for good.
func (w *Watcher) Run(ctx context.Context) error {
	if !w.running.CompareAndSwap(false, true) {
		return ErrRunning
	}
	defer w.Close()

	var events <-chan fsnotify.Event
	var errs <-chan error
	if w.fs != nil {
		events, errs = w.fs.Events, w.fs.Errors
	}
	signals := w.opts.Signals
	var quiet <-chan time.Time // nil while no burst is pending
	for {
		select {
		case <-ctx.Done():
			return nil
		case _, ok := <-signals:
			if !ok {
				signals = nil // closed: no more requests
				continue
			}
			quiet = w.opts.After(w.opts.Quiet)
		case ev, ok := <-events:
			if !ok {
				return errors.New("reload: file watcher stopped")
			}
			if w.seen != nil {
				w.seen(ev)
			}
			if w.relevant(ev) {
				quiet = w.opts.After(w.opts.Quiet)
			}
		case err, ok := <-errs:
			if !ok {
				return errors.New("reload: file watcher stopped")
			}
			w.report(err)
			if errors.Is(err, fsnotify.ErrEventOverflow) {
				quiet = w.opts.After(w.opts.Quiet)
			}
		case <-quiet:
			quiet = nil
			w.rewatch()
			w.opts.OnChange()
		}
	}
}

// Close stops watching. It is idempotent; Run calls it when it returns.
func (w *Watcher) Close() error {
	w.closeOnce.Do(func() {
		if w.fs != nil {
			w.closeErr = w.fs.Close()
		}
	})
	return w.closeErr
}

// relevant reports whether ev may have changed what the path reads.
// Events naming the file count. Any other name in the directory counts
// only when the path now leads somewhere else (a Kubernetes volume swaps
// "..data", a symlink above the file); editors' swap files do not.
func (w *Watcher) relevant(ev fsnotify.Event) bool {
	if filepath.Clean(ev.Name) == w.path {
		return true
	}
	// Writes to other files (a ledger kept next to the config) cannot
	// redirect the path; only entries appearing or going away can.
	if !ev.Has(fsnotify.Create | fsnotify.Rename | fsnotify.Remove) {
		return false
	}
	if t := resolve(w.path); t != w.target {
		w.target = t
		return true
	}
	return false
}

// rewatch watches the file anew when it was replaced (renamed over,
// recreated, or reached through a swapped symlink): a watch follows the
// old file, not the name. A missing file is not an error: the directory
// watch sees it come back.
func (w *Watcher) rewatch() {
	if w.fs == nil {
		return
	}
	w.target = resolve(w.path)
	info, err := os.Stat(w.path)
	if err != nil || (w.info != nil && os.SameFile(info, w.info)) {
		return
	}
	w.info = info
	_ = w.fs.Remove(w.path) // the old file's watch, if fsnotify kept it
	if err := w.fs.Add(w.path); err != nil {
		w.report(fmt.Errorf("watch %s: %w", w.path, err))
	}
}

func (w *Watcher) report(err error) {
	if w.opts.OnError != nil {
		w.opts.OnError(fmt.Errorf("reload: %w", err))
	}
}

// resolve returns where path leads with every symlink followed, or ""
// when it leads nowhere right now.
func resolve(path string) string {
	t, err := filepath.EvalSymlinks(path)
	if err != nil {
		return ""
	}
	return t
}
