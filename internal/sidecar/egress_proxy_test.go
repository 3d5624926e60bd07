package sidecar

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/fakeopenai"
)

// proxyTOML runs the forward proxy only, intercepting api.openai.com and
// sending its calls to the upstream. %[1]q: the upstream, %[2]q: the
// outbox, %[3]q and %[4]q: the CA's certificate and key files.
const proxyTOML = `
[egress]
upstream = %[1]q
keys = ["env:ZS_OPENAI_KEY"]

[egress.proxy]
listen = "127.0.0.1:0"
intercept = ["api.openai.com"]
ca_cert = %[3]q
ca_key = %[4]q

[egress.outbox]
path = %[2]q
`

// proxyRig is a sidecar whose forward proxy sends api.openai.com's calls
// to a fake upstream.
type proxyRig struct {
	*harness
	fake   *fakeopenai.Server
	caCert string
}

func startProxyRig(t *testing.T, words int) *proxyRig {
	t.Helper()
	fake := fakeopenai.New(fakeopenai.Options{Keys: []string{upstreamKey}, Words: words})
	up := httptest.NewServer(fake.Handler())
	t.Cleanup(up.Close)
	dir := t.TempDir()
	caCert, caKey := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca.key")
	h := startHarness(t, params{
		extra: fmt.Sprintf(proxyTOML, up.URL, filepath.Join(dir, "outbox.db"), caCert, caKey),
		env:   []string{"ZS_OPENAI_KEY=" + upstreamKey},
	})
	h.waitReady()
	if h.sc.EgressProxyAddr() == "" {
		t.Fatal("the sidecar has no forward proxy listener")
	}
	return &proxyRig{harness: h, fake: fake, caCert: caCert}
}

// needPython3 returns python3's path, skipping the test when there is
// none, unless CI is set: CI must run it.
func needPython3(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("python3")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("python3 is required in CI: %v", err)
		}
		t.Skipf("python3 not found: %v", err)
	}
	return path
}

// runProxyClient runs testdata/egress_proxy_client.py, isolated (-I),
// with an environment of PATH, a temporary HOME and extra only.
func runProxyClient(t *testing.T, expected string, extra ...string) (string, error) {
	t.Helper()
	py := needPython3(t)
	script, err := filepath.Abs(filepath.Join("testdata", "egress_proxy_client.py"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, py, "-I", script, expected)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}, extra...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return stderr.String(), err
	}
	return string(out), nil
}

// TestEgressProxyPythonHardCodedURL: a Python app calling the hard-coded
// https://api.openai.com through HTTPS_PROXY, and trusting only the
// sidecar's CA, gets its plain and streamed completions from the fake
// upstream, which sees the injected key and never the app's.
func TestEgressProxyPythonHardCodedURL(t *testing.T) {
	t.Parallel()
	needPython3(t)
	r := startProxyRig(t, 5)
	proxy := "http://" + r.sc.EgressProxyAddr()

	out, err := runProxyClient(t, proxy,
		"HTTPS_PROXY="+proxy,
		"NO_PROXY=",
		"SSL_CERT_FILE="+r.caCert,
		"SSL_CERT_DIR="+t.TempDir(), // no system CA directory
	)
	if err != nil {
		t.Fatalf("python client: %v\n%s", err, out)
	}
	var got struct {
		Plain struct {
			Content string    `json:"content"`
			Usage   chatUsage `json:"usage"`
		} `json:"plain"`
		Stream struct {
			Content     string `json:"content"`
			UsageChunks int    `json:"usage_chunks"`
		} `json:"stream"`
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("python output %q: %v", out, err)
	}
	// "hello there": 1 + 2 prompt tokens; 5 words.
	if got.Plain.Content != fakeopenai.Text(5) || got.Plain.Usage != (chatUsage{3, 5, 8}) {
		t.Errorf("plain completion %+v, want %q with 3 + 5 tokens",
			got.Plain, fakeopenai.Text(5))
	}
	if got.Stream.Content != fakeopenai.Text(5) || got.Stream.UsageChunks != 0 {
		t.Errorf("streamed completion %+v, want %q and no usage chunk (case C2)",
			got.Stream, fakeopenai.Text(5))
	}

	reqs := r.fake.Requests()
	if len(reqs) != 2 {
		t.Fatalf("upstream got %d requests, want 2", len(reqs))
	}
	for i, q := range reqs {
		if q.Key != upstreamKey || q.Path != "/v1/chat/completions" {
			t.Errorf("upstream request %d: path %q, injected key %v; want the chat path "+
				"and the injected key", i, q.Path, q.Key == upstreamKey)
		}
	}
	m := r.do("GET", r.adminURL()+"/metrics", "", nil)
	if !strings.Contains(m.body,
		`zimmer_sidecar_egress_calls_total{class="2xx",outcome="complete"} 2`) {
		t.Error("metrics lack two complete egress calls")
	}
	if err := r.stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	noSecretIn(t, "the log", r.logs.String(), upstreamKey)
}

// TestEgressProxyClientGuard: without its loopback proxy the script
// exits 3 before sending anything.
func TestEgressProxyClientGuard(t *testing.T) {
	t.Parallel()
	needPython3(t)
	r := startProxyRig(t, 5)
	proxy := "http://" + r.sc.EgressProxyAddr()

	out, err := runProxyClient(t, proxy, "NO_PROXY=", "SSL_CERT_FILE="+r.caCert)
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 3 {
		t.Fatalf("got %v (%s), want exit status 3", err, out)
	}
	if !strings.Contains(out, "https proxy is ''") {
		t.Errorf("stderr %q: want the proxy check to refuse", out)
	}
	if n := len(r.fake.Requests()); n != 0 {
		t.Errorf("upstream got %d requests, want 0", n)
	}
}

// TestEgressProxyRefusesUnconfiguredHost: a CONNECT to a host that is
// neither intercepted nor tunnelled is answered 403.
func TestEgressProxyRefusesUnconfiguredHost(t *testing.T) {
	t.Parallel()
	r := startProxyRig(t, 5)

	var d net.Dialer
	conn, err := d.DialContext(t.Context(), "tcp", r.sc.EgressProxyAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(waitLimit))
	_, err = fmt.Fprint(conn, "CONNECT example.invalid:443 HTTP/1.1\r\n"+
		"Host: example.invalid:443\r\n\r\n")
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: "CONNECT"})
	if err != nil {
		t.Fatalf("read the proxy's answer: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("CONNECT example.invalid:443: got %d, want 403", resp.StatusCode)
	}
	if n := len(r.fake.Requests()); n != 0 {
		t.Errorf("upstream got %d requests, want 0", n)
	}
}
