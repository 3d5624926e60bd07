package tlsconf

import (
	"context"
	"crypto/tls"
	"math/big"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// acmeSite is one sidecar's pair of listeners in front of a Manager.
type acmeSite struct {
	m          *Manager
	events     *events
	tlsAddr    string
	httpHits   atomic.Int32 // challenge requests answered 200 on the HTTP port
	alpnHellos atomic.Int32 // handshakes offering acme-tls/1
}

// startSite binds both listeners, builds a Manager with opts (addresses
// filled in per challenge) and serves: HTTPHandler on the plain port, the
// Manager's TLSConfig and /health on the TLS port.
func startSite(t *testing.T, opts Options, httpLn, tlsLn net.Listener,
	challenge string) *acmeSite {
	t.Helper()
	s := &acmeSite{events: newEvents(), tlsAddr: tlsLn.Addr().String()}
	switch challenge {
	case "http-01":
		opts.HTTPAddr = httpLn.Addr().String()
	case "tls-alpn-01":
		opts.TLSAddr = tlsLn.Addr().String()
	}
	opts.OnEvent = s.events.hook
	m, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	s.m = m

	plain := m.HTTPHandler()
	serve(t, httpLn, nil, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &statusRecorder{ResponseWriter: w}
		plain.ServeHTTP(rec, r)
		if strings.HasPrefix(r.URL.Path, challengePrefix) && rec.status == http.StatusOK {
			s.httpHits.Add(1)
		}
	}))
	cfg := m.TLSConfig()
	getCert := cfg.GetCertificate
	cfg.GetCertificate = func(h *tls.ClientHelloInfo) (*tls.Certificate, error) {
		if slices.Contains(h.SupportedProtos, "acme-tls/1") {
			s.alpnHellos.Add(1)
		}
		return getCert(h)
	}
	serve(t, tlsLn, cfg, healthHandler())
	return s
}

// statusRecorder remembers the status a handler wrote.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.status = code
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(p []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.ResponseWriter.Write(p)
}

func port(ln net.Listener) int {
	_, p, _ := net.SplitHostPort(ln.Addr().String())
	n, _ := strconv.Atoi(p)
	return n
}

// TestACMEWithPebble obtains a certificate from Pebble by each challenge,
// validated for real against the test's listeners, serves /health with it
// to a client that trusts only Pebble's root, then restarts on the same
// storage and serves the stored certificate without a new order.
func TestACMEWithPebble(t *testing.T) {
	t.Parallel()
	tests := []struct{ challenge, name string }{
		{"http-01", "http01.zimmer.test"},
		{"tls-alpn-01", "alpn.zimmer.test"},
	}
	for _, tt := range tests {
		t.Run(tt.challenge, func(t *testing.T) {
			t.Parallel()
			httpLn, tlsLn := listen(t), listen(t)
			p := startPebble(t, port(httpLn), port(tlsLn))
			opts := Options{
				Mode:        ModeACME,
				Names:       []string{tt.name},
				Email:       "ops@zimmer.test",
				CADirectory: p.directory,
				CARoots:     p.tlsRoots,
				StorageDir:  t.TempDir(),
			}
			ctx, cancel := context.WithTimeout(t.Context(), 40*time.Second)
			defer cancel()

			// 1. First start: the certificate comes from Pebble.
			s := startSite(t, opts, httpLn, tlsLn, tt.challenge)
			if s.m.Ready() {
				t.Fatal("ready before Start")
			}
			if err := s.m.Start(ctx); err != nil {
				t.Fatal(err)
			}
			evs := waitCert(ctx, t, s)
			want := Event{Kind: CertObtained, Names: []string{tt.name}}
			if !slices.ContainsFunc(evs, func(e Event) bool {
				return e.Kind == want.Kind && slices.Equal(e.Names, want.Names) && !e.Renewal
			}) {
				t.Errorf("got events %+v, want a first certificate for %s", evs, tt.name)
			}
			serial := checkServed(t, s, p, tt.name)
			checkChallenge(t, s, tt.challenge)
			orders := p.newOrders()
			if orders != 1 {
				t.Errorf("got %d orders at Pebble, want 1", orders)
			}
			if err := s.m.Close(); err != nil {
				t.Fatal(err)
			}

			// 2. Second start on the same storage: the stored certificate,
			// no new order.
			again := startSite(t, opts, listen(t), listen(t), tt.challenge)
			if err := again.m.Start(ctx); err != nil {
				t.Fatal(err)
			}
			if evs := waitCert(ctx, t, again); len(evs) != 0 {
				t.Errorf("restart: got events %+v, want none", evs)
			}
			if got := checkServed(t, again, p, tt.name); got.Cmp(serial) != 0 {
				t.Errorf("restart: got serial %v, want the stored %v", got, serial)
			}
			if got := p.newOrders(); got != orders {
				t.Errorf("restart: Pebble has %d orders, want still %d", got, orders)
			}
		})
	}
}

