package sidecar

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/proxy"
)

// Run serves until ctx is cancelled, then shuts down in order: readiness
// drops at once, in-flight requests drain within listen.shutdown_grace,
// then the egress calls within what is left of it, the outbox is flushed,
// the probes stop and the ledger closes. It returns nil after a clean
// drain, or the first error that stopped the sidecar.
func (s *Sidecar) Run(ctx context.Context) error {
	defer s.Close()

	// 1. Listeners first, so a port conflict fails before anything else.
	if err := s.Listen(); err != nil {
		return err
	}

	// 2. One probe round, so /health has a verdict from the first request.
	first := s.monitor.CheckNow(ctx)

	monCtx, stopMonitor := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		_ = s.monitor.Run(monCtx)
	}()
	defer func() {
		stopMonitor()
		wg.Wait()
	}()
	defer s.startRetention(ctx)() // ledger pruning (retention.go) until the signal

	// 3. Certificates, when TLS is on: loaded (files) or managed (acme).
	certs, err := s.newTLS()
	if err != nil {
		return err
	}

	// 4. Serve every listener. Request contexts descend from base, which a
	// drain that runs out of time cancels with proxy.ErrShutdown, so cut
	// calls are told from clients that left (their charge is refunded).
	base, cut := context.WithCancelCause(context.WithoutCancel(ctx))
	defer cut(nil)
	s.base = base
	public := s.server(s.Handler())
	servers := []*http.Server{public}
	errc := make(chan error, 5)
	if certs != nil {
		public.TLSConfig = certs.TLSConfig()
		go func() { errc <- serveTLS(public, s.publicLn) }()
	} else {
		go func() { errc <- serve(public, s.publicLn, "public") }()
	}
	if s.httpLn != nil {
		plain := s.server(certs.HTTPHandler())
		servers = append(servers, plain)
		go func() { errc <- serve(plain, s.httpLn, "tls http") }()
	}
	if s.adminLn != nil {
		adm := s.server(s.AdminHandler())
		servers = append(servers, adm)
		go func() { errc <- serve(adm, s.adminLn, "admin") }()
	}
	egressSrv := s.serveEgress(errc)
	if certs != nil {
		// ACME challenges may arrive at once: start after serving.
		if err := certs.Start(ctx); err != nil {
			// Nothing was admitted yet; the egress and the deliverer
			// stop before Close closes what they use.
			if serr := s.stopEgress(context.Background(), egressSrv); serr != nil {
				s.log.Warn("egress stop", slog.Any("err", serr))
			}
			return fmt.Errorf("tls: %w", err)
		}
		defer certs.Close()
	}
	s.logStart(first.Status)
	s.ready.SetReady(true)

	// 5. Wait for the signal (or a listener failure).
	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
	}

	// 6. Drain: readiness false first; after shutdown_delay (load balancers
	// catch up) the listeners stop accepting and in-flight requests and
	// streams get the grace period. The admin listener, last in servers,
	// keeps answering /readyz until the public one is drained.
	s.ready.SetShuttingDown()
	s.log.Info("shutting down",
		slog.String("delay", s.cfg.Listen.ShutdownDelay.String()),
		slog.String("grace", s.cfg.Listen.ShutdownGrace.String()))
	// Keep-alive ends now: idle connections close at once and busy ones
	// after the answer they are writing, while the listener still
	// accepts, so clients move to new connections during
	// shutdown_delay instead of racing a request into a connection
	// Shutdown closes as idle after it (when the listener is gone).
	public.SetKeepAlivesEnabled(false)
	if d := s.cfg.Listen.ShutdownDelay; d > 0 && runErr == nil {
		time.Sleep(d)
	}
	grace, cancel := context.WithTimeout(context.WithoutCancel(ctx),
		s.cfg.Listen.ShutdownGrace)
	defer cancel()
	for _, srv := range servers {
		if err := srv.Shutdown(grace); err != nil {
			cut(proxy.ErrShutdown)
			_ = srv.Close()
			if runErr == nil {
				runErr = fmt.Errorf("drain did not finish within %s: %w",
					s.cfg.Listen.ShutdownGrace, err)
			}
		}
	}

	// 7. Shutdown does not wait for upgraded (WebSocket) connections: their
	// handlers get what is left of the grace period, then are cut.
	if !waitUntil(grace, &s.inflight) {
		cut(proxy.ErrShutdown)
		if runErr == nil {
			runErr = fmt.Errorf("drain did not finish within %s: upgraded "+
				"connections still open", s.cfg.Listen.ShutdownGrace)
		}
	}

	// 8. Handlers cut off may still be settling with the ledger (refunds);
	// give them a bounded moment before it closes.
	if !waitTimeout(&s.inflight, 5*time.Second) {
		s.log.Error("handlers still running after the drain; closing the ledger")
	}

	// 9. The egress last: the app may need it to finish the requests the
	// public listener drained. Its calls get what is left of the grace
	// period, then are cut and recorded; then the outbox is flushed (what
	// is left stays on disk for the next start).
	if err := s.stopEgress(grace, egressSrv); err != nil && runErr == nil {
		runErr = err
	}
	if runErr == nil {
		s.log.Info("drained")
	}
	return runErr
}

