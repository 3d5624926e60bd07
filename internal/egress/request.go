package egress

import (
	"errors"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// target returns the upstream URL for the app's request, or the refusal.
// Only the request's path and query are used: the Host header never
// counts, and an absolute-form request must name the upstream's host.
func (h *Handler) target(r *http.Request) (*url.URL, *apiError) {
	switch {
	case r.Method == http.MethodConnect:
		return nil, &errForbiddenHost
	case r.URL.Host != "" && !sameHost(r.URL, h.opts.Upstream):
		return nil, &errForbiddenHost
	case r.Header.Get("Upgrade") != "":
		return nil, &errNoUpgrade
	case !strings.HasPrefix(r.URL.Path, "/") || hasDotSegment(r.URL.Path) ||
		strings.Contains(r.URL.Path, "//"):
		// An empty segment could be cleaned into a redirect, or read as
		// an authority by a server behind the upstream.
		return nil, &errBadPath
	}

	base := h.opts.Upstream
	prefix := strings.TrimSuffix(base.Path, "/")
	rawPrefix := strings.TrimSuffix(base.EscapedPath(), "/")
	u := &url.URL{
		Scheme:  base.Scheme,
		Host:    base.Host,
		Path:    prefix + r.URL.Path,
		RawPath: rawPrefix + r.URL.EscapedPath(),
	}
	switch {
	case base.RawQuery == "":
		u.RawQuery = r.URL.RawQuery
	case r.URL.RawQuery == "":
		u.RawQuery = base.RawQuery
	default:
		u.RawQuery = base.RawQuery + "&" + r.URL.RawQuery
	}
	return u, nil
}

// sameHost reports whether an absolute-form request URL names the
// upstream's host and port (default ports filled in).
func sameHost(req, up *url.URL) bool {
	return strings.EqualFold(req.Hostname(), up.Hostname()) &&
		portOf(req) == portOf(up)
}

func portOf(u *url.URL) string {
	if p := u.Port(); p != "" {
		return p
	}
	if u.Scheme == "http" {
		return "80"
	}
	return "443"
}

// hopHeaders are removed from requests and answers, with every header the
// Connection header names.
var hopHeaders = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

// removeHopHeaders deletes hop-by-hop headers from hd, those named in
// Connection first.
func removeHopHeaders(hd http.Header) {
	for _, v := range hd.Values("Connection") {
		for name := range strings.SplitSeq(v, ",") {
			if name = strings.TrimSpace(name); name != "" {
				hd.Del(name)
			}
		}
	}
	for _, name := range hopHeaders {
		hd.Del(name)
	}
}

// droppedRequestHeaders never reach the upstream: credentials, client
// forwarding headers, and headers the egress sets itself.
var droppedRequestHeaders = []string{
	"Authorization", "Api-Key", "Cookie", "Forwarded", "X-Forwarded-For",
	"X-Forwarded-Host", "X-Forwarded-Proto", "X-Real-Ip", "Expect",
	"Accept-Encoding", "Content-Length",
}

// upstreamHeader returns the app's headers as the upstream is to get
// them, without a key (setKey adds it per attempt). Hop-by-hop headers go
// first, so nothing the app names in Connection can remove what the
// egress sets afterwards (case C5).
func (h *Handler) upstreamHeader(in http.Header) http.Header {
	out := in.Clone()
	if out == nil {
		out = http.Header{}
	}
	removeHopHeaders(out)
	for _, name := range droppedRequestHeaders {
		out.Del(name)
	}
	out.Del(h.opts.UserHeader)
	for name := range out {
		if strings.HasPrefix(strings.ToLower(name), "x-zimmer-") ||
			strings.HasPrefix(strings.ToLower(name), "x_zimmer_") {
			delete(out, name)
		}
	}
	// The answer must be metered: ask for no compression.
	out.Set("Accept-Encoding", "identity")
	if _, ok := out["User-Agent"]; !ok {
		out["User-Agent"] = []string{""} // not Go's default
	}
	return out
}

// setKey puts the key into a copy of hd.
func (h *Handler) setKey(hd http.Header, key string) http.Header {
	out := hd.Clone()
	if h.opts.Auth == AuthAPIKey {
		out.Set("Api-Key", key)
	} else {
		out.Set("Authorization", "Bearer "+key)
	}
	return out
}

// userOf reads the user the app names; 0 when it names none.
func (h *Handler) userOf(hd http.Header) (int64, *apiError) {
	vals := hd.Values(h.opts.UserHeader)
	switch {
	case len(vals) == 0:
		if h.opts.RequireUser {
			return 0, &errUserRequired
		}
		return 0, nil
	case len(vals) > 1:
		return 0, &errBadUser
	}
	id, err := strconv.ParseInt(strings.TrimSpace(vals[0]), 10, 64)
	if err != nil || id <= 0 {
		return 0, &errBadUser
	}
	return id, nil
}

// fromBrowser reports whether a request carries what only browsers send:
// an Origin (every cross-origin and every POST request of a page), a
// Sec-Fetch-Site, or a Sec-Fetch-Mode other than "cors". Node's fetch
// (undici) sends "Sec-Fetch-Mode: cors" alone, without the others, on
// every request, so that value is no sign of a browser by itself.
func fromBrowser(hd http.Header) bool {
	if len(hd.Values("Origin")) > 0 || len(hd.Values("Sec-Fetch-Site")) > 0 {
		return true
	}
	for _, v := range hd.Values("Sec-Fetch-Mode") {
		if !strings.EqualFold(strings.TrimSpace(v), "cors") {
			return true
		}
	}
	return false
}

// isTimeout reports whether err is a network timeout.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
