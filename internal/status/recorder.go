package status

import (
	"net/http"
)

// recorder is a ResponseWriter that keeps the status and up to limit
// bytes of the body. (net/http/httptest is for tests: importing it
// registers a command-line flag.)
type recorder struct {
	header http.Header
	code   int
	body   []byte
	limit  int
}

func newRecorder(limit int) *recorder {
	return &recorder{header: make(http.Header), limit: limit}
}

func (r *recorder) Header() http.Header { return r.header }

func (r *recorder) WriteHeader(code int) {
	if r.code == 0 && code >= 200 {
		r.code = code
	}
}

// Write keeps what fits under the limit and reports every byte written,
// so the handler is never cut short.
func (r *recorder) Write(b []byte) (int, error) {
	if r.code == 0 {
		r.code = http.StatusOK
	}
	if room := r.limit - len(r.body); room > 0 {
		r.body = append(r.body, b[:min(room, len(b))]...)
	}
	return len(b), nil
}

// statusCode is the answer's status; a handler that wrote nothing
// answered 200, as net/http would send.
func (r *recorder) statusCode() int {
	if r.code == 0 {
		return http.StatusOK
	}
	return r.code
}
