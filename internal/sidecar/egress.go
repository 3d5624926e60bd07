package sidecar

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/config"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/egress"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/egress/forward"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/egress/keys"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/egress/outbox"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metrics"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/status"
)

// This file wires the egress: the key pool, the outbox and its deliverer,
// the per-user budget on the ledger, the base-URL handler and the
// forward proxy, and their place in start-up and shutdown.

// egressState is the running egress; nil in Sidecar when it is off.
type egressState struct {
	pool    *keys.Swappable // static keys are replaced by a reload
	keyOpts keys.Options    // the rotation rules and event hook of every pool
	store   outbox.Store
	pgPool  *pgxpool.Pool // the outbox's own pool with the postgres ledger
	box     *outbox.Outbox
	deliver *outbox.Deliverer // nil when the sidecar never calls the platform
	budget  *ledgerBudget     // nil when budgets are off
	handler *egress.Handler

	ln      net.Listener   // base-URL mode; nil when not configured
	proxyLn net.Listener   // forward-proxy mode; nil when not configured
	proxy   *forward.Proxy // nil when not configured
	ca      *forward.CA    // the forward proxy's CA

	stopDeliver context.CancelFunc
	delivered   sync.WaitGroup
}

// deliverFlushTimeout bounds the outbox flush at shutdown; what is left
// stays on disk for the next start.
const deliverFlushTimeout = 5 * time.Second

// newEgress builds the egress from cfg; nil when it is off. s.ledger and
// s.metrics must exist.
func (s *Sidecar) newEgress(ctx context.Context, cfg *config.Config) (*egressState, error) {
	ec := cfg.Egress
	if !ec.Enabled() {
		return nil, nil
	}
	e := &egressState{}
	ok := false
	defer func() {
		if !ok {
			e.close()
		}
	}()
	rec := s.egressRecorder()

	// Keys: every value is masked in logs from the moment it is known.
	for _, k := range ec.Keys {
		s.red.Add(k.Value)
	}
	if err := e.newPool(cfg, s.platformToken, s.log, s.metrics.rec); err != nil {
		return nil, err
	}

	// The outbox, in the ledger's kind of store.
	if err := e.openStore(ctx, cfg); err != nil {
		return nil, err
	}
	e.box = outbox.New(e.store, outbox.Options{
		Consume:     ec.Budget.Enabled && ec.Budget.PlatformLedger,
		SkipReports: !ec.ReportUsage,
	})
	if ec.Budget.Enabled {
		e.budget = newLedgerBudget(s.ledger, ec.Budget, s.log, rec,
			cfg.Ledger.Backend == config.BackendPostgres)
		// With the bolt ledger this process owns the outbox; a shared one
		// holds other replicas' consumes, whose answers never come here.
		if ec.Budget.PlatformLedger && cfg.Ledger.Backend != config.BackendPostgres {
			if err := e.budget.loadPending(ctx, e.store, ec.Outbox.MaxItems); err != nil {
				return nil, err
			}
		}
	}
	if needsPlatform(cfg) {
		d, err := outbox.NewDeliverer(e.box, s.deliverOptions(cfg, e))
		if err != nil {
			return nil, fmt.Errorf("egress outbox: %w", err)
		}
		e.deliver = d
	}

	var budget egress.Budget
	if e.budget != nil {
		budget = e.budget
	}
	h, err := egress.New(egress.Options{
		Upstream:        ec.Upstream,
		Auth:            egress.AuthStyle(ec.AuthStyle),
		Pool:            e.pool,
		Sink:            e.box,
		Budget:          budget,
		UserHeader:      ec.UserHeader,
		RequireUser:     ec.Budget.Enabled && ec.Budget.RequireUser,
		TokensPerUnit:   ec.Budget.TokensPerUnit,
		ReserveTokens:   ec.Budget.ReserveTokens,
		MaxRequestBytes: int64(ec.MaxBody),
		CallTimeout:     ec.CallTimeout,
		BodyTimeout:     ec.BodyTimeout,
		DrainTimeout:    ec.DrainTimeout,
		DrainBytes:      int64(ec.DrainBytes),
		Logger:          s.log.With(slog.String("component", "egress")),
		Metrics:         rec,
	})
	if err != nil {
		return nil, fmt.Errorf("egress: %w", err)
	}
	e.handler = h
	if err := e.newProxy(cfg, s.log); err != nil {
		return nil, err
	}
	ok = true
	return e, nil
}

