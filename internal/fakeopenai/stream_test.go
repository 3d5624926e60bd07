package fakeopenai

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// opLog is a ResponseWriter that logs every Write and Flush in order.
type opLog struct {
	mu     sync.Mutex
	header http.Header
	status int
	ops    []string // "W:<bytes>" or "F"
	hijack net.Conn
}

func newOpLog() *opLog { return &opLog{header: http.Header{}} }

func (l *opLog) Header() http.Header { return l.header }

func (l *opLog) WriteHeader(code int) { l.status = code }

func (l *opLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ops = append(l.ops, "W:"+string(p))
	return len(p), nil
}

func (l *opLog) Flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ops = append(l.ops, "F")
}

func (l *opLog) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c1, c2 := net.Pipe()
	l.hijack = c2
	return c1, bufio.NewReadWriter(bufio.NewReader(c1), bufio.NewWriter(c1)), nil
}

// writes returns the logged writes, each followed by a flush, and fails
// the test when a write is not flushed at once.
func (l *opLog) writes(t *testing.T) []string {
	t.Helper()
	var out []string
	for i, op := range l.ops {
		if op == "F" {
			continue
		}
		if i+1 >= len(l.ops) || l.ops[i+1] != "F" {
			t.Fatalf("write %q is not followed by a flush: %q", op, l.ops)
		}
		out = append(out, strings.TrimPrefix(op, "W:"))
	}
	return out
}

// serveLogged runs a streamed chat of 2 words through an opLog.
func serveLogged(t *testing.T, opts Options, body string, hdr ...string) *opLog {
	t.Helper()
	opts.Keys = []string{testKey}
	if opts.Words == 0 {
		opts.Words = 2
	}
	s := New(opts)
	req := httptest.NewRequestWithContext(t.Context(), http.MethodPost, "/v1/chat/completions",
		strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+testKey)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	l := newOpLog()
	s.Handler().ServeHTTP(l, req)
	return l
}

const usageStream = `{"model":"m","stream":true,"stream_options":{"include_usage":true},` +
	`"messages":[{"role":"user","content":"a b c"}]}`

func TestStreamOneWritePerEvent(t *testing.T) {
	t.Parallel()
	l := serveLogged(t, Options{}, usageStream)
	got := l.writes(t)
	// headers flush (no write), then 2 words: role, 2 content, finish, usage, [DONE].
	if len(got) != ChatStreamEvents(2, true) {
		t.Fatalf("writes: got %d, want %d: %q", len(got), ChatStreamEvents(2, true), got)
	}
	for _, w := range got {
		if !strings.HasPrefix(w, "data: ") || !strings.HasSuffix(w, "}\n\n") &&
			w != "data: [DONE]\n\n" {
			t.Errorf("write is not one LF event: %q", w)
		}
	}
}

func TestStreamSplit(t *testing.T) {
	t.Parallel()
	usagePrefix := `data: {"id":"chatcmpl-fake1","object":"chat.completion.chunk"`
	tests := []struct {
		name  string
		hdr   []string
		event int    // index of the split event among the events
		want0 string // the first part, when known
		want1 string // the second part, when known
	}{
		{
			name:  "after a marker in the usage chunk (C1)",
			hdr:   []string{HeaderSplitEvent, "-2", HeaderSplitAfter, `"prompt_tokens":4,`},
			event: 4,
			want1: `"completion_tokens":2,"total_tokens":6,`,
		},
		{
			name:  "inside data:",
			hdr:   []string{HeaderSplitEvent, "1", HeaderSplitAt, "3"},
			event: 0, want0: "dat", want1: "a: {",
		},
		{
			name:  "between the two line ends",
			hdr:   []string{HeaderSplitEvent, "-1", HeaderSplitAt, "-1"},
			event: 5, want0: "data: [DONE]\n", want1: "\n",
		},
		{
			name:  "between CR and LF",
			hdr:   []string{HeaderCRLF, "1", HeaderSplitEvent, "-1", HeaderSplitAt, "-1"},
			event: 5, want0: "data: [DONE]\r\n\r", want1: "\n",
		},
		{
			name:  "marker absent: no split",
			hdr:   []string{HeaderSplitEvent, "-2", HeaderSplitAfter, `"nowhere"`},
			event: -1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			hdr := append([]string{HeaderSplitDelay, "1ms"}, tt.hdr...)
			got := serveLogged(t, Options{}, usageStream, hdr...).writes(t)
			total := ChatStreamEvents(2, true)
			if tt.event < 0 {
				if len(got) != total {
					t.Fatalf("writes: got %d, want %d (no split)", len(got), total)
				}
				return
			}
			if len(got) != total+1 {
				t.Fatalf("writes: got %d, want %d: %q", len(got), total+1, got)
			}
			p0, p1 := got[tt.event], got[tt.event+1]
			if tt.want0 != "" && p0 != tt.want0 {
				t.Errorf("first part: got %q, want %q", p0, tt.want0)
			}
			if !strings.HasPrefix(p1, tt.want1) {
				t.Errorf("second part: got %q, want it to start with %q", p1, tt.want1)
			}
			if tt.event == 4 && !strings.HasPrefix(p0, usagePrefix) {
				t.Errorf("split event is not the usage chunk: %q", p0)
			}
		})
	}
}

