package sidecar

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// writeCert writes a self-signed certificate for 127.0.0.1 and returns
// the cert and key paths and a pool trusting only it.
func writeCert(t *testing.T) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "sidecar test"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
	if err := os.WriteFile(certFile, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	pool = x509.NewCertPool()
	pool.AppendCertsFromPEM(certPEM)
	return certFile, keyFile, pool
}

// TestTLSFiles serves the public listener over TLS from files, and the
// tls.http listener redirects to it without redirecting ACME challenges.
func TestTLSFiles(t *testing.T) {
	t.Parallel()
	certFile, keyFile, pool := writeCert(t)
	h := startHarness(t, params{extra: fmt.Sprintf(`[tls]
mode = "files"
cert_file = %q
key_file = %q
http = "127.0.0.1:0"
`, certFile, keyFile)})

	// 1. HTTPS with HTTP/2 for a client that trusts the certificate.
	tr := &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: pool},
		ForceAttemptHTTP2: true,
	}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: waitLimit}
	resp, err := hc.Get("https://" + h.sc.PublicAddr() + "/health")
	if err != nil {
		t.Fatalf("GET https /health: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.ProtoMajor != 2 {
		t.Errorf("got %d over %s, want 200 over HTTP/2", resp.StatusCode, resp.Proto)
	}

	// 2. Plain HTTP on the public port is refused (it speaks TLS only).
	plain := &http.Client{Timeout: waitLimit}
	if resp, err := plain.Get("http://" + h.sc.PublicAddr() + "/health"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Error("plain HTTP on the TLS port got 200")
		}
	}

	// 3. The HTTP port redirects, but never an ACME challenge.
	noFollow := &http.Client{
		Timeout: waitLimit,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
	httpAddr := addrOf(h.sc.httpLn)
	resp, err = noFollow.Get("http://" + httpAddr + "/provision")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusPermanentRedirect {
		t.Errorf("GET /provision on the http port: got %d, want 308", resp.StatusCode)
	}
	resp, err = noFollow.Get("http://" + httpAddr + "/.well-known/acme-challenge/x")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode >= 300 && resp.StatusCode < 400 {
		t.Errorf("ACME challenge path redirected with %d", resp.StatusCode)
	}
	if err := h.stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
}

// TestShutdownDelay: during listen.shutdown_delay readiness is already
// 503 while the public listener still serves new requests, each on a
// connection that closes after its answer.
func TestShutdownDelay(t *testing.T) {
	t.Parallel()
	h := startHarness(t, params{
		env: []string{"ZIMMER_SIDECAR_LISTEN__SHUTDOWN_DELAY=2s"},
	})
	h.waitReady()
	h.cancel()
	eventually(t, "/readyz to answer 503", func() bool {
		a, err := h.try("GET", h.adminURL()+"/readyz", "", nil)
		return err == nil && a.status == http.StatusServiceUnavailable
	})
	// Still inside the delay: a new connection is accepted and served.
	fresh := &http.Client{Timeout: waitLimit, Transport: &http.Transport{}}
	resp, err := fresh.Get(h.publicURL() + "/health")
	if err != nil {
		t.Fatalf("GET /health during the shutdown delay: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("got %d during the delay, want 200", resp.StatusCode)
	}
	// Keep-alive is off: the answer closes its connection, so no client
	// sends another request into a connection about to be closed.
	if !resp.Close {
		t.Error("an answer during the delay keeps its connection open")
	}
	if err := h.stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
}

// TestAdminRefusesNamedHosts: DNS rebinding reaches a loopback listener
// under a foreign name; only IP literals and localhost are answered.
func TestAdminRefusesNamedHosts(t *testing.T) {
	t.Parallel()
	h := startHarness(t, params{})
	for host, want := range map[string]int{
		"":                      http.StatusOK,
		"localhost":             http.StatusOK,
		"evil.example":          http.StatusMisdirectedRequest,
		"evil.example:9090":     http.StatusMisdirectedRequest,
		"127.0.0.1.nip.example": http.StatusMisdirectedRequest,
	} {
		req, err := http.NewRequest("GET", h.adminURL()+"/livez", nil)
		if err != nil {
			t.Fatal(err)
		}
		if host != "" {
			req.Host = host
		}
		resp, err := h.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("Host %q: got %d, want %d", host, resp.StatusCode, want)
		}
	}
}
