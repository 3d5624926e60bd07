package logging

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/httpx"
)

// RequestIDHeader carries the request id to the app and back to the caller.
const RequestIDHeader = "X-Request-Id"

// Info is what handlers learn about a request while serving it and want in
// its access-log line. Handlers fill it through the setters; the middleware
// reads it once the handler returned.
type Info struct {
	ID               string
	userAutomationID atomic.Int64
	endpoint         atomic.Pointer[Label]
}

// Label is an endpoint label made once, for handlers that set the same
// label on many requests: SetLabel stores it without allocating.
type Label struct{ name string }

// NewLabel returns the label name; see Info.SetEndpoint.
func NewLabel(name string) *Label { return &Label{name: name} }

// SetUser records the user_automation_id the request concerns.
func (i *Info) SetUser(id int64) {
	if i != nil {
		i.userAutomationID.Store(id)
	}
}

// SetEndpoint records a bounded label naming what served the request
// (a Zimmer endpoint, "route:/chat/*", "proxy").
func (i *Info) SetEndpoint(name string) {
	if i != nil {
		i.endpoint.Store(&Label{name: name})
	}
}

// SetLabel is SetEndpoint with a label made beforehand. A nil l clears
// the label.
func (i *Info) SetLabel(l *Label) {
	if i != nil {
		i.endpoint.Store(l)
	}
}

// Endpoint returns the label set by SetEndpoint, or "".
func (i *Info) Endpoint() string {
	if i == nil {
		return ""
	}
	if l := i.endpoint.Load(); l != nil {
		return l.name
	}
	return ""
}

type infoKey struct{}

// FromContext returns the request's Info, or nil outside the middleware.
// Every Info method accepts a nil receiver.
func FromContext(ctx context.Context) *Info {
	i, _ := ctx.Value(infoKey{}).(*Info)
	return i
}

// RequestID returns the request id carried by ctx, or "".
func RequestID(ctx context.Context) string {
	if i := FromContext(ctx); i != nil {
		return i.ID
	}
	return ""
}

// WithInfo returns a context carrying info; for tests and for calls the
// sidecar makes on its own.
func WithInfo(ctx context.Context, info *Info) context.Context {
	return context.WithValue(ctx, infoKey{}, info)
}

// Access wraps next so that every request gets a request id (kept from the
// caller when it is short and plain, else generated), echoed in the answer,
// and one access-log line at info level after the handler returns. Query
// strings and headers are never logged. observe, when not nil, is called
// after each request with the endpoint label, status and duration (metrics
// hook it here).
func Access(log *slog.Logger, enabled bool, observe func(endpoint string,
	status int, d time.Duration), next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		// One allocation for both: they live exactly as long as the request.
		st := &accessState{rec: recorder{ResponseWriter: w}}
		info, rec := &st.info, &st.rec
		in := r.Header.Get(RequestIDHeader)
		info.ID = requestID(in)
		if info.ID != in || len(r.Header[RequestIDHeader]) != 1 {
			r.Header.Set(RequestIDHeader, info.ID)
		}
		w.Header().Set(RequestIDHeader, info.ID)

		next.ServeHTTP(rec, r.WithContext(WithInfo(r.Context(), info)))

		status := rec.status
		if status == 0 {
			status = http.StatusOK
		}
		d := time.Since(start)
		if observe != nil {
			observe(info.Endpoint(), status, d)
		}
		if enabled {
			logAccess(log, r, info, status, rec.bytes, d)
		}
	})
}

// accessState is what the middleware keeps for one request.
type accessState struct {
	info Info
	rec  recorder
}

// logAccess writes the access line of a served request.
func logAccess(log *slog.Logger, r *http.Request, info *Info, status int,
	bytes int64, d time.Duration) {
	var buf [9]slog.Attr // on the stack: the line's most attributes
	attrs := append(buf[:0],
		slog.String("method", r.Method),
		slog.String("path", r.URL.Path),
		slog.Int("status", status),
		slog.Float64("duration_ms", float64(d.Microseconds())/1000),
		slog.Int64("bytes", bytes),
		slog.String("request_id", info.ID),
		slog.String("client", httpx.ClientAddr(r)),
	)
	if ep := info.Endpoint(); ep != "" {
		attrs = append(attrs, slog.String("endpoint", ep))
	}
	if uid := info.userAutomationID.Load(); uid != 0 {
		attrs = append(attrs, slog.Int64("user_automation_id", uid))
	}
	// The record goes to the handler directly: Logger.LogAttrs would also
	// walk the stack for a source position, which the line never shows.
	ctx, h := r.Context(), log.Handler()
	if !h.Enabled(ctx, slog.LevelInfo) {
		return
	}
	rec := slog.NewRecord(time.Now(), slog.LevelInfo, "request", 0)
	rec.AddAttrs(attrs...)
	_ = h.Handle(ctx, rec) // a log line that cannot be written has no one to tell
}

// requestID keeps a caller's id when it is at most 64 plain characters,
// else makes a new random one. A hostile id cannot inject log structure.
func requestID(in string) string {
	if n := len(in); n > 0 && n <= 64 {
		ok := true
		for i := 0; i < n && ok; i++ {
			c := in[i]
			ok = c == '-' || c == '_' || c == '.' ||
				(c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
				(c >= 'A' && c <= 'Z')
		}
		if ok {
			return in
		}
	}
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// recorder captures the status and byte count while passing flushes,
// hijacks and the ResponseController through to the real writer.
type recorder struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 && code >= 200 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	n, err := r.ResponseWriter.Write(b)
	r.bytes += int64(n)
	return n, err
}

// Flush lets streamed answers through unbuffered.
func (r *recorder) Flush() {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	_ = http.NewResponseController(r.ResponseWriter).Flush()
}

// Hijack supports WebSocket upgrades through the proxy.
func (r *recorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	h, ok := r.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("hijack not supported")
	}
	if r.status == 0 {
		r.status = http.StatusSwitchingProtocols
	}
	return h.Hijack()
}

// Unwrap exposes the real writer to http.ResponseController.
func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }
