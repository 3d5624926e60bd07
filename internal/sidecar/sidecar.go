// Package sidecar wires the concern packages into one running sidecar:
// it converts the configuration into each package's options, opens the
// ledger and the listeners, serves, and orders the shutdown.
//
// It holds no business rules of its own. Long-lived state (the ledger, the
// failed-attempt limiter, the health monitor, readiness) is built once; the
// request-serving graph (verifier, proxy, Zimmer endpoints) is a snapshot
// that a reload can swap atomically.
package sidecar

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/netutil"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/admin"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/auth"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/config"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/health"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/httpx"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/logging"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metering"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/proxy"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/status"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/zimmer"
)

// Options are the process facts the configuration does not hold.
type Options struct {
	// Logger receives every log line. Required; its handler should redact
	// through Redactor.
	Logger *slog.Logger

	// Redactor learns the service tokens so that no log line carries them;
	// the Logger's handler should redact through it. Nil: a private one,
	// which protects nothing the Logger writes.
	Redactor *logging.Redactor

	// Started is the process start time, for /health's uptime. Zero: now.
	Started time.Time

	// Level is the Logger's level, if it is a *slog.LevelVar: Reload sets
	// log.level through it. Nil: log.level needs a restart.
	Level *slog.LevelVar
}

// Sidecar is one running zimmer-sidecar.
type Sidecar struct {
	// cfg is the configuration New got. It is never replaced: Reload keeps
	// its restart-only settings (listeners, ledger, TLS), so reading those
	// here is always right. Reloadable settings are read from applied().
	cfg     *config.Config
	log     *slog.Logger
	red     *logging.Redactor
	ledger  metering.Ledger
	limiter *auth.Limiter
	monitor *health.Monitor
	breaker *proxy.Breaker // the app's; nil when disabled (breaker.go)
	stats   *status.Stats  // per-endpoint figures for /status; outlive reloads
	// keyGuard holds metered calls' client keys in flight across reloads.
	keyGuard proxy.KeyGuard
	started  time.Time
	ready    health.Readiness

	verifier atomic.Pointer[auth.Verifier]
	current  atomic.Pointer[snapshot]

	publicLn net.Listener
	adminLn  net.Listener
	httpLn   net.Listener // tls.http: ACME challenges and redirects

	// base is the parent of every request context once Run serves; a
	// drain that runs out of time cancels it with proxy.ErrShutdown.
	base context.Context

	// inflight counts public requests being served, so the ledger is
	// closed only after the last handler that might write to it returned.
	inflight sync.WaitGroup

	closeOnce sync.Once
	closeErr  error

	metrics metricsState // the recorder and /metrics; see metrics.go

	egress *egressState // the app's OpenAI egress (egress.go); nil when off

	level *slog.LevelVar // Options.Level; nil when log.level is fixed

	// live is the configuration in effect: cfg at first, then each
	// reloaded one (with cfg's restart-only settings).
	live atomic.Pointer[config.Config]
	// reloadMu serialises Reload and guards closed.
	reloadMu sync.Mutex
	closed   bool // set by Close: Reload refuses from then on
}

// snapshot is the request-serving graph built from one configuration.
type snapshot struct {
	api   *zimmer.API
	proxy *proxy.Proxy
}