// deliverOptions are the outbox deliverer's options for cfg.
func (s *Sidecar) deliverOptions(cfg *config.Config, e *egressState) outbox.DeliverOptions {
	return outbox.DeliverOptions{
		PlatformURL:     cfg.Automation.PlatformURL.String(),
		AutomationID:    cfg.Automation.ID,
		Token:           s.platformToken,
		UsageType:       cfg.Egress.Budget.UsageType,
		OnConsumeAnswer: e.onConsumeAnswer(s.log),
		OnEvent:         e.onDeliveryEvent(s.log, s.egressRecorder()),
	}
}

// needsPlatform reports whether the egress delivers anything to the
// platform: usage reports of leased keys, or consumes to its ledger.
func needsPlatform(cfg *config.Config) bool {
	ec := cfg.Egress
	return (ec.KeySource == config.KeysPlatform && ec.ReportUsage) ||
		(ec.Budget.Enabled && ec.Budget.PlatformLedger)
}

// platformToken is the service token sent to the platform, read from the
// configuration in effect (a reload may rotate it).
func (s *Sidecar) platformToken() string { return s.applied().PlatformToken() }

// egressRecorder returns the recorder the egress reports to.
func (s *Sidecar) egressRecorder() metrics.EgressRecorder {
	if s.metrics.prom == nil {
		return metrics.Nop{}
	}
	return s.metrics.prom
}

// newPool builds the key pool named by egress.key_source, behind a
// Swappable so a reload can replace static keys. A leased pool asks token
// for the service token before each lease request (a reload may rotate it).
func (e *egressState) newPool(cfg *config.Config, token func() string, log *slog.Logger,
	rec metrics.Recorder) error {
	logEvent := keyEventLogger(log)
	e.keyOpts = keys.Options{OnEvent: func(ev keys.Event) {
		if ev.Kind == keys.EventLeased {
			rec.Lease(metrics.LeaseAcquired)
		}
		logEvent(ev)
	}}
	var pool keys.StatusPool
	switch cfg.Egress.KeySource {
	case config.KeysPlatform:
		p, err := keys.NewLeased(keys.LeaseOptions{
			Options:      e.keyOpts,
			PlatformURL:  cfg.Automation.PlatformURL.String(),
			AutomationID: cfg.Automation.ID,
			TokenFunc:    token,
		})
		if err != nil {
			return fmt.Errorf("egress keys: %w", err)
		}
		pool = p
	default:
		p, err := e.staticPool(cfg.Egress)
		if err != nil {
			return err
		}
		pool = p
	}
	e.pool = keys.NewSwappable(pool)
	return nil
}

// staticPool builds a pool of the configured static keys.
func (e *egressState) staticPool(ec config.Egress) (*keys.Static, error) {
	static := make([]keys.StaticKey, 0, len(ec.Keys))
	for _, k := range ec.Keys {
		static = append(static, keys.StaticKey{
			Source: k.Source,
			Key:    keys.NewSecret(k.Value),
			Limits: keys.Limits{RPM: ec.RPMLimit, DailyTokens: ec.DailyTokenLimit},
		})
	}
	p, err := keys.NewStatic(static, e.keyOpts)
	if err != nil {
		return nil, fmt.Errorf("egress keys: %w", err)
	}
	return p, nil
}

// reloadKeys builds the pool of next's static keys when they changed; the
// returned function makes it current. The new pool starts fresh: keys
// the old one had disabled or cooled down are usable again (an operator
// who replaces the list means it). Nil when there is nothing to swap.
func (s *Sidecar) reloadKeys(next *config.Config, changed []string) (func(), error) {
	e := s.egress
	if e == nil || next.Egress.KeySource != config.KeysStatic ||
		!slices.ContainsFunc(changed, func(k string) bool {
			return k == "egress.keys" || k == "egress.rpm_limit" ||
				k == "egress.daily_token_limit"
		}) {
		return nil, nil
	}
	for _, k := range next.Egress.Keys {
		s.red.Add(k.Value)
	}
	p, err := e.staticPool(next.Egress)
	if err != nil {
		return nil, err
	}
	return func() { e.pool.Swap(p) }, nil
}

