//go:build unix

package sidecar_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/config"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/logging"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/sidecar"
)

// These benchmarks run the whole sidecar as production does (sidecar.Run:
// connection-limited listener, http.Server, access log, router, auth,
// proxy or Zimmer endpoint, bolt ledger in a temporary directory) and talk
// to it over real loopback connections with keep-alive. Client, sidecar
// and app share the process, so allocs/op counts all three: compare a
// BenchmarkProxy row with BenchmarkDirect to get the sidecar's share.
// docs/benchmarks.md records results and the commands that produced them.

// benchToken is the service token of the benchmark sidecars.
const benchToken = "bench-service-token-0123456789abcdef"

// benchParallelism gives RunParallel 32 goroutines per CPU (64 on two
// cores), the concurrency of the load runs in docs/benchmarks.md.
const benchParallelism = 32

// benchAccounts is how many accounts the consume benchmark spreads over.
const benchAccounts = 8

// benchAnswer is the app's fixed ~200-byte JSON answer.
var benchAnswer = []byte(`{"status":"ok","service":"bench-upstream","items":` +
	`["alpha","bravo","charlie","delta","echo","foxtrot","golf","hotel"],` +
	`"count":8,"note":"a fixed answer of about two hundred bytes for the ` +
	`proxy benchmark"}`)

// benchKeys numbers idempotency keys across every benchmark run in the
// process, so that no run replays another's key.
var benchKeys atomic.Int64

// benchUpstream starts the stand-in app on a loopback listener.
func benchUpstream(b *testing.B) *httptest.Server {
	b.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(len(benchAnswer)))
		_, _ = w.Write(benchAnswer)
	}))
	b.Cleanup(srv.Close)
	return srv
}

// benchSidecar runs a sidecar in front of appURL until the benchmark
// ends and returns its public base URL. It has a protected route
// /protected/* and passes everything else through; access toggles the
// access log, which goes through the production JSON handler and
// redactor into io.Discard.
func benchSidecar(b *testing.B, appURL string, access bool) string {
	b.Helper()
	doc := fmt.Sprintf(`
[automation]
version = "1.0.0"

[listen]
public = "127.0.0.1:0"
admin = ""

[log]
access = %t

[auth]
tokens = ["env:BENCH_SERVICE_TOKEN"]

[app]
url = %q

[ledger]
path = %q

[[route]]
path = "/protected/*"
protect = true
`, access, appURL, filepath.Join(b.TempDir(), "ledger.db"))
	s := runBenchSidecar(b, doc, "BENCH_SERVICE_TOKEN="+benchToken)
	return "http://" + s.PublicAddr()
}

// runBenchSidecar parses doc with env, runs the sidecar until the
// benchmark ends (its logs discarded) and returns it listening.
func runBenchSidecar(b *testing.B, doc string, env ...string) *sidecar.Sidecar {
	b.Helper()
	cfg, err := config.Parse([]byte(doc), env)
	if err != nil {
		b.Fatalf("config.Parse: %v", err)
	}
	red := logging.NewRedactor()
	logger := logging.New(io.Discard, slog.LevelInfo, red)
	s, err := sidecar.New(cfg, sidecar.Options{Logger: logger, Redactor: red})
	if err != nil {
		b.Fatalf("sidecar.New: %v", err)
	}
	if err := s.Listen(); err != nil {
		_ = s.Close()
		b.Fatalf("Listen: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	b.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			b.Errorf("Run: %v", err)
		}
	})
	return s
}

