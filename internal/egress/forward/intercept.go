package forward

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/httpx"
)

// routeKey is the context key of an intercepted connection's entry.
type routeKey struct{}

// interceptConnect answers a CONNECT to an intercepted host: 200, a TLS
// handshake with the host's leaf, then the connection goes to the inner
// server, which serves its requests with the host's handler.
func (p *Proxy) interceptConnect(w http.ResponseWriter, r *http.Request, e *interceptEntry) {
	if !p.begin(w) {
		return
	}
	defer p.wg.Done()
	handedOff := false
	defer func() {
		if !handedOff {
			p.release()
		}
	}()

	// 1. The leaf, before the connection is taken: a failure still gets
	// an HTTP answer.
	leaf, err := p.opts.CA.LeafFor(e.target.host)
	if err != nil {
		p.log.Error("forward proxy: leaf certificate",
			slog.String("host", e.target.addr), slog.Any("err", err))
		httpx.Error(w, http.StatusBadGateway, "forward proxy: no certificate for this host")
		return
	}

	// 2. Take the connection and answer 200.
	conn, early, ok := p.hijack(w, r)
	if !ok {
		return
	}
	var raw net.Conn = conn
	if len(early) > 0 {
		raw = &prefixConn{Conn: conn, prefix: early}
	}

	// 3. The handshake, bounded in time.
	tlsConn := tls.Server(raw, &tls.Config{
		Certificates: []tls.Certificate{*leaf},
		NextProtos:   []string{"http/1.1"},
		MinVersion:   tls.VersionTLS12,
	})
	ctx, cancel := context.WithTimeout(p.ctx, p.opts.HandshakeTimeout)
	_ = conn.SetDeadline(time.Now().Add(p.opts.HandshakeTimeout))
	err = tlsConn.HandshakeContext(ctx)
	cancel()
	_ = conn.SetDeadline(time.Time{})
	if err != nil {
		// Most often the app does not trust the local CA.
		p.log.Warn("forward proxy: tls handshake with the app failed "+
			"(does it trust the local CA?)", slog.String("host", e.target.addr),
			slog.String("remote", r.RemoteAddr), slog.Any("err", err))
		p.untrack(conn)
		_ = conn.Close()
		return
	}

	// 4. Hand the connection to the inner server, which owns it from now on.
	p.log.Debug("forward proxy: connect intercepted",
		slog.String("host", e.target.addr), slog.String("remote", r.RemoteAddr))
	p.routes.Store(tlsConn, e)
	p.untrack(conn)
	if !p.startInner() || p.ln.push(tlsConn) != nil {
		p.routes.Delete(tlsConn)
		_ = tlsConn.Close()
		return
	}
	handedOff = true // connState gives the slot back
}

// startInner starts the inner server once; false once shutdown has begun.
func (p *Proxy) startInner() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	if !p.started {
		p.started = true
		p.wg.Go(func() { _ = p.inner.Serve(p.ln) })
	}
	return true
}

// connContext gives an intercepted connection's requests its entry.
func (p *Proxy) connContext(ctx context.Context, c net.Conn) context.Context {
	e, ok := p.routes.LoadAndDelete(c)
	if !ok {
		return ctx
	}
	return context.WithValue(ctx, routeKey{}, e)
}

// connState gives back the slot of an intercepted connection once the
// inner server is done with it (closed, or hijacked by a handler).
func (p *Proxy) connState(_ net.Conn, s http.ConnState) {
	if s == http.StateClosed || s == http.StateHijacked {
		p.release()
	}
}

// serveIntercepted serves one decrypted request with its host's handler.
// A request naming another host than the CONNECT did is answered 421.
func (p *Proxy) serveIntercepted(w http.ResponseWriter, r *http.Request) {
	e, _ := r.Context().Value(routeKey{}).(*interceptEntry)
	if e == nil {
		// Every connection the inner server accepts was stored in routes.
		p.log.Error("forward proxy: intercepted request without a route")
		httpx.Error(w, http.StatusInternalServerError, "forward proxy: no route")
		return
	}
	if !e.target.matchesHost(r.Host) {
		p.log.Warn("forward proxy: request host differs from the connect host",
			slog.String("host", e.target.addr), slog.String("remote", r.RemoteAddr))
		httpx.Error(w, http.StatusMisdirectedRequest,
			"forward proxy: the request's host is not the host of its CONNECT")
		return
	}
	r.Host = e.target.hostHeader
	e.handler.ServeHTTP(w, r)
}

// prefixConn is a connection whose first reads return bytes the client
// sent before the CONNECT was answered.
type prefixConn struct {
	net.Conn
	prefix []byte
}

// Read returns the prefix first, then reads the connection.
func (c *prefixConn) Read(b []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(b, c.prefix)
		c.prefix = c.prefix[n:]
		return n, nil
	}
	return c.Conn.Read(b)
}

// connListener is the inner server's listener: intercepted connections are
// pushed into it, after their handshake.
type connListener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newConnListener() *connListener {
	return &connListener{conns: make(chan net.Conn), done: make(chan struct{})}
}

// push waits until the server accepts c; net.ErrClosed once closed.
func (l *connListener) push(c net.Conn) error {
	select {
	case <-l.done:
		return net.ErrClosed
	default:
	}
	select {
	case l.conns <- c:
		return nil
	case <-l.done:
		return net.ErrClosed
	}
}

// Accept implements net.Listener.
func (l *connListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close implements net.Listener; it may be called more than once.
func (l *connListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

// Addr implements net.Listener.
func (l *connListener) Addr() net.Addr { return listenerAddr{} }

// listenerAddr names the inner listener, which has no network address.
type listenerAddr struct{}

func (listenerAddr) Network() string { return "forward" }
func (listenerAddr) String() string  { return "intercepted" }
