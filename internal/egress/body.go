package egress

import (
	"bytes"
	"errors"
	"io"
	"mime"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/egress/usage"
)

// readBody reads the whole request body, at most MaxRequestBytes and
// within BodyTimeout. A declared length over the limit is refused before
// anything is read, so no "100 Continue" goes out.
func (h *Handler) readBody(w http.ResponseWriter, r *http.Request) ([]byte, *apiError) {
	limit := h.opts.MaxRequestBytes
	if r.ContentLength > limit {
		return nil, &errTooLarge
	}
	if r.Body == nil || r.Body == http.NoBody {
		return nil, nil
	}

	// A writer that cannot set deadlines (a test recorder) reads
	// without one.
	rc := http.NewResponseController(w)
	deadline := rc.SetReadDeadline(time.Now().Add(h.opts.BodyTimeout)) == nil
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err == nil {
		if deadline {
			_ = rc.SetReadDeadline(time.Time{})
		}
		return b, nil
	}

	// The rest of the body is never read: the connection closes after
	// the answer, and the deadline stays, so that the server does not
	// wait for the body before answering.
	w.Header().Set("Connection", "close")
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		return nil, &errTooLarge
	case errors.Is(err, os.ErrDeadlineExceeded) || isTimeout(err):
		return nil, &errBodyTimeout
	}
	return nil, &errBodyRead
}

// prepared is the request body as sent upstream, and what was read from
// it.
type prepared struct {
	body []byte
	info usage.RequestInfo
	// strip: a streamed answer's usage-only chunk is the egress's own
	// addition and must not reach the app.
	strip bool
}

// prepare reads a JSON body and, for a streamed chat completions or
// completions request, makes it ask for usage. A body is JSON when it
// looks like an object, whatever its Content-Type says (an upstream may
// not look at it), when its Content-Type says so, and always on a
// metered endpoint; then it must be an object the egress can read. Other
// bodies (uploads, forms) pass as they are.
func prepare(ep endpoint, contentType string, body []byte) (prepared, *apiError) {
	p := prepared{body: body, info: usage.RequestInfo{N: 1}}
	if len(body) == 0 ||
		!ep.metered() && !isJSON(contentType) && !looksLikeObject(body) {
		return p, nil
	}
	info, err := usage.ParseRequest(body)
	if err != nil {
		return p, bodyError(err)
	}
	p.info = info
	if !info.Stream || !ep.streamUsage() {
		return p, nil
	}
	out, appAsked, err := usage.PrepareRequest(body)
	if err != nil {
		return p, bodyError(err)
	}
	p.body, p.strip = out, !appAsked
	return p, nil
}

// bodyError is the answer to a body usage refused: naming the member
// when one is at fault.
func bodyError(err error) *apiError {
	var fe *usage.FieldError
	if !errors.As(err, &fe) {
		return &errBadBody
	}
	return fieldError(fe.Field, fe.Problem)
}

// fieldError is the answer to a request member with a bad value.
func fieldError(field, problem string) *apiError {
	e := errBadBody
	e.message = "the request body's " + field + " " + problem
	e.param = field
	return &e
}

// looksLikeObject reports whether body starts like a JSON object: "{"
// after white space (and a UTF-8 byte order mark, which some servers
// skip).
func looksLikeObject(body []byte) bool {
	b := bytes.TrimPrefix(body, []byte("\xef\xbb\xbf"))
	b = bytes.TrimLeft(b, " \t\r\n")
	return len(b) > 0 && b[0] == '{'
}

// checkEncoding refuses a compressed request body: it could be neither
// metered nor checked.
func checkEncoding(hd http.Header) *apiError {
	for _, v := range hd.Values("Content-Encoding") {
		for enc := range strings.SplitSeq(v, ",") {
			enc = strings.TrimSpace(enc)
			if enc != "" && !strings.EqualFold(enc, "identity") {
				return &errEncoding
			}
		}
	}
	return nil
}

// isJSON reports whether a Content-Type is JSON.
func isJSON(ct string) bool {
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return false
	}
	return mt == "application/json" || strings.HasSuffix(mt, "+json")
}
