package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/e2etest"
)

// sseEvent is one server-sent event and when the client had it whole.
type sseEvent struct {
	name string
	data string
	at   time.Time
}

// sseStream is an open event stream.
type sseStream struct {
	resp *http.Response
	rd   *bufio.Reader
}

// openStream sends req (a GET) and returns the open stream once the
// status line is in; a status other than 200 is an error.
func openStream(ctx context.Context, p *e2etest.Platform, req e2etest.Request) (*sseStream, error) {
	hr, err := http.NewRequestWithContext(ctx, req.Method, p.Base+req.Path, nil)
	if err != nil {
		return nil, err
	}
	for k, v := range req.Header {
		hr.Header[k] = v
	}
	hr.Header.Set("Accept", "text/event-stream")
	if req.WithToken {
		hr.Header.Set(e2etest.TokenHeader, p.Token)
	}
	// A client without the overall timeout: the stream's length is the
	// test's to decide, and ctx bounds it.
	hc := &http.Client{Transport: p.HTTP.Transport, CheckRedirect: p.HTTP.CheckRedirect}
	resp, err := hc.Do(hr)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		return nil, fmt.Errorf("GET %s: status %d: %s", req.Path, resp.StatusCode, b)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		resp.Body.Close()
		return nil, fmt.Errorf("GET %s: Content-Type %q, want text/event-stream", req.Path, ct)
	}
	return &sseStream{resp: resp, rd: bufio.NewReader(resp.Body)}, nil
}

// next reads one event; io.EOF at a clean end of the stream.
func (s *sseStream) next() (sseEvent, error) {
	var ev sseEvent
	seen := false
	for {
		line, err := s.rd.ReadString('\n')
		if err != nil {
			if err == io.EOF && !seen && line == "" {
				return ev, io.EOF
			}
			return ev, fmt.Errorf("event cut short: %w", err)
		}
		line = strings.TrimRight(line, "\r\n")
		switch {
		case line == "":
			if seen {
				ev.at = time.Now()
				return ev, nil
			}
		case strings.HasPrefix(line, "event:"):
			ev.name, seen = strings.TrimSpace(line[len("event:"):]), true
		case strings.HasPrefix(line, "data:"):
			ev.data, seen = strings.TrimSpace(line[len("data:"):]), true
		default:
			seen = true // id: and comments
		}
	}
}

// all reads the rest of the stream.
func (s *sseStream) all() ([]sseEvent, error) {
	var out []sseEvent
	for {
		ev, err := s.next()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, ev)
	}
}

func (s *sseStream) close() { s.resp.Body.Close() }

// wsEcho opens a WebSocket at path on addr with a raw RFC 6455 handshake,
// sends one masked text message and returns what the server echoed, after
// a clean close handshake.
func wsEcho(addr, path, msg string) (string, error) {
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(15 * time.Second))

	// 1. The handshake: a random key, and the accept value it implies.
	nonce := make([]byte, 16)
	_, _ = rand.Read(nonce)
	key := base64.StdEncoding.EncodeToString(nonce)
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\n"+
		"Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"+
		"Sec-WebSocket-Version: 13\r\n\r\n", path, addr, key)
	rd := bufio.NewReader(conn)
	resp, err := http.ReadResponse(rd, nil)
	if err != nil {
		return "", fmt.Errorf("handshake: %w", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		return "", fmt.Errorf("handshake: status %d, want 101", resp.StatusCode)
	}
	sum := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	if got, want := resp.Header.Get("Sec-WebSocket-Accept"),
		base64.StdEncoding.EncodeToString(sum[:]); got != want {
		return "", fmt.Errorf("Sec-WebSocket-Accept %q, want %q", got, want)
	}

	// 2. One text message out, its echo back.
	if _, err := conn.Write(wsFrame(0x1, []byte(msg))); err != nil {
		return "", err
	}
	op, payload, err := wsRead(rd)
	if err != nil {
		return "", err
	}
	if op != 0x1 {
		return "", fmt.Errorf("echo opcode %#x, want text", op)
	}

	// 3. Close: the server answers with a close frame.
	if _, err := conn.Write(wsFrame(0x8, []byte{0x03, 0xe8})); err != nil {
		return "", err
	}
	if op, _, err := wsRead(rd); err != nil || op != 0x8 {
		return "", fmt.Errorf("close answer: opcode %#x, %v", op, err)
	}
	return string(payload), nil
}

// wsFrame builds one final client frame (masked, as clients must).
func wsFrame(op byte, payload []byte) []byte {
	var b bytes.Buffer
	b.WriteByte(0x80 | op)
	switch n := len(payload); {
	case n < 126:
		b.WriteByte(0x80 | byte(n))
	default:
		b.WriteByte(0x80 | 126)
		_ = binary.Write(&b, binary.BigEndian, uint16(n))
	}
	mask := make([]byte, 4)
	_, _ = rand.Read(mask)
	b.Write(mask)
	for i, c := range payload {
		b.WriteByte(c ^ mask[i%4])
	}
	return b.Bytes()
}

// wsRead reads one unmasked server frame.
func wsRead(rd *bufio.Reader) (op byte, payload []byte, err error) {
	var h [2]byte
	if _, err := io.ReadFull(rd, h[:]); err != nil {
		return 0, nil, fmt.Errorf("read frame: %w", err)
	}
	if h[1]&0x80 != 0 {
		return 0, nil, fmt.Errorf("server frame is masked")
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var l uint16
		err = binary.Read(rd, binary.BigEndian, &l)
		n = uint64(l)
	case 127:
		err = binary.Read(rd, binary.BigEndian, &n)
	}
	if err != nil || n > 1<<20 {
		return 0, nil, fmt.Errorf("frame length %d: %v", n, err)
	}
	payload = make([]byte, n)
	if _, err := io.ReadFull(rd, payload); err != nil {
		return 0, nil, fmt.Errorf("read payload: %w", err)
	}
	return h[0] & 0x0f, payload, nil
}
