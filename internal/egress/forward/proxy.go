package forward

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/httpx"
)

// Defaults of Options.
const (
	DefaultHandshakeTimeout  = 10 * time.Second
	DefaultReadHeaderTimeout = 10 * time.Second
	DefaultIdleTimeout       = 90 * time.Second
	DefaultTunnelIdleTimeout = 5 * time.Minute
	DefaultDialTimeout       = 10 * time.Second
	DefaultMaxHeaderBytes    = 64 << 10
	DefaultMaxConnections    = 1024
)

// Options configure a Proxy. Zero durations and sizes take the defaults
// above.
type Options struct {
	// CA mints the certificates of intercepted hosts. Required when
	// Intercept is not empty.
	CA *CA

	// Intercept maps a host to the handler that serves the requests the
	// app sends to it. A key is "host" (port 443) or "host:port"; case and
	// a trailing dot do not matter; no wildcards. The handler receives
	// requests with r.Host set to the key's host (with ":port" when the
	// port is not 443) and r.TLS set; its flushes reach the app at once.
	// A handler that forwards must itself contact only configured hosts.
	Intercept map[string]http.Handler

	// Tunnel lists "host" (port 443) or "host:port" entries whose CONNECT
	// is spliced, unread, to exactly that address. A host may not be both
	// intercepted and tunnelled.
	Tunnel []string

	// Dial opens tunnel connections; it is called only with a Tunnel
	// entry. Nil: a net.Dialer.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)

	// Logger receives decisions and failures with hosts and addresses,
	// never headers or bodies. Nil: nothing is logged.
	Logger *slog.Logger

	// HandshakeTimeout bounds the TLS handshake of an intercepted
	// connection (from the 200 answer to the end of the handshake).
	HandshakeTimeout time.Duration

	// ReadHeaderTimeout bounds reading a request's headers, on the proxy
	// listener (with Serve) and inside intercepted connections.
	ReadHeaderTimeout time.Duration

	// IdleTimeout closes a keep-alive connection (intercepted, or to the
	// proxy listener with Serve) idle this long between requests.
	IdleTimeout time.Duration

	// TunnelIdleTimeout closes a tunnel when no byte has passed in either
	// direction for this long.
	TunnelIdleTimeout time.Duration

	// DialTimeout bounds dialing a tunnel's address.
	DialTimeout time.Duration

	// MaxHeaderBytes bounds a request's headers, on the proxy listener
	// (with Serve) and inside intercepted connections.
	MaxHeaderBytes int

	// MaxConnections bounds the connections the proxy holds at once:
	// intercepted ones and tunnels. A CONNECT beyond it is answered 503.
	MaxConnections int
}

// Proxy is the forward-proxy handler. Its zero value is not usable: build
// it with [New]. It is safe for concurrent use.
//
// Shutdown story: a CONNECT hijacks its connection from the server that
// called ServeHTTP, so that server's own Shutdown neither waits for it nor
// closes it; the Proxy tracks these connections itself. [Proxy.Shutdown]
// refuses new CONNECTs with 503, closes tunnels and unfinished handshakes at
// once (a tunnel carries opaque bytes: there is no request end to wait
// for), lets intercepted requests in flight finish while idle intercepted
// connections are closed, and forces the rest closed when its context ends.
// [Proxy.Close] closes everything at once.
type Proxy struct {
	opts      Options
	log       *slog.Logger
	intercept map[string]*interceptEntry // by target address
	tunnel    map[string]target          // by target address
	inner     *http.Server               // serves the decrypted requests
	ln        *connListener              // feeds inner

	// ctx ends at Close; it bounds handshakes and dials.
	ctx    context.Context
	cancel context.CancelFunc

	mu      sync.Mutex
	closed  bool                  // guarded by mu: Shutdown or Close began
	started bool                  // guarded by mu: inner is serving
	outer   *http.Server          // guarded by mu: set by Serve
	conns   map[net.Conn]struct{} // guarded by mu: hijacked conns owned here
	wg      sync.WaitGroup        // CONNECT handlers after their hijack, inner.Serve

	// slots holds one token per connection taken over (see MaxConnections).
	slots chan struct{}

	routes sync.Map // *tls.Conn -> *interceptEntry, taken once by connContext
}

// interceptEntry is one intercepted host.
type interceptEntry struct {
	target  target
	handler http.Handler
}