// keyEventLogger logs every change of a key's state, secret-free.
func keyEventLogger(log *slog.Logger) func(keys.Event) {
	return func(ev keys.Event) {
		lvl := slog.LevelInfo
		if ev.Kind == keys.EventDisabled || ev.Kind == keys.EventExhausted {
			lvl = slog.LevelWarn
		}
		attrs := []slog.Attr{
			slog.String("component", "egress"),
			slog.Int64("key_id", ev.KeyID),
			slog.String("key_name", ev.Name),
			slog.String("state", string(ev.Kind)),
		}
		if ev.Reason != "" {
			attrs = append(attrs, slog.String("reason", ev.Reason))
		}
		if ev.Status != 0 {
			attrs = append(attrs, slog.Int("status", ev.Status))
		}
		if !ev.Until.IsZero() {
			attrs = append(attrs, slog.Time("until", ev.Until))
		}
		log.LogAttrs(context.Background(), lvl, "egress key", attrs...)
	}
}

// openStore opens the outbox store: a bbolt file beside the bolt ledger,
// or a table in the postgres ledger's database, shared by replicas.
func (e *egressState) openStore(ctx context.Context, cfg *config.Config) error {
	max := cfg.Egress.Outbox.MaxItems
	if cfg.Ledger.Backend != config.BackendPostgres {
		st, err := outbox.OpenBolt(cfg.Egress.Outbox.Path, outbox.BoltOptions{Max: max})
		if err != nil {
			return fmt.Errorf("egress outbox: %w", err)
		}
		e.store = st
		return nil
	}
	pc, err := pgxpool.ParseConfig(cfg.Ledger.DSN.Value)
	if err != nil {
		// The parse error may quote the DSN, password included.
		return errors.New("egress outbox: ledger.dsn is not a valid PostgreSQL " +
			"connection string (the value is not shown)")
	}
	pc.MaxConns = 4
	pc.ConnConfig.ConnectTimeout = cfg.Ledger.ConnectTimeout
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return fmt.Errorf("egress outbox: connect: %w", err)
	}
	e.pgPool = pool
	st, err := outbox.OpenPostgres(ctx, pool, outbox.PostgresOptions{Max: max})
	if err != nil {
		return fmt.Errorf("egress outbox: %w", err)
	}
	e.store = st
	return nil
}

// onConsumeAnswer takes the platform ledger's answer to a forwarded
// consume into the local balances.
func (e *egressState) onConsumeAnswer(log *slog.Logger) func(outbox.ConsumeAnswer) {
	return func(a outbox.ConsumeAnswer) {
		if e.budget == nil {
			return
		}
		e.budget.platformAnswered(a)
	}
}

// onDeliveryEvent logs and counts each delivery attempt.
func (e *egressState) onDeliveryEvent(log *slog.Logger,
	rec metrics.EgressRecorder) func(outbox.Event) {
	return func(ev outbox.Event) {
		rec.OutboxDelivery(string(ev.Kind), string(ev.Result))
		if e.budget != nil && ev.Kind == outbox.KindConsume &&
			(ev.Result == outbox.ResultUnknown || ev.Result == outbox.ResultFailed ||
				ev.Result == outbox.ResultDelivered) {
			// Delivered covers an answer that could not be read, which
			// never reaches platformAnswered.
			e.budget.forwardEnded(ev.ItemID)
		}
		lvl := slog.LevelDebug
		switch {
		case errors.Is(ev.Err, outbox.ErrTokenRefused):
			// Nothing reaches the platform until an operator fixes it.
			lvl = slog.LevelError
		case ev.Result == outbox.ResultRetry:
			lvl = slog.LevelInfo
		case ev.Result == outbox.ResultUnknown, ev.Result == outbox.ResultFailed,
			ev.Result == outbox.ResultStoreError:
			lvl = slog.LevelError
		}
		attrs := []slog.Attr{
			slog.String("component", "outbox"),
			slog.String("item", ev.ItemID),
			slog.String("kind", string(ev.Kind)),
			slog.String("result", string(ev.Result)),
			slog.Int("attempts", ev.Attempts),
		}
		if ev.Status != 0 {
			attrs = append(attrs, slog.Int("status", ev.Status))
		}
		if ev.Err != nil {
			attrs = append(attrs, slog.Any("err", ev.Err))
		}
		log.LogAttrs(context.Background(), lvl, "platform delivery", attrs...)
	}
}