func TestStreamSplitEveryEvent(t *testing.T) {
	t.Parallel()
	got := serveLogged(t, Options{Stream: StreamControl{Split: Split{At: 2}}}, usageStream).
		writes(t)
	if len(got) != 2*ChatStreamEvents(2, true) {
		t.Fatalf("writes: got %d, want %d", len(got), 2*ChatStreamEvents(2, true))
	}
	for i := 0; i < len(got); i += 2 {
		if got[i] != "da" {
			t.Errorf("write %d: got %q, want %q", i, got[i], "da")
		}
	}
}

func TestStreamCRLF(t *testing.T) {
	t.Parallel()
	got := serveLogged(t, Options{}, usageStream, HeaderCRLF, "true").writes(t)
	for _, w := range got {
		if !strings.HasSuffix(w, "\r\n\r\n") || strings.Count(w, "\n") != 2 ||
			strings.Count(w, "\r\n") != 2 {
			t.Errorf("event is not CRLF-framed: %q", w)
		}
	}
}

func TestStreamResetRecorded(t *testing.T) {
	t.Parallel()
	l := serveLogged(t, Options{}, usageStream, HeaderResetAfter, "2")
	if got := l.writes(t); len(got) != 2 {
		t.Fatalf("writes before the reset: got %d, want 2", len(got))
	}
	if l.hijack == nil {
		t.Fatal("connection was not hijacked")
	}
	// The fake closed its end: the other end reads EOF.
	if _, err := l.hijack.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Errorf("hijacked conn: got %v, want EOF (closed)", err)
	}
}

func TestStreamResetOverNetwork(t *testing.T) {
	t.Parallel()
	_, ts := newTest(t, Options{Words: 10})
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost,
		ts.URL+"/v1/chat/completions", strings.NewReader(usageStream))
	req.Header.Set("Authorization", "Bearer "+testKey)
	req.Header.Set(HeaderResetAfter, "3")
	resp, err := ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil {
		t.Fatalf("read a whole body (%d bytes), want an error", len(b))
	}
	if n := bytes.Count(b, []byte("\n\n")); n != 3 {
		t.Errorf("events before the reset: got %d, want 3: %q", n, b)
	}
}

func TestStreamHold(t *testing.T) {
	t.Parallel()
	s, ts := newTest(t, Options{Words: 3})
	release := s.Hold()
	defer release()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost,
		ts.URL+"/v1/chat/completions", strings.NewReader(usageStream))
	req.Header.Set("Authorization", "Bearer "+testKey)
	resp, err := ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)

	// The first event arrives while the stream is held.
	first, err := br.ReadString('\n')
	if err != nil || !strings.Contains(first, `"role":"assistant"`) {
		t.Fatalf("first event: got %q, %v", first, err)
	}
	if _, err := br.ReadString('\n'); err != nil {
		t.Fatal(err)
	}

	// Nothing more comes until release.
	rest := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(br)
		rest <- b
	}()
	select {
	case b := <-rest:
		t.Fatalf("stream went on while held: %q", b)
	case <-time.After(50 * time.Millisecond):
	}
	release()
	b := <-rest
	if got, want := bytes.Count(b, []byte("\n\n")), ChatStreamEvents(3, true)-1; got != want {
		t.Errorf("events after release: got %d, want %d", got, want)
	}
}

func TestStreamEndlessStopsWithClient(t *testing.T) {
	t.Parallel()
	s, ts := newTest(t, Options{})
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost,
		ts.URL+"/v1/chat/completions", strings.NewReader(usageStream))
	req.Header.Set("Authorization", "Bearer "+testKey)
	req.Header.Set(HeaderEndless, "1")
	resp, err := ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	// Read well past the configured words, then leave.
	br := bufio.NewReader(resp.Body)
	for range 200 {
		if _, err := br.ReadString('\n'); err != nil {
			t.Fatalf("endless stream ended: %v", err)
		}
	}
	resp.Body.Close()
	ts.CloseClientConnections()
	// The handler returns once the client is gone (Close waits for it).
	ts.Close()
	if st := s.Requests()[0].Status; st != http.StatusOK {
		t.Errorf("status: got %d, want 200", st)
	}
}

func TestStreamControlOverride(t *testing.T) {
	t.Parallel()
	base := StreamControl{Delay: time.Second, CRLF: true, Split: Split{Event: 2, At: 5}}
	h := http.Header{}
	h.Set(HeaderDelay, "5ms")
	h.Set(HeaderFirstPause, "bad")
	h.Set(HeaderCRLF, "false")
	h.Set(HeaderSplitAfter, "x")
	h.Set(HeaderResetAfter, "4")
	got := base.override(h)
	want := StreamControl{
		Delay: 5 * time.Millisecond, ResetAfter: 4,
		Split: Split{Event: 2, At: 5, After: "x"},
	}
	if got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
}
