package forward

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// seen is what an intercept handler observed of one request.
type seen struct {
	host, path, alpn string
	tls              bool
}

// recorder is an intercept handler that answers "ok <n>" and records.
type recorder struct {
	mu   sync.Mutex
	reqs []seen
}

func (h *recorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s := seen{host: r.Host, path: r.URL.Path, tls: r.TLS != nil}
	if r.TLS != nil {
		s.alpn = r.TLS.NegotiatedProtocol
	}
	h.mu.Lock()
	h.reqs = append(h.reqs, s)
	n := len(h.reqs)
	h.mu.Unlock()
	_, _ = fmt.Fprintf(w, "ok %d", n)
}

func (h *recorder) all() []seen {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]seen(nil), h.reqs...)
}

func TestInterceptServesSeveralRequestsPerConnection(t *testing.T) {
	ca, _ := newTestCA(t)
	h := &recorder{}
	dialer := &recordingDialer{}
	_, addr, ln := startProxy(t, Options{
		CA:        ca,
		Intercept: map[string]http.Handler{"API.openai.com": h},
		Dial:      dialer.Dial,
	})
	client := proxyClient(t, addr, roots(ca))

	for i := 1; i <= 3; i++ {
		resp, err := client.Get("https://api.openai.com/v1/models")
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprintf("ok %d", i); string(body) != want {
			t.Errorf("request %d: got %q, want %q", i, body, want)
		}
		if resp.TLS == nil || resp.TLS.PeerCertificates[0].DNSNames[0] != "api.openai.com" {
			t.Errorf("request %d: not served with the api.openai.com leaf", i)
		}
	}
	if got := ln.accepted.Load(); got != 1 {
		t.Errorf("proxy connections: got %d, want 1 (keep-alive)", got)
	}
	want := seen{host: "api.openai.com", path: "/v1/models", tls: true, alpn: "http/1.1"}
	for i, s := range h.all() {
		if s != want {
			t.Errorf("request %d reached the handler as %+v, want %+v", i+1, s, want)
		}
	}
	if d := dialer.dialed(); len(d) != 0 {
		t.Errorf("dialed %v, want nothing", d)
	}
}

func TestInterceptStreamsEventByEvent(t *testing.T) {
	ca, _ := newTestCA(t)
	next := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		rc := http.NewResponseController(w)
		for i := range 3 {
			_, _ = fmt.Fprintf(w, "data: {\"n\":%d}\n\n", i)
			if err := rc.Flush(); err != nil {
				t.Errorf("flush: %v", err)
				return
			}
			// The next event is written only once the client has read
			// this one: an event held back would block the test.
			select {
			case <-next:
			case <-r.Context().Done():
				return
			}
		}
		_, _ = fmt.Fprint(w, "data: [DONE]\n\n")
	})
	_, addr, _ := startProxy(t, Options{
		CA: ca, Intercept: map[string]http.Handler{"api.openai.com": h},
	})
	client := proxyClient(t, addr, roots(ca))
	client.Timeout = time.Minute // a held-back event fails the test instead of hanging it

	resp, err := client.Post("https://api.openai.com/v1/chat/completions",
		"application/json", strings.NewReader(`{"stream":true}`))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	br := bufio.NewReader(resp.Body)
	for i := range 3 {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		if want := fmt.Sprintf("data: {\"n\":%d}\n", i); line != want {
			t.Fatalf("event %d: got %q, want %q", i, line, want)
		}
		if _, err := br.ReadString('\n'); err != nil { // the blank line
			t.Fatal(err)
		}
		next <- struct{}{}
	}
	rest, err := io.ReadAll(br)
	if err != nil {
		t.Fatal(err)
	}
	if string(rest) != "data: [DONE]\n\n" {
		t.Errorf("end of stream: got %q", rest)
	}
}