// New builds a sidecar from a validated configuration and opens its ledger.
// It opens no listener: call Listen or Run. Close releases what New opened
// when Run is never called.
func New(cfg *config.Config, opts Options) (*Sidecar, error) {
	if opts.Logger == nil {
		return nil, errors.New("sidecar: a logger is required")
	}
	if opts.Started.IsZero() {
		opts.Started = time.Now()
	}
	if opts.Redactor == nil {
		opts.Redactor = logging.NewRedactor()
	}
	s := &Sidecar{
		cfg:     cfg,
		log:     opts.Logger,
		red:     opts.Redactor,
		limiter: auth.NewLimiter(cfg.Auth.FailuresPerMinute, 0, nil),
		level:   opts.Level,
	}
	s.live.Store(cfg)

	// 1. The ledger: the one component with durable state. A database
	// ledger gets twice its connect timeout to connect and migrate.
	ctx, cancel := context.WithTimeout(context.Background(),
		2*cfg.Ledger.ConnectTimeout+time.Second)
	defer cancel()
	l, err := openLedger(ctx, cfg.Ledger)
	if err != nil {
		return nil, err
	}
	s.ledger = s.initMetrics(l)

	// 2. Health probes of the app.
	s.stats = status.NewStats(nil)
	s.started = opts.Started
	s.monitor, err = health.New(health.Options{
		BaseURL: cfg.App.URL,
		Probes:  probeOptions(cfg.App.Probes),
		Version: cfg.Automation.Version,
		Started: opts.Started,
	})
	if err != nil {
		_ = l.Close()
		return nil, fmt.Errorf("health: %w", err)
	}

	// 3. The app's circuit breaker, which outlives reloads.
	if err := s.initBreaker(cfg.App.Breaker); err != nil {
		_ = l.Close()
		return nil, err
	}

	// 4. The request-serving graph.
	if err := s.install(cfg); err != nil {
		_ = l.Close()
		return nil, err
	}

	// 5. The egress, when configured: keys, outbox, budget, handlers.
	egressCtx, cancelEgress := context.WithTimeout(context.Background(),
		2*cfg.Ledger.ConnectTimeout+time.Second)
	defer cancelEgress()
	if s.egress, err = s.newEgress(egressCtx, cfg); err != nil {
		if snap := s.current.Load(); snap != nil {
			_ = snap.proxy.Close()
		}
		_ = l.Close()
		return nil, err
	}
	return s, nil
}

// install builds the verifier and the serving snapshot from cfg and makes
// them current.
func (s *Sidecar) install(cfg *config.Config) error {
	v, snap, err := s.build(cfg)
	if err != nil {
		return err
	}
	s.commit(v, snap)
	return nil
}

// build builds the verifier and the serving snapshot from cfg without
// making them current. Its one side effect is that the redactor learns
// cfg's tokens. A snapshot that is never committed must be closed.
func (s *Sidecar) build(cfg *config.Config) (*auth.Verifier, *snapshot, error) {
	// Tokens are masked from the moment they are known; old ones stay
	// masked, since lines about them may still be written.
	s.red.Add(plainSecrets(cfg.Auth.Tokens)...)
	if t := cfg.Automation.PlatformToken.Value; t != "" {
		s.red.Add(t)
	}

	v, err := auth.New(authTokens(cfg.Auth.Tokens), auth.Options{
		AcceptBearer:    cfg.Auth.AcceptBearer,
		BcryptCacheSize: bcryptCache(cfg.Auth.BcryptCacheSize),
		Limiter:         s.limiter,
		OnResult:        s.onAuthResult(),
	})
	if err != nil {
		return nil, nil, fmt.Errorf("auth: %w", err)
	}

	p, err := proxy.New(proxy.Options{
		AppURL:                cfg.App.URL.String(),
		Passthrough:           cfg.App.Passthrough,
		Routes:                proxyRoutes(cfg.Routes),
		Auth:                  v.Require,
		Ledger:                s.ledger,
		MaxBody:               int64(cfg.Listen.MaxBody),
		ConnectTimeout:        cfg.App.ConnectTimeout,
		ResponseHeaderTimeout: cfg.App.ResponseHeaderTimeout,
		MaxIdleConns:          cfg.App.MaxIdleConns,
		Breaker:               s.breaker,
		Guard:                 &s.keyGuard,
		RequestID:             logging.RequestID,
		StripAuthorization:    v.StripServiceBearer,
		OnError:               s.proxyError,
		ErrorLog:              slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	})
	if err != nil {
		return nil, nil, fmt.Errorf("proxy: %w", err)
	}
	hook, kb, err := appHooks(cfg.Zimmer, p)
	if err != nil {
		_ = p.Close()
		return nil, nil, err
	}
	api, err := zimmer.New(zimmer.Options{
		Prefixes:   cfg.Zimmer.Prefixes,
		Ledger:     s.ledger,
		Auth:       v.Require,
		Health:     s.monitor.Handler(),
		Provision:  hook,
		KB:         kb,
		ServiceURL: cfg.Zimmer.ServiceURL,
		MaxBody:    int64(cfg.Listen.MaxBody),
		MaxUnits:   cfg.Ledger.MaxUnits,
		OnError:    s.zimmerError,

		ProvisionTimeout: cfg.Zimmer.Deadlines.Provision,
		ConsumeTimeout:   cfg.Zimmer.Deadlines.Consume,
		KBTimeout:        cfg.Zimmer.Deadlines.KB,
	})
	if err != nil {
		_ = p.Close()
		return nil, nil, fmt.Errorf("zimmer endpoints: %w", err)
	}

	return v, &snapshot{api: api, proxy: p}, nil
}

