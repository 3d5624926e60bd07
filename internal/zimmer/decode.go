package zimmer

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metering"
)

// Limits on free-text request fields, so a caller cannot grow the journal
// or the idempotency index without bound.
const maxUsageTypeLen = 128

// RequestError is a request the sidecar refuses with 400. Field names the
// offending JSON field or query parameter ("" for the body as a whole);
// Reason says what is wrong without echoing the value, so a secret sent
// in the wrong place never reaches an answer or a log.
type RequestError struct {
	Field  string
	Reason string
}

// Error returns "field reason", or the reason alone for the whole body.
func (e *RequestError) Error() string {
	if e.Field == "" {
		return e.Reason
	}
	return e.Field + " " + e.Reason
}

// Reasons shared by the id and count parsers.
const (
	reasonRequired = "is required"
	reasonType     = "must be an integer"
	reasonFraction = "must be a whole number"
	reasonTooLarge = "is too large"
	reasonPositive = "must be a positive integer"
	reasonNegative = "must not be negative"
)

// intField reads an integer field sent as a JSON number or a numeric
// string. present is false for an absent field or JSON null.
func intField(field string, raw json.RawMessage) (v int64, present bool, err error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return 0, false, nil
	}
	switch c := raw[0]; {
	case c == '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return 0, true, &RequestError{field, reasonType}
		}
		v, err = parseIntString(s)
	case c == '-' || (c >= '0' && c <= '9'):
		v, err = parseJSONInt(string(raw))
	default:
		return 0, true, &RequestError{field, reasonType}
	}
	switch {
	case errors.Is(err, errFraction):
		return 0, true, &RequestError{field, reasonFraction}
	case errors.Is(err, errOverflow):
		return 0, true, &RequestError{field, reasonTooLarge}
	case err != nil:
		return 0, true, &RequestError{field, reasonType}
	}
	return v, true, nil
}

// idField reads a required id: present, an integer, above zero.
func idField(field string, raw json.RawMessage) (int64, error) {
	v, present, err := intField(field, raw)
	switch {
	case err != nil:
		return 0, err
	case !present:
		return 0, &RequestError{field, reasonRequired}
	case v <= 0:
		return 0, &RequestError{field, reasonPositive}
	}
	return v, nil
}

// stringField reads an optional string field; nil means absent or null.
func stringField(field string, raw json.RawMessage) (*string, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var s string
	if raw[0] != '"' || json.Unmarshal(raw, &s) != nil {
		return nil, &RequestError{field, "must be a string or null"}
	}
	return &s, nil
}

// decodeObject unmarshals a request body into dst, a struct of
// json.RawMessage fields. Unknown fields are ignored.
func decodeObject(body []byte, dst any) error {
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		return &RequestError{Reason: "request body is required"}
	}
	if body[0] != '{' {
		return &RequestError{Reason: "request body must be a JSON object"}
	}
	if err := json.Unmarshal(body, dst); err != nil {
		return &RequestError{Reason: "request body is not valid JSON"}
	}
	return nil
}

// provisionWire is a provision body as either dialect sends it.
type provisionWire struct {
	UserAutomationID json.RawMessage `json:"user_automation_id"`
	UserID           json.RawMessage `json:"user_id"`
	BotToken         json.RawMessage `json:"bot_token"`
	DemoTokens       json.RawMessage `json:"demo_tokens"`
}