func TestConnectRefusedWithoutDialing(t *testing.T) {
	ca, _ := newTestCA(t)
	h := &recorder{}
	dialer := &recordingDialer{}
	echo := echoServer(t) // listening, but not configured
	_, addr, _ := startProxy(t, Options{
		CA:        ca,
		Intercept: map[string]http.Handler{"api.openai.com": h},
		Tunnel:    []string{"tunnel.example:443"},
		Dial:      dialer.Dial,
	})

	for _, target := range []string{
		"example.invalid:443",
		"api.openai.com:8443", // an intercepted host on another port
		"tunnel.example:8443", // a tunnelled host on another port
		echo,                  // a loopback address that answers
		"169.254.169.254:80",
	} {
		t.Run(target, func(t *testing.T) {
			_, _, resp, body := rawConnect(t, addr, target)
			if resp.StatusCode != http.StatusForbidden {
				t.Fatalf("status: got %d, want 403", resp.StatusCode)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("content type: got %q, want application/json", ct)
			}
			var e struct{ Detail string }
			if err := json.Unmarshal([]byte(body), &e); err != nil {
				t.Fatalf("body %q: %v", body, err)
			}
			if !strings.Contains(e.Detail, "is not allowed") {
				t.Errorf("detail: got %q, want it to say the host is not allowed", e.Detail)
			}
		})
	}
	if d := dialer.dialed(); len(d) != 0 {
		t.Errorf("dialed %v, want nothing", d)
	}
	if n := len(h.all()); n != 0 {
		t.Errorf("handler saw %d requests, want 0", n)
	}
}

func TestNonConnectRequestsRefused(t *testing.T) {
	ca, _ := newTestCA(t)
	h := &recorder{}
	dialer := &recordingDialer{}
	_, addr, _ := startProxy(t, Options{
		CA:        ca,
		Intercept: map[string]http.Handler{"api.openai.com": h},
		Dial:      dialer.Dial,
	})
	tests := []struct {
		name, requestLine string
		want              int
	}{
		{"plain http to an intercepted host",
			"POST http://api.openai.com/v1/chat/completions HTTP/1.1", http.StatusForbidden},
		{"plain http to another host", "GET http://example.invalid/ HTTP/1.1",
			http.StatusForbidden},
		{"origin form", "GET /v1/models HTTP/1.1", http.StatusBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = conn.Close() }()
			_, err = fmt.Fprintf(conn, "%s\r\nHost: api.openai.com\r\nContent-Length: 0\r\n\r\n",
				tt.requestLine)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				t.Fatal(err)
			}
			_ = resp.Body.Close()
			if resp.StatusCode != tt.want {
				t.Errorf("status: got %d, want %d", resp.StatusCode, tt.want)
			}
		})
	}
	if n := len(h.all()); n != 0 {
		t.Errorf("handler saw %d requests, want 0", n)
	}
	if d := dialer.dialed(); len(d) != 0 {
		t.Errorf("dialed %v, want nothing", d)
	}
}

func TestTunnelToListedHost(t *testing.T) {
	upstream := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter,
		r *http.Request) {
		_, _ = io.WriteString(w, "from upstream")
	}))
	t.Cleanup(upstream.Close)
	target := upstream.Listener.Addr().String()
	ca, _ := newTestCA(t)
	dialer := &recordingDialer{}
	_, addr, _ := startProxy(t, Options{
		CA:        ca,
		Intercept: map[string]http.Handler{"api.openai.com": &recorder{}},
		Tunnel:    []string{target},
		Dial:      dialer.Dial,
	})

	// The client trusts the upstream's own certificate, not the local CA:
	// the tunnel carries the upstream's TLS untouched.
	client := proxyClient(t, addr, nil)
	tr := client.Transport.(*http.Transport)
	tr.TLSClientConfig = upstream.Client().Transport.(*http.Transport).TLSClientConfig.Clone()
	for range 2 {
		resp, err := client.Get(upstream.URL + "/x")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if string(body) != "from upstream" {
			t.Errorf("body: got %q, want %q", body, "from upstream")
		}
	}
	if d := dialer.dialed(); !slices.Equal(d, []string{target}) {
		t.Errorf("dialed %v, want exactly [%s]", d, target)
	}
}

func TestTunnelClosesWhenIdle(t *testing.T) {
	echo := echoServer(t)
	_, addr, _ := startProxy(t, Options{
		Tunnel:            []string{echo},
		TunnelIdleTimeout: 200 * time.Millisecond,
	})
	conn, br, resp, _ := rawConnect(t, addr, echo)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status: got %d, want 200", resp.StatusCode)
	}
	if _, err := io.WriteString(conn, "ping"); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 4)
	if _, err := io.ReadFull(br, got); err != nil || string(got) != "ping" {
		t.Fatalf("echo: got %q, %v, want ping", got, err)
	}

	// Nothing more is sent: the proxy closes the tunnel.
	_ = conn.SetReadDeadline(time.Now().Add(time.Minute))
	_, err := br.ReadByte()
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("the idle tunnel stayed open")
	}
	if err == nil {
		t.Fatal("read a byte from an idle tunnel, want it closed")
	}
}