// waitCert waits until s's Manager is ready and returns the events seen
// meanwhile; a failed attempt fails the test at once (certmagic would only
// retry after a backoff).
func waitCert(ctx context.Context, t *testing.T, s *acmeSite) []Event {
	t.Helper()
	ready := make(chan error, 1)
	go func() { ready <- s.m.WaitReady(ctx) }()
	var evs []Event
	for {
		select {
		case err := <-ready:
			if err != nil {
				t.Fatalf("no certificate: %v; events: %+v", err, evs)
			}
			return append(evs, s.events.pending()...)
		case e := <-s.events.ch:
			if e.Kind == CertObtainFailed {
				t.Fatalf("obtaining failed: %v", e.Err)
			}
			evs = append(evs, e)
		}
	}
}

// checkServed GETs /health over HTTP/2 with a client that trusts only
// Pebble's root and returns the serial of the certificate served.
func checkServed(t *testing.T, s *acmeSite, p *pebble, name string) *big.Int {
	t.Helper()
	c := client(p.roots, s.tlsAddr)
	defer c.CloseIdleConnections()
	resp := getHealth(t, c, name)
	if resp.ProtoMajor != 2 {
		t.Errorf("got %s, want HTTP/2", resp.Proto)
	}
	leaf := resp.TLS.PeerCertificates[0]
	if !slices.Contains(leaf.DNSNames, name) || len(resp.TLS.VerifiedChains) == 0 {
		t.Errorf("served certificate for %v (verified chains %d), want %s",
			leaf.DNSNames, len(resp.TLS.VerifiedChains), name)
	}

	// A client that sends no server name gets the first name's certificate.
	st, err := handshake(s.tlsAddr, "", p.roots, func(c *tls.Config) {
		c.InsecureSkipVerify = true // no name to verify against; checked below
	})
	if err != nil {
		t.Fatalf("handshake without server name: %v", err)
	}
	if got := st.PeerCertificates[0].SerialNumber; got.Cmp(leaf.SerialNumber) != 0 {
		t.Errorf("without server name: got serial %v, want %v", got, leaf.SerialNumber)
	}
	return leaf.SerialNumber
}

// checkChallenge checks that Pebble validated through the expected
// listener, and only through it.
func checkChallenge(t *testing.T, s *acmeSite, challenge string) {
	t.Helper()
	httpHits, alpn := s.httpHits.Load(), s.alpnHellos.Load()
	switch challenge {
	case "http-01":
		if httpHits == 0 || alpn != 0 {
			t.Errorf("got %d HTTP-01 answers and %d ALPN hellos, want some and none",
				httpHits, alpn)
		}
	case "tls-alpn-01":
		if alpn == 0 || httpHits != 0 {
			t.Errorf("got %d ALPN hellos and %d HTTP-01 answers, want some and none",
				alpn, httpHits)
		}
	}
}
