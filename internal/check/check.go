package check

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// ErrOptions marks invalid Options; Run wraps it with the problem.
var ErrOptions = errors.New("invalid check options")

// Endpoint names one Zimmer endpoint.
type Endpoint string

// The endpoints, in the order Run checks them.
const (
	Health    Endpoint = "health"
	Provision Endpoint = "provision"
	Consume   Endpoint = "consume"
	KBStatus  Endpoint = "kb_status"
	KBReset   Endpoint = "kb_reset"
)

// defaultPaths are joined to Options.BaseURL for endpoints whose URL is
// not given.
var defaultPaths = map[Endpoint]string{
	Health:    "/health",
	Provision: "/provision",
	Consume:   "/usage/consume",
	KBStatus:  "/kb/status",
	KBReset:   "/kb/reset",
}

// KBMode says whether the knowledge-base endpoints are checked.
type KBMode int

const (
	// KBAuto checks them unless the first KB call answers 404, which
	// means the automation has no knowledge base (a warning).
	KBAuto KBMode = iota
	// KBRequire checks them and fails on a 404.
	KBRequire
	// KBSkip does not call them.
	KBSkip
)

// DefaultTestID is the default test account id (user_automation_id and
// user_id): high, so it is unlikely to belong to a real customer.
const DefaultTestID = 999999

// URLs holds one absolute URL per endpoint, as the platform stores them.
// An empty field is Options.BaseURL joined with the endpoint's usual path
// (/health, /provision, /usage/consume, /kb/status, /kb/reset).
type URLs struct {
	Health, Provision, Consume, KBStatus, KBReset string
}

// Budgets are the time each call may take. A zero field takes its default:
// the tighter of the guide's and the platform's limit (contract.md).
type Budgets struct {
	Health    time.Duration // default 5 s
	Provision time.Duration // default 10 s (guide 10 s, platform 30 s)
	Consume   time.Duration // default 3 s
	KB        time.Duration // default 10 s (guide 15 s, platform 10 s)
}

// DefaultBudgets are the budgets of a zero Budgets.
var DefaultBudgets = Budgets{
	Health:    5 * time.Second,
	Provision: 10 * time.Second,
	Consume:   3 * time.Second,
	KB:        10 * time.Second,
}

func (b Budgets) withDefaults() Budgets {
	pick := func(v, d time.Duration) time.Duration {
		if v > 0 {
			return v
		}
		return d
	}
	return Budgets{
		Health:    pick(b.Health, DefaultBudgets.Health),
		Provision: pick(b.Provision, DefaultBudgets.Provision),
		Consume:   pick(b.Consume, DefaultBudgets.Consume),
		KB:        pick(b.KB, DefaultBudgets.KB),
	}
}

func (b Budgets) of(ep Endpoint) time.Duration {
	switch ep {
	case Health:
		return b.Health
	case Provision:
		return b.Provision
	case Consume:
		return b.Consume
	default:
		return b.KB
	}
}

// Options configure Run.
type Options struct {
	// BaseURL is the automation's base, e.g. "https://bot.example/api";
	// endpoint paths are appended to it. It may be empty when URLs names
	// health, provision and consume.
	BaseURL string
	// URLs override the endpoint URLs derived from BaseURL.
	URLs URLs
	// Token is the service token sent in X-Zimmer-Service-Token. Required.
	// It never appears in a Result.
	Token string
	// UserAutomationID and UserID name the test account; zero means
	// DefaultTestID.
	UserAutomationID, UserID int64
	// KB says whether to check the knowledge-base endpoints.
	KB KBMode
	// HTTPClient sends the calls; nil means a client with its own
	// transport and no proxy. Run never follows redirects, whatever the
	// client's CheckRedirect says.
	HTTPClient *http.Client
	// Budgets bound each call; see Budgets.
	Budgets Budgets
	// Now is the clock calls are timed with; nil means time.Now. Tests
	// inject a fake one. Deadlines still run on the real clock.
	Now func() time.Time
}

// Run checks the automation Options describe and returns the report. The
// error is non-nil only for invalid Options (wrapping ErrOptions) or when
// ctx ended, in which case the report holds the rows checked so far.
func Run(ctx context.Context, opts Options) (*Report, error) {
	r, err := newRunner(opts)
	if err != nil {
		return nil, err
	}
	r.run(ctx)
	r.report.finish()
	if err := ctx.Err(); err != nil {
		return r.report, fmt.Errorf("check interrupted: %w", err)
	}
	return r.report, nil
}

// resolveURLs fills every endpoint's URL and validates it.
func resolveURLs(opts Options) (map[Endpoint]string, error) {
	given := map[Endpoint]string{
		Health: opts.URLs.Health, Provision: opts.URLs.Provision,
		Consume: opts.URLs.Consume, KBStatus: opts.URLs.KBStatus,
		KBReset: opts.URLs.KBReset,
	}
	base := strings.TrimSuffix(opts.BaseURL, "/")
	if base != "" {
		if err := validateURL(base); err != nil {
			return nil, fmt.Errorf("%w: base URL: %w", ErrOptions, err)
		}
		u, _ := url.Parse(base)
		if u.RawQuery != "" || u.Fragment != "" {
			return nil, fmt.Errorf("%w: base URL: no query or fragment allowed", ErrOptions)
		}
	}
	out := make(map[Endpoint]string, len(given))
	for ep, u := range given {
		switch {
		case u != "":
			if err := validateURL(u); err != nil {
				return nil, fmt.Errorf("%w: %s URL: %w", ErrOptions, ep, err)
			}
			out[ep] = u
		case base != "":
			out[ep] = base + defaultPaths[ep]
		case ep == KBStatus || ep == KBReset:
			// No KB URL and no base: the KB rows are skipped.
		default:
			return nil, fmt.Errorf("%w: no base URL and no %s URL", ErrOptions, ep)
		}
	}
	return out, nil
}

// validateURL accepts an absolute http or https URL with a host and no
// user information (which would be sent as credentials).
func validateURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return errors.New("not a URL")
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return errors.New("scheme must be http or https")
	}
	if u.Host == "" {
		return errors.New("no host")
	}
	if u.User != nil {
		return errors.New("user information is not allowed")
	}
	return nil
}
