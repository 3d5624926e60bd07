package logging

import (
	"io"
	"log/slog"
	"net/http"
	"testing"
)

// discardWriter is a ResponseWriter that keeps nothing, so that the
// benchmarks below measure the middleware and the log line alone.
type discardWriter struct{ h http.Header }

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *discardWriter) WriteHeader(int)             {}

// BenchmarkAccess measures the access middleware around a handler that
// labels the request as a route does and writes a small answer, with the
// production JSON logger and redactor writing to io.Discard (on) and with
// the line switched off (off).
func BenchmarkAccess(b *testing.B) {
	for _, tc := range []struct {
		name    string
		enabled bool
	}{{"on", true}, {"off", false}} {
		b.Run(tc.name, func(b *testing.B) {
			red := NewRedactor("4f1c0d9e8b7a6f5e4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a")
			log := New(io.Discard, slog.LevelInfo, red)
			body := []byte(`{"status":"ok"}`)
			h := Access(log, tc.enabled, nil, http.HandlerFunc(
				func(w http.ResponseWriter, r *http.Request) {
					FromContext(r.Context()).SetEndpoint("route:/protected/*")
					_, _ = w.Write(body)
				}))
			r, err := http.NewRequest(http.MethodGet, "/protected/x", nil)
			if err != nil {
				b.Fatal(err)
			}
			r.RemoteAddr = "127.0.0.1:40000"
			w := &discardWriter{h: http.Header{}}
			b.ReportAllocs()
			for b.Loop() {
				clear(r.Header)
				clear(w.h)
				h.ServeHTTP(w, r)
			}
		})
	}
}

// BenchmarkLogLine measures one access-shaped line through the redacting
// handler, without the middleware.
func BenchmarkLogLine(b *testing.B) {
	red := NewRedactor("4f1c0d9e8b7a6f5e4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a")
	log := New(io.Discard, slog.LevelInfo, red)
	b.ReportAllocs()
	for b.Loop() {
		log.LogAttrs(b.Context(), slog.LevelInfo, "request",
			slog.String("method", "GET"),
			slog.String("path", "/protected/x"),
			slog.Int("status", 200),
			slog.Float64("duration_ms", 0.412),
			slog.Int64("bytes", 203),
			slog.String("request_id", "0123456789abcdef01234567"),
			slog.String("client", "127.0.0.1"),
			slog.String("endpoint", "route:/protected/*"))
	}
}