func TestInterceptRefusesAnotherHostInside(t *testing.T) {
	ca, _ := newTestCA(t)
	h := &recorder{}
	_, addr, _ := startProxy(t, Options{
		CA: ca, Intercept: map[string]http.Handler{"api.openai.com": h},
	})
	conn, _, resp, _ := rawConnect(t, addr, "api.openai.com:443")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status: got %d, want 200", resp.StatusCode)
	}
	tc := tls.Client(conn, &tls.Config{ServerName: "api.openai.com", RootCAs: roots(ca)})
	if _, err := io.WriteString(tc,
		"GET /v1/models HTTP/1.1\r\nHost: other.example\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	got, err := http.ReadResponse(bufio.NewReader(tc), nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = got.Body.Close()
	if got.StatusCode != http.StatusMisdirectedRequest {
		t.Errorf("status: got %d, want 421", got.StatusCode)
	}
	if n := len(h.all()); n != 0 {
		t.Errorf("handler saw %d requests, want 0", n)
	}
}

func TestInterceptClientNotTrustingCA(t *testing.T) {
	ca, _ := newTestCA(t)
	h := &recorder{}
	_, addr, _ := startProxy(t, Options{
		CA: ca, Intercept: map[string]http.Handler{"api.openai.com": h},
	})
	other, _ := newTestCA(t)
	client := proxyClient(t, addr, roots(other))
	_, err := client.Get("https://api.openai.com/v1/models")
	var unknown x509.UnknownAuthorityError
	if !errors.As(err, &unknown) {
		t.Errorf("got %v, want an unknown authority error", err)
	}
	if n := len(h.all()); n != 0 {
		t.Errorf("handler saw %d requests, want 0", n)
	}
}

func TestShutdownLetsInFlightRequestsEnd(t *testing.T) {
	ca, _ := newTestCA(t)
	started, release := make(chan struct{}), make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-release
		_, _ = io.WriteString(w, "finished")
	})
	echo := echoServer(t)
	p, addr, _ := startProxy(t, Options{
		CA:        ca,
		Intercept: map[string]http.Handler{"api.openai.com": h},
		Tunnel:    []string{echo},
	})
	tunnel, tunnelReader, resp, _ := rawConnect(t, addr, echo)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("tunnel status: got %d, want 200", resp.StatusCode)
	}
	client := proxyClient(t, addr, roots(ca))
	type result struct {
		body string
		err  error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := client.Get("https://api.openai.com/slow")
		if err != nil {
			done <- result{err: err}
			return
		}
		b, err := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		done <- result{string(b), err}
	}()
	<-started

	shut := make(chan error, 1)
	go func() { shut <- p.Shutdown(t.Context()) }()

	// The tunnel is closed at once.
	_ = tunnel.SetReadDeadline(time.Now().Add(time.Minute))
	if _, err := tunnelReader.ReadByte(); err == nil {
		t.Error("tunnel still open after Shutdown began")
	}
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned %v while a request was in flight", err)
	default:
	}

	close(release)
	if r := <-done; r.err != nil || r.body != "finished" {
		t.Errorf("in-flight request: got %q, %v, want finished", r.body, r.err)
	}
	if err := <-shut; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if _, err := net.Dial("tcp", addr); err == nil {
		t.Error("proxy listener still accepts after Shutdown")
	}
}

func TestShutdownForcesWhenContextEnds(t *testing.T) {
	ca, _ := newTestCA(t)
	started := make(chan struct{})
	var ended atomic.Bool
	handlerDone := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer close(handlerDone)
		close(started)
		<-r.Context().Done()
		ended.Store(true)
	})
	p, addr, _ := startProxy(t, Options{
		CA: ca, Intercept: map[string]http.Handler{"api.openai.com": h},
	})
	client := proxyClient(t, addr, roots(ca))
	failed := make(chan error, 1)
	go func() {
		resp, err := client.Get("https://api.openai.com/forever")
		if err == nil {
			_ = resp.Body.Close()
		}
		failed <- err
	}()
	<-started

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	err := p.Shutdown(ctx)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Shutdown: got %v, want context.Canceled", err)
	}
	<-handlerDone
	if !ended.Load() {
		t.Error("handler's request context did not end")
	}
	if err := <-failed; err == nil {
		t.Error("client: got an answer, want the connection closed")
	}
}

