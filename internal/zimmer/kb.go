package zimmer

import (
	"context"
	"errors"
	"net/http"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/logging"
)

// kbStatus serves KB status. The method tells the dialect: a GET (the
// guide's) takes the id from the query and answers the guide's states; a
// POST (the platform's) takes it from a JSON body or the query and
// answers the platform's health values. Both answers carry every field.
func (a *API) kbStatus(w http.ResponseWriter, r *http.Request) (int, any, error) {
	if a.opts.KB == nil {
		return fail(http.StatusNotFound, detailNoKB, errors.New("no kb configured"))
	}
	call, status, ans, err := a.readKBCall(w, r)
	if err != nil {
		return status, ans, err
	}
	ctx, cancel := context.WithTimeout(r.Context(), a.opts.KBTimeout)
	defer cancel()

	info, err := a.opts.KB.Status(ctx, call.UserAutomationID, call.UserID)
	if err != nil {
		return kbFailure(err, detailKBStatusApp)
	}
	platform, ok := platformHealth(info.State)
	if !ok {
		return kbFailure(errors.New("kb status: app answered an unknown state"),
			detailKBStatusApp)
	}

	out := KBStatusAnswer{
		Status:           info.State,
		KBState:          info.State,
		LastUpdated:      FormatTime(info.LastUpdated),
		TotalDocuments:   info.TotalDocuments,
		Healthy:          info.State != KBError,
		BackupStatus:     info.BackupStatus,
		ErrorLogs:        info.ErrorLogs,
		SupportsReset:    a.opts.KB.SupportsReset(),
		UserAutomationID: call.UserAutomationID,
	}
	if r.Method == http.MethodPost {
		out.Status = platform
	}
	if info.LastUpdated.IsZero() {
		out.LastUpdated = FormatTime(a.opts.Now())
	}
	if out.ErrorLogs == nil {
		out.ErrorLogs = []string{}
	}
	return http.StatusOK, out, nil
}

// kbReset serves POST kb/reset with the id from the query or the body.
func (a *API) kbReset(w http.ResponseWriter, r *http.Request) (int, any, error) {
	if a.opts.KB == nil {
		return fail(http.StatusNotFound, detailNoKB, errors.New("no kb configured"))
	}
	if !a.opts.KB.SupportsReset() {
		return fail(http.StatusNotFound, detailNoReset, errors.New("no kb reset configured"))
	}
	call, status, ans, err := a.readKBCall(w, r)
	if err != nil {
		return status, ans, err
	}
	ctx, cancel := context.WithTimeout(r.Context(), a.opts.KBTimeout)
	defer cancel()

	if err := a.opts.KB.Reset(ctx, call.UserAutomationID); err != nil {
		return kbFailure(err, detailKBResetApp)
	}
	return http.StatusOK, KBResetAnswer{
		Success:          true,
		Status:           "success",
		Message:          "Knowledge base reset successfully",
		ResetAt:          FormatTime(a.opts.Now()),
		UserAutomationID: call.UserAutomationID,
	}, nil
}

// readKBCall decodes a KB request: the query alone for a GET, the query
// and the JSON body (which may be empty) for a POST.
func (a *API) readKBCall(w http.ResponseWriter, r *http.Request) (kbCall, int, any, error) {
	var body []byte
	if r.Method == http.MethodPost {
		b, status, err := a.readBody(w, r)
		if err != nil {
			status, ans, err := bodyFailure(status, err)
			return kbCall{}, status, ans, err
		}
		body = b
	}
	call, err := decodeKB(r.URL.Query(), body)
	if err != nil {
		status, ans, err := badRequest(err)
		return kbCall{}, status, ans, err
	}
	logging.FromContext(r.Context()).SetUser(call.UserAutomationID)
	return call, http.StatusOK, nil, nil
}

// kbFailure answers a KB backend error: 404 when the app knows no such
// account, else 502 (504 on timeout) with status "error".
func kbFailure(err error, detail string) (int, any, error) {
	if errors.Is(err, ErrNotFound) {
		return fail(http.StatusNotFound, detailUnknown, err)
	}
	return appFailure(err, detail, FailureAnswer{Status: KBFailing})
}

// platformHealth derives the platform's KB health from a guide state:
// ready and empty are healthy, processing a warning, error an error. ok
// is false for a state outside the four.
func platformHealth(state string) (health string, ok bool) {
	switch state {
	case KBReady, KBEmpty:
		return KBHealthy, true
	case KBProcessing:
		return KBWarning, true
	case KBError:
		return KBFailing, true
	}
	return "", false
}