// newProxy builds the forward proxy when egress.proxy.listen is set: the
// intercepted hosts are served by the egress handler, which sends their
// calls to egress.upstream.
func (e *egressState) newProxy(cfg *config.Config, log *slog.Logger) error {
	pc := cfg.Egress.Proxy
	if pc.Listen == "" {
		return nil
	}
	ca, err := forward.LoadOrCreateCA(pc.CACert, pc.CAKey)
	if err != nil {
		return fmt.Errorf("egress proxy: %w", err)
	}
	e.ca = ca
	intercept := make(map[string]http.Handler, len(pc.Intercept))
	for _, h := range pc.Intercept {
		intercept[h] = e.handler
	}
	p, err := forward.New(forward.Options{
		CA:             ca,
		Intercept:      intercept,
		Tunnel:         pc.Tunnel,
		Logger:         log.With(slog.String("component", "egress_proxy")),
		MaxHeaderBytes: int(cfg.Listen.MaxHeaderBytes),
	})
	if err != nil {
		return fmt.Errorf("egress proxy: %w", err)
	}
	e.proxy = p
	return nil
}

// listen opens the egress listeners.
func (e *egressState) listen(cfg *config.Config) error {
	if a := cfg.Egress.Listen; a != "" {
		ln, err := net.Listen("tcp", a)
		if err != nil {
			return fmt.Errorf("egress listener: %w", err)
		}
		e.ln = ln
	}
	if a := cfg.Egress.Proxy.Listen; a != "" && e.proxy != nil {
		ln, err := net.Listen("tcp", a)
		if err != nil {
			e.closeListeners()
			return fmt.Errorf("egress proxy listener: %w", err)
		}
		e.proxyLn = ln
	}
	return nil
}

func (e *egressState) closeListeners() {
	for _, ln := range []net.Listener{e.ln, e.proxyLn} {
		if ln != nil {
			_ = ln.Close()
		}
	}
}

// startDelivery runs the deliverer until stopDelivery.
func (e *egressState) startDelivery() {
	ctx, cancel := context.WithCancel(context.Background())
	e.stopDeliver = cancel
	if e.deliver == nil {
		return
	}
	e.delivered.Add(1)
	go func() {
		defer e.delivered.Done()
		e.deliver.Run(ctx)
	}()
}

