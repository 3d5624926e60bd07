package egress

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/egress/keys"
)

// gzipped compresses s.
func gzipped(t *testing.T, s string) []byte {
	t.Helper()
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	if _, err := io.WriteString(zw, s); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// identity asks the egress for an uncompressed answer, so that the test
// client decodes nothing itself.
var identity = http.Header{"Accept-Encoding": {"identity"}}

// C10: an error answer compressed with gzip that echoes the key reaches
// the app decoded and redacted, on the retry path and the last attempt;
// its quota error still disables the key.
func TestCompressedErrorAnswerRedacted(t *testing.T) {
	t.Parallel()
	up, seen := newUpstream(t, func(w http.ResponseWriter, _ *http.Request, s seenRequest) {
		key := bearerKey(s.Header)
		msg, _ := json.Marshal(openAIError("You exceeded your current quota, key "+key,
			"insufficient_quota", "insufficient_quota"))
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Encoding", "gzip")
		w.WriteHeader(429)
		_, _ = w.Write(gzipped(t, string(msg)))
	})
	e := newEnv(t, up.URL, 2, nil)
	resp, body := e.do("POST", "/v1/chat/completions", chatBody, identity)
	if resp.StatusCode != 429 || len(seen.all()) != 2 {
		t.Fatalf("got %d after %d attempts, want the second key's 429", resp.StatusCode,
			len(seen.all()))
	}
	if enc := resp.Header.Get("Content-Encoding"); enc != "" {
		t.Errorf("Content-Encoding %q, want none", enc)
	}
	if !strings.Contains(body, "exceeded your current quota") ||
		!strings.Contains(body, redactMark) {
		t.Errorf("body %q: want the upstream's message, decoded and redacted", body)
	}
	if run, ok := hasKeyRun(body); ok {
		t.Errorf("the app got key characters %q", run)
	}
	var exhausted int
	for _, ev := range e.events.all() {
		if ev.Kind == keys.EventExhausted {
			exhausted++
		}
	}
	if exhausted != 2 {
		t.Errorf("events %v, want both keys exhausted (the quota read from the gzip body)",
			e.events.all())
	}
	e.wait()
}

// C10: a 2xx JSON answer that echoes the key reaches the app with the
// key masked, at the same length (Content-Length holds); the usage is
// still read.
func TestSuccessAnswerEchoRedacted(t *testing.T) {
	t.Parallel()
	up, _ := newUpstream(t, func(w http.ResponseWriter, _ *http.Request, s seenRequest) {
		a := chatAnswer(3, 4)
		a["echo"] = "your key is " + bearerKey(s.Header)
		b, _ := json.Marshal(a)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(len(b)))
		_, _ = w.Write(b)
	})
	e := newEnv(t, up.URL, 1, nil)
	resp, body := e.do("POST", "/v1/chat/completions", chatBody, nil)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if strings.Contains(body, testKeys[0]) || !strings.Contains(body, redactMark) {
		t.Errorf("body %q: want the key masked", body)
	}
	if resp.ContentLength != int64(len(body)) || !json.Valid([]byte(body)) {
		t.Errorf("Content-Length %d for %d bytes, valid JSON %v", resp.ContentLength, len(body),
			json.Valid([]byte(body)))
	}
	e.wait()
	if rec := e.sink.only(t); rec.TotalTokens != 7 || !rec.UsageKnown {
		t.Errorf("record %+v, want 7 tokens", rec)
	}
}

// C10: a key echoed in an event stream, split across upstream writes, is
// masked; the complete event before it is not held back.
func TestStreamEchoRedacted(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	up, _ := newUpstream(t, func(w http.ResponseWriter, r *http.Request, s seenRequest) {
		key := bearerKey(s.Header)
		echo := `data: {"id":"c","object":"chat.completion.chunk","model":"m",` +
			`"choices":[{"index":0,"delta":{"content":"` + key + `"}}]}` + "\n\n"
		cut := strings.Index(echo, key) + 10
		startStream(w)
		_, _ = io.WriteString(w, sseChunk+echo[:cut])
		flush(w)
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		_, _ = io.WriteString(w, echo[cut:]+sseUsage+sseDone)
	})
	e := newEnv(t, up.URL, 1, nil)
	resp, _ := e.openStream(`{"model":"m","stream":true,"stream_options":{"include_usage":true}}`,
		nil)
	br := bufio.NewReader(resp.Body)
	if got := readUntil(t, br, "\n\n"); got != sseChunk {
		t.Fatalf("first event %q, want %q", got, sseChunk)
	}
	close(release)
	rest, err := io.ReadAll(br)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(rest), testKeys[0]) {
		t.Errorf("the app got the key in %q", rest)
	}
	if !strings.Contains(string(rest), redactMark) || !strings.HasSuffix(string(rest), sseDone) {
		t.Errorf("rest %q: want the key masked and the stream whole", rest)
	}
	e.wait()
	if rec := e.sink.only(t); rec.TotalTokens != 12 {
		t.Errorf("record %+v, want 12 tokens", rec)
	}
}

