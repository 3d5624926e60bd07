package usage

import (
	"fmt"
	"io"
	"strings"
	"testing"
)

// chunkReader returns its chunks one Read at a time, as a network
// connection would deliver them, then io.EOF.
type chunkReader struct {
	chunks [][]byte
	closed bool
}

func newChunkReader(chunks ...string) *chunkReader {
	r := &chunkReader{}
	for _, c := range chunks {
		r.chunks = append(r.chunks, []byte(c))
	}
	return r
}

// An empty chunk is a read of 0 bytes and no error, which io.Reader
// allows.
func (r *chunkReader) Read(p []byte) (int, error) {
	if len(r.chunks) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.chunks[0])
	r.chunks[0] = r.chunks[0][n:]
	if len(r.chunks[0]) == 0 {
		r.chunks = r.chunks[1:]
	}
	return n, nil
}

func (r *chunkReader) Close() error {
	r.closed = true
	return nil
}

// splitEvery cuts s into pieces of n bytes.
func splitEvery(s string, n int) []string {
	var out []string
	for len(s) > n {
		out = append(out, s[:n])
		s = s[n:]
	}
	return append(out, s)
}

// readBody reads a whole Body and closes it.
func readBody(t *testing.T, b *Body) string {
	t.Helper()
	got, err := io.ReadAll(b)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("close body: %v", err)
	}
	return string(got)
}

// meterChunks writes chunks to a new stream Meter and closes it.
func meterChunks(opts Options, chunks ...string) Result {
	m := NewMeter(opts)
	for _, c := range chunks {
		_, _ = m.Write([]byte(c))
	}
	_ = m.Close()
	return m.Result()
}

// chatStream builds an OpenAI chat completions stream with n content
// chunks and, when withUsage, the usage-only chunk, using eol as the line
// end. It returns the stream and the usage chunk's event (with its blank
// line), so a test can remove it.
func chatStream(n int, withUsage bool, eol string) (stream, usageEvent string) {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, `data: {"id":"chatcmpl-1","object":"chat.completion.chunk",`+
			`"created":1700000000,"model":"gpt-4o-mini","choices":[{"index":0,`+
			`"delta":{"content":"word %d "},"finish_reason":null}],"usage":null}`+
			"%s%s", i, eol, eol)
	}
	if withUsage {
		usageEvent = `data: {"id":"chatcmpl-1","object":"chat.completion.chunk",` +
			`"created":1700000000,"model":"gpt-4o-mini","choices":[],` +
			`"usage":{"prompt_tokens":5,"completion_tokens":7,` +
			`"total_tokens":12}}` + eol + eol
		b.WriteString(usageEvent)
	}
	b.WriteString("data: [DONE]" + eol + eol)
	return b.String(), usageEvent
}

// wantUsage fails the test unless got has the C1 usage: 5 + 7 = 12.
func wantUsage(t *testing.T, got Result, model string) {
	t.Helper()
	want := Usage{Model: model, Prompt: 5, Completion: 7, Total: 12, Found: true}
	if got.Usage != want {
		t.Errorf("usage: got %+v, want %+v", got.Usage, want)
	}
	if got.Failures != 0 {
		t.Errorf("failures: got %d (%v), want 0", got.Failures, got.Err)
	}
}