// New checks opts and returns a Proxy. Every problem in opts is reported in
// one error. A Proxy with neither intercepted nor tunnelled hosts refuses
// every CONNECT. New starts nothing: the first intercepted CONNECT starts
// the inner server.
func New(opts Options) (*Proxy, error) {
	opts = withDefaults(opts)
	p := &Proxy{
		opts:      opts,
		log:       opts.Logger,
		intercept: make(map[string]*interceptEntry, len(opts.Intercept)),
		tunnel:    make(map[string]target, len(opts.Tunnel)),
		ln:        newConnListener(),
		conns:     make(map[net.Conn]struct{}),
		slots:     make(chan struct{}, opts.MaxConnections),
	}
	if err := p.addRoutes(opts); err != nil {
		return nil, fmt.Errorf("forward proxy: %w", err)
	}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	p.inner = &http.Server{
		Handler:           http.HandlerFunc(p.serveIntercepted),
		ReadHeaderTimeout: opts.ReadHeaderTimeout,
		IdleTimeout:       opts.IdleTimeout,
		MaxHeaderBytes:    opts.MaxHeaderBytes,
		ConnContext:       p.connContext,
		ConnState:         p.connState,
		ErrorLog:          slog.NewLogLogger(p.log.Handler(), slog.LevelWarn),
		// HTTP/1.1 only: the leaf's ALPN offers nothing else.
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){},
	}
	return p, nil
}

// withDefaults fills the zero fields of opts.
func withDefaults(o Options) Options {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Dial == nil {
		o.Dial = (&net.Dialer{}).DialContext
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&o.HandshakeTimeout, DefaultHandshakeTimeout)
	def(&o.ReadHeaderTimeout, DefaultReadHeaderTimeout)
	def(&o.IdleTimeout, DefaultIdleTimeout)
	def(&o.TunnelIdleTimeout, DefaultTunnelIdleTimeout)
	def(&o.DialTimeout, DefaultDialTimeout)
	if o.MaxHeaderBytes <= 0 {
		o.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if o.MaxConnections <= 0 {
		o.MaxConnections = DefaultMaxConnections
	}
	return o
}

// addRoutes fills the intercept and tunnel tables, collecting every problem.
func (p *Proxy) addRoutes(o Options) error {
	var errs []error
	if len(o.Intercept) > 0 && o.CA == nil {
		errs = append(errs, errors.New("intercepted hosts need a CA"))
	}
	for key, h := range o.Intercept {
		t, err := parseTarget(key)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("intercept %q: %w", key, err))
		case h == nil:
			errs = append(errs, fmt.Errorf("intercept %q: nil handler", key))
		case p.intercept[t.addr] != nil:
			errs = append(errs, fmt.Errorf("intercept %q: %s given twice", key, t.addr))
		default:
			p.intercept[t.addr] = &interceptEntry{target: t, handler: h}
		}
	}
	for _, entry := range o.Tunnel {
		t, err := parseTarget(entry)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("tunnel %q: %w", entry, err))
		case p.intercept[t.addr] != nil:
			errs = append(errs, fmt.Errorf("tunnel %q: %s is also intercepted", entry, t.addr))
		default:
			p.tunnel[t.addr] = t
		}
	}
	return errors.Join(errs...)
}

// ServeHTTP serves one request to the proxy listener: a CONNECT is
// intercepted, tunnelled or refused by its exact host and port; any other
// request is refused.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodConnect {
		p.refuseNonConnect(w, r)
		return
	}
	t, err := parseTarget(r.Host)
	if err != nil {
		p.log.Warn("forward proxy: bad connect target",
			slog.String("remote", r.RemoteAddr), slog.Any("err", err))
		httpx.Error(w, http.StatusBadRequest, "forward proxy: bad CONNECT target")
		return
	}
	if e := p.intercept[t.addr]; e != nil {
		p.interceptConnect(w, r, e)
		return
	}
	if _, ok := p.tunnel[t.addr]; ok {
		p.tunnelConnect(w, r, t)
		return
	}
	p.log.Warn("forward proxy: connect refused",
		slog.String("host", t.addr), slog.String("remote", r.RemoteAddr))
	httpx.Error(w, http.StatusForbidden,
		"forward proxy: CONNECT to "+t.addr+" is not allowed (neither intercepted nor tunnelled)")
}

// refuseNonConnect answers a request that is not a CONNECT: 403 for a
// plain-HTTP proxy request (to any host: intercepted hosts are served over
// TLS only), 400 for anything else.
func (p *Proxy) refuseNonConnect(w http.ResponseWriter, r *http.Request) {
	if r.URL.IsAbs() {
		p.log.Warn("forward proxy: plain-http proxy request refused",
			slog.String("host", r.URL.Host), slog.String("remote", r.RemoteAddr))
		httpx.Error(w, http.StatusForbidden,
			"forward proxy: plain-HTTP proxy requests are not served; use https (CONNECT)")
		return
	}
	httpx.Error(w, http.StatusBadRequest, "forward proxy: not a proxy request")
}

