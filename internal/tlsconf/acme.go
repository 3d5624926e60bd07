package tlsconf

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"
)

// acmeSource manages certificates with a certmagic Config of its own (the
// package-level defaults are never used or changed).
type acmeSource struct {
	names  []string
	cache  *certmagic.Cache
	magic  *certmagic.Config
	issuer *certmagic.ACMEIssuer
	emit   func(Event)
	notify func()
}

// newACMESource checks the acme options and builds the certmagic cache,
// config and issuer. It contacts nobody.
func newACMESource(o Options, emit func(Event), notify func()) (*acmeSource, error) {
	if len(o.Names) == 0 {
		return nil, errors.New("tlsconf: acme mode needs at least one name")
	}
	if o.StorageDir == "" {
		return nil, errors.New("tlsconf: acme mode needs a storage directory")
	}
	if o.HTTPAddr == "" && o.TLSAddr == "" {
		return nil, errors.New("tlsconf: acme mode needs an HTTP or a TLS address " +
			"to answer challenges on")
	}
	host, httpPort, tlsPort, err := challengePorts(o.HTTPAddr, o.TLSAddr)
	if err != nil {
		return nil, fmt.Errorf("tlsconf: %w", err)
	}
	ca := o.CADirectory
	if ca == "" {
		ca = certmagic.LetsEncryptProductionCA
	}

	a := &acmeSource{emit: emit, notify: notify}
	for _, n := range o.Names {
		a.names = append(a.names, strings.ToLower(strings.TrimSpace(n)))
	}
	quiet := zap.NewNop()
	a.cache = certmagic.NewCache(certmagic.CacheOptions{
		GetConfigForCert: func(certmagic.Certificate) (*certmagic.Config, error) {
			return a.magic, nil
		},
		Logger: quiet,
	})
	a.magic = certmagic.New(a.cache, certmagic.Config{
		Storage:           &certmagic.FileStorage{Path: o.StorageDir},
		Logger:            quiet,
		OnEvent:           a.onEvent,
		ShouldEmitFunc:    wantEvent,
		DefaultServerName: a.names[0],
	})
	// certmagic's solvers try to bind the challenge ports themselves; the
	// ports are ours, already bound, so they find them taken and leave the
	// challenges to HTTPHandler and TLSConfig.
	a.issuer = certmagic.NewACMEIssuer(a.magic, certmagic.ACMEIssuer{
		CA:                      ca,
		Email:                   o.Email,
		Agreed:                  true,
		TrustedRoots:            o.CARoots,
		DisableHTTPChallenge:    o.HTTPAddr == "",
		DisableTLSALPNChallenge: o.TLSAddr == "",
		ListenHost:              host,
		AltHTTPPort:             httpPort,
		AltTLSALPNPort:          tlsPort,
		Logger:                  quiet,
	})
	a.magic.Issuers = []certmagic.Issuer{a.issuer}
	return a, nil
}

// challengePorts splits the listener addresses into the host certmagic
// probes and the two ports (0 for an empty address).
func challengePorts(httpAddr, tlsAddr string) (host string, httpPort, tlsPort int,
	err error) {
	port := func(addr string) (string, int, error) {
		if addr == "" {
			return "", 0, nil
		}
		h, p, err := net.SplitHostPort(addr)
		if err != nil {
			return "", 0, fmt.Errorf("listener address %q: %w", addr, err)
		}
		n, err := strconv.Atoi(p)
		if err != nil || n <= 0 || n > 65535 {
			return "", 0, fmt.Errorf("listener address %q: want a bound port", addr)
		}
		return h, n, nil
	}
	httpHost, httpPort, err := port(httpAddr)
	if err != nil {
		return "", 0, 0, err
	}
	tlsHost, tlsPort, err := port(tlsAddr)
	if err != nil {
		return "", 0, 0, err
	}
	host = httpHost
	if httpAddr == "" {
		host = tlsHost
	}
	return host, httpPort, tlsPort, nil
}

// start begins managing the names in the background: stored certificates
// are loaded, missing or expiring ones obtained, all renewed until ctx
// ends. ManageAsync never prompts, unlike ManageSync.
func (a *acmeSource) start(ctx context.Context) error {
	if err := a.magic.ManageAsync(ctx, a.names); err != nil {
		return fmt.Errorf("tlsconf: manage certificates: %w", err)
	}
	return nil
}

// stop ends the cache's maintenance goroutine.
func (a *acmeSource) stop() {
	a.cache.Stop()
}

// ready reports whether the cache holds a certificate for every name.
func (a *acmeSource) ready() bool {
	for _, n := range a.names {
		if len(a.cache.AllMatchingCertificates(n)) == 0 {
			return false
		}
	}
	return true
}

// wantEvent lets certmagic skip building the events onEvent ignores (one
// is emitted per handshake).
func wantEvent(name string) bool {
	switch name {
	case "cached_managed_cert", "cert_obtained", "cert_failed":
		return true
	}
	return false
}

// onEvent turns certmagic's events into Events and readiness changes.
func (a *acmeSource) onEvent(_ context.Context, name string, data map[string]any) error {
	ident, _ := data["identifier"].(string)
	renewal, _ := data["renewal"].(bool)
	switch name {
	case "cached_managed_cert":
		a.notify()
	case "cert_obtained":
		a.emit(Event{Kind: CertObtained, Names: []string{ident}, Renewal: renewal})
	case "cert_failed":
		err, _ := data["error"].(error)
		if err == nil {
			err = errors.New("unknown error")
		}
		a.emit(Event{Kind: CertObtainFailed, Names: []string{ident}, Renewal: renewal,
			Err: err})
	}
	return nil
}
