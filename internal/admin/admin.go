// Package admin serves the ledger's operator API on the admin listener:
// reading an account, crediting paid tokens and exporting the journal.
// The `zimmer-sidecar ledger` sub-commands are clients of this API, so they
// work the same whichever store backs the ledger and while it is open.
//
// The package does not decide who may call it: the admin listener is bound
// to loopback by default, and the wiring adds authentication when it is not.
package admin

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"time"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/httpx"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metering"
)

// maxCreditBody bounds a credit request's body.
const maxCreditBody = 64 << 10

// CreditBody is the JSON body of POST /admin/ledger/credit.
type CreditBody struct {
	UserAutomationID int64  `json:"user_automation_id"`
	Units            int64  `json:"units"`
	Reason           string `json:"reason,omitempty"`
}

// Register adds the ledger routes to mux:
//
//	GET  /admin/ledger/accounts/{id}   one account
//	POST /admin/ledger/credit          add paid tokens (Idempotency-Key honoured)
//	GET  /admin/ledger/journal         NDJSON entries; ?after=SEQ&limit=N
//
// wrap, when not nil, wraps each handler (authentication).
func Register(mux *http.ServeMux, l metering.Ledger, wrap func(http.Handler) http.Handler) {
	if wrap == nil {
		wrap = func(h http.Handler) http.Handler { return h }
	}
	mux.Handle("GET /admin/ledger/accounts/{id}", wrap(showHandler(l)))
	mux.Handle("POST /admin/ledger/credit", wrap(creditHandler(l)))
	mux.Handle("GET /admin/ledger/journal", wrap(journalHandler(l)))
}

func showHandler(l metering.Ledger) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
		if err != nil || id <= 0 {
			httpx.Error(w, http.StatusBadRequest, "account id must be a positive integer")
			return
		}
		acct, err := l.Account(r.Context(), id)
		if err != nil {
			ledgerError(w, err)
			return
		}
		httpx.WriteJSON(w, http.StatusOK, acct)
	}
}

func creditHandler(l metering.Ledger) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		// A JSON content type cannot be sent cross-site without a CORS
		// preflight, so a web page cannot credit through a browser.
		if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" {
			httpx.Error(w, http.StatusUnsupportedMediaType,
				"Content-Type must be application/json")
			return
		}
		var body CreditBody
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxCreditBody))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&body); err != nil {
			httpx.Error(w, http.StatusBadRequest, "invalid JSON body: "+
				"want {\"user_automation_id\": int, \"units\": int, \"reason\": string}")
			return
		}
		if body.UserAutomationID <= 0 || body.Units <= 0 {
			httpx.Error(w, http.StatusBadRequest,
				"user_automation_id and units must be positive integers")
			return
		}
		key, present := r.Header["Idempotency-Key"]
		if present && (len(key) != 1 || key[0] == "") {
			httpx.Error(w, http.StatusBadRequest, "Idempotency-Key must not be empty")
			return
		}
		req := metering.CreditRequest{
			UserAutomationID: body.UserAutomationID,
			Units:            body.Units,
			Reason:           body.Reason,
		}
		if present {
			req.IdempotencyKey = key[0]
		}
		acct, err := l.Credit(r.Context(), req)
		if err != nil {
			ledgerError(w, err)
			return
		}
		httpx.WriteJSON(w, http.StatusOK, acct)
	}
}

func journalHandler(l metering.Ledger) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		after, err1 := parseUint(q.Get("after"))
		limit, err2 := parseUint(q.Get("limit"))
		if err1 != nil || err2 != nil {
			httpx.Error(w, http.StatusBadRequest, "after and limit must be non-negative integers")
			return
		}
		w.Header().Set("Content-Type", "application/x-ndjson")
		enc := json.NewEncoder(w)
		err := l.Journal(r.Context(), after, int(limit), func(e metering.Entry) error {
			return enc.Encode(e)
		})
		if err != nil {
			// Part of the export may be out already; a trailing error line
			// tells the reader it is incomplete.
			_ = enc.Encode(map[string]string{"error": "journal export failed"})
		}
	}
}

func parseUint(s string) (uint64, error) {
	if s == "" {
		return 0, nil
	}
	return strconv.ParseUint(s, 10, 63)
}

// ledgerError maps ledger errors to JSON answers with fixed messages.
func ledgerError(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, metering.ErrUnknownAccount):
		httpx.Error(w, http.StatusNotFound, "unknown user_automation_id")
	case errors.Is(err, metering.ErrIdempotencyConflict):
		httpx.Error(w, http.StatusConflict, "Idempotency-Key was used for a different request")
	case errors.Is(err, metering.ErrInvalidUnits):
		httpx.Error(w, http.StatusBadRequest, "invalid units")
	case errors.Is(err, metering.ErrInvalidIdempotencyKey):
		httpx.Error(w, http.StatusBadRequest,
			"Idempotency-Key must be at most 255 printable ASCII characters")
	default:
		httpx.Error(w, http.StatusInternalServerError, "ledger error")
	}
}

// Client calls the admin API; the CLI uses it.
type Client struct {
	Base string // e.g. "http://127.0.0.1:9090"
	HTTP *http.Client
	// Token, when set, is sent as X-Zimmer-Service-Token.
	Token string
}

// Account fetches one account.
func (c *Client) Account(id int64) (metering.Account, error) {
	var a metering.Account
	err := c.do("GET", fmt.Sprintf("/admin/ledger/accounts/%d", id), nil, "", &a)
	return a, err
}

// Credit adds units of paid tokens; key may be empty.
func (c *Client) Credit(body CreditBody, key string) (metering.Account, error) {
	var a metering.Account
	err := c.do("POST", "/admin/ledger/credit", body, key, &a)
	return a, err
}

// Journal streams the NDJSON journal into w.
func (c *Client) Journal(after uint64, w io.Writer) error {
	resp, err := c.send("GET", fmt.Sprintf("/admin/ledger/journal?after=%d", after), nil, "")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, err = io.Copy(w, resp.Body)
	return err
}

func (c *Client) do(method, path string, body any, key string, out any) error {
	resp, err := c.send(method, path, body, key)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return json.NewDecoder(resp.Body).Decode(out)
}

func (c *Client) send(method, path string, body any, key string) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, c.Base+path, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	if c.Token != "" {
		req.Header.Set("X-Zimmer-Service-Token", c.Token)
	}
	hc := c.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: 30 * time.Second}
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("call admin api: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		var e struct {
			Detail string `json:"detail"`
		}
		_ = json.NewDecoder(io.LimitReader(resp.Body, 4096)).Decode(&e)
		return nil, fmt.Errorf("admin api: %s: %s", resp.Status, e.Detail)
	}
	return resp, nil
}
