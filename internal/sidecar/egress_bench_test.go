//go:build unix

package sidecar_test

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/fakeopenai"
)

// The egress benchmarks compare one OpenAI call sent straight to a fake
// upstream on loopback with the same call through the whole sidecar
// (sidecar.Run: the egress listener, key pool, metering, the outbox and,
// with a budget, a durable reserve and settle in the bolt ledger). One
// client, one call at a time: ns/op is the latency of a call, and the
// difference between two rows is what the sidecar adds.

const benchUpstreamKey = "sk-bench-upstream-key-00112233445566778899"

const (
	benchChat       = `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"say hi"}]}`
	benchChatStream = `{"model":"gpt-4o-mini","stream":true,` +
		`"messages":[{"role":"user","content":"say hi"}]}`
)

// benchEgress starts a fake upstream and a sidecar whose egress calls it;
// it returns both base URLs. With budget, calls are charged to user 1.
func benchEgress(b *testing.B, budget bool) (direct, egress string) {
	b.Helper()
	fake := fakeopenai.New(fakeopenai.Options{Keys: []string{benchUpstreamKey}, Words: 20})
	up := httptest.NewServer(fake.Handler())
	b.Cleanup(up.Close)
	dir := b.TempDir()
	doc := fmt.Sprintf(`
[automation]
version = "1.0.0"

[listen]
public = "127.0.0.1:0"
admin = ""

[log]
access = true

[auth]
tokens = ["env:BENCH_SERVICE_TOKEN"]

[ledger]
path = %q

[egress]
listen = "127.0.0.1:0"
upstream = %q
keys = ["env:BENCH_OPENAI_KEY"]

[egress.outbox]
path = %q

[egress.budget]
enabled = %t
tokens_per_unit = 10
`, filepath.Join(dir, "ledger.db"), up.URL, filepath.Join(dir, "outbox.db"), budget)
	s := runBenchSidecar(b, doc,
		"BENCH_SERVICE_TOKEN="+benchToken, "BENCH_OPENAI_KEY="+benchUpstreamKey)
	if budget {
		req, err := http.NewRequest("POST", "http://"+s.PublicAddr()+"/provision",
			strings.NewReader(`{"user_automation_id":1,"user_id":1,"demo_tokens":1000000000000}`))
		if err != nil {
			b.Fatal(err)
		}
		req.Header.Set("X-Zimmer-Service-Token", benchToken)
		resp, err := benchClient(b).Do(req)
		if err != nil {
			b.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("provision: %d", resp.StatusCode)
		}
	}
	return up.URL, "http://" + s.EgressAddr()
}

// benchEgressCall sends calls one at a time; with firstEvent the timer
// covers the time to the stream's first event only.
func benchEgressCall(b *testing.B, base, body string, budget, firstEvent bool) {
	b.Helper()
	c := benchClient(b)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		req, err := http.NewRequestWithContext(b.Context(), "POST",
			base+"/v1/chat/completions", strings.NewReader(body))
		if err != nil {
			b.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+benchUpstreamKey)
		if budget {
			req.Header.Set("X-Zimmer-User-Automation-Id", "1")
		}
		resp, err := c.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("status %d", resp.StatusCode)
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

// BenchmarkEgressCall: one JSON chat completion, direct, through the
// egress, and through the egress with a per-user budget.
func BenchmarkEgressCall(b *testing.B) {
	direct, egress := benchEgress(b, false)
	_, budgeted := benchEgress(b, true)
	b.Run("direct", func(b *testing.B) { benchEgressCall(b, direct, benchChat, false, false) })
	b.Run("egress", func(b *testing.B) { benchEgressCall(b, egress, benchChat, false, false) })
	b.Run("egress+budget", func(b *testing.B) {
		benchEgressCall(b, budgeted, benchChat, true, false)
	})
}

// BenchmarkEgressFirstEvent: time to the first event of a streamed chat
// completion, direct and through the egress.
func BenchmarkEgressFirstEvent(b *testing.B) {
	direct, egress := benchEgress(b, false)
	b.Run("direct", func(b *testing.B) {
		benchEgressCall(b, direct, benchChatStream, false, true)
	})
	b.Run("egress", func(b *testing.B) {
		benchEgressCall(b, egress, benchChatStream, false, true)
	})
}
