package zimmer

import (
	"errors"
	"fmt"
	"net/http"
	"path"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/httpx"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/logging"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metering"
)

// Defaults applied by New to zero Options fields. The timeouts keep each
// answer inside the tighter of the guide's and the platform's budgets
// (provision 10 s, consume 3 s, KB 10 s) with a margin for the network.
const (
	DefaultMaxBody          = 1 << 20
	DefaultMaxUnits         = 1_000_000
	DefaultProvisionTimeout = 8 * time.Second
	DefaultConsumeTimeout   = 2500 * time.Millisecond
	DefaultKBTimeout        = 8 * time.Second
)

// Endpoint names one Zimmer endpoint; the value is its path below a prefix.
type Endpoint string

// The Zimmer endpoints.
const (
	EndpointHealth    Endpoint = "health"
	EndpointProvision Endpoint = "provision"
	EndpointConsume   Endpoint = "usage/consume"
	EndpointKBStatus  Endpoint = "kb/status"
	EndpointKBReset   Endpoint = "kb/reset"
)

// Options configures an API. Ledger, Auth and Health are required.
type Options struct {
	// Prefixes under which every endpoint is served, such as "/", "/api"
	// or "/api/zimmer/". Each must be an absolute, clean path; a trailing
	// slash is ignored. Empty means ["/"].
	Prefixes []string

	// Ledger keeps balances. Required.
	Ledger metering.Ledger

	// Auth wraps every endpoint except health; it must answer a request
	// without a valid service token itself and not call the next handler.
	// Required: there is no unauthenticated mode.
	Auth func(http.Handler) http.Handler

	// Health answers the public health endpoint. Required.
	Health http.Handler

	// Provision is told about every provisioning before the ledger; nil
	// means the app needs no telling.
	Provision ProvisionHook

	// KB answers KB status and reset; nil means the automation has no
	// knowledge base and both endpoints answer 404.
	KB KBBackend

	// ServiceURL is the service_url of a provision answer, with
	// {user_automation_id} and {user_id} replaced. Empty: no service_url
	// unless the provision hook supplies one.
	ServiceURL string

	// MaxBody bounds a request body in bytes; larger bodies get 413.
	// Zero means DefaultMaxBody.
	MaxBody int64

	// MaxUnits bounds the units of one consume. Zero means
	// DefaultMaxUnits.
	MaxUnits int64

	// Deadlines for the work behind one call (hook, KB backend, ledger).
	// Zero means the Default*Timeout constants.
	ProvisionTimeout time.Duration
	ConsumeTimeout   time.Duration
	KBTimeout        time.Duration

	// Now is the clock for answer times; nil means time.Now.
	Now func() time.Time

	// OnError, when set, learns the cause of every answer that is not a
	// success: status is what the client got, err the wrapped cause (never
	// holding a token). It runs on the request's goroutine and must not
	// block.
	OnError func(r *http.Request, ep Endpoint, status int, err error)

	// OnConsume, when set, learns every consume the ledger answered,
	// replays and refusals included.
	OnConsume func(r *http.Request, req metering.ConsumeRequest, res metering.ConsumeResult)
}

// API serves the Zimmer endpoints. It is safe for concurrent use and
// holds no state beyond its options.
type API struct {
	opts   Options
	routes map[string]http.Handler
}

// placeholder matches one {name} in the service URL template.
var placeholder = regexp.MustCompile(`\{[^{}]*\}`)

// New checks opts, applies defaults and builds the route table.
func New(opts Options) (*API, error) {
	if err := opts.validate(); err != nil {
		return nil, fmt.Errorf("zimmer options: %w", err)
	}
	opts.applyDefaults()

	a := &API{
		opts:   opts,
		routes: make(map[string]http.Handler),
	}
	if err := a.buildRoutes(); err != nil {
		return nil, fmt.Errorf("zimmer options: %w", err)
	}
	return a, nil
}

// validate reports every required option that is missing or malformed.
func (o *Options) validate() error {
	var errs []error
	if o.Ledger == nil {
		errs = append(errs, errors.New("ledger is required"))
	}
	if o.Auth == nil {
		errs = append(errs, errors.New("auth middleware is required"))
	}
	if o.Health == nil {
		errs = append(errs, errors.New("health handler is required"))
	}
	if o.MaxBody < 0 {
		errs = append(errs, errors.New("max body must not be negative"))
	}
	if o.MaxUnits < 0 {
		errs = append(errs, errors.New("max units must not be negative"))
	}
	for _, name := range placeholder.FindAllString(o.ServiceURL, -1) {
		if name != "{user_automation_id}" && name != "{user_id}" {
			errs = append(errs, fmt.Errorf("service url: unknown placeholder %s", name))
		}
	}
	return errors.Join(errs...)
}

// applyDefaults fills zero fields.
func (o *Options) applyDefaults() {
	if len(o.Prefixes) == 0 {
		o.Prefixes = []string{"/"}
	}
	if o.MaxBody == 0 {
		o.MaxBody = DefaultMaxBody
	}
	if o.MaxUnits == 0 {
		o.MaxUnits = DefaultMaxUnits
	}
	if o.ProvisionTimeout <= 0 {
		o.ProvisionTimeout = DefaultProvisionTimeout
	}
	if o.ConsumeTimeout <= 0 {
		o.ConsumeTimeout = DefaultConsumeTimeout
	}
	if o.KBTimeout <= 0 {
		o.KBTimeout = DefaultKBTimeout
	}
	if o.Now == nil {
		o.Now = time.Now
	}
}

