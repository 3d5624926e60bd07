package fakeplatform

import (
	"bytes"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"time"
)

// Fault is a failure injected into an endpoint.
type Fault struct {
	// Delay holds the request this long before anything else happens;
	// it ends early when the client goes away.
	Delay time.Duration
	// Down drops the connection without an answer.
	Down bool
	// Status answers this status with {"detail": ...} (when Down is not
	// set). Zero with Down unset: only Delay applies.
	Status int
	// AfterApply applies the request first (records it, charges the
	// ledger) and then fails with Down or Status: an outcome the caller
	// cannot know.
	AfterApply bool
	// Times is how many requests the fault affects; zero: every request
	// until ClearFault.
	Times int
}

// SetFault injects a fault into an endpoint, replacing any other.
func (p *Platform) SetFault(ep Endpoint, f Fault) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.faults[ep] = &f
}

// ClearFault removes an endpoint's fault.
func (p *Platform) ClearFault(ep Endpoint) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.faults, ep)
}

// takeFault counts a request and returns the fault it meets, if any.
func (p *Platform) takeFault(ep Endpoint) (Fault, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls[ep]++
	f := p.faults[ep]
	if f == nil {
		return Fault{}, false
	}
	got := *f
	if f.Times > 0 {
		if f.Times--; f.Times == 0 {
			delete(p.faults, ep)
		}
	}
	return got, true
}

// result is an endpoint's answer before it is written.
type result struct {
	status int
	body   any
}

// handlerFunc handles one endpoint's request, which has passed the method
// check, with its body read.
type handlerFunc func(r *http.Request, body []byte) result

// endpoint wraps a handler with the method check, the body limit and the
// endpoint's fault.
func (p *Platform) endpoint(ep Endpoint, h handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			writeJSON(w, http.StatusMethodNotAllowed, detail("Method Not Allowed"))
			return
		}
		// Read the body first: only then does the server notice a client
		// that goes away, which ends a Delay.
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
		var tooLarge *http.MaxBytesError
		switch {
		case errors.As(err, &tooLarge):
			writeJSON(w, http.StatusRequestEntityTooLarge, detail("body too large"))
			return
		case err != nil:
			writeJSON(w, http.StatusBadRequest, detail("body could not be read"))
			return
		}
		f, faulty := p.takeFault(ep)
		if faulty && f.Delay > 0 {
			t := time.NewTimer(f.Delay)
			select {
			case <-t.C:
			case <-r.Context().Done():
				t.Stop()
				return
			}
		}
		if faulty && !f.AfterApply && fail(w, f) {
			return
		}
		res := h(r, body)
		if faulty && f.AfterApply && fail(w, f) {
			return
		}
		writeJSON(w, res.status, res.body)
	})
}

// fail answers as the fault says and reports whether it did.
func fail(w http.ResponseWriter, f Fault) bool {
	switch {
	case f.Down:
		// The server drops the connection and logs nothing.
		panic(http.ErrAbortHandler)
	case f.Status != 0:
		writeJSON(w, f.Status, detail("injected failure"))
		return true
	}
	return false
}

// checkToken compares the presented service token with the automation's,
// in constant time. It returns a 401 result when they differ.
func checkToken(r *http.Request, want string) (result, bool) {
	got := r.Header.Get("X-Zimmer-Service-Token")
	if got == "" {
		return result{http.StatusUnauthorized, detail("Missing service token")}, false
	}
	if want == "" || subtle.ConstantTimeCompare([]byte(got), []byte(want)) != 1 {
		return result{http.StatusUnauthorized, detail("Invalid service token")}, false
	}
	return result{}, true
}

// errorBody is a FastAPI error.
type errorBody struct {
	Detail string `json:"detail"`
}

func detail(msg string) errorBody { return errorBody{Detail: msg} }

// writeJSON answers status with v as JSON.
func writeJSON(w http.ResponseWriter, status int, v any) {
	var buf bytes.Buffer
	_ = json.NewEncoder(&buf).Encode(v)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}
