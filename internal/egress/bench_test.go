package egress

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/egress/keys"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/egress/outbox"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/fakeopenai"
)

// nopSink keeps nothing; the benchmarks measure the handler.
type nopSink struct{}

func (nopSink) Enqueue(context.Context, outbox.Record) error { return nil }
func (nopSink) Full() bool                                   { return false }

// benchTargets returns the fake's URL (direct) and an egress in front of
// it.
func benchTargets(b *testing.B) (direct, egress string) {
	b.Helper()
	fake := fakeopenai.New(fakeopenai.Options{Keys: testKeys[:1], Words: 20})
	up := httptest.NewServer(fake.Handler())
	b.Cleanup(up.Close)
	pool, err := keys.NewStatic(
		[]keys.StaticKey{{Source: "bench", Key: keys.NewSecret(testKeys[0])}}, keys.Options{})
	if err != nil {
		b.Fatal(err)
	}
	u, err := url.Parse(up.URL)
	if err != nil {
		b.Fatal(err)
	}
	h, err := New(Options{Upstream: u, Pool: pool, Sink: nopSink{}})
	if err != nil {
		b.Fatal(err)
	}
	eg := httptest.NewServer(h)
	b.Cleanup(eg.Close)
	b.Cleanup(func() { _ = h.Shutdown(context.Background()) })
	return up.URL, eg.URL
}

func benchCall(b *testing.B, base, body string, firstEvent bool) {
	b.Helper()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	b.Cleanup(client.CloseIdleConnections)
	b.ResetTimer()
	for b.Loop() {
		req, err := http.NewRequestWithContext(b.Context(), "POST",
			base+"/v1/chat/completions", strings.NewReader(body))
		if err != nil {
			b.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+testKeys[0])
		resp, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		if firstEvent {
			if _, err := bufio.NewReader(resp.Body).ReadString('\n'); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		if firstEvent {
			b.StartTimer()
		}
	}
}

const (
	benchJSON   = `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"say hi"}]}`
	benchStream = `{"model":"gpt-4o-mini","stream":true,` +
		`"messages":[{"role":"user","content":"say hi"}]}`
)

// BenchmarkCall compares one JSON chat completion direct to the fake
// upstream with the same call through the egress.
func BenchmarkCall(b *testing.B) {
	direct, egress := benchTargets(b)
	b.Run("direct", func(b *testing.B) { benchCall(b, direct, benchJSON, false) })
	b.Run("egress", func(b *testing.B) { benchCall(b, egress, benchJSON, false) })
}

// BenchmarkFirstEvent compares the time to a stream's first event.
func BenchmarkFirstEvent(b *testing.B) {
	direct, egress := benchTargets(b)
	b.Run("direct", func(b *testing.B) { benchCall(b, direct, benchStream, true) })
	b.Run("egress", func(b *testing.B) { benchCall(b, egress, benchStream, true) })
}
