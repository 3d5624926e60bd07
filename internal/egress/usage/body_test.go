package usage

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestBodyPassThroughIsExact(t *testing.T) {
	t.Parallel()
	for _, eol := range []string{"\n", "\r\n", "\r"} {
		stream, _ := chatStream(20, true, eol)
		for _, size := range []int{1, 2, 3, 7, 64, 1 << 20} {
			for _, strip := range []bool{false, true} {
				name := fmt.Sprintf("eol %q size %d strip %v", eol, size, strip)
				src := newChunkReader(splitEvery(stream, size)...)
				b := NewBody(src, Options{Stream: true, StripUsageChunk: strip})
				got := readBody(t, b)

				want := stream
				if strip {
					_, ev := chatStream(0, true, eol)
					want = strings.Replace(stream, ev, "", 1)
				}
				if got != want {
					t.Errorf("%s: got %q, want %q", name, got, want)
				}
				r := b.Result()
				wantUsage(t, r, "gpt-4o-mini")
				if !r.EOF || !r.Done || r.Events != 22 || !src.closed {
					t.Errorf("%s: got %+v, want EOF, done, 22 events, closed", name, r)
				}
				if wantStripped := int64(map[bool]int{true: 1}[strip]); r.Stripped != wantStripped {
					t.Errorf("%s: stripped %d, want %d", name, r.Stripped, wantStripped)
				}
			}
		}
	}
}

func TestBodyStripKeepsOtherEventsWhole(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		chunks []string
		want   string
	}{
		{"crlf split between cr and lf of the usage event",
			[]string{"data: 1\r\n\r\n", c1Head + c1Tail + "\r\n\r", "\ndata: [DONE]\r\n\r\n"},
			"data: 1\r\n\r\ndata: [DONE]\r\n\r\n"},
		{"empty read between cr and lf of the usage event",
			[]string{"data: 1\r\n\r\n", c1Head + c1Tail + "\r\n\r", "", "",
				"\ndata: [DONE]\r\n\r\n"},
			"data: 1\r\n\r\ndata: [DONE]\r\n\r\n"},
		{"crlf split between cr and lf before the usage event",
			[]string{"data: 1\r\n\r", "\n" + c1Head + c1Tail + "\r\n\r\n", "data: [DONE]\r\n\r\n"},
			"data: 1\r\n\r\ndata: [DONE]\r\n\r\n"},
		{"comments and blank lines around the usage event",
			[]string{": ping\n\n", c1Head, c1Tail + "\n\n\n: ping\n\ndata: [DONE]\n\n"},
			": ping\n\n\n: ping\n\ndata: [DONE]\n\n"},
		{"usage chunk with choices is kept",
			[]string{`data: {"choices":[{"index":0}],"usage":{"total_tokens":12}}` + "\n\n"},
			`data: {"choices":[{"index":0}],"usage":{"total_tokens":12}}` + "\n\n"},
		{"unterminated last event forwarded",
			[]string{"data: 1\n\n", "data: 2\n"},
			"data: 1\n\ndata: 2\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			whole := strings.Join(tt.chunks, "")
			for _, chunks := range [][]string{tt.chunks, {whole}, splitEvery(whole, 1)} {
				b := NewBody(newChunkReader(chunks...),
					Options{Stream: true, StripUsageChunk: true})
				if got := readBody(t, b); got != tt.want {
					t.Errorf("got %q, want %q", got, tt.want)
				}
				if r := b.Result(); r.Usage.Total != 12 && strings.Contains(whole, "usage") {
					t.Errorf("usage: got %+v, want total 12", r.Usage)
				}
			}
		})
	}
}

func TestBodyOversizeEventForwarded(t *testing.T) {
	t.Parallel()
	big := "data: " + strings.Repeat("x", 1000) + "\n\n"
	stream := "data: {}\n\n" + big + c1Head + c1Tail + "\n\ndata: [DONE]\n\n"
	want := "data: {}\n\n" + big + "data: [DONE]\n\n"
	for _, size := range []int{1, 10, 100, 10000} {
		b := NewBody(newChunkReader(splitEvery(stream, size)...),
			Options{Stream: true, StripUsageChunk: true, MaxEventBytes: 128})
		if got := readBody(t, b); got != want {
			t.Errorf("size %d: got %q, want %q", size, got, want)
		}
		r := b.Result()
		if r.Oversize != 1 || r.Failures != 1 || r.Usage.Total != 12 {
			t.Errorf("size %d: got %+v, want 1 oversize, 1 failure, total 12", size, r)
		}
		if cap(b.held) > 3*128+2 {
			t.Errorf("size %d: held grew to %d", size, cap(b.held))
		}
	}
}

// TestBodyDoesNotHoldBack checks, with an upstream that stops in the
// middle of an event, that what can be forwarded already was.
func TestBodyDoesNotHoldBack(t *testing.T) {
	t.Parallel()
	first := "data: {\"choices\":[{\"index\":0}]}\n\n"
	half := "data: {\"cho"
	tests := []struct {
		strip bool
		want  string // readable before the upstream goes on
	}{
		{false, first + half},
		{true, first},
	}
	for _, tt := range tests {
		pr, pw := io.Pipe()
		go func() {
			_, _ = io.WriteString(pw, first+half)
			_, _ = io.WriteString(pw, "ices\":[]}\n\n")
			_ = pw.Close()
		}()
		b := NewBody(pr, Options{Stream: true, StripUsageChunk: tt.strip})
		got := make([]byte, len(tt.want))
		if _, err := io.ReadFull(b, got); err != nil {
			t.Fatalf("strip %v: %v", tt.strip, err)
		}
		if string(got) != tt.want {
			t.Errorf("strip %v: got %q, want %q", tt.strip, got, tt.want)
		}
		rest := readBody(t, b)
		if all := string(got) + rest; all != first+half+"ices\":[]}\n\n" {
			t.Errorf("strip %v: got %q in all", tt.strip, all)
		}
	}
}

