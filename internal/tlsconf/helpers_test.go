package tlsconf

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// testCert is a self-signed certificate for tests.
type testCert struct {
	certPEM, keyPEM []byte
	cert            *x509.Certificate
	serial          int64
}

// newTestCert makes a self-signed certificate for names with serial.
func newTestCert(t *testing.T, serial int64, names ...string) testCert {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(serial),
		Subject:               pkix.Name{CommonName: names[0]},
		DNSNames:              names,
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return testCert{
		certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		keyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
		cert:    cert,
		serial:  serial,
	}
}

// pool returns a pool holding the given certificates.
func pool(certs ...testCert) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c.cert)
	}
	return p
}

// healthHandler answers /health like the sidecar does, 404 elsewhere.
func healthHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"status":"healthy"}`)
	})
	return mux
}

// listen binds a loopback port.
func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// serve runs an http.Server on ln until the test ends; with cfg it serves
// TLS (HTTP/2 included, as the sidecar's public listener would).
func serve(t *testing.T, ln net.Listener, cfg *tls.Config, h http.Handler) {
	t.Helper()
	srv := &http.Server{Handler: h, TLSConfig: cfg, ReadHeaderTimeout: 5 * time.Second,
		ErrorLog: log.New(io.Discard, "", 0)} // refused handshakes are expected
	var wg sync.WaitGroup
	wg.Go(func() {
		var err error
		if cfg != nil {
			err = srv.ServeTLS(ln, "", "")
		} else {
			err = srv.Serve(ln)
		}
		if !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("serve %s: %v", ln.Addr(), err)
		}
	})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		wg.Wait()
	})
}

// handshake connects to addr with serverName, trusting only roots, and
// returns the connection state; edit may change the client's config.
func handshake(addr, serverName string, roots *x509.CertPool,
	edit func(*tls.Config)) (tls.ConnectionState, error) {
	cfg := &tls.Config{ServerName: serverName, RootCAs: roots, NextProtos: []string{"h2"}}
	if edit != nil {
		edit(cfg)
	}
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second}, Config: cfg}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		return tls.ConnectionState{}, err
	}
	defer conn.Close()
	return conn.(*tls.Conn).ConnectionState(), nil
}

// servedSerial handshakes and returns the leaf's serial number.
func servedSerial(t *testing.T, addr, serverName string, roots *x509.CertPool) int64 {
	t.Helper()
	st, err := handshake(addr, serverName, roots, nil)
	if err != nil {
		t.Fatalf("handshake with %s: %v", addr, err)
	}
	return st.PeerCertificates[0].SerialNumber.Int64()
}

// client returns an HTTP client that trusts only roots and dials addr for
// every host, as a client resolving the test name to it would.
func client(roots *x509.CertPool, addr string) *http.Client {
	d := &net.Dialer{Timeout: 5 * time.Second}
	tr := &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: roots},
		ForceAttemptHTTP2: true,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return d.DialContext(ctx, network, addr)
		},
	}
	return &http.Client{
		Transport: tr,
		Timeout:   10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// getHealth GETs /health through c and checks the answer.
func getHealth(t *testing.T, c *http.Client, host string) *http.Response {
	t.Helper()
	resp, err := c.Get("https://" + host + "/health")
	if err != nil {
		t.Fatalf("GET /health: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("read /health: %v", err)
	}
	if resp.StatusCode != http.StatusOK || string(body) != `{"status":"healthy"}` {
		t.Fatalf("GET /health: got %d %q, want 200 healthy", resp.StatusCode, body)
	}
	return resp
}

// secretDir lays files out like a mounted Kubernetes Secret: tls.crt and
// tls.key are symlinks into "..data", itself a symlink to a version
// directory, and an update swaps "..data" atomically.
type secretDir struct {
	t   *testing.T
	dir string
	n   int
}

func newSecretDir(t *testing.T, c testCert) *secretDir {
	t.Helper()
	s := &secretDir{t: t, dir: t.TempDir()}
	s.put(c.certPEM, c.keyPEM)
	for _, f := range []string{"tls.crt", "tls.key"} {
		if err := os.Symlink(filepath.Join("..data", f), filepath.Join(s.dir, f)); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

func (s *secretDir) certFile() string { return filepath.Join(s.dir, "tls.crt") }
func (s *secretDir) keyFile() string  { return filepath.Join(s.dir, "tls.key") }

// put writes a new version directory and points "..data" at it with one
// rename, as the kubelet does.
func (s *secretDir) put(certPEM, keyPEM []byte) {
	s.t.Helper()
	s.n++
	version := filepath.Join(s.dir, "..v"+string(rune('0'+s.n)))
	if err := os.Mkdir(version, 0o700); err != nil {
		s.t.Fatal(err)
	}
	for name, data := range map[string][]byte{"tls.crt": certPEM, "tls.key": keyPEM} {
		if err := os.WriteFile(filepath.Join(version, name), data, 0o600); err != nil {
			s.t.Fatal(err)
		}
	}
	tmp := filepath.Join(s.dir, "..data_tmp")
	if err := os.Symlink(filepath.Base(version), tmp); err != nil {
		s.t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(s.dir, "..data")); err != nil {
		s.t.Fatal(err)
	}
}

// events collects a Manager's events for a test.
type events struct {
	ch chan Event
}

func newEvents() *events { return &events{ch: make(chan Event, 64)} }

func (e *events) hook(ev Event) {
	select {
	case e.ch <- ev:
	default: // a test that floods the hook only loses events it ignores
	}
}

// pending returns the events not yet consumed, for a failure message.
func (e *events) pending() []Event {
	var evs []Event
	for {
		select {
		case ev := <-e.ch:
			evs = append(evs, ev)
		default:
			return evs
		}
	}
}

// next waits for the next event of kind, skipping others.
func (e *events) next(t *testing.T, kind EventKind) Event {
	t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		select {
		case ev := <-e.ch:
			if ev.Kind == kind {
				return ev
			}
		case <-timeout:
			t.Fatalf("no %s event within 20s", kind)
		}
	}
}
