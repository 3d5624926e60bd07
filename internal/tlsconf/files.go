package tlsconf

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
)

// fileSource serves the pair at certFile and keyFile and replaces it when
// the files change. Handshakes read cur without locking; only the reload
// goroutine (or New, before it starts) writes cur, loaded and failed.
type fileSource struct {
	certFile, keyFile string
	emit              func(Event)

	cur    atomic.Pointer[tls.Certificate]
	loaded [sha256.Size]byte // digest of the files behind cur
	failed [sha256.Size]byte // digest of the last contents that failed
}

// newFileSource loads the pair once; a pair that does not load is an
// error here, since nothing could be served.
func newFileSource(certFile, keyFile string, emit func(Event)) (*fileSource, error) {
	if certFile == "" || keyFile == "" {
		return nil, errors.New("tlsconf: files mode needs a certificate and a key file")
	}
	f := &fileSource{certFile: certFile, keyFile: keyFile, emit: emit}
	if _, err := f.reload(); err != nil {
		return nil, fmt.Errorf("tlsconf: %w", err)
	}
	return f, nil
}

func (f *fileSource) getCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return f.cur.Load(), nil
}

// reload reads both files and, if their contents changed since the last
// load and form a pair, serves them. It reports whether it swapped the
// pair. Contents that already failed are not parsed (or reported) again.
func (f *fileSource) reload() (bool, error) {
	certPEM, err := os.ReadFile(f.certFile)
	if err != nil {
		return false, fmt.Errorf("read certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(f.keyFile)
	if err != nil {
		return false, fmt.Errorf("read key: %w", err)
	}
	digest := pairDigest(certPEM, keyPEM)
	if digest == f.loaded && f.cur.Load() != nil {
		return false, nil
	}
	if digest == f.failed {
		return false, errUnchangedFailure
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		f.failed = digest
		return false, fmt.Errorf("load %s and %s: %w", f.certFile, f.keyFile, err)
	}
	f.cur.Store(&cert)
	f.loaded = digest
	return true, nil
}

// errUnchangedFailure marks a reload of contents already reported broken.
var errUnchangedFailure = errors.New("unchanged contents that failed before")

// pairDigest identifies the contents of both files.
func pairDigest(certPEM, keyPEM []byte) [sha256.Size]byte {
	h := sha256.New()
	fmt.Fprintf(h, "%d:", len(certPEM))
	h.Write(certPEM)
	h.Write(keyPEM)
	var d [sha256.Size]byte
	h.Sum(d[:0])
	return d
}

// start watches the directories holding the files (a Kubernetes Secret
// replaces its "..data" symlink, which a watch on the file itself would
// miss) and reloads on every change there and every interval.
func (f *fileSource) start(ctx context.Context, wg *sync.WaitGroup,
	interval time.Duration) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("tlsconf: watch certificate files: %w", err)
	}
	for _, dir := range watchDirs(f.certFile, f.keyFile) {
		if err := w.Add(dir); err != nil {
			w.Close()
			return fmt.Errorf("tlsconf: watch %s: %w", dir, err)
		}
	}
	if interval == 0 {
		interval = DefaultReloadInterval
	}
	var tick <-chan time.Time
	if interval > 0 {
		t := time.NewTicker(interval)
		tick = t.C
		wg.Go(func() { <-ctx.Done(); t.Stop() })
	}
	wg.Go(func() {
		defer w.Close()
		f.watch(ctx, w, tick)
	})
	return nil
}

// watch reloads on each event until ctx ends.
func (f *fileSource) watch(ctx context.Context, w *fsnotify.Watcher, tick <-chan time.Time) {
	for {
		select {
		case <-ctx.Done():
			return
		case _, ok := <-w.Events:
			if !ok {
				return
			}
		case err, ok := <-w.Errors:
			if !ok {
				return
			}
			f.emit(Event{Kind: CertLoadFailed, Err: fmt.Errorf("watch: %w", err)})
		case <-tick:
		}
		f.reloadAndReport()
	}
}

// reloadAndReport reloads and tells the hook what changed.
func (f *fileSource) reloadAndReport() {
	swapped, err := f.reload()
	switch {
	case errors.Is(err, errUnchangedFailure):
	case err != nil:
		f.emit(Event{Kind: CertLoadFailed, Err: err})
	case swapped:
		leaf := f.cur.Load().Leaf
		f.emit(Event{Kind: CertLoaded, Names: leaf.DNSNames, NotAfter: leaf.NotAfter})
	}
}

// watchDirs returns the distinct directories of the files.
func watchDirs(files ...string) []string {
	var dirs []string
	seen := map[string]bool{}
	for _, name := range files {
		dir := filepath.Dir(name)
		if !seen[dir] {
			seen[dir] = true
			dirs = append(dirs, dir)
		}
	}
	return dirs
}
