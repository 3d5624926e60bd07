package forward

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// eagerConn sends its CONNECT in the same write as the first bytes meant
// for the tunnel (as clients that do not wait for the 200 do), and skips
// the proxy's answer before its first read.
type eagerConn struct {
	net.Conn
	t       *testing.T
	connect string
	br      *bufio.Reader
	wrote   bool
	read    bool
}

func newEagerConn(t *testing.T, proxyAddr, target string) *eagerConn {
	t.Helper()
	c, err := net.Dial("tcp", proxyAddr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return &eagerConn{
		Conn:    c,
		t:       t,
		connect: fmt.Sprintf("CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target),
		br:      bufio.NewReader(c),
	}
}

func (c *eagerConn) Write(b []byte) (int, error) {
	if c.wrote {
		return c.Conn.Write(b)
	}
	c.wrote = true
	if _, err := c.Conn.Write(append([]byte(c.connect), b...)); err != nil {
		return 0, err
	}
	return len(b), nil
}

func (c *eagerConn) Read(b []byte) (int, error) {
	if !c.read {
		c.read = true
		resp, err := http.ReadResponse(c.br, &http.Request{Method: http.MethodConnect})
		if err != nil {
			return 0, err
		}
		if resp.StatusCode != http.StatusOK {
			return 0, fmt.Errorf("connect: %s", resp.Status)
		}
	}
	return c.br.Read(b)
}

func TestInterceptWithEarlyClientHello(t *testing.T) {
	ca, _ := newTestCA(t)
	h := &recorder{}
	_, addr, _ := startProxy(t, Options{
		CA: ca, Intercept: map[string]http.Handler{"api.openai.com": h},
	})
	conn := newEagerConn(t, addr, "api.openai.com:443")
	tc := tls.Client(conn, &tls.Config{ServerName: "api.openai.com", RootCAs: roots(ca)})
	if _, err := io.WriteString(tc,
		"GET /v1/models HTTP/1.1\r\nHost: api.openai.com\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(tc), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if string(body) != "ok 1" {
		t.Errorf("body: got %q, want %q", body, "ok 1")
	}
}

func TestTunnelWithEarlyBytes(t *testing.T) {
	echo := echoServer(t)
	_, addr, _ := startProxy(t, Options{Tunnel: []string{echo}})
	conn := newEagerConn(t, addr, echo)
	// A hang guard: lost early bytes would otherwise block the read forever.
	_ = conn.SetReadDeadline(time.Now().Add(time.Minute))
	if _, err := io.WriteString(conn, "early"); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len("early"))
	if _, err := io.ReadFull(conn, got); err != nil {
		t.Fatal(err)
	}
	if string(got) != "early" {
		t.Errorf("echo: got %q, want %q", got, "early")
	}
}
