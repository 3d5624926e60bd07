package proxy

import (
	"fmt"
	"net/http"
	"path"
	"slices"
	"strings"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/logging"
)

// Route is one entry of the route table. Routes are tried in order and the
// first whose pattern and method match decides.
type Route struct {
	// Path is a pattern over the cleaned request path:
	//   "/x"        exactly /x (and /x/, which cleans to /x);
	//   "/x/*"      /x itself and everything under /x/;
	//   "/x/{id}/y" a parameter matches one non-empty segment.
	// A parameter may precede a final "/*". "/*" matches every path.
	Path string
	// Methods the route applies to, any case; empty means all. GET also
	// covers HEAD, so a HEAD cannot slip past a GET-only protection.
	Methods []string
	// Protect wraps the route in Options.Auth.
	Protect bool
	// Meter, when not nil, charges the ledger before forwarding and
	// refunds the charge when the app fails the call (see meterHandler).
	Meter *Meter
}

// Meter says what one call of a metered route costs and who pays.
type Meter struct {
	Units     int64  // > 0
	UsageType string // recorded with the debit
	User      UserSource
}

// UserSource names where a metered request carries its
// user_automation_id.
type UserSource struct {
	From string // "header", "query" or "path"
	Name string // header name, query key or the pattern's parameter name
}

// User source kinds.
const (
	FromHeader = "header"
	FromQuery  = "query"
	FromPath   = "path"
)

// ParseUserSource parses "header:NAME", "query:NAME" or "path:PARAM".
func ParseUserSource(s string) (UserSource, error) {
	from, name, ok := strings.Cut(s, ":")
	if !ok || name == "" {
		return UserSource{}, fmt.Errorf(
			"user source %q: want header:NAME, query:NAME or path:PARAM", s)
	}
	switch from {
	case FromHeader, FromQuery, FromPath:
	default:
		return UserSource{}, fmt.Errorf(
			"user source %q: unknown kind %q (header, query or path)", s, from)
	}
	return UserSource{From: from, Name: name}, nil
}

// route is a compiled Route.
type route struct {
	pattern string
	segs    []string // literal segments; "" where a parameter stands
	params  []string // parameter names in order
	prefix  bool     // pattern ended in "/*"
	methods []string // upper case; empty: all
	protect bool
	meter   *Meter
	handler http.Handler
	// label names the route in logs and metrics: the configured pattern,
	// never the raw path.
	label *logging.Label
}

// compileRoute checks and compiles one route; the handler is set later.
func compileRoute(r Route) (*route, error) {
	p := r.Path
	if !strings.HasPrefix(p, "/") {
		return nil, fmt.Errorf("path %q must start with /", p)
	}
	rt := &route{pattern: p, protect: r.Protect, meter: r.Meter,
		label: logging.NewLabel("route:" + p)}
	if rest, ok := strings.CutSuffix(p, "/*"); ok {
		rt.prefix, p = true, rest
	}
	if p != "" && p != "/" {
		if err := rt.compileSegments(p); err != nil {
			return nil, err
		}
	}
	for _, m := range r.Methods {
		m = strings.ToUpper(strings.TrimSpace(m))
		if m == "" {
			return nil, fmt.Errorf("path %q: empty method", r.Path)
		}
		rt.methods = append(rt.methods, m)
		if m == http.MethodGet {
			rt.methods = append(rt.methods, http.MethodHead)
		}
	}
	if err := rt.checkMeter(); err != nil {
		return nil, err
	}
	return rt, nil
}

// compileSegments splits a pattern without its "/*" into segments.
func (rt *route) compileSegments(p string) error {
	for _, seg := range strings.Split(p[1:], "/") {
		switch {
		case seg == "" || seg == "." || seg == "..":
			return fmt.Errorf("path %q: empty or dot segment (never in a "+
				"cleaned path)", rt.pattern)
		case strings.ContainsAny(seg, "*"):
			return fmt.Errorf("path %q: * only as a final /*", rt.pattern)
		case strings.HasPrefix(seg, "{"):
			name, ok := placeholderAt(seg, 0)
			if !ok || len(name)+2 != len(seg) {
				return fmt.Errorf("path %q: bad parameter %q", rt.pattern, seg)
			}
			if slices.Contains(rt.params, name) {
				return fmt.Errorf("path %q: parameter {%s} twice", rt.pattern, name)
			}
			rt.params = append(rt.params, name)
			rt.segs = append(rt.segs, "")
		default:
			rt.segs = append(rt.segs, seg)
		}
	}
	return nil
}

// checkMeter validates the route's meter against its pattern.
func (rt *route) checkMeter() error {
	m := rt.meter
	if m == nil {
		return nil
	}
	if m.Units <= 0 {
		return fmt.Errorf("path %q: meter units must be positive", rt.pattern)
	}
	if m.UsageType == "" {
		return fmt.Errorf("path %q: meter usage_type is empty", rt.pattern)
	}
	if _, err := ParseUserSource(m.User.From + ":" + m.User.Name); err != nil {
		return fmt.Errorf("path %q: meter: %w", rt.pattern, err)
	}
	if m.User.From == FromPath && !slices.Contains(rt.params, m.User.Name) {
		return fmt.Errorf("path %q: meter user path:%s names no parameter",
			rt.pattern, m.User.Name)
	}
	return nil
}

// match reports whether the cleaned path p matches, appending parameter
// values to params.
func (rt *route) match(p string, params []string) ([]string, bool) {
	rest := p[1:] // p starts with "/"
	for _, want := range rt.segs {
		if rest == "" {
			return params, false
		}
		seg, tail, _ := strings.Cut(rest, "/")
		if want != "" && seg != want {
			return params, false
		}
		if want == "" {
			params = append(params, seg)
		}
		rest = tail
	}
	return params, rest == "" || rt.prefix
}

// allows reports whether method is one of the route's methods.
func (rt *route) allows(method string) bool {
	return len(rt.methods) == 0 || slices.Contains(rt.methods, method)
}

// param returns the value of the named parameter from a match.
func (rt *route) param(name string, values []string) string {
	i := slices.Index(rt.params, name)
	if i < 0 || i >= len(values) {
		return ""
	}
	return values[i]
}

// table is the compiled route list.
type table []*route

// lookup returns the first route matching the cleaned path and method,
// with its parameter values, or nil. The method matches in any case:
// route methods are upper case, and apps take "post" for POST.
func (t table) lookup(p, method string) (*route, []string) {
	method = strings.ToUpper(method)
	for _, rt := range t {
		if !rt.allows(method) {
			continue
		}
		var params []string
		if len(rt.params) > 0 {
			params = make([]string, 0, len(rt.params))
		}
		if params, ok := rt.match(p, params); ok {
			return rt, params
		}
	}
	return nil, nil
}

// cleanPath returns the routing path for a decoded request path: rooted,
// with dot segments and duplicate slashes resolved and no trailing slash
// (except "/"). trailing reports whether the request had one; forwarding
// keeps it, because apps often tell /x from /x/.
//
// Encoded slashes are not special: the server has already decoded %2F to
// "/", so "/a%2F..%2Fb" routes, and is forwarded, as "/b".
func cleanPath(p string) (clean string, trailing bool) {
	if p == "" || p[0] != '/' {
		p = "/" + p
	}
	trailing = len(p) > 1 && p[len(p)-1] == '/'
	return path.Clean(p), trailing
}

// forwardPath is the path the app receives for a cleaned path.
func forwardPath(clean string, trailing bool) string {
	if trailing && clean != "/" {
		return clean + "/"
	}
	return clean
}
