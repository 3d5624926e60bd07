package sidecar

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/config"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/tlsconf"
)

// newTLS builds the certificate manager for the bound listeners, or nil
// when tls.mode is off.
func (s *Sidecar) newTLS() (*tlsconf.Manager, error) {
	c := s.cfg.TLS
	if c.Mode == "" || c.Mode == config.TLSOff {
		return nil, nil
	}
	opts := tlsconf.Options{
		Mode:        tlsconf.Mode(c.Mode),
		CertFile:    c.CertFile,
		KeyFile:     c.KeyFile,
		Names:       c.Names,
		Email:       c.Email,
		CADirectory: c.CA,
		StorageDir:  c.Storage,
		TLSAddr:     s.PublicAddr(),
		HTTPAddr:    addrOf(s.httpLn),
		OnEvent:     s.tlsEvent,
	}
	if c.CARoot != "" {
		roots, err := tlsconf.ReadRoots(c.CARoot)
		if err != nil {
			return nil, fmt.Errorf("tls.ca_root: %w", err)
		}
		opts.CARoots = roots
	}
	m, err := tlsconf.New(opts)
	if err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	return m, nil
}

// tlsEvent logs certificate loads and renewals; failures at error level.
func (s *Sidecar) tlsEvent(e tlsconf.Event) {
	lvl := slog.LevelInfo
	attrs := []slog.Attr{
		slog.String("event", e.Kind.String()),
		slog.Any("names", e.Names),
		slog.Bool("renewal", e.Renewal),
	}
	if !e.NotAfter.IsZero() {
		attrs = append(attrs, slog.Time("not_after", e.NotAfter))
	}
	if e.Err != nil {
		lvl = slog.LevelError
		attrs = append(attrs, slog.Any("err", e.Err))
	}
	s.log.LogAttrs(context.Background(), lvl, "certificate", attrs...)
}
