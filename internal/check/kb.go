package check

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// KB status fields: the platform's POST answer and the guide's GET answer.
var (
	kbPlatformFields = []field{
		optional("status", kindEnum, "healthy", "warning", "error"),
		required("backup_status", kindBool),
		required("error_logs", kindList),
		optional("supports_reset", kindBool),
		optional("last_updated", kindTime),
	}
	kbGuideFields = []field{
		required("status", kindEnum, "empty", "ready", "processing", "error"),
		required("last_updated", kindTime),
		required("total_documents", kindInt),
		required("healthy", kindBool),
	}
	kbResetGuideFields = []field{
		required("success", kindBool),
		required("message", kindString),
		required("reset_at", kindTime),
	}
)

// checkKB checks KB status (POST first: its 404 means no KB), then the
// guide's GET, the auth failures and both reset dialects.
func (r *runner) checkKB(ctx context.Context) {
	switch {
	case r.kb == KBSkip:
		r.skip(KBStatus, "knowledge base", "skipped (-kb off)")
		return
	case r.urls[KBStatus] == "":
		r.skip(KBStatus, "knowledge base", "skipped: no base URL and no KB status URL")
		return
	}
	if !r.checkKBStatusPost(ctx) {
		return
	}
	r.checkKBStatusGet(ctx)
	r.checkAuthOf(ctx, KBStatus, r.kbBody())
	if r.urls[KBReset] == "" {
		r.skip(KBReset, "knowledge base reset", "skipped: no base URL and no KB reset URL")
		return
	}
	r.checkMethodOf(ctx, KBReset)
	r.checkAuthOf(ctx, KBReset, r.kbBody())
	r.checkKBReset(ctx)
}

func (r *runner) kbBody() map[string]any {
	return map[string]any{"user_id": r.uid, "user_automation_id": r.uaid}
}

// checkKBStatusPost sends the platform's KB status call and reports
// whether the automation has a knowledge base to check further.
func (r *runner) checkKBStatusPost(ctx context.Context) bool {
	c := call{endpoint: KBStatus, check: "POST, platform dialect", method: http.MethodPost,
		url: r.urls[KBStatus], body: r.kbBody(), token: validToken}
	r.exchange(ctx, c, func(a answer, v *verdict) {
		if a.status == http.StatusNotFound {
			r.judgeNoKB(a, v)
			return
		}
		if a.status < 200 || a.status >= 300 {
			v.fail("status %d: the platform wants a 2xx; %s", a.status, snippet(a.body))
			return
		}
		if a.status != http.StatusOK {
			v.warn("status %d: the guide answers 200", a.status)
		}
		o, err := decodeObject(a.body)
		if err != nil {
			v.fail("answer is %v (an array breaks the platform's admin page): %s",
				err, snippet(a.body))
			return
		}
		r.kbPresent = true
		checkFields(o, "the platform", v, kbPlatformFields...)
		var sr bool
		if json.Unmarshal(o["supports_reset"], &sr) == nil {
			r.supportsReset = &sr
		}
		if !v.failed() {
			v.note("status %s, supports_reset %s", o["status"], o["supports_reset"])
		}
	})
	return r.kbPresent
}

// judgeNoKB reads a 404 to the first KB call: no knowledge base, a
// warning, unless the KB was required.
func (r *runner) judgeNoKB(a answer, v *verdict) {
	why := "404: no knowledge base, the platform shows none"
	if _, err := decodeObject(a.body); err != nil {
		why += " (the answer is not JSON: is the URL right?)"
	}
	if r.kb == KBRequire {
		v.fail("%s, but -kb on requires one", why)
		return
	}
	v.warn("%s; the other KB checks are skipped", why)
}

