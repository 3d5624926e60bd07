package logging

import (
	"fmt"
	"io"
	"log/slog"
	"strings"
)

// ParseLevel turns "debug", "info", "warn" or "error" into a slog.Level.
func ParseLevel(s string) (slog.Level, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "debug":
		return slog.LevelDebug, nil
	case "", "info":
		return slog.LevelInfo, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("unknown log level %q", s)
}

// New returns a JSON logger writing to w at level lvl (a *slog.LevelVar
// lets a reload change it), with every record redacted by red.
func New(w io.Writer, lvl slog.Leveler, red *Redactor) *slog.Logger {
	base := slog.NewJSONHandler(w, &slog.HandlerOptions{Level: lvl})
	return slog.New(NewHandler(base, red))
}