// benchClient keeps one idle connection per benchmark goroutine and never
// uses a proxy from the environment.
func benchClient(b *testing.B) *http.Client {
	b.Helper()
	tr := &http.Transport{
		Proxy:               nil,
		MaxIdleConns:        1024,
		MaxIdleConnsPerHost: 1024,
		IdleConnTimeout:     time.Minute,
		DisableCompression:  true,
	}
	b.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// benchRequest builds one request; body may be nil.
type benchRequest func(n int64) (*http.Request, error)

// benchCheck inspects one answer's status and body.
type benchCheck func(status int, body []byte) error

// runBench sends requests from benchParallelism goroutines per CPU and
// fails at the first answer check rejects. Besides ns/op it reports req/s
// and cpu-us/op, the process's CPU time (user + system) per request:
// unlike wall time it hardly moves when other programs load the machine,
// and the difference between two benchmarks' cpu-us/op is the CPU the
// extra hop costs.
func runBench(b *testing.B, c *http.Client, build benchRequest, check benchCheck) {
	b.Helper()
	b.ReportAllocs()
	b.SetParallelism(benchParallelism)
	cpu0 := benchCPU(b)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		var buf bytes.Buffer
		for pb.Next() {
			req, err := build(benchKeys.Add(1))
			if err != nil {
				b.Error(err)
				return
			}
			resp, err := c.Do(req)
			if err != nil {
				b.Error(err)
				return
			}
			buf.Reset()
			_, err = buf.ReadFrom(resp.Body)
			_ = resp.Body.Close()
			if err == nil {
				err = check(resp.StatusCode, buf.Bytes())
			}
			if err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	cpu := benchCPU(b) - cpu0
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-us/op")
}

// benchCPU returns the CPU time the process has used so far.
func benchCPU(b *testing.B) time.Duration {
	b.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatalf("getrusage: %v", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// wantAnswer accepts the app's answer relayed unchanged.
func wantAnswer(status int, body []byte) error {
	if status != http.StatusOK || !bytes.Equal(body, benchAnswer) {
		return fmt.Errorf("got %d %q, want 200 and the app's answer", status, body)
	}
	return nil
}

// getter returns a benchRequest for GET url with the given headers.
func getter(url string, header http.Header) benchRequest {
	return func(int64) (*http.Request, error) {
		req, err := http.NewRequest(http.MethodGet, url, nil)
		if err != nil {
			return nil, err
		}
		for k, v := range header {
			req.Header[k] = v
		}
		return req, nil
	}
}

// BenchmarkDirect is the baseline: a GET straight to the app.
func BenchmarkDirect(b *testing.B) {
	app := benchUpstream(b)
	c := benchClient(b)
	runBench(b, c, getter(app.URL+"/plain/x", nil), wantAnswer)
}

// BenchmarkProxy sends the same GET through the sidecar: on a passthrough
// path, and on a protected route with the service token checked, each
// with the access log on (production) and off.
func BenchmarkProxy(b *testing.B) {
	app := benchUpstream(b)
	c := benchClient(b)
	token := http.Header{"X-Zimmer-Service-Token": {benchToken}}
	for _, access := range []bool{true, false} {
		base := benchSidecar(b, app.URL, access)
		b.Run(fmt.Sprintf("passthrough/access=%t", access), func(b *testing.B) {
			runBench(b, c, getter(base+"/plain/x", nil), wantAnswer)
		})
		b.Run(fmt.Sprintf("protected/access=%t", access), func(b *testing.B) {
			runBench(b, c, getter(base+"/protected/x", token), wantAnswer)
		})
	}
}

// BenchmarkPlainReverseProxy is the reference for BenchmarkProxy: the
// standard library's ReverseProxy alone, with the transport tuned as the
// sidecar's is (idle connections per host raised) and a buffer pool, and
// nothing else: no access log, router, auth or request id. The difference
// between it and BenchmarkProxy is what the sidecar adds to any Go proxy.
func BenchmarkPlainReverseProxy(b *testing.B) {
	app := benchUpstream(b)
	target, err := url.Parse(app.URL)
	if err != nil {
		b.Fatal(err)
	}
	tr := &http.Transport{
		Proxy:               nil,
		MaxIdleConns:        256,
		MaxIdleConnsPerHost: 256,
		IdleConnTimeout:     90 * time.Second,
	}
	b.Cleanup(tr.CloseIdleConnections)
	rp := &httputil.ReverseProxy{
		Rewrite:    func(pr *httputil.ProxyRequest) { pr.SetURL(target) },
		Transport:  tr,
		BufferPool: benchPool{},
	}
	front := httptest.NewServer(rp)
	b.Cleanup(front.Close)
	runBench(b, benchClient(b), getter(front.URL+"/plain/x", nil), wantAnswer)
}

// benchPool is a ReverseProxy buffer pool of 32 KiB buffers.
type benchPool struct{}

var benchBuffers = sync.Pool{New: func() any { return new([32 << 10]byte) }}

func (benchPool) Get() []byte  { return benchBuffers.Get().(*[32 << 10]byte)[:] }
func (benchPool) Put(b []byte) { benchBuffers.Put((*[32 << 10]byte)(b)) }

// BenchmarkConsume sends durable POST /usage/consume calls, each with its
// own Idempotency-Key, spread over accounts whose demo balance never runs
// out, so every call commits a debit and its key to the bolt ledger.
func BenchmarkConsume(b *testing.B) {
	app := benchUpstream(b)
	c := benchClient(b)
	for _, access := range []bool{true, false} {
		base := benchSidecar(b, app.URL, access)
		benchProvision(b, c, base)
		b.Run(fmt.Sprintf("access=%t", access), func(b *testing.B) {
			runBench(b, c, consumer(base+"/usage/consume"), wantAccepted)
		})
	}
}

// benchProvision creates the accounts 1..benchAccounts with a demo grant
// no benchmark can exhaust.
func benchProvision(b *testing.B, c *http.Client, base string) {
	b.Helper()
	for id := 1; id <= benchAccounts; id++ {
		body := fmt.Sprintf(`{"user_automation_id":%d,"user_id":%d,"demo_tokens":%d}`,
			id, id, int64(1)<<60)
		req, err := http.NewRequest(http.MethodPost, base+"/provision", strings.NewReader(body))
		if err != nil {
			b.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Zimmer-Service-Token", benchToken)
		resp, err := c.Do(req)
		if err != nil {
			b.Fatalf("provision %d: %v", id, err)
		}
		got, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("provision %d: got %d %s, want 200", id, resp.StatusCode, got)
		}
	}
}

// consumer returns a benchRequest for one unit of consume on account
// 1 + n mod benchAccounts with the unique key "bench-n".
func consumer(url string) benchRequest {
	return func(n int64) (*http.Request, error) {
		body := fmt.Sprintf(`{"user_automation_id":%d,"units":1,"usage_type":"bench"}`,
			1+n%benchAccounts)
		req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
		if err != nil {
			return nil, err
		}
		req.Header["Content-Type"] = []string{"application/json"}
		req.Header["X-Zimmer-Service-Token"] = []string{benchToken}
		req.Header["Idempotency-Key"] = []string{"bench-" + strconv.FormatInt(n, 10)}
		return req, nil
	}
}

// errNotAccepted: a consume answer that is not a fresh acceptance.
var errNotAccepted = errors.New("consume was not accepted")

// wantAccepted accepts a 200 consume answer with "accepted": true.
func wantAccepted(status int, body []byte) error {
	if status != http.StatusOK || !bytes.Contains(body, []byte(`"accepted":true`)) {
		return fmt.Errorf("%w: got %d %q", errNotAccepted, status, body)
	}
	return nil
}
