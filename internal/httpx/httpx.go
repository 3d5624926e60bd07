// Package httpx holds the small HTTP helpers every other package shares:
// JSON answers and errors in the shape the platform reads, and the client
// address taken only from the connection.
package httpx

import (
	"encoding/json"
	"math"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"time"
)

// WriteJSON answers with status and v encoded as JSON. Encoding errors are
// ignored: the status line is already out.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// errorBody is the FastAPI-style error the platform and the guide show.
type errorBody struct {
	Detail string `json:"detail"`
}

// Error answers {"detail": detail} with status. detail is a short fixed
// message for the client; causes belong in the log, never here.
func Error(w http.ResponseWriter, status int, detail string) {
	WriteJSON(w, status, errorBody{Detail: detail})
}

// ClientAddr returns the IP of the connection's peer. Forwarding headers
// are never consulted: they are client-controlled.
func ClientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// RetryAfter formats d for a Retry-After header: whole seconds, rounded
// up, at least 1 (a client told "0" would retry at once).
func RetryAfter(d time.Duration) string {
	s := int64(math.Ceil(d.Seconds())) // no overflow near the largest d
	return strconv.FormatInt(max(s, 1), 10)
}

// ClientKey groups client addresses for per-client limits: an IPv4
// address (IPv4-mapped IPv6 included) stands alone, an IPv6 address counts
// as its /64 (one host usually holds a whole /64), and anything that is
// not an IP address is used as it is.
func ClientKey(addr string) string {
	ip, err := netip.ParseAddr(addr)
	if err != nil {
		return addr
	}
	if ip.Is4() {
		// ParseAddr accepts IPv4 only in its canonical dotted form (no
		// leading zeros), so addr already is what ip.String would build.
		return addr
	}
	ip = ip.WithZone("").Unmap()
	if ip.Is4() {
		return ip.String()
	}
	p, err := ip.Prefix(64)
	if err != nil {
		return addr
	}
	return p.String()
}