// stopDelivery stops the deliverer and flushes what it can within
// deliverFlushTimeout (the rest stays stored for the next start).
func (e *egressState) stopDelivery(log *slog.Logger) {
	if e.stopDeliver == nil {
		return
	}
	// The background loop stops first (a consume it is sending runs to
	// its end: its outcome must be known), so the flush is the only
	// sender; the flush gets what is left of deliverFlushTimeout.
	flush, cancelFlush := context.WithTimeout(context.Background(), deliverFlushTimeout)
	defer cancelFlush()
	e.stopDeliver()
	e.delivered.Wait()
	if e.deliver != nil && flush.Err() == nil {
		if err := e.deliver.Flush(flush); err != nil {
			log.Warn("outbox not flushed", slog.Any("err", err))
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if st, err := e.store.Stats(ctx); err == nil && st.Total > 0 {
		log.Info("outbox items kept for the next start",
			slog.Int("reports", st.Report.Total()), slog.Int("consumes", st.Consume.Total()),
			slog.Int("unknown", st.Consume.Unknown+st.Report.Unknown),
			slog.Int("failed", st.Consume.Failed+st.Report.Failed))
	}
}

// close stops the key pools' platform calls (lease renewals) and releases
// the outbox store and its pool. The handler must be shut down and the
// deliverer stopped first.
func (e *egressState) close() {
	if e == nil {
		return
	}
	if e.pool != nil {
		e.pool.Close()
	}
	if e.proxy != nil {
		e.proxy.Close()
	}
	e.closeListeners()
	if e.store != nil {
		_ = e.store.Close()
	}
	if e.pgPool != nil {
		e.pgPool.Close()
	}
}

// mountOutbox serves the outbox's admin view under /outbox (list, and
// resolve of unknown or failed deliveries) when the egress is on.
func (s *Sidecar) mountOutbox(mux *http.ServeMux, wrap func(http.Handler) http.Handler) {
	if s.egress == nil {
		return
	}
	h := http.StripPrefix("/outbox", s.egress.box.AdminHandler())
	if wrap != nil {
		h = wrap(h)
	}
	mux.Handle("/outbox", h)
	mux.Handle("/outbox/", h)
}

// serveEgress starts serving the egress listeners and the deliverer; it
// returns the base-URL listener's server (nil when none).
func (s *Sidecar) serveEgress(errc chan<- error) *http.Server {
	e := s.egress
	if e == nil {
		return nil
	}
	var srv *http.Server
	if e.ln != nil {
		// Loopback, reached by IP or localhost only: a web page that
		// rebinds a name to 127.0.0.1 cannot spend keys through it.
		srv = s.server(literalHostOnly(e.handler))
		go func() { errc <- serve(srv, e.ln, "egress") }()
	}
	if e.proxyLn != nil {
		go func() {
			err := e.proxy.Serve(e.proxyLn)
			if err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("egress proxy listener: %w", err)
			}
		}()
	}
	e.startDelivery()
	return srv
}

// stopEgress ends the egress: new calls are refused, calls in flight get
// until ctx ends (then they are cut, and recorded with what they used),
// the listeners close and the outbox is flushed within
// deliverFlushTimeout.
func (s *Sidecar) stopEgress(ctx context.Context, srv *http.Server) error {
	e := s.egress
	if e == nil {
		return nil
	}
	var firstErr error
	if err := e.handler.Shutdown(ctx); err != nil {
		firstErr = fmt.Errorf("egress calls did not finish within the grace period: %w", err)
	}
	// The calls are over: what is left are idle connections.
	quick, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if srv != nil {
		if err := srv.Shutdown(quick); err != nil {
			_ = srv.Close()
		}
	}
	if e.proxy != nil {
		if err := e.proxy.Shutdown(quick); err != nil {
			e.proxy.Close()
		}
	}
	e.stopDelivery(s.log)
	return firstErr
}

// keyStates reports the egress keys for the status page, secret-free.
func (e *egressState) keyStates() []status.KeyState {
	ks := e.status()
	out := make([]status.KeyState, 0, len(ks))
	for _, k := range ks {
		detail := ""
		if !k.Until.IsZero() {
			detail = "until " + k.Until.UTC().Format(time.RFC3339)
		}
		if !k.ExpiresAt.IsZero() {
			if detail != "" {
				detail += "; "
			}
			detail += "lease ends " + k.ExpiresAt.UTC().Format(time.RFC3339)
		}
		out = append(out, status.KeyState{
			ID:          fmt.Sprintf("%d %s", k.KeyID, k.Redacted),
			Source:      k.Name,
			State:       string(k.State),
			TokensToday: k.TokensToday,
			DailyLimit:  k.Limits.DailyTokens,
			Detail:      detail,
		})
	}
	return out
}

// outboxDepth reports the outbox backlog for the status page and the
// gauge, from the store's count in memory (a scrape must not read the
// whole backlog).
func (e *egressState) outboxDepth() (int, bool) { return e.store.Count(), true }

// egressGauges sets the key-state, lease and outbox gauges; the scrape
// handler calls it before each scrape.
func (e *egressState) egressGauges(rec metrics.Recorder) {
	counts := map[string]int{}
	leases := 0
	for _, k := range e.status() {
		counts[string(k.State)]++
		if !k.ExpiresAt.IsZero() {
			leases++
		}
	}
	for _, st := range []keys.KeyState{keys.StateActive, keys.StateCooling,
		keys.StateExhausted, keys.StateDisabled} {
		rec.Keys(string(st), counts[string(st)])
	}
	rec.ActiveLeases(leases)
	if depth, ok := e.outboxDepth(); ok {
		rec.OutboxDepth(depth)
	}
}

// status is a secret-free snapshot of the current pool's keys.
func (e *egressState) status() []keys.KeyStatus { return e.pool.Status() }

// egressUpstream names the host the egress contacts, for the start-up
// line; "" when the egress is off.
func (s *Sidecar) egressUpstream() string {
	if s.egress == nil {
		return ""
	}
	return s.cfg.Egress.Upstream.Redacted()
}
