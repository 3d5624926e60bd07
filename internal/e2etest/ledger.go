package e2etest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os/exec"
	"testing"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metering"
)

// RunCLI runs the sidecar binary with args (a sub-command such as
// "ledger credit 7 10 -admin URL") and returns its stdout; a non-zero exit
// fails t with both streams.
func RunCLI(t testing.TB, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(Binary(t), args...)
	// A race-enabled binary otherwise sleeps a second at exit, waiting
	// for reports from goroutines a one-shot command does not have.
	cmd.Env = append(cleanEnv(), "GORACE=atexit_sleep_ms=0")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("zimmer-sidecar %v: %v\nstdout: %s\nstderr: %s",
			args, err, stdout.Bytes(), stderr.Bytes())
	}
	return stdout.Bytes()
}

// LedgerAccount reads one account with `zimmer-sidecar ledger show`.
func LedgerAccount(t testing.TB, adminURL string, id int64) metering.Account {
	t.Helper()
	var a metering.Account
	out := RunCLI(t, "ledger", "show", fmt.Sprint(id), "-admin", adminURL)
	if err := json.Unmarshal(out, &a); err != nil {
		t.Fatalf("ledger show %d: decode %q: %v", id, out, err)
	}
	return a
}

// LedgerCredit adds units of paid tokens with `zimmer-sidecar ledger
// credit` and returns the account the command printed.
func LedgerCredit(t testing.TB, adminURL string, id, units int64) metering.Account {
	t.Helper()
	var a metering.Account
	out := RunCLI(t, "ledger", "credit", fmt.Sprint(id), fmt.Sprint(units),
		"-admin", adminURL, "-reason", "e2e purchase")
	if err := json.Unmarshal(out, &a); err != nil {
		t.Fatalf("ledger credit %d %d: decode %q: %v", id, units, out, err)
	}
	return a
}

// LedgerJournal exports the whole journal with `zimmer-sidecar ledger
// export`. A line that is not an entry (the export's error marker) fails
// t.
func LedgerJournal(t testing.TB, adminURL string) []metering.Entry {
	t.Helper()
	out := RunCLI(t, "ledger", "export", "-admin", adminURL)
	var entries []metering.Entry
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var e metering.Entry
		dec := json.NewDecoder(bytes.NewReader(sc.Bytes()))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&e); err != nil || e.Seq == 0 {
			t.Fatalf("ledger export: bad line %q: %v", sc.Text(), err)
		}
		entries = append(entries, e)
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("ledger export: %v", err)
	}
	return entries
}