// commit makes a built verifier and snapshot current. Requests that
// already loaded the old snapshot finish with it; the old proxy's idle
// app connections are closed, its active ones (streams) run to the end.
func (s *Sidecar) commit(v *auth.Verifier, snap *snapshot) {
	s.verifier.Store(v)
	if old := s.current.Swap(snap); old != nil {
		_ = old.proxy.Close()
	}
}

// bcryptCache maps the config's "0 disables" to auth's "negative disables".
func bcryptCache(n int) int {
	if n == 0 {
		return -1
	}
	return n
}

// proxyLabel is the access-log endpoint of proxied requests, built once.
var proxyLabel = logging.NewLabel("proxy")

// ServeHTTP routes a public request: Zimmer endpoints on their exact
// cleaned paths, everything else to the app through the proxy.
func (s *Sidecar) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.inflight.Add(1)
	defer s.inflight.Done()
	snap := s.current.Load()
	if h, ok := snap.api.Lookup(zimmer.CleanPath(r.URL.Path)); ok {
		h.ServeHTTP(w, r)
		return
	}
	logging.FromContext(r.Context()).SetLabel(proxyLabel)
	snap.proxy.ServeHTTP(w, r)
}

// Handler returns the public listener's whole handler chain.
func (s *Sidecar) Handler() http.Handler {
	return logging.Access(s.log, s.cfg.Log.Access, s.observeAll(), s.limitRate(s))
}

// AdminHandler returns the admin listener's handler: liveness, readiness
// and the ledger admin API (which requires the service token when the
// admin listener is not on loopback).
func (s *Sidecar) AdminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /livez", s.ready.LivezHandler())
	mux.Handle("GET /readyz", s.ready.ReadyzHandler())
	var wrap func(http.Handler) http.Handler
	if !isLoopback(s.cfg.Listen.Admin) {
		wrap = s.authWrap
	}
	admin.Register(mux, s.ledger, wrap)
	s.mountOutbox(mux, wrap)
	s.mountMetrics(mux, wrap)
	s.mountStatus(mux, wrap)
	var h http.Handler = mux
	if isLoopback(s.cfg.Listen.Admin) {
		h = literalHostOnly(mux)
	}
	return logging.Access(s.log, s.cfg.Log.Access, nil, h)
}