// buildRoutes maps every prefix × endpoint × trailing slash to its
// handler: the method check first, then (except for health) Auth, then
// the endpoint.
func (a *API) buildRoutes() error {
	handlers := map[Endpoint]http.Handler{
		EndpointHealth: allow(a.opts.Health, http.MethodGet, http.MethodHead),
		EndpointProvision: allow(a.opts.Auth(a.endpoint(EndpointProvision, a.provision)),
			http.MethodPost),
		EndpointConsume: allow(a.opts.Auth(a.endpoint(EndpointConsume, a.consume)),
			http.MethodPost),
		EndpointKBStatus: allow(a.opts.Auth(a.endpoint(EndpointKBStatus, a.kbStatus)),
			http.MethodGet, http.MethodPost),
		EndpointKBReset: allow(a.opts.Auth(a.endpoint(EndpointKBReset, a.kbReset)),
			http.MethodPost),
	}

	// Every answer, 401s and 405s included, is labelled with its endpoint
	// for the access log and the metrics.
	for ep, h := range handlers {
		handlers[ep] = named(ep, h)
	}

	var errs []error
	for _, raw := range a.opts.Prefixes {
		prefix, err := normalizePrefix(raw)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for ep, h := range handlers {
			bare := prefix + "/" + string(ep)
			for _, p := range []string{bare, bare + "/"} {
				if _, dup := a.routes[p]; dup {
					errs = append(errs, fmt.Errorf("prefix %q: path %s served twice", raw, p))
				}
				a.routes[p] = h
			}
		}
	}
	return errors.Join(errs...)
}

// normalizePrefix returns the prefix without its trailing slash ("" for
// the root), or an error when it is not an absolute, clean path.
func normalizePrefix(p string) (string, error) {
	if !strings.HasPrefix(p, "/") {
		return "", fmt.Errorf("prefix %q: must start with /", p)
	}
	trimmed := strings.TrimSuffix(p, "/")
	if trimmed == "" {
		return "", nil
	}
	if path.Clean(trimmed) != trimmed || strings.ContainsAny(trimmed, "?#%\\ \t") {
		return "", fmt.Errorf("prefix %q: must be a clean path", p)
	}
	return trimmed, nil
}

// Lookup returns the handler for a Zimmer endpoint path, or false when
// cleanPath is none. cleanPath must be the request's decoded path, cleaned
// as CleanPath does (a trailing slash kept): matching is exact, so
// "/health/../provision" must arrive as "/provision". The handler checks
// the method (405 with Allow, before authentication), then runs Auth
// (except for health), then the endpoint.
func (a *API) Lookup(cleanPath string) (http.Handler, bool) {
	h, ok := a.routes[cleanPath]
	return h, ok
}

// ServeHTTP serves the Zimmer endpoints alone: the request path is cleaned
// and looked up, and any other path gets a 404 JSON answer. The sidecar's
// router uses Lookup instead, to fall through to the app.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h, ok := a.Lookup(CleanPath(r.URL.Path))
	if !ok {
		httpx.Error(w, http.StatusNotFound, "Not Found")
		return
	}
	h.ServeHTTP(w, r)
}

// CleanPath cleans a decoded request path the way Lookup expects: rooted,
// dot segments and repeated slashes resolved, a trailing slash kept.
func CleanPath(p string) string {
	if p == "" || p == "/" {
		return "/"
	}
	c := path.Clean("/" + p)
	if strings.HasSuffix(p, "/") && c != "/" {
		c += "/"
	}
	return c
}

// allow answers 405 with Allow for any method not listed and passes the
// rest to next. It reads nothing but the method.
func allow(next http.Handler, methods ...string) http.Handler {
	allowed := strings.Join(methods, ", ")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for _, m := range methods {
			if r.Method == m {
				next.ServeHTTP(w, r)
				return
			}
		}
		w.Header().Set("Allow", allowed)
		httpx.Error(w, http.StatusMethodNotAllowed, "Method Not Allowed")
	})
}

// named labels the request with ep for the access log before h runs.
func named(ep Endpoint, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		logging.FromContext(r.Context()).SetEndpoint(string(ep))
		h.ServeHTTP(w, r)
	})
}

// endpointFunc serves one endpoint. It returns the answer's status, the
// body to encode, and the cause of a failure for OnError.
type endpointFunc func(w http.ResponseWriter, r *http.Request) (int, any, error)

// endpoint turns an endpointFunc into a handler that writes its answer and
// reports failures.
func (a *API) endpoint(ep Endpoint, fn endpointFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		status, body, err := fn(w, r)
		var ra retryAfterer
		if status == http.StatusServiceUnavailable && errors.As(err, &ra) {
			w.Header().Set("Retry-After", httpx.RetryAfter(ra.RetryAfter()))
		}
		if err != nil && a.opts.OnError != nil {
			a.opts.OnError(r, ep, status, err)
		}
		httpx.WriteJSON(w, status, body)
	})
}

// serviceURL expands the service URL template for one account.
func (a *API) serviceURL(userAutomationID, userID int64) string {
	if a.opts.ServiceURL == "" {
		return ""
	}
	return strings.NewReplacer(
		"{user_automation_id}", strconv.FormatInt(userAutomationID, 10),
		"{user_id}", strconv.FormatInt(userID, 10),
	).Replace(a.opts.ServiceURL)
}