// A 2xx answer compressed despite "Accept-Encoding: identity" is decoded
// for metering and redaction; one in an encoding the egress cannot read
// is replaced by the egress's own error.
func TestCompressedSuccessAnswer(t *testing.T) {
	t.Parallel()
	up, _ := newUpstream(t, func(w http.ResponseWriter, r *http.Request, s seenRequest) {
		a := chatAnswer(3, 4)
		a["echo"] = bearerKey(s.Header)
		b, _ := json.Marshal(a)
		w.Header().Set("Content-Type", "application/json")
		if r.URL.Path == "/v1/chat/completions" {
			w.Header().Set("Content-Encoding", "gzip")
			_, _ = w.Write(gzipped(t, string(b)))
			return
		}
		w.Header().Set("Content-Encoding", "br")
		_, _ = w.Write(b)
	})
	e := newEnv(t, up.URL, 1, nil)
	resp, body := e.do("POST", "/v1/chat/completions", chatBody, identity)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Encoding") != "" {
		t.Fatalf("got %d (encoding %q), want 200 decoded", resp.StatusCode,
			resp.Header.Get("Content-Encoding"))
	}
	if strings.Contains(body, testKeys[0]) || !json.Valid([]byte(body)) {
		t.Errorf("body %q: want JSON with the key masked", body)
	}
	resp, body = e.do("POST", "/v1/responses", `{"model":"m","input":"x"}`, identity)
	if resp.StatusCode != 502 || decodeError(t, body).Error.Code != "upstream_error" {
		t.Errorf("br: got %d %s, want 502 upstream_error", resp.StatusCode, body)
	}
	e.wait()
	recs := e.sink.records()
	if len(recs) != 2 || recs[0].TotalTokens != 7 || !recs[0].UsageKnown {
		t.Errorf("records %+v: want the gzip answer's 7 tokens read", recs)
	}
	if len(recs) == 2 && recs[1].Success {
		t.Errorf("record %+v: the unreadable answer is no success", recs[1])
	}
}

func TestStreamCut(t *testing.T) {
	t.Parallel()
	key := testKeys[0]
	mask := maskFor(len(key))
	tests := []struct {
		name  string
		reads []string
		want  []string // what each read releases, then the flush
	}{
		{"nothing", []string{"abc", "def"}, []string{"abc", "def", ""}},
		{"whole key", []string{"x" + key + "y"}, []string{"x" + mask + "y", ""}},
		{"split key", []string{"x" + key[:5], key[5:] + "y"},
			[]string{"x", mask + "y", ""}},
		{"tail not a key", []string{"x" + key[:5], "zz"}, []string{"x", key[:5] + "zz", ""}},
		{"prefix at the end", []string{"a" + key[:len(key)-1]},
			[]string{"a", key[:len(key)-1]}},
		{"event ends", []string{"data: s\n\n"}, []string{"data: s\n\n", ""}},
		{"twice", []string{key + key}, []string{mask + mask, ""}},
	}
	for _, tt := range tests {
		c := newStreamCut([]string{key, "short"})
		var got []string
		for _, r := range tt.reads {
			got = append(got, string(c.next([]byte(r))))
		}
		got = append(got, string(c.flush()))
		if fmt.Sprint(got) != fmt.Sprint(tt.want) {
			t.Errorf("%s: got %q, want %q", tt.name, got, tt.want)
		}
	}
}

// BenchmarkStreamCut measures the cut on answer reads without a key.
func BenchmarkStreamCut(b *testing.B) {
	chunk := bytes.Repeat([]byte(sseChunk), 32<<10/len(sseChunk))
	c := newStreamCut(testKeys[:2])
	buf := make([]byte, len(chunk))
	b.SetBytes(int64(len(chunk)))
	for b.Loop() {
		copy(buf, chunk)
		_ = c.next(buf)
	}
}

// FuzzStreamCut: however an answer is split into reads, the app gets
// the same bytes as the whole answer masked at once, and no key.
func FuzzStreamCut(f *testing.F) {
	f.Add("data: x\n\n", 3, 9)
	f.Add("a"+testKeys[0]+"b"+testKeys[1][:20], 5, 30)
	f.Add(testKeys[0]+testKeys[0], 1, 44)
	f.Fuzz(func(t *testing.T, s string, a, b int) {
		in := s + testKeys[0][:clamp(a, len(testKeys[0]))] + testKeys[0] + s
		a, b = clamp(a, len(in)), clamp(b, len(in))
		if a > b {
			a, b = b, a
		}
		want := []byte(in)
		for _, k := range testKeys[:2] {
			maskAll(want, []byte(k))
		}
		c := newStreamCut(testKeys[:2])
		var got []byte
		for _, part := range []string{in[:a], in[a:b], in[b:]} {
			got = append(got, c.next([]byte(part))...)
			if bytes.ContainsAny(c.held, "\r\n") || len(c.held) >= len(testKeys[0]) {
				t.Fatalf("held %q: a line end, or a whole key's length", c.held)
			}
		}
		got = append(got, c.flush()...)
		if !bytes.Equal(got, want) {
			t.Fatalf("split at %d, %d: got %q, want %q", a, b, got, want)
		}
		if bytes.Contains(got, []byte(testKeys[0])) {
			t.Fatalf("the key survived in %q", got)
		}
	})
}

// An empty answer labelled gzip (HEAD, 204) is empty, not broken.
func TestDecodeEmptyAnswer(t *testing.T) {
	t.Parallel()
	resp := &http.Response{
		Header: http.Header{"Content-Encoding": {"gzip"}},
		Body:   io.NopCloser(strings.NewReader("")),
	}
	if err := decodeAnswer(resp); err != nil {
		t.Fatal(err)
	}
	if b, err := io.ReadAll(resp.Body); err != nil || len(b) != 0 {
		t.Errorf("got %q, %v; want an empty body", b, err)
	}
	resp = &http.Response{
		Header: http.Header{"Content-Encoding": {"gzip"}},
		Body: io.NopCloser(io.MultiReader(strings.NewReader("\x1f"),
			iotest.ErrReader(io.ErrUnexpectedEOF))),
	}
	if err := decodeAnswer(resp); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(resp.Body); err == nil {
		t.Errorf("a cut gzip body read cleanly")
	}
}
