package tlsconf

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/mholt/acmez/v3"
)

// Mode selects where certificates come from.
type Mode string

// Modes. TLS off needs no Manager.
const (
	// ModeFiles serves a certificate and key read from files.
	ModeFiles Mode = "files"
	// ModeACME obtains and renews certificates from an ACME CA.
	ModeACME Mode = "acme"
)

// DefaultReloadInterval is how often files mode re-reads its files when
// Options.ReloadInterval is zero, in case a change event was missed.
const DefaultReloadInterval = time.Minute

// Options configure a Manager. Fields not used by the mode are ignored.
type Options struct {
	// Mode is ModeFiles or ModeACME.
	Mode Mode

	// CertFile and KeyFile are the PEM certificate chain and private key
	// of files mode. Both are required and must form a pair.
	CertFile, KeyFile string
	// ReloadInterval is how often files mode re-reads the files besides
	// watching their directories; zero means DefaultReloadInterval and a
	// negative value only watches.
	ReloadInterval time.Duration

	// Names are the DNS names acme mode obtains certificates for; at
	// least one. The first is served to clients that send no server name.
	Names []string
	// Email is the ACME account's contact; empty registers none.
	Email string
	// CADirectory is the ACME directory URL; empty means Let's Encrypt
	// production. Using acme mode agrees to the CA's subscriber terms.
	CADirectory string
	// CARoots, if not nil, are the only roots trusted for the CA's own
	// HTTPS (a private or test CA); nil trusts the system roots.
	CARoots *x509.CertPool
	// StorageDir holds ACME accounts, certificates and locks. Required in
	// acme mode. It must persist across restarts and be shared by every
	// replica (one volume): replicas then reuse each other's certificates
	// and serve each other's challenges.
	StorageDir string
	// HTTPAddr is the address of the plain HTTP listener serving
	// HTTPHandler, as bound (host:port, port not 0). Empty: there is none
	// and the HTTP-01 challenge is not used.
	HTTPAddr string
	// TLSAddr is the address of the TLS listener serving TLSConfig, as
	// bound. Empty: the TLS-ALPN-01 challenge is not used. Acme mode needs
	// at least one of HTTPAddr and TLSAddr. The CA reaches these listeners
	// on ports 80 and 443: forward those ports to them.
	TLSAddr string

	// OnEvent, if not nil, is called for every Event, from the Manager's
	// or certmagic's goroutines, never with a lock held. It must return
	// quickly.
	OnEvent func(Event)
}

// EventKind says what happened.
type EventKind int

// Event kinds.
const (
	// CertLoaded: files mode now serves a pair read from disk (not sent for
	// the pair New loads).
	CertLoaded EventKind = iota + 1
	// CertLoadFailed: files mode could not read, parse or watch the files;
	// the pair served before stays in service.
	CertLoadFailed
	// CertObtained: acme mode obtained or renewed a certificate.
	CertObtained
	// CertObtainFailed: an attempt to obtain or renew failed; it is
	// retried with backoff, and a certificate still valid stays in service.
	CertObtainFailed
)

func (k EventKind) String() string {
	switch k {
	case CertLoaded:
		return "cert_loaded"
	case CertLoadFailed:
		return "cert_load_failed"
	case CertObtained:
		return "cert_obtained"
	case CertObtainFailed:
		return "cert_obtain_failed"
	}
	return fmt.Sprintf("EventKind(%d)", int(k))
}

// Event reports a certificate change or failure. It never holds key
// material.
type Event struct {
	Kind EventKind
	// Names are the DNS names of the loaded certificate (files) or the
	// ACME identifier concerned (acme).
	Names []string
	// Renewal marks a CertObtained or CertObtainFailed of a renewal.
	Renewal bool
	// NotAfter is the loaded certificate's expiry (CertLoaded only).
	NotAfter time.Time
	// Err is the cause of a failure.
	Err error
}

// ReadRoots reads a PEM file of certificates into a pool for
// Options.CARoots (config's tls.ca_root).
func ReadRoots(file string) (*x509.CertPool, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("tlsconf: read CA roots: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("tlsconf: no PEM certificate in %s", file)
	}
	return roots, nil
}

// Errors callers may branch on.
var (
	// ErrClosed is returned by Start and WaitReady after Close.
	ErrClosed = errors.New("tlsconf: manager closed")
	// ErrStarted is returned by a second Start.
	ErrStarted = errors.New("tlsconf: manager already started")
)

