package proxy

import "net/http"

// zimmerPrefix starts every header name in the sidecar's namespace.
const zimmerPrefix = "X-Zimmer-"

// methodOverrideHeaders ask some apps and frameworks to treat a request as
// another method. The proxy routes (protects, meters) on the method sent,
// so none of them may reach the app.
var methodOverrideHeaders = []string{
	"X-HTTP-Method-Override",
	"X-Method-Override",
	"X-HTTP-Method",
}

// sameHeaderName reports whether the header names a and b are one field
// to an app server: equal ignoring ASCII case, with "_" and "-" the same
// (CGI and WSGI servers map both to "_" in HTTP_* variables).
func sameHeaderName(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		if foldNameByte(a[i]) != foldNameByte(b[i]) {
			return false
		}
	}
	return true
}

// foldNameByte maps a header name byte to its class: lower case, "_" as
// "-".
func foldNameByte(c byte) byte {
	switch {
	case c == '_':
		return '-'
	case 'A' <= c && c <= 'Z':
		return c + ('a' - 'A')
	}
	return c
}

// hasHeaderPrefix reports whether name starts with prefix, compared as
// sameHeaderName does.
func hasHeaderPrefix(name, prefix string) bool {
	return len(name) >= len(prefix) && sameHeaderName(name[:len(prefix)], prefix)
}

// dropHeader removes every field of h that an app server would read as
// name (see sameHeaderName).
func dropHeader(h http.Header, name string) {
	for k := range h {
		if sameHeaderName(k, name) {
			delete(h, k)
		}
	}
}

// headerValues returns the values of every field of h that an app server
// would read as name, in no particular order across spellings.
func headerValues(h http.Header, name string) []string {
	var vals []string
	for k, vs := range h {
		if sameHeaderName(k, name) {
			vals = append(vals, vs...)
		}
	}
	return vals
}

// dropZimmerHeaders removes every header in the X-Zimmer- namespace (the
// service token among them), in any case and with "_" for "-", since some
// app servers read X_Zimmer_... as the same header.
func dropZimmerHeaders(h http.Header) {
	for k := range h {
		if hasHeaderPrefix(k, zimmerPrefix) {
			delete(h, k)
		}
	}
}

// dropMethodOverrides removes the method override headers in every
// spelling.
func dropMethodOverrides(h http.Header) {
	for k := range h {
		for _, name := range methodOverrideHeaders {
			if sameHeaderName(k, name) {
				delete(h, k)
				break
			}
		}
	}
}
