package forward

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync/atomic"
	"time"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/httpx"
)

// tunnelConnect answers a CONNECT to a tunnelled host: it dials exactly
// t's address, answers 200 and splices bytes both ways.
func (p *Proxy) tunnelConnect(w http.ResponseWriter, r *http.Request, t target) {
	if !p.begin(w) {
		return
	}
	defer p.wg.Done()
	defer p.release()

	// 1. Dial, before the connection is taken: a failure still gets an
	// HTTP answer.
	ctx, cancel := context.WithTimeout(p.ctx, p.opts.DialTimeout)
	up, err := p.opts.Dial(ctx, "tcp", t.addr)
	cancel()
	if err != nil {
		p.log.Warn("forward proxy: tunnel dial failed",
			slog.String("host", t.addr), slog.Any("err", err))
		httpx.Error(w, http.StatusBadGateway, "forward proxy: cannot reach "+t.addr)
		return
	}
	if !p.track(up) {
		_ = up.Close()
		httpx.Error(w, http.StatusServiceUnavailable, "forward proxy: shutting down")
		return
	}
	defer func() {
		p.untrack(up)
		_ = up.Close()
	}()

	// 2. Take the app's connection, answer 200, pass on early bytes.
	conn, early, ok := p.hijack(w, r)
	if !ok {
		return
	}
	defer func() {
		p.untrack(conn)
		_ = conn.Close()
	}()
	if len(early) > 0 {
		if _, err := up.Write(early); err != nil {
			return
		}
	}

	// 3. Splice until both directions end or the tunnel idles out.
	p.log.Debug("forward proxy: connect tunnelled",
		slog.String("host", t.addr), slog.String("remote", r.RemoteAddr))
	splice(conn, up, p.opts.TunnelIdleTimeout)
}

// splice copies a to b and b to a until both directions have ended. A
// direction that ends cleanly half-closes its destination; one that fails
// closes both. The tunnel is closed once no byte has passed either way for
// idle.
func splice(a, b net.Conn, idle time.Duration) {
	var last atomic.Int64 // unix nanoseconds of the last byte either way
	last.Store(time.Now().UnixNano())
	done := make(chan struct{})
	go func() {
		defer close(done)
		pipe(b, a, idle, &last)
	}()
	pipe(a, b, idle, &last)
	<-done
}

// pipe copies src to dst; see splice.
func pipe(dst, src net.Conn, idle time.Duration, last *atomic.Int64) {
	buf := make([]byte, 32<<10)
	for {
		_ = src.SetReadDeadline(time.Now().Add(idle))
		n, err := src.Read(buf)
		if n > 0 {
			last.Store(time.Now().UnixNano())
			_ = dst.SetWriteDeadline(time.Now().Add(idle))
			if _, werr := dst.Write(buf[:n]); werr != nil {
				closeBoth(dst, src)
				return
			}
		}
		switch {
		case err == nil:
		case errors.Is(err, os.ErrDeadlineExceeded) && activeWithin(last, idle):
			// The other direction is busy: this one may wait.
		case errors.Is(err, io.EOF):
			closeWrite(dst)
			return
		default:
			closeBoth(dst, src)
			return
		}
	}
}

// activeWithin reports whether a byte passed less than idle ago.
func activeWithin(last *atomic.Int64, idle time.Duration) bool {
	return time.Since(time.Unix(0, last.Load())) < idle
}

// closeWrite half-closes c when it can, and closes it otherwise.
func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
		return
	}
	_ = c.Close()
}

// closeBoth closes both ends, which also ends the other direction.
func closeBoth(a, b net.Conn) {
	_ = a.Close()
	_ = b.Close()
}