// Manager serves certificates for one TLS listener and answers the plain
// HTTP listener. Its methods are safe for concurrent use.
type Manager struct {
	opts    Options
	getCert func(*tls.ClientHelloInfo) (*tls.Certificate, error)
	files   *fileSource // files mode
	acme    *acmeSource // acme mode
	changed broadcast   // readiness may have changed

	mu      sync.Mutex // guards the fields below
	started bool
	closed  bool
	cancel  context.CancelFunc
	wg      sync.WaitGroup // background goroutines of Start
}

// New checks opts and builds a Manager. Files mode loads the pair now and
// fails if it does not load; acme mode contacts nobody until Start.
func New(opts Options) (*Manager, error) {
	m := &Manager{opts: opts}
	switch opts.Mode {
	case ModeFiles:
		f, err := newFileSource(opts.CertFile, opts.KeyFile, m.emit)
		if err != nil {
			return nil, err
		}
		m.files, m.getCert = f, f.getCertificate
	case ModeACME:
		a, err := newACMESource(opts, m.emit, m.changed.notify)
		if err != nil {
			return nil, err
		}
		m.acme, m.getCert = a, a.magic.GetCertificate
	default:
		return nil, fmt.Errorf("tlsconf: unknown mode %q: want %q or %q",
			opts.Mode, ModeFiles, ModeACME)
	}
	return m, nil
}

// emit passes e to the OnEvent hook, if any.
func (m *Manager) emit(e Event) {
	if m.opts.OnEvent != nil {
		m.opts.OnEvent(e)
	}
}

// TLSConfig returns a new configuration for the TLS listener: TLS 1.2 at
// least, ALPN offering h2 and http/1.1 (and, in acme mode, the TLS-ALPN-01
// challenge protocol), certificates chosen per handshake. A change of
// certificate reaches the next handshake; open connections keep theirs.
func (m *Manager) TLSConfig() *tls.Config {
	protos := []string{"h2", "http/1.1"}
	if m.acme != nil {
		protos = append(protos, acmez.ACMETLS1Protocol)
	}
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		NextProtos:     protos,
		GetCertificate: m.getCert,
	}
}

// Start begins background work bound to ctx and to Close: in files mode,
// watching the files' directories; in acme mode, loading stored
// certificates and obtaining or renewing the others. In acme mode the
// listeners at Options.HTTPAddr and Options.TLSAddr must already be bound
// and serving, or the CA's challenge requests find nothing there. Start
// returns without waiting for certificates: see WaitReady.
func (m *Manager) Start(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case m.closed:
		return ErrClosed
	case m.started:
		return ErrStarted
	}
	ctx, cancel := context.WithCancel(ctx)
	var err error
	if m.files != nil {
		err = m.files.start(ctx, &m.wg, m.opts.ReloadInterval)
	} else {
		err = m.acme.start(ctx)
	}
	if err != nil {
		cancel()
		return err
	}
	m.started, m.cancel = true, cancel
	return nil
}

// Ready reports whether a certificate is available for every configured
// name (files mode: always, since New loaded the pair).
func (m *Manager) Ready() bool {
	if m.acme != nil {
		return m.acme.ready()
	}
	return true
}

// WaitReady blocks until Ready, ctx ends (returning its error) or the
// Manager is closed (returning ErrClosed).
func (m *Manager) WaitReady(ctx context.Context) error {
	for {
		changed := m.changed.wait()
		m.mu.Lock()
		closed := m.closed
		m.mu.Unlock()
		switch {
		case closed:
			return ErrClosed
		case m.Ready():
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// HTTPHandler returns the handler of the plain HTTP listener: ACME HTTP-01
// challenges are answered (or 404 when unknown, never redirected), and any
// other request is redirected with 308 to https on the same host and path.
func (m *Manager) HTTPHandler() http.Handler {
	return http.HandlerFunc(m.serveHTTP)
}

// Close stops the background work and waits for the Manager's goroutines.
// A certmagic operation in flight is cancelled, not awaited. Certificates
// already loaded are still served. Close is idempotent.
func (m *Manager) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	cancel := m.cancel
	m.mu.Unlock()

	if cancel != nil {
		cancel()
	}
	m.wg.Wait()
	if m.acme != nil {
		m.acme.stop()
	}
	m.changed.notify()
	return nil
}

// broadcast wakes every waiter on each notify.
type broadcast struct {
	mu sync.Mutex
	ch chan struct{}
}

// wait returns a channel closed by the next notify.
func (b *broadcast) wait() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ch == nil {
		b.ch = make(chan struct{})
	}
	return b.ch
}

// notify wakes the current waiters.
func (b *broadcast) notify() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ch != nil {
		close(b.ch)
		b.ch = nil
	}
}