// checkKBStatusGet sends the guide's KB status call.
func (r *runner) checkKBStatusGet(ctx context.Context) {
	c := call{endpoint: KBStatus, check: "GET, guide dialect", method: http.MethodGet,
		url: withQuery(r.urls[KBStatus], "user_automation_id", r.uaid), token: validToken}
	r.exchange(ctx, c, func(a answer, v *verdict) {
		if a.status != http.StatusOK {
			v.fail("status %d: want 200; %s", a.status, snippet(a.body))
			return
		}
		o, err := decodeObject(a.body)
		if err != nil {
			v.fail("answer is %v: %s", err, snippet(a.body))
			return
		}
		checkFields(o, "the guide", v, kbGuideFields...)
		if !v.failed() {
			v.note("status %s, %s documents", o["status"], o["total_documents"])
		}
	})
}

// checkKBReset resets the test account's KB with the id in the query (the
// guide) and in a JSON body (the platform). A 404 is fine when KB status
// did not claim reset support.
func (r *runner) checkKBReset(ctx context.Context) {
	calls := []call{
		{endpoint: KBReset, check: "POST, id in query (guide)", method: http.MethodPost,
			url:   withQuery(r.urls[KBReset], "user_automation_id", r.uaid),
			token: validToken},
		{endpoint: KBReset, check: "POST, id in body (platform)", method: http.MethodPost,
			url: r.urls[KBReset], body: map[string]any{"user_automation_id": r.uaid},
			token: validToken},
	}
	for _, c := range calls {
		r.exchange(ctx, c, r.judgeKBReset)
	}
}

func (r *runner) judgeKBReset(a answer, v *verdict) {
	if a.status == http.StatusNotFound {
		if r.supportsReset != nil && *r.supportsReset {
			v.fail("404, yet KB status says supports_reset true")
			return
		}
		v.warn("404: no KB reset (the platform hides its reset button)")
		return
	}
	if a.status != http.StatusOK {
		v.fail("status %d: want 200; %s", a.status, snippet(a.body))
		return
	}
	o, err := decodeObject(a.body)
	if err != nil {
		v.fail("answer is %v: %s", err, snippet(a.body))
		return
	}
	checkFields(o, "the guide", v, kbResetGuideFields...)
	if raw, ok := o["status"]; ok {
		var s string
		if json.Unmarshal(raw, &s) != nil || s != "success" {
			v.warn("\"status\" is %s: the platform shows anything but \"success\" "+
				"as a failed reset", raw)
		}
	}
	if !v.failed() {
		v.note("reset")
	}
}

// withQuery adds key=value to raw's query.
func withQuery(raw, key string, value int64) string {
	u, err := url.Parse(raw)
	if err != nil {
		return raw // validated earlier; cannot happen
	}
	q := u.Query()
	q.Set(key, strconv.FormatInt(value, 10))
	u.RawQuery = q.Encode()
	return u.String()
}

// toggleSlash adds a trailing slash to raw's path, or removes it.
func toggleSlash(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return raw
	}
	if strings.HasSuffix(u.Path, "/") && u.Path != "/" {
		u.Path = strings.TrimSuffix(u.Path, "/")
	} else {
		u.Path += "/"
	}
	u.RawPath = ""
	return u.String()
}

// checkSlashes sends the URL checker's bare GET to each protected
// endpoint with its trailing slash toggled: a redirect fails, a 404
// warns (the platform must then get the URL exactly as given).
func (r *runner) checkSlashes(ctx context.Context) {
	eps := []Endpoint{Provision, Consume}
	if r.kbPresent {
		eps = append(eps, KBStatus)
		if r.urls[KBReset] != "" {
			eps = append(eps, KBReset)
		}
	}
	for _, ep := range eps {
		c := call{endpoint: ep, check: "trailing slash toggled",
			method: http.MethodGet, url: toggleSlash(r.urls[ep])}
		r.exchange(ctx, c, func(a answer, v *verdict) {
			if a.status == http.StatusNotFound {
				v.warn("404: the platform must be given the URL exactly as checked")
				return
			}
			v.note("%d, no redirect", a.status)
		})
	}
}
