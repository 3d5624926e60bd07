package proxy

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metering"
)

// BenchmarkProxy compares a direct call to a small JSON app with the same
// call through the proxy (and on a metered route with a trivial ledger).
// App, proxy and client share the process, so allocs/op counts all three;
// the difference between the rows is the proxy's cost.
func BenchmarkProxy(b *testing.B) {
	answer := `{"status":"ok","items":[` + strings.Repeat(`"abcdefgh",`, 16) +
		`"end"]}`
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, answer)
	}))
	defer app.Close()

	ledger := &fakeLedger{consume: func(_ context.Context,
		req metering.ConsumeRequest) (metering.ConsumeResult, error) {
		return metering.ConsumeResult{Accepted: true, RemainingDemo: 1}, nil
	}}
	p, err := New(Options{AppURL: app.URL, Passthrough: true, Ledger: ledger,
		Routes: []Route{{Path: "/metered", Meter: &Meter{Units: 1, UsageType: "b",
			User: UserSource{FromHeader, "X-Tenant"}}}}})
	if err != nil {
		b.Fatalf("New: %v", err)
	}
	defer p.Close()
	front := httptest.NewServer(p)
	defer front.Close()

	client := &http.Client{Transport: &http.Transport{
		MaxIdleConnsPerHost: 256, MaxIdleConns: 256}}
	defer client.CloseIdleConnections()

	run := func(b *testing.B, url string) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				req, _ := http.NewRequest("GET", url, nil)
				req.Header.Set("X-Tenant", "1")
				resp, err := client.Do(req)
				if err != nil {
					b.Error(err)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					b.Errorf("status %d", resp.StatusCode)
					return
				}
			}
		})
	}
	b.Run("direct", func(b *testing.B) { run(b, app.URL+"/x") })
	b.Run("proxied", func(b *testing.B) { run(b, front.URL+"/x") })
	b.Run("proxied-metered", func(b *testing.B) { run(b, front.URL+"/metered") })
}
