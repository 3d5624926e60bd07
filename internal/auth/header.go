package auth

import (
	"net/http"
	"strings"
)

// HeaderName is the header that carries the service token. Lookups go
// through http.Header, so the name is matched case-insensitively.
const HeaderName = "X-Zimmer-Service-Token"

// tokenFrom finds the presented token: the X-Zimmer-Service-Token header,
// else, when acceptBearer, an "Authorization: Bearer" credential. An
// absent or blank header is ErrMissingToken. Two values of the same header
// are ErrInvalidToken: one request gets one guess. bearer reports whether
// the token came from Authorization.
func tokenFrom(h http.Header, acceptBearer bool) (tok string, bearer bool, err error) {
	switch vals := h.Values(HeaderName); len(vals) {
	case 0:
	case 1:
		if tok = trimOWS(vals[0]); tok != "" {
			return tok, false, nil
		}
	default:
		return "", false, ErrInvalidToken
	}
	if !acceptBearer {
		return "", false, ErrMissingToken
	}

	// Exactly one Bearer credential among the Authorization values.
	found := 0
	for _, v := range h.Values("Authorization") {
		if t, ok := parseBearer(v); ok {
			tok, found = t, found+1
		}
	}
	switch {
	case found > 1:
		return "", true, ErrInvalidToken
	case found == 0 || tok == "":
		return "", found == 1, ErrMissingToken
	}
	return tok, true, nil
}

// parseBearer reads an Authorization value of the Bearer scheme (the
// scheme name in any case, then spaces, then the credential). ok is false
// for other schemes; the credential may then be empty.
func parseBearer(v string) (cred string, ok bool) {
	v = trimOWS(v)
	const scheme = "bearer"
	if len(v) < len(scheme) || !strings.EqualFold(v[:len(scheme)], scheme) {
		return "", false
	}
	rest := v[len(scheme):]
	if rest == "" {
		return "", true
	}
	if rest[0] != ' ' && rest[0] != '\t' {
		return "", false // another scheme, such as "Bearerish"
	}
	return trimOWS(rest), true
}

// trimOWS removes the optional whitespace (spaces and tabs) HTTP allows
// around a field value. Nothing else about a token is checked.
func trimOWS(s string) string {
	return strings.Trim(s, " \t")
}

// stripToken removes the credential from h so that the app never sees it:
// every X-Zimmer-Service-Token value, under any spelling of its name, and,
// when acceptBearer, every Bearer credential in Authorization (other
// schemes are the app's and stay).
func stripToken(h http.Header, acceptBearer bool) {
	for k := range h {
		if strings.EqualFold(k, HeaderName) {
			delete(h, k)
		}
	}
	if !acceptBearer {
		return
	}
	for k, vals := range h {
		if !strings.EqualFold(k, "Authorization") {
			continue
		}
		kept := vals[:0:0]
		for _, v := range vals {
			if _, ok := parseBearer(v); !ok {
				kept = append(kept, v)
			}
		}
		if len(kept) == 0 {
			delete(h, k)
		} else {
			h[k] = kept
		}
	}
}

// StripServiceBearer removes from h every Authorization value that is a
// Bearer credential holding a configured service token (as IsServiceToken
// decides), whatever AcceptBearer says; other values, other schemes and
// other Bearer tokens stay for the app. It is meant for requests on open
// routes, which Require never sees, and its signature fits the proxy's
// StripAuthorization hook. A nil Verifier removes nothing.
func (v *Verifier) StripServiceBearer(r *http.Request) {
	if v == nil {
		return
	}
	for k, vals := range r.Header {
		if !strings.EqualFold(k, "Authorization") {
			continue
		}
		kept := vals[:0:0]
		for _, val := range vals {
			cred, ok := parseBearer(val)
			if !ok || !v.IsServiceToken(cred) {
				kept = append(kept, val)
			}
		}
		if len(kept) == 0 {
			delete(r.Header, k)
		} else if len(kept) < len(vals) {
			r.Header[k] = kept
		}
	}
}