// decodeProvision reads a provision body. user_automation_id and user_id
// are required positive integers (JSON numbers or numeric strings);
// bot_token is an optional string; demo_tokens is an optional
// non-negative integer, nil when absent or null.
func decodeProvision(body []byte) (ProvisionCall, error) {
	var w provisionWire
	if err := decodeObject(body, &w); err != nil {
		return ProvisionCall{}, err
	}

	var call ProvisionCall
	var err error
	if call.UserAutomationID, err = idField("user_automation_id", w.UserAutomationID); err != nil {
		return ProvisionCall{}, err
	}
	if call.UserID, err = idField("user_id", w.UserID); err != nil {
		return ProvisionCall{}, err
	}
	if call.BotToken, err = stringField("bot_token", w.BotToken); err != nil {
		return ProvisionCall{}, err
	}

	demo, present, err := intField("demo_tokens", w.DemoTokens)
	switch {
	case err != nil:
		return ProvisionCall{}, err
	case present && demo < 0:
		return ProvisionCall{}, &RequestError{"demo_tokens", reasonNegative}
	case present:
		call.DemoTokens = &demo
	}
	return call, nil
}

// consumeCall is a decoded usage-consume request.
type consumeCall struct {
	UserAutomationID int64
	Units            int64
	UsageType        string
	// RequestID is meta.request_id, "" when absent.
	RequestID string
}

// consumeWire is a consume body in either dialect: the guide's units and
// usage_type, or the older tokens_consumed and action.
type consumeWire struct {
	UserAutomationID json.RawMessage `json:"user_automation_id"`
	Units            json.RawMessage `json:"units"`
	TokensConsumed   json.RawMessage `json:"tokens_consumed"`
	UsageType        json.RawMessage `json:"usage_type"`
	Action           json.RawMessage `json:"action"`
	Meta             json.RawMessage `json:"meta"`
	// session_id and timestamp are accepted in any shape and not used.
}

// decodeConsume reads a consume body. units (or tokens_consumed, when
// units is absent) must be an integer in [1, maxUnits]; usage_type (or
// action) a non-empty string; meta an optional object whose request_id,
// when present, is a non-empty string or integer.
func decodeConsume(body []byte, maxUnits int64) (consumeCall, error) {
	var w consumeWire
	if err := decodeObject(body, &w); err != nil {
		return consumeCall{}, err
	}

	var call consumeCall
	var err error
	if call.UserAutomationID, err = idField("user_automation_id", w.UserAutomationID); err != nil {
		return consumeCall{}, err
	}
	if call.Units, err = unitsField(w, maxUnits); err != nil {
		return consumeCall{}, err
	}
	if call.UsageType, err = usageTypeField(w); err != nil {
		return consumeCall{}, err
	}
	if call.RequestID, err = requestIDField(w.Meta); err != nil {
		return consumeCall{}, err
	}
	return call, nil
}

// unitsField takes units, or tokens_consumed when units is absent.
func unitsField(w consumeWire, maxUnits int64) (int64, error) {
	field, raw := "units", w.Units
	if isAbsent(raw) && !isAbsent(w.TokensConsumed) {
		field, raw = "tokens_consumed", w.TokensConsumed
	}
	v, present, err := intField(field, raw)
	switch {
	case err != nil:
		return 0, err
	case !present:
		return 0, &RequestError{"units", reasonRequired}
	case v <= 0:
		return 0, &RequestError{field, reasonPositive}
	case v > maxUnits:
		return 0, &RequestError{field, fmt.Sprintf("must not exceed %d", maxUnits)}
	}
	return v, nil
}

// usageTypeField takes usage_type, or action when usage_type is absent.
func usageTypeField(w consumeWire) (string, error) {
	field, raw := "usage_type", w.UsageType
	if isAbsent(raw) && !isAbsent(w.Action) {
		field, raw = "action", w.Action
	}
	s, err := stringField(field, raw)
	switch {
	case err != nil:
		return "", &RequestError{field, "must be a string"}
	case s == nil:
		return "", &RequestError{"usage_type", reasonRequired}
	case strings.TrimSpace(*s) == "":
		return "", &RequestError{field, "must not be empty"}
	case len(*s) > maxUsageTypeLen:
		return "", &RequestError{field, "is too long"}
	}
	return *s, nil
}

