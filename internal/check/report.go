package check

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// Status is the outcome of one Result.
type Status string

// The outcomes. Only StatusFail keeps an automation from being listed.
const (
	StatusOK   Status = "ok"
	StatusWarn Status = "warn"
	StatusFail Status = "fail"
	StatusSkip Status = "skip"
)

// Result is one row of the report: one call and what it showed.
type Result struct {
	Endpoint   Endpoint      `json:"endpoint"`
	Check      string        `json:"check"`
	Method     string        `json:"method,omitempty"`
	URL        string        `json:"url,omitempty"`
	Status     Status        `json:"result"`
	HTTPStatus int           `json:"http_status"`
	Duration   time.Duration `json:"-"`
	Budget     time.Duration `json:"-"`
	Reason     string        `json:"reason"`
}

// MarshalJSON writes the durations as milliseconds.
func (r Result) MarshalJSON() ([]byte, error) {
	type plain Result
	return json.Marshal(struct {
		plain
		DurationMS float64 `json:"duration_ms"`
		BudgetMS   int64   `json:"budget_ms"`
	}{plain(r), float64(r.Duration.Microseconds()) / 1000, r.Budget.Milliseconds()})
}

// Summary counts results by status.
type Summary struct {
	OK   int `json:"ok"`
	Warn int `json:"warn"`
	Fail int `json:"fail"`
	Skip int `json:"skip"`
}

// Report is everything Run found. Its JSON shape is documented in the
// package comment.
type Report struct {
	Version          int                 `json:"version"`
	Listed           bool                `json:"listed"`
	Health           string              `json:"health"`
	Summary          Summary             `json:"summary"`
	UserAutomationID int64               `json:"user_automation_id"`
	UserID           int64               `json:"user_id"`
	Endpoints        map[Endpoint]string `json:"endpoints"`
	Results          []Result            `json:"results"`
}

// Failed returns the results that failed.
func (rep *Report) Failed() []Result {
	var out []Result
	for _, r := range rep.Results {
		if r.Status == StatusFail {
			out = append(out, r)
		}
	}
	return out
}

// finish counts the results and decides Listed.
func (rep *Report) finish() {
	rep.Summary = Summary{}
	for _, r := range rep.Results {
		switch r.Status {
		case StatusOK:
			rep.Summary.OK++
		case StatusWarn:
			rep.Summary.Warn++
		case StatusFail:
			rep.Summary.Fail++
		case StatusSkip:
			rep.Summary.Skip++
		}
	}
	rep.Listed = rep.Summary.Fail == 0 && len(rep.Results) > 0
}

// WriteJSON writes the report as indented JSON.
func (rep *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(rep); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	return nil
}

// WriteTable writes the report as an aligned plain-text table, one row a
// result, followed by a summary line.
func (rep *Report) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ENDPOINT\tCHECK\tRESULT\tHTTP\tTIME\tBUDGET\tREASON")
	for _, r := range rep.Results {
		code := "-"
		if r.HTTPStatus != 0 {
			code = fmt.Sprint(r.HTTPStatus)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
			r.Endpoint, r.Check, r.Status, code,
			formatDuration(r.Duration), formatDuration(r.Budget), oneLine(r.Reason))
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	_, err := fmt.Fprintln(w, rep.summaryLine())
	if err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	return nil
}

func (rep *Report) summaryLine() string {
	s := rep.Summary
	counts := fmt.Sprintf("%d ok, %d warn, %d fail, %d skipped", s.OK, s.Warn, s.Fail, s.Skip)
	health := rep.Health
	if health == "" {
		health = "not checked"
	}
	if rep.Listed {
		return fmt.Sprintf("PASS: the automation would be listed (health %s; %s)",
			health, counts)
	}
	return fmt.Sprintf("FAIL: the automation would not be listed (health %s; %s)",
		health, counts)
}

// formatDuration writes d for a table cell: "-" for zero, milliseconds
// under a second, else seconds.
func formatDuration(d time.Duration) string {
	switch {
	case d <= 0:
		return "-"
	case d < time.Millisecond:
		return "<1ms"
	case d < time.Second:
		return fmt.Sprintf("%dms", d.Milliseconds())
	default:
		return fmt.Sprintf("%.2gs", d.Seconds())
	}
}

// oneLine keeps a table cell on one line.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