func TestConnectAfterShutdownRefused(t *testing.T) {
	ca, _ := newTestCA(t)
	p, err := New(Options{CA: ca, Intercept: map[string]http.Handler{"a.example": &recorder{}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	// Used as the handler of another server, the proxy answers 503.
	srv := httptest.NewServer(p)
	t.Cleanup(srv.Close)
	_, _, resp, _ := rawConnect(t, srv.Listener.Addr().String(), "a.example:443")
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("status: got %d, want 503", resp.StatusCode)
	}
	if err := p.Serve(nil); !errors.Is(err, http.ErrServerClosed) {
		t.Errorf("Serve after Shutdown: got %v, want http.ErrServerClosed", err)
	}
}

func TestNewRejectsBadOptions(t *testing.T) {
	ca, _ := newTestCA(t)
	h := &recorder{}
	tests := []struct {
		name string
		opts Options
		want []string
	}{
		{"intercept without CA", Options{Intercept: map[string]http.Handler{"a.example": h}},
			[]string{"need a CA"}},
		{"bad host", Options{CA: ca, Intercept: map[string]http.Handler{"a b": h}},
			[]string{`intercept "a b"`}},
		{"bad port", Options{CA: ca, Tunnel: []string{"a.example:0", "b.example:x"}},
			[]string{`tunnel "a.example:0"`, `tunnel "b.example:x"`}},
		{"nil handler", Options{CA: ca, Intercept: map[string]http.Handler{"a.example": nil}},
			[]string{"nil handler"}},
		{"same host twice", Options{CA: ca, Intercept: map[string]http.Handler{
			"a.example": h, "A.example:443": h}}, []string{"given twice"}},
		{"intercepted and tunnelled", Options{CA: ca,
			Intercept: map[string]http.Handler{"a.example": h}, Tunnel: []string{"a.example"}},
			[]string{"also intercepted"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.opts)
			if err == nil {
				t.Fatal("got no error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q: want it to contain %q", err, w)
				}
			}
		})
	}
}

func TestConnectionLimit(t *testing.T) {
	ca, _ := newTestCA(t)
	echo := echoServer(t)
	_, addr, _ := startProxy(t, Options{
		CA:             ca,
		Intercept:      map[string]http.Handler{"api.openai.com": &recorder{}},
		Tunnel:         []string{echo},
		MaxConnections: 2,
	})
	tunnel, _, resp, _ := rawConnect(t, addr, echo)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("tunnel: got %d, want 200", resp.StatusCode)
	}
	intercepted, _, resp, _ := rawConnect(t, addr, "api.openai.com:443")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("intercept: got %d, want 200", resp.StatusCode)
	}
	tc := tls.Client(intercepted, &tls.Config{ServerName: "api.openai.com", RootCAs: roots(ca)})
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	for _, target := range []string{echo, "api.openai.com:443"} {
		_, _, resp, body := rawConnect(t, addr, target)
		if resp.StatusCode != http.StatusServiceUnavailable ||
			!strings.Contains(body, "too many connections") {
			t.Errorf("third connection to %s: got %d %q, want 503", target,
				resp.StatusCode, body)
		}
	}

	// Closing the connections gives their slots back (once the proxy has
	// noticed: poll, with a hang guard).
	_ = tunnel.Close()
	_ = tc.Close()
	deadline := time.Now().Add(time.Minute)
	for ok := 0; ok < 2; {
		if time.Now().After(deadline) {
			t.Fatal("slots not given back after the connections closed")
		}
		c, _, resp, _ := rawConnect(t, addr, echo)
		if resp.StatusCode == http.StatusOK {
			ok++ // kept open: it holds its slot
			continue
		}
		_ = c.Close()
		time.Sleep(10 * time.Millisecond)
	}
}

// BenchmarkInterceptedRequest measures one request on a kept-alive
// intercepted connection (proxy, TLS and handler together).
func BenchmarkInterceptedRequest(b *testing.B) {
	dir := b.TempDir()
	ca, err := LoadOrCreateCA(dir+"/ca.pem", dir+"/ca-key.pem")
	if err != nil {
		b.Fatal(err)
	}
	p, err := New(Options{
		CA:        ca,
		Intercept: map[string]http.Handler{"api.openai.com": &recorder{}},
	})
	if err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(p)
	b.Cleanup(func() { srv.Close(); p.Close() })
	proxyURL := &url.URL{Scheme: "http", Host: srv.Listener.Addr().String()}
	tr := &http.Transport{
		Proxy:           http.ProxyURL(proxyURL),
		TLSClientConfig: &tls.Config{RootCAs: roots(ca)},
	}
	b.Cleanup(tr.CloseIdleConnections)
	client := &http.Client{Transport: tr}
	for b.Loop() {
		resp, err := client.Get("https://api.openai.com/v1/models")
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
	}
}
