package outbox

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
)

// maxListLimit bounds the admin list.
const maxListLimit = 1000

// listAnswer is the admin list.
type listAnswer struct {
	Stats Stats  `json:"stats"`
	Items []Item `json:"items"`
}

// resolveRequest is the admin resolve body.
type resolveRequest struct {
	ID     string `json:"id"`
	Action Action `json:"action"`
}

// resolveAnswer acknowledges a resolve.
type resolveAnswer struct {
	ID     string `json:"id"`
	Action Action `json:"action"`
}

// AdminHandler serves the outbox's admin view. Mount it under a prefix
// with http.StripPrefix (the lead mounts it at /outbox); relative to it:
//
//   - GET / lists items as JSON {"stats": ..., "items": [...]}, oldest
//     first. Query parameters kind (report|consume), state
//     (pending|unknown|failed) and limit (1..1000, default 100) select.
//     Items carry their record (usage, key_id, model, user id) and a
//     secret-free last_error; never a key or a token.
//   - POST /resolve with {"id": "<item id>", "action": "requeue"|"drop"}
//     resolves an unknown or failed item: requeue makes it pending and
//     due now, drop deletes it. 404 for an unknown id, 409 for a pending
//     item, 400 for a malformed request.
//
// The handler does no authentication: the admin listener's does.
func (o *Outbox) AdminHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch path := r.URL.Path; {
		case path == "" || path == "/":
			if r.Method != http.MethodGet && r.Method != http.MethodHead {
				w.Header().Set("Allow", "GET, HEAD")
				adminError(w, http.StatusMethodNotAllowed, "method not allowed")
				return
			}
			o.serveList(w, r)
		case path == "/resolve":
			if r.Method != http.MethodPost {
				w.Header().Set("Allow", http.MethodPost)
				adminError(w, http.StatusMethodNotAllowed, "method not allowed")
				return
			}
			o.serveResolve(w, r)
		default:
			adminError(w, http.StatusNotFound, "not found")
		}
	})
}

// serveList answers the list.
func (o *Outbox) serveList(w http.ResponseWriter, r *http.Request) {
	f, msg := parseFilter(r)
	if msg != "" {
		adminError(w, http.StatusBadRequest, msg)
		return
	}
	stats, err := o.store.Stats(r.Context())
	if err != nil {
		adminError(w, http.StatusServiceUnavailable, "outbox store unavailable")
		return
	}
	items, err := o.store.List(r.Context(), f)
	if err != nil {
		adminError(w, http.StatusServiceUnavailable, "outbox store unavailable")
		return
	}
	if items == nil {
		items = []Item{}
	}
	adminJSON(w, http.StatusOK, listAnswer{Stats: stats, Items: items})
}

// parseFilter reads the list's query; msg says what is wrong.
func parseFilter(r *http.Request) (f Filter, msg string) {
	q := r.URL.Query()
	f.Kind, f.State = Kind(q.Get("kind")), State(q.Get("state"))
	switch f.Kind {
	case "", KindReport, KindConsume:
	default:
		return f, "kind must be report or consume"
	}
	switch f.State {
	case "", StatePending, StateUnknown, StateFailed:
	default:
		return f, "state must be pending, unknown or failed"
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxListLimit {
			return f, "limit must be an integer from 1 to 1000"
		}
		f.Limit = n
	}
	return f, ""
}

// serveResolve applies an admin action.
func (o *Outbox) serveResolve(w http.ResponseWriter, r *http.Request) {
	var req resolveRequest
	dec := json.NewDecoder(io.LimitReader(r.Body, 4096))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		adminError(w, http.StatusBadRequest, `body must be {"id": ..., "action": ...}`)
		return
	}
	if _, ok := splitID(req.ID); !ok {
		adminError(w, http.StatusBadRequest, "id is not an outbox item id")
		return
	}
	if req.Action != ActionRequeue && req.Action != ActionDrop {
		adminError(w, http.StatusBadRequest, "action must be requeue or drop")
		return
	}
	err := o.store.Resolve(r.Context(), req.ID, req.Action, o.opts.Now())
	switch {
	case errors.Is(err, ErrNotFound):
		adminError(w, http.StatusNotFound, "no such item")
		return
	case errors.Is(err, ErrNotParked):
		adminError(w, http.StatusConflict, "item is pending: only unknown or failed items resolve")
		return
	case err != nil:
		adminError(w, http.StatusServiceUnavailable, "outbox store unavailable")
		return
	}
	if req.Action == ActionRequeue {
		select {
		case o.wake <- struct{}{}:
		default:
		}
	}
	adminJSON(w, http.StatusOK, resolveAnswer(req))
}

// adminError answers {"error": msg}.
func adminError(w http.ResponseWriter, status int, msg string) {
	adminJSON(w, status, map[string]string{"error": msg})
}

// adminJSON answers v as JSON.
func adminJSON(w http.ResponseWriter, status int, v any) {
	var buf bytes.Buffer
	if err := json.NewEncoder(&buf).Encode(v); err != nil {
		status, buf = http.StatusInternalServerError, *bytes.NewBufferString("{}\n")
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}
