package tlsconf

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// The Pebble binary is built once per test run from the version go.mod
// pins as a tool, into a directory TestMain removes.
var pebbleBuild struct {
	once sync.Once
	dir  string
	path string
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if pebbleBuild.dir != "" {
		os.RemoveAll(pebbleBuild.dir)
	}
	os.Exit(code)
}

// pebbleBinary builds Pebble or fails the test.
func pebbleBinary(t *testing.T) string {
	t.Helper()
	pebbleBuild.once.Do(func() {
		goCmd, err := exec.LookPath("go")
		if err != nil {
			goCmd = filepath.Join(runtime.GOROOT(), "bin", "go")
		}
		dir, err := os.MkdirTemp("", "tlsconf-pebble-")
		if err != nil {
			pebbleBuild.err = err
			return
		}
		pebbleBuild.dir = dir
		pebbleBuild.path = filepath.Join(dir, "pebble")
		cmd := exec.Command(goCmd, "build", "-o", pebbleBuild.path,
			"github.com/letsencrypt/pebble/v2/cmd/pebble")
		if out, err := cmd.CombinedOutput(); err != nil {
			pebbleBuild.err = fmt.Errorf("go build pebble: %w\n%s", err, out)
		}
	})
	if pebbleBuild.err != nil {
		t.Fatal(pebbleBuild.err)
	}
	return pebbleBuild.path
}

// pebble is one running Pebble CA on loopback.
type pebble struct {
	directory string         // the ACME directory URL
	tlsRoots  *x509.CertPool // trusts Pebble's own HTTPS
	roots     *x509.CertPool // trusts the certificates Pebble issues
	out       *syncBuffer    // Pebble's log
}

// newOrders counts the orders Pebble has created so far.
func (p *pebble) newOrders() int {
	return strings.Count(p.out.String(), "Added order")
}

// startPebble runs Pebble until the test ends. Its validation authority
// resolves names with a DNS server of the test's own (every name answers
// 127.0.0.1) and connects to httpPort for HTTP-01 and to tlsPort for
// TLS-ALPN-01.
func startPebble(t *testing.T, httpPort, tlsPort int) *pebble {
	t.Helper()
	bin := pebbleBinary(t)
	dir := t.TempDir()

	// 1. Pebble's own HTTPS certificate, trusted through CARoots.
	own := newTestCert(t, 1, "localhost")
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	writeFile(t, certFile, own.certPEM)
	writeFile(t, keyFile, own.keyPEM)

	// 2. Its configuration: loopback only, challenges sent to our ports.
	listenAddr, mgmtAddr := freeAddr(t), freeAddr(t)
	conf := map[string]any{"pebble": map[string]any{
		"listenAddress":           listenAddr,
		"managementListenAddress": mgmtAddr,
		"certificate":             certFile,
		"privateKey":              keyFile,
		"httpPort":                httpPort,
		"tlsPort":                 tlsPort,
		"ocspResponderURL":        "",
		"keyAlgorithm":            "ecdsa",
		"retryAfter":              map[string]int{"authz": 0, "order": 0},
	}}
	data, err := json.Marshal(conf)
	if err != nil {
		t.Fatal(err)
	}
	confFile := filepath.Join(dir, "pebble.json")
	writeFile(t, confFile, data)

	// 3. Run it with a test DNS server; no sleeps, no bad nonces.
	out := &syncBuffer{}
	cmd := exec.Command(bin, "-config", confFile, "-dnsserver", startDNS(t))
	cmd.Env = append(os.Environ(), "PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0")
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("pebble log:\n%s", out.String())
		}
	})

	p := &pebble{
		directory: "https://" + listenAddr + "/dir",
		tlsRoots:  pool(own),
		out:       out,
	}
	c := &http.Client{
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: p.tlsRoots}},
		Timeout:   5 * time.Second,
	}
	t.Cleanup(c.CloseIdleConnections)
	waitUp(t, c, p.directory)
	p.roots = fetchRoot(t, c, "https://"+mgmtAddr+"/roots/0")
	return p
}

// freeAddr returns a loopback address that was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln := listen(t)
	defer ln.Close()
	return ln.Addr().String()
}

// waitUp polls url until it answers 200, for at most 15 seconds.
func waitUp(t *testing.T, c *http.Client, url string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := c.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("pebble did not come up at %s: %v", url, err)
		}
		time.Sleep(50 * time.Millisecond) // waiting on another process
	}
}

// fetchRoot reads Pebble's issuing root from its management API.
func fetchRoot(t *testing.T, c *http.Client, url string) *x509.CertPool {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %v", url, resp.StatusCode, err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(body) {
		t.Fatalf("GET %s: no PEM certificate in %q", url, body)
	}
	return roots
}

// startDNS serves A 127.0.0.1 for every name on a loopback TCP port (the
// transport Pebble uses with -dnsserver) until the test ends, and returns
// that address. Other types get no answer.
func startDNS(t *testing.T) string {
	t.Helper()
	ln := listen(t)
	srv := &dns.Server{Listener: ln, Handler: dns.HandlerFunc(answerLoopback)}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := srv.ActivateAndServe(); err != nil {
			t.Errorf("dns server: %v", err)
		}
	})
	<-started
	t.Cleanup(func() {
		_ = srv.Shutdown()
		wg.Wait()
	})
	return ln.Addr().String()
}

func answerLoopback(w dns.ResponseWriter, q *dns.Msg) {
	resp := new(dns.Msg)
	resp.SetReply(q)
	for _, qq := range q.Question {
		if qq.Qtype != dns.TypeA {
			continue
		}
		resp.Answer = append(resp.Answer, &dns.A{
			Hdr: dns.RR_Header{Name: qq.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 5},
			A:   net.IPv4(127, 0, 0, 1),
		})
	}
	_ = w.WriteMsg(resp)
}

// syncBuffer is a bytes.Buffer safe for a process's output and readers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