// literalHostOnly refuses requests whose Host is a name other than
// localhost. A loopback admin listener is only reached by name through DNS
// rebinding, which would let a web page read the journal.
func literalHostOnly(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := r.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		if net.ParseIP(host) == nil && !strings.EqualFold(host, "localhost") {
			httpx.Error(w, http.StatusMisdirectedRequest,
				"the admin listener answers only to an IP address or localhost")
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (s *Sidecar) proxyError(r *http.Request, err error) {
	if errors.Is(err, proxy.ErrRefundFailed) {
		// The user stays charged for a call the app failed: an operator
		// must look.
		s.log.LogAttrs(r.Context(), slog.LevelError, "refund failed",
			slog.String("request_id", logging.RequestID(r.Context())),
			slog.String("path", r.URL.Path),
			slog.Any("err", err))
		return
	}
	if errors.Is(err, context.Canceled) {
		return // the client went away; nothing to act on
	}
	s.log.LogAttrs(r.Context(), slog.LevelWarn, "app request failed",
		slog.String("request_id", logging.RequestID(r.Context())),
		slog.String("path", r.URL.Path),
		slog.Any("err", err))
}

func (s *Sidecar) zimmerError(r *http.Request, ep zimmer.Endpoint, status int, err error) {
	lvl := slog.LevelInfo
	if status >= 500 {
		lvl = slog.LevelError
	}
	s.log.LogAttrs(r.Context(), lvl, "zimmer endpoint failed",
		slog.String("request_id", logging.RequestID(r.Context())),
		slog.String("endpoint", string(ep)),
		slog.Int("status", status),
		slog.Any("err", err))
}

// Listen opens the public and admin listeners. Run calls it when it was
// not called before; tests call it to learn the addresses first.
func (s *Sidecar) Listen() error {
	if s.publicLn != nil {
		return nil
	}
	pub, err := listen(s.cfg.Listen.Public, s.cfg.Listen.MaxConnections)
	if err != nil {
		return fmt.Errorf("public listener: %w", err)
	}
	s.publicLn = pub
	if s.cfg.Listen.Admin != "" {
		adm, err := listen(s.cfg.Listen.Admin, s.cfg.Listen.MaxConnections)
		if err != nil {
			_ = pub.Close()
			return fmt.Errorf("admin listener: %w", err)
		}
		s.adminLn = adm
	}
	if s.cfg.TLS.Mode != config.TLSOff && s.cfg.TLS.HTTP != "" {
		h, err := listen(s.cfg.TLS.HTTP, s.cfg.Listen.MaxConnections)
		if err != nil {
			s.closeListeners()
			return fmt.Errorf("tls http listener: %w", err)
		}
		s.httpLn = h
	}
	if s.egress != nil {
		if err := s.egress.listen(s.cfg); err != nil {
			s.closeListeners()
			return err
		}
	}
	return nil
}

// closeListeners closes every listener Listen opened. Closing one a
// server already closed is harmless.
func (s *Sidecar) closeListeners() {
	for _, ln := range []net.Listener{s.publicLn, s.adminLn, s.httpLn} {
		if ln != nil {
			_ = ln.Close()
		}
	}
	if s.egress != nil {
		s.egress.closeListeners()
	}
}

func listen(addr string, maxConns int) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	if maxConns > 0 {
		ln = netutil.LimitListener(ln, maxConns)
	}
	return ln, nil
}

// PublicAddr returns the public listener's address once Listen succeeded.
func (s *Sidecar) PublicAddr() string { return addrOf(s.publicLn) }

// AdminAddr returns the admin listener's address, or "" when disabled.
func (s *Sidecar) AdminAddr() string { return addrOf(s.adminLn) }

// EgressAddr returns the egress (base-URL mode) listener's address, or ""
// when there is none.
func (s *Sidecar) EgressAddr() string {
	if s.egress == nil {
		return ""
	}
	return addrOf(s.egress.ln)
}

// EgressProxyAddr returns the egress forward proxy's address, or "" when
// there is none.
func (s *Sidecar) EgressProxyAddr() string {
	if s.egress == nil {
		return ""
	}
	return addrOf(s.egress.proxyLn)
}

func addrOf(ln net.Listener) string {
	if ln == nil {
		return ""
	}
	return ln.Addr().String()
}

// isLoopback reports whether a listen address binds to loopback only.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func (s *Sidecar) server(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: s.cfg.Listen.ReadHeaderTimeout,
		IdleTimeout:       s.cfg.Listen.IdleTimeout,
		MaxHeaderBytes:    int(s.cfg.Listen.MaxHeaderBytes),
		// No WriteTimeout: streamed answers must outlive any fixed bound.
		// net/http's own error lines (bad handshakes, panics) go to the
		// structured log.
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
		BaseContext: func(net.Listener) context.Context {
			if s.base != nil {
				return s.base
			}
			return context.Background()
		},
	}
}