// requestIDField reads meta.request_id, "" when meta or the id is absent.
func requestIDField(meta json.RawMessage) (string, error) {
	if isAbsent(meta) {
		return "", nil
	}
	meta = bytes.TrimSpace(meta)
	var m struct {
		RequestID json.RawMessage `json:"request_id"`
	}
	if meta[0] != '{' || json.Unmarshal(meta, &m) != nil {
		return "", &RequestError{"meta", "must be an object"}
	}
	raw := bytes.TrimSpace(m.RequestID)
	if isAbsent(raw) {
		return "", nil
	}
	const field = "meta.request_id"
	var id string
	switch c := raw[0]; {
	case c == '"':
		if json.Unmarshal(raw, &id) != nil {
			return "", &RequestError{field, "must be a string"}
		}
	case c == '-' || (c >= '0' && c <= '9'):
		n, err := parseJSONInt(string(raw))
		if err != nil {
			return "", &RequestError{field, "must be a string"}
		}
		id = strconv.FormatInt(n, 10)
	default:
		return "", &RequestError{field, "must be a string"}
	}
	return checkKey(field, id)
}

// checkKey validates an idempotency key from the header or the meta.
func checkKey(field, key string) (string, error) {
	switch {
	case strings.TrimSpace(key) == "":
		return "", &RequestError{field, "must not be empty"}
	case metering.CheckIdempotencyKey(key) != nil:
		return "", &RequestError{field,
			"must be at most 255 printable ASCII characters"}
	}
	return key, nil
}

// isAbsent reports whether a field was missing or JSON null.
func isAbsent(raw json.RawMessage) bool {
	raw = bytes.TrimSpace(raw)
	return len(raw) == 0 || string(raw) == "null"
}

// kbCall is a decoded KB status or reset request.
type kbCall struct {
	UserAutomationID int64
	// UserID is 0 when the caller did not send it (the guide's dialect).
	UserID int64
}

// kbWire is a KB request body (the platform's dialect).
type kbWire struct {
	UserAutomationID json.RawMessage `json:"user_automation_id"`
	UserID           json.RawMessage `json:"user_id"`
}

// decodeKB reads a KB request from the query and, when not empty, the JSON
// body. Each field may come from either place; when both carry it they
// must agree. user_automation_id is required, user_id optional.
func decodeKB(query url.Values, body []byte) (kbCall, error) {
	var w kbWire
	if len(bytes.TrimSpace(body)) > 0 {
		if err := decodeObject(body, &w); err != nil {
			return kbCall{}, err
		}
	}

	uaID, err := kbField("user_automation_id", query, w.UserAutomationID)
	if err != nil {
		return kbCall{}, err
	}
	if uaID == 0 {
		return kbCall{}, &RequestError{"user_automation_id", reasonRequired}
	}
	userID, err := kbField("user_id", query, w.UserID)
	if err != nil {
		return kbCall{}, err
	}
	return kbCall{UserAutomationID: uaID, UserID: userID}, nil
}

// kbField reads one positive id from the query and the body; 0 means
// neither carried it.
func kbField(field string, query url.Values, raw json.RawMessage) (int64, error) {
	fromBody, inBody, err := intField(field, raw)
	if err != nil {
		return 0, err
	}
	if inBody && fromBody <= 0 {
		return 0, &RequestError{field, reasonPositive}
	}

	values, inQuery := query[field]
	if !inQuery {
		return fromBody, nil
	}
	if len(values) != 1 {
		return 0, &RequestError{field, "must be given once"}
	}
	fromQuery, err := parseIntString(values[0])
	switch {
	case errors.Is(err, errOverflow):
		return 0, &RequestError{field, reasonTooLarge}
	case err != nil:
		return 0, &RequestError{field, reasonType}
	case fromQuery <= 0:
		return 0, &RequestError{field, reasonPositive}
	case inBody && fromBody != fromQuery:
		return 0, &RequestError{field, "differs between query and body"}
	}
	return fromQuery, nil
}