// waitUntil waits for wg until ctx ends and reports whether it finished.
func waitUntil(ctx context.Context, wg *sync.WaitGroup) bool {
	d := time.Until(deadlineOf(ctx))
	if d <= 0 {
		return waitTimeout(wg, 0)
	}
	return waitTimeout(wg, d)
}

func deadlineOf(ctx context.Context) time.Time {
	d, ok := ctx.Deadline()
	if !ok {
		return time.Now()
	}
	return d
}

// waitTimeout waits for wg up to d and reports whether it finished.
func waitTimeout(wg *sync.WaitGroup, d time.Duration) bool {
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
		return false
	}
}

func serveTLS(srv *http.Server, ln net.Listener) error {
	err := srv.ServeTLS(ln, "", "")
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("public listener: %w", err)
	}
	return nil
}

func serve(srv *http.Server, ln net.Listener, name string) error {
	err := srv.Serve(ln)
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("%s listener: %w", name, err)
	}
	return nil
}

// logStart says what the sidecar listens on and where it routes.
func (s *Sidecar) logStart(verdict string) {
	live := s.applied()
	routes := make([]string, 0, len(live.Routes))
	for _, r := range live.Routes {
		routes = append(routes, r.Path)
	}
	s.log.Info("listening",
		slog.String("public", s.PublicAddr()),
		slog.String("admin", s.AdminAddr()),
		slog.String("app", s.cfg.App.URL.Redacted()),
		slog.Any("zimmer_prefixes", live.Zimmer.Prefixes),
		slog.Any("routes", routes),
		slog.Bool("passthrough", live.App.Passthrough),
		slog.String("ledger", ledgerName(s.cfg.Ledger)),
		slog.String("tls", s.cfg.TLS.Mode),
		slog.String("tls_http", addrOf(s.httpLn)),
		slog.Int("service_tokens", len(live.Auth.Tokens)),
		slog.String("egress", s.EgressAddr()),
		slog.String("egress_upstream", s.egressUpstream()),
		slog.String("egress_proxy", s.EgressProxyAddr()),
		slog.String("health", verdict))
	if e := s.egress; e != nil && e.ca != nil {
		s.log.Info("egress proxy CA: make the app trust this file "+
			"(SSL_CERT_FILE, REQUESTS_CA_BUNDLE, NODE_EXTRA_CA_CERTS)",
			slog.String("ca_cert", s.cfg.Egress.Proxy.CACert),
			slog.Bool("created", e.ca.Created()))
	}
}

// Close releases the ledger and idle app connections. It is idempotent
// and safe after Run returned; Run calls it itself.
func (s *Sidecar) Close() error {
	s.closeOnce.Do(func() {
		// No reload may install a snapshot after this one is closed.
		s.reloadMu.Lock()
		s.closed = true
		s.reloadMu.Unlock()
		if snap := s.current.Load(); snap != nil {
			_ = snap.proxy.Close()
		}
		// Listeners Run served are closed already; this matters when
		// Listen was called without Run.
		s.closeListeners()
		// The outbox store closes before the ledger; Run stopped the
		// egress calls and the deliverer.
		s.egress.close()
		if err := s.ledger.Close(); err != nil {
			s.closeErr = fmt.Errorf("close ledger: %w", err)
		}
	})
	return s.closeErr
}
