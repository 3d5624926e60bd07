package sidecar

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/auth"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/config"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/health"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metering"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metering/bolt"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metering/postgres"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/proxy"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/zimmer"
)

// This file converts the configuration into each package's own options.
// Nothing here opens a socket; openLedger is the only function with a side
// effect.

// openLedger opens the configured ledger backend. ctx bounds connecting
// and migrating a PostgreSQL ledger.
func openLedger(ctx context.Context, c config.Ledger) (metering.Ledger, error) {
	opts := metering.Options{
		DefaultDemoTokens: c.DefaultDemoTokens,
		MaxUnits:          c.MaxUnits,
		DemoRule:          metering.DemoRule(c.DemoRule),
	}
	switch c.Backend {
	case config.BackendBolt:
		return bolt.Open(c.Path, opts)
	case config.BackendPostgres:
		return postgres.Open(ctx, c.DSN.Value, opts, postgres.PoolOptions{
			MaxConns:       int32(c.MaxConns),
			ConnectTimeout: c.ConnectTimeout,
			SkipMigrate:    !c.Migrate,
		})
	}
	return nil, fmt.Errorf("ledger backend %q is not supported", c.Backend)
}

// pruneJobs lists what the retention loop (retention.go) prunes in l:
// callers' idempotency records older than c.IdempotencyRetention (none
// when it is zero) in a ledger that can prune them, and in a PostgreSQL
// ledger its internal call records and lapsed key holds as well.
func pruneJobs(l metering.Ledger, c config.Ledger) []pruneJob {
	var jobs []pruneJob
	if p, ok := l.(metering.Pruner); ok && c.IdempotencyRetention > 0 {
		keep := c.IdempotencyRetention
		jobs = append(jobs, pruneJob{
			name: "idempotency records",
			run: func(ctx context.Context, now time.Time) (int64, error) {
				return p.PruneIdempotency(ctx, now.Add(-keep))
			},
		})
	}
	if pg, ok := l.(*postgres.Store); ok {
		jobs = append(jobs, pruneJob{
			name: "call records",
			run: func(ctx context.Context, now time.Time) (int64, error) {
				return pg.PruneCalls(ctx, now.Add(-callRecordAge))
			},
		}, pruneJob{
			name: "key holds",
			run: func(ctx context.Context, _ time.Time) (int64, error) {
				return pg.PruneHolds(ctx)
			},
		})
	}
	return jobs
}

// ledgerName describes the ledger for the start-up log, without secrets.
func ledgerName(c config.Ledger) string {
	if c.Backend == config.BackendPostgres {
		return "postgres (dsn from " + c.DSN.Source + ")"
	}
	return c.Backend + ":" + c.Path
}

// authTokens converts resolved config tokens into auth tokens.
func authTokens(in []config.Token) []auth.Token {
	out := make([]auth.Token, 0, len(in))
	for _, t := range in {
		kind := auth.KindPlain
		switch t.Kind {
		case config.TokenSHA256:
			kind = auth.KindSHA256
		case config.TokenBcrypt:
			kind = auth.KindBcrypt
		}
		out = append(out, auth.Token{Kind: kind, Value: t.Value, Source: t.Source})
	}
	return out
}

// plainSecrets lists the token values that the redactor must mask.
func plainSecrets(in []config.Token) []string {
	var out []string
	for _, t := range in {
		if t.Kind == config.TokenPlain {
			out = append(out, t.Value)
		}
	}
	return out
}

// probeOptions converts [[app.probe]] entries.
func probeOptions(in []config.Probe) []health.ProbeOptions {
	out := make([]health.ProbeOptions, 0, len(in))
	for _, p := range in {
		out = append(out, health.ProbeOptions{
			Name:         p.Name,
			Method:       p.Method,
			Path:         p.Path,
			Every:        p.Every,
			Timeout:      p.Timeout,
			SlowAfter:    p.SlowAfter,
			ExpectStatus: p.ExpectStatus,
			PassAfter:    p.PassAfter,
			FailAfter:    p.FailAfter,
			Required:     p.Required,
		})
	}
	return out
}

// proxyRoutes converts [[route]] entries.
func proxyRoutes(in []config.Route) []proxy.Route {
	out := make([]proxy.Route, 0, len(in))
	for _, r := range in {
		pr := proxy.Route{Path: r.Path, Methods: r.Methods, Protect: r.Protect}
		if m := r.Meter; m != nil {
			pr.Meter = &proxy.Meter{
				Units:     m.Units,
				UsageType: m.UsageType,
				User:      proxy.UserSource{From: string(m.User.Source), Name: m.User.Name},
			}
		}
		out = append(out, pr)
	}
	return out
}

// field converts an answer extraction.
func field(e config.Extract) proxy.Field {
	f := proxy.Field{From: e.From, Default: e.Default}
	if len(e.Map) > 0 {
		f.Map = make(map[string]any, len(e.Map))
		for k, v := range e.Map {
			f.Map[k] = v
		}
	}
	return f
}

func call(c config.Call, body map[string]any) proxy.Call {
	return proxy.Call{Method: c.Method, Path: c.Path, Body: body}
}

// appHooks builds the provision hook and KB backend, either of which may
// be nil when not configured.
func appHooks(z config.Zimmer, p *proxy.Proxy) (zimmer.ProvisionHook, zimmer.KBBackend, error) {
	var (
		hook zimmer.ProvisionHook
		kb   zimmer.KBBackend
	)
	if pc := z.Provision; pc != nil {
		h, err := p.NewProvisionHook(proxy.ProvisionOptions{
			Call:              call(pc.Call, pc.Body),
			ServiceURL:        field(pc.ServiceURL),
			IntegrationStatus: field(pc.IntegrationStatus),
			Message:           field(pc.Message),
		})
		if err != nil {
			return nil, nil, fmt.Errorf("zimmer.provision: %w", err)
		}
		hook = h
	}
	if kc := z.KBStatus; kc != nil {
		opts := proxy.KBOptions{
			Status:         call(kc.Call, kc.Body),
			TotalDocuments: field(kc.TotalDocuments),
			LastUpdated:    field(kc.LastUpdated),
			State:          field(kc.State),
			ErrorLogs:      field(kc.ErrorLogs),
			BackupStatus:   field(kc.BackupStatus),
		}
		if rc := z.KBReset; rc != nil {
			c := call(rc.Call, rc.Body)
			opts.Reset = &c
		}
		b, err := p.NewKBBackend(opts)
		if err != nil {
			return nil, nil, fmt.Errorf("zimmer.kb_status: %w", err)
		}
		kb = b
	}
	return hook, kb, nil
}

// authWrap returns a middleware that consults the verifier current at
// request time. The admin listener's handlers, built once, use it; the
// public snapshot binds its own verifier (v.Require) so that a request is
// served under one configuration throughout.
func (s *Sidecar) authWrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.verifier.Load().Require(next).ServeHTTP(w, r)
	})
}