// begin registers a CONNECT handler that is about to take over its
// connection and takes a connection slot for it. When shutdown has begun
// or every slot is taken, it answers 503 itself and returns false; else
// the caller must call p.wg.Done and give the slot back with release
// (intercepted connections give it back through connState).
func (p *Proxy) begin(w http.ResponseWriter) bool {
	p.mu.Lock()
	closed := p.closed
	if !closed {
		p.wg.Add(1)
	}
	p.mu.Unlock()
	if closed {
		httpx.Error(w, http.StatusServiceUnavailable, "forward proxy: shutting down")
		return false
	}
	select {
	case p.slots <- struct{}{}:
		return true
	default:
		p.wg.Done()
		p.log.Warn("forward proxy: connection limit reached",
			slog.Int("max", cap(p.slots)))
		httpx.Error(w, http.StatusServiceUnavailable, "forward proxy: too many connections")
		return false
	}
}

// release gives back a connection slot.
func (p *Proxy) release() { <-p.slots }

// hijack takes the connection of a CONNECT, tracks it and answers 200.
// Bytes the client sent early are returned with it. On failure the client
// has its answer (or the connection is gone) and ok is false.
func (p *Proxy) hijack(w http.ResponseWriter, r *http.Request) (net.Conn, []byte, bool) {
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		p.log.Error("forward proxy: hijack", slog.Any("err", err))
		httpx.Error(w, http.StatusInternalServerError, "forward proxy: cannot take the connection")
		return nil, nil, false
	}
	var early []byte
	if n := brw.Reader.Buffered(); n > 0 {
		early, _ = brw.Reader.Peek(n) // never fails for n <= Buffered
		early = append([]byte(nil), early...)
	}
	if !p.track(conn) {
		_ = conn.Close()
		return nil, nil, false
	}
	_ = conn.SetWriteDeadline(time.Now().Add(p.opts.HandshakeTimeout))
	_, err = io.WriteString(conn, "HTTP/1.1 200 Connection Established\r\n\r\n")
	_ = conn.SetWriteDeadline(time.Time{})
	if err != nil {
		p.log.Warn("forward proxy: answer connect", slog.String("remote", r.RemoteAddr),
			slog.Any("err", err))
		p.untrack(conn)
		_ = conn.Close()
		return nil, nil, false
	}
	return conn, early, true
}

// track records a hijacked conn so that shutdown can close it; false once
// shutdown has begun.
func (p *Proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

// untrack forgets c (closed, or handed to the inner server).
func (p *Proxy) untrack(c net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.conns, c)
}

// Serve accepts proxy connections on ln with a server of its own, bounded
// by the ReadHeaderTimeout, IdleTimeout and MaxHeaderBytes options, until
// Shutdown or Close; it then returns [http.ErrServerClosed]. A caller with
// its own http.Server may instead use the Proxy as its handler; it must
// then bound that server itself and stop it before calling Shutdown.
func (p *Proxy) Serve(ln net.Listener) error {
	srv := &http.Server{
		Handler:           p,
		ReadHeaderTimeout: p.opts.ReadHeaderTimeout,
		IdleTimeout:       p.opts.IdleTimeout,
		MaxHeaderBytes:    p.opts.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(p.log.Handler(), slog.LevelWarn),
	}
	p.mu.Lock()
	switch {
	case p.closed:
		p.mu.Unlock()
		return http.ErrServerClosed
	case p.outer != nil:
		p.mu.Unlock()
		return errors.New("forward proxy: already serving")
	}
	p.outer = srv
	p.mu.Unlock()
	return srv.Serve(ln)
}

// Shutdown stops the proxy gracefully: the listener of Serve closes, new
// CONNECTs are refused with 503, tunnels and handshakes in progress are
// closed, idle intercepted connections are closed and requests in flight
// on the others run to their end. When ctx ends first, everything left is
// closed and ctx's error returned. It may be called more than once.
func (p *Proxy) Shutdown(ctx context.Context) error {
	outer, conns := p.stop()
	var errs []error
	if outer != nil {
		if err := outer.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("proxy listener: %w", err))
		}
	}
	for _, c := range conns {
		_ = c.Close()
	}
	_ = p.ln.Close()
	if err := p.inner.Shutdown(ctx); err != nil {
		errs = append(errs, fmt.Errorf("intercepted connections: %w", err))
	}
	if err := p.wait(ctx); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		p.Close()
		return fmt.Errorf("forward proxy: shutdown: %w", errors.Join(errs...))
	}
	p.cancel()
	return nil
}

// Close closes the listener of Serve and every connection at once, without
// waiting for requests in flight, and waits for the proxy's goroutines. It
// may be called more than once, also after Shutdown.
func (p *Proxy) Close() {
	outer, conns := p.stop()
	p.cancel()
	if outer != nil {
		_ = outer.Close()
	}
	for _, c := range conns {
		_ = c.Close()
	}
	_ = p.ln.Close()
	_ = p.inner.Close()
	p.wg.Wait()
}

// stop marks the proxy closed and returns what must be stopped.
func (p *Proxy) stop() (*http.Server, []net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	conns := make([]net.Conn, 0, len(p.conns))
	for c := range p.conns {
		conns = append(conns, c)
	}
	return p.outer, conns
}

// wait waits for the proxy's goroutines until ctx ends.
func (p *Proxy) wait(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		p.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
