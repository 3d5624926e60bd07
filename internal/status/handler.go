package status

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"html/template"
	"net/http"
	"strconv"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/httpx"
)

// ContentSecurityPolicy is sent with every page: nothing may load, only
// the page's own inline styles apply.
const ContentSecurityPolicy = "default-src 'none'; style-src 'unsafe-inline'"

// RefreshSeconds is how often the page reloads itself.
const RefreshSeconds = 10

//go:embed page.html.tmpl
var pageSource string

// page is parsed once; html/template escapes every value by context.
var page = template.Must(template.New("page").Funcs(template.FuncMap{
	"ms":      fmtMS,
	"pct":     fmtPct,
	"refresh": func() int { return RefreshSeconds },
}).Parse(pageSource))

// format is one way to render a Report.
type format struct {
	contentType string
	render      func(*bytes.Buffer, *Report) error
}

// formats are the values ?format= accepts; "" is the default.
var formats = map[string]format{
	"":     {"text/html; charset=utf-8", renderHTML},
	"html": {"text/html; charset=utf-8", renderHTML},
	"json": {"application/json", renderJSON},
}

// Handler serves the status page for GET and HEAD: HTML by default, the
// Report as JSON with ?format=json. Other methods get 405 JSON with an
// Allow header; an unknown format gets 400 JSON. The handler looks at no
// path, so the caller mounts it where it likes (e.g. /status). It is read
// only: it calls src's functions and the /health handler, nothing else.
func Handler(src Source) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			httpx.Error(w, http.StatusMethodNotAllowed, "Method Not Allowed")
			return
		}
		f, ok := formats[r.URL.Query().Get("format")]
		if !ok {
			httpx.Error(w, http.StatusBadRequest, "format must be html or json")
			return
		}

		rep := Build(r.Context(), src)
		var buf bytes.Buffer
		if err := f.render(&buf, &rep); err != nil {
			// Only a bug in the template gets here; nothing was sent.
			httpx.Error(w, http.StatusInternalServerError, "status page failed")
			return
		}

		h := w.Header()
		h.Set("Content-Type", f.contentType)
		h.Set("Content-Security-Policy", ContentSecurityPolicy)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-store")
		h.Set("Content-Length", strconv.Itoa(buf.Len()))
		w.WriteHeader(http.StatusOK)
		if r.Method != http.MethodHead {
			_, _ = buf.WriteTo(w) // the status line is out; nothing left to do
		}
	})
}

// renderHTML executes the page template.
func renderHTML(buf *bytes.Buffer, rep *Report) error {
	return page.Execute(buf, rep)
}

// renderJSON encodes the report, indented for people reading it raw.
func renderJSON(buf *bytes.Buffer, rep *Report) error {
	enc := json.NewEncoder(buf)
	enc.SetIndent("", "  ")
	return enc.Encode(rep)
}
