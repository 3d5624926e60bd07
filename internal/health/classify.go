package health

import (
	"encoding/json"
	"net/http"
	"unicode/utf8"
)

// The platform's health classes, as Classify returns them.
const (
	ClassHealthy   = "healthy"
	ClassDegraded  = "degraded"
	ClassUnhealthy = "unhealthy"
)

// Classify reproduces the platform's classifier of a /health answer
// (services/automation_health.py in the platform's code):
//
//   - any status but exactly 200 is unhealthy;
//   - the body must be a JSON object holding the keys "status", "version"
//     and "uptime" (only their presence counts), else unhealthy;
//   - a "status" that is exactly the string "ok", "healthy" or "up" is
//     healthy; any other value, of any JSON type, is degraded.
//
// The platform decodes the body as UTF-8, so a body that is not valid
// UTF-8 is unhealthy there and here. Where the platform's Python would
// crash or accept oddities, Classify is stricter and says unhealthy: a
// JSON array or string body (the platform crashes on it), NaN or Infinity
// literals and a leading byte order mark (Python's json accepts both).
func Classify(statusCode int, body []byte) string {
	if statusCode != http.StatusOK {
		return ClassUnhealthy
	}
	if !utf8.Valid(body) {
		return ClassUnhealthy
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(body, &obj); err != nil || obj == nil {
		return ClassUnhealthy
	}
	for _, k := range [...]string{"status", "version", "uptime"} {
		if _, ok := obj[k]; !ok {
			return ClassUnhealthy
		}
	}
	var status string
	if err := json.Unmarshal(obj["status"], &status); err != nil {
		return ClassDegraded
	}
	switch status {
	case "ok", "healthy", "up":
		return ClassHealthy
	default:
		return ClassDegraded
	}
}