func TestBodyDrain(t *testing.T) {
	t.Parallel()
	stream, _ := chatStream(50, true, "\n")
	for _, strip := range []bool{false, true} {
		src := newChunkReader(splitEvery(stream, 33)...)
		b := NewBody(src, Options{Stream: true, StripUsageChunk: strip})
		head := make([]byte, 100)
		if _, err := io.ReadFull(b, head); err != nil {
			t.Fatal(err)
		}
		// The app went away: read the rest without delivering it.
		n, err := b.Drain(1 << 20)
		if err != nil {
			t.Fatalf("strip %v: drain: %v", strip, err)
		}
		if want := int64(len(stream)) - 100; !strip && n != want {
			t.Errorf("drained %d bytes, want %d", n, want)
		}
		_ = b.Close()
		wantUsage(t, b.Result(), "gpt-4o-mini")

		// With a limit below the rest, the drain stops and says so.
		b = NewBody(newChunkReader(splitEvery(stream, 33)...),
			Options{Stream: true, StripUsageChunk: strip})
		n, err = b.Drain(500)
		if !errors.Is(err, ErrTooLarge) || n != 500 {
			t.Errorf("strip %v: limited drain got %d, %v; want 500, ErrTooLarge",
				strip, n, err)
		}
		_ = b.Close()
		if r := b.Result(); !r.Truncated || r.Usage.Found {
			t.Errorf("strip %v: got %+v, want truncated and no usage", strip, r)
		}
	}
}

// fakeUpstream streams like OpenAI's chat completions: the usage-only
// chunk is sent only when the request asked for it.
func fakeUpstream(t *testing.T) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Stream        bool `json:"stream"`
			StreamOptions *struct {
				IncludeUsage bool `json:"include_usage"`
			} `json:"stream_options"`
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil || !req.Stream {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		asked := req.StreamOptions != nil && req.StreamOptions.IncludeUsage
		stream, _ := chatStream(3, asked, "\n")
		w.Header().Set("Content-Type", "text/event-stream")
		for _, ev := range strings.SplitAfter(stream, "\n\n") {
			_, _ = io.WriteString(w, ev)
			w.(http.Flusher).Flush()
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestC2UsageAskedAndStripped(t *testing.T) {
	t.Parallel()
	srv := fakeUpstream(t)
	const msgs = `"messages":[{"role":"user","content":"hi"}]`
	tests := []struct {
		name      string
		body      string
		wantAsked bool
	}{
		{"no stream_options",
			`{"model":"gpt-4o-mini","stream":true,` + msgs + `}`, false},
		{"include_usage false",
			`{"model":"gpt-4o-mini","stream":true,` + msgs +
				`,"stream_options":{"include_usage":false}}`, false},
		{"include_usage true",
			`{"model":"gpt-4o-mini","stream":true,` + msgs +
				`,"stream_options":{"include_usage":true}}`, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			body, asked, err := PrepareRequest([]byte(tt.body))
			if err != nil || asked != tt.wantAsked {
				t.Fatalf("PrepareRequest: got asked %v, %v; want %v", asked, err, tt.wantAsked)
			}
			resp, err := http.Post(srv.URL, "application/json", bytes.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			b := NewBody(resp.Body, Options{Stream: true, StripUsageChunk: !asked})
			got := readBody(t, b)

			// The provider's counts are recorded in every variant.
			r := b.Result()
			wantUsage(t, r, "gpt-4o-mini")

			// The app sees the usage chunk only when it asked for it.
			withUsage, usageEvent := chatStream(3, true, "\n")
			want := withUsage
			if !tt.wantAsked {
				want = strings.Replace(withUsage, usageEvent, "", 1)
			}
			if got != want {
				t.Errorf("app got %q, want %q", got, want)
			}
		})
	}
}

// TestBodyCloseWhileReading closes a Body whose upstream read is
// blocked, as a drain deadline would, while another goroutine reads
// the Result.
func TestBodyCloseWhileReading(t *testing.T) {
	t.Parallel()
	for _, strip := range []bool{false, true} {
		pr, pw := io.Pipe()
		b := NewBody(pr, Options{Stream: true, StripUsageChunk: strip})
		done := make(chan error)
		go func() {
			_, err := b.Drain(1 << 20)
			done <- err
		}()
		_, _ = io.WriteString(pw, "data: {\"model\":\"m\",\"choices\":[]}\n\ndata: {\"cho")
		_ = b.Result()
		if err := b.Close(); err != nil {
			t.Fatalf("close: %v", err)
		}
		if err := <-done; !errors.Is(err, io.ErrClosedPipe) {
			t.Errorf("strip %v: drain got %v, want a closed pipe error", strip, err)
		}
		r := b.Result()
		if !r.Truncated || r.EOF || r.Usage.Model != "m" || r.Events != 1 {
			t.Errorf("strip %v: got %+v, want truncated, no EOF, model m, 1 event", strip, r)
		}
	}
}
