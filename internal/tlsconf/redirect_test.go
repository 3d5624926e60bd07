package tlsconf

import (
	"crypto/tls"
	"net"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
)

// managers returns a files-mode and an acme-mode Manager; the acme one is
// never started, so it knows no challenge.
func managers(t *testing.T) map[string]*Manager {
	t.Helper()
	sd := newSecretDir(t, newTestCert(t, 1, filesName))
	files, err := New(Options{Mode: ModeFiles, CertFile: sd.certFile(), KeyFile: sd.keyFile()})
	if err != nil {
		t.Fatal(err)
	}
	acme, err := New(Options{Mode: ModeACME, Names: []string{"a.zimmer.test"},
		CADirectory: "https://127.0.0.1:1/dir", StorageDir: t.TempDir(),
		HTTPAddr: "127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = files.Close(); _ = acme.Close() })
	return map[string]*Manager{"files": files, "acme": acme}
}

// TestHTTPHandler checks the plain listener: challenges are never
// redirected, everything else goes to https with 308.
func TestHTTPHandler(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, method, target, host string
		status                     int
		location                   string
	}{
		{"unknown challenge", "GET", "/.well-known/acme-challenge/abc123", "a.zimmer.test",
			404, ""},
		{"challenge by HEAD", "HEAD", "/.well-known/acme-challenge/abc123", "a.zimmer.test",
			404, ""},
		{"challenge other host", "GET", "/.well-known/acme-challenge/x", "b.example:80",
			404, ""},
		{"path and query", "GET", "/x/y?z=1&w=%20", "a.zimmer.test:80", 308,
			"https://a.zimmer.test/x/y?z=1&w=%20"},
		{"root", "GET", "/", "a.zimmer.test", 308, "https://a.zimmer.test/"},
		{"post keeps method", "POST", "/provision", "a.zimmer.test", 308,
			"https://a.zimmer.test/provision"},
		{"escaped path", "GET", "/a%2Fb", "a.zimmer.test", 308, "https://a.zimmer.test/a%2Fb"},
		{"double slash path", "GET", "//evil.example/x", "a.zimmer.test", 308,
			"https://a.zimmer.test//evil.example/x"},
		{"ipv6 host", "GET", "/h", "[::1]:80", 308, "https://[::1]/h"},
		{"ipv4 host", "GET", "/h", "127.0.0.1:80", 308, "https://127.0.0.1/h"},
		{"no host", "GET", "/h", "", 400, ""},
		{"bad host", "GET", "/h", "evil.example/x@y", 400, ""},
	}
	for mode, m := range managers(t) {
		h := m.HTTPHandler()
		for _, tt := range tests {
			t.Run(mode+"/"+tt.name, func(t *testing.T) {
				r := httptest.NewRequest(tt.method, "http://placeholder"+tt.target, nil)
				r.Host = tt.host
				w := httptest.NewRecorder()
				h.ServeHTTP(w, r)
				if w.Code != tt.status {
					t.Errorf("got status %d, want %d", w.Code, tt.status)
				}
				if got := w.Header().Get("Location"); got != tt.location {
					t.Errorf("got Location %q, want %q", got, tt.location)
				}
			})
		}
	}
}

// TestTLSConfig checks versions and ALPN on a real handshake.
func TestTLSConfig(t *testing.T) {
	t.Parallel()
	c := newTestCert(t, 7, filesName)
	sd := newSecretDir(t, c)
	m, err := New(Options{Mode: ModeFiles, CertFile: sd.certFile(), KeyFile: sd.keyFile()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	ln := listen(t)
	serve(t, ln, m.TLSConfig(), healthHandler())
	addr, roots := ln.Addr().String(), pool(c)

	tests := []struct {
		name      string
		edit      func(*tls.Config)
		wantErr   string
		wantProto string
	}{
		{"tls 1.1 refused", func(c *tls.Config) {
			c.MinVersion, c.MaxVersion = tls.VersionTLS10, tls.VersionTLS11
		}, "protocol version", ""},
		{"tls 1.2", func(c *tls.Config) { c.MaxVersion = tls.VersionTLS12 }, "", "h2"},
		{"h2", nil, "", "h2"},
		{"http/1.1 only", func(c *tls.Config) { c.NextProtos = []string{"http/1.1"} },
			"", "http/1.1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			st, err := handshake(addr, filesName, roots, tt.edit)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got error %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if st.NegotiatedProtocol != tt.wantProto {
				t.Errorf("got protocol %q, want %q", st.NegotiatedProtocol, tt.wantProto)
			}
		})
	}

	// Only acme mode offers the TLS-ALPN-01 protocol.
	for mode, m := range managers(t) {
		cfg := m.TLSConfig()
		if cfg.MinVersion != tls.VersionTLS12 {
			t.Errorf("%s: got MinVersion %x, want TLS 1.2", mode, cfg.MinVersion)
		}
		if got, want := slices.Contains(cfg.NextProtos, "acme-tls/1"), mode == "acme"; got != want {
			t.Errorf("%s: acme-tls/1 offered: got %v, want %v", mode, got, want)
		}
	}
}

// FuzzHTTPSURL checks that a redirect never leaves the request's host and
// keeps its path and query.
func FuzzHTTPSURL(f *testing.F) {
	f.Add("a.example:80", "/x?y=1")
	f.Add("[::1]:8080", "/")
	f.Add("evil.example@a.example", "/")
	f.Add("a.example", "//b.example/%2e%2e")
	f.Add("", "/")
	f.Fuzz(func(t *testing.T, host, target string) {
		u, err := url.ParseRequestURI(target)
		if err != nil {
			return
		}
		got, ok := httpsURL(host, u)
		if !ok {
			return
		}
		parsed, err := url.Parse(got)
		if err != nil {
			t.Fatalf("redirect %q does not parse: %v", got, err)
		}
		if parsed.Scheme != "https" || parsed.User != nil || parsed.Port() != "" {
			t.Errorf("redirect %q: want https, no user, no port", got)
		}
		if want := strings.Trim(hostOnly(host), "[]"); !strings.EqualFold(parsed.Hostname(),
			want) && !sameIP(parsed.Hostname(), want) {
			t.Errorf("redirect %q leaves host %q", got, host)
		}
		wantPath := u.Path
		if !strings.HasPrefix(wantPath, "/") {
			wantPath = "/" + wantPath
		}
		if parsed.Path != wantPath || parsed.Query().Encode() != u.Query().Encode() {
			t.Errorf("redirect %q changes path or query of %q", got, target)
		}
	})
}

// hostOnly strips a port, if any.
func hostOnly(host string) string {
	if h, _, err := net.SplitHostPort(host); err == nil {
		return h
	}
	return host
}

// sameIP reports whether a and b are the same IP address.
func sameIP(a, b string) bool {
	ipA, ipB := net.ParseIP(a), net.ParseIP(b)
	return ipA != nil && ipA.Equal(ipB)
}
