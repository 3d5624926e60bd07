package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/check"
)

const checkUsage = `usage: zimmer-sidecar check [flags] BASE_URL

Runs the Zimmer platform's validation against an automation (behind a
zimmer-sidecar or not) and prints what the platform would make of it.
Exit status: 0 when the automation would be listed, 1 when a check
failed, 2 on a usage error.

It sends REAL calls with a test account: provision creates account
-user-automation-id, consume spends its tokens, KB reset empties its
knowledge base. Point it only at an automation you run.

Endpoint URLs default to BASE_URL + /health, /provision, /usage/consume,
/kb/status and /kb/reset; the flags below set them one by one, as the
platform stores one URL per endpoint. The service token is read from an
environment variable or a file, never from the command line.

flags:
`

// checkCommand implements `zimmer-sidecar check`.
func checkCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return checkWith(ctx, args, stdout, stderr, os.Getenv)
}

// checkWith is checkCommand with the environment injected.
func checkWith(ctx context.Context, args []string, stdout, stderr io.Writer,
	getenv func(string) string) error {
	// 1. Flags and the service token.
	opts, asJSON, err := checkOptions(args, stderr, getenv)
	if err != nil {
		return err
	}

	// 2. Run the checks: bad options are usage errors.
	rep, err := check.Run(ctx, opts)
	if errors.Is(err, check.ErrOptions) {
		fmt.Fprintf(stderr, "%v\nfor help: zimmer-sidecar check -h\n", err)
		return errUsage
	}
	if rep == nil {
		return err
	}

	// 3. Print the report, even a partial one after ^C.
	if asJSON {
		if werr := rep.WriteJSON(stdout); werr != nil {
			return werr
		}
	} else if werr := rep.WriteTable(stdout); werr != nil {
		return werr
	}
	if err != nil {
		return err
	}
	if !rep.Listed {
		return fmt.Errorf("the automation would not be listed: %s", failSummary(rep))
	}
	return nil
}

// checkOptions parses the command line into check.Options.
func checkOptions(args []string, stderr io.Writer, getenv func(string) string) (
	check.Options, bool, error) {
	var opts check.Options
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, checkUsage)
		fs.PrintDefaults()
	}
	fs.StringVar(&opts.URLs.Health, "health", "", "health URL")
	fs.StringVar(&opts.URLs.Provision, "provision", "", "provision URL")
	fs.StringVar(&opts.URLs.Consume, "consume", "", "usage consume URL")
	fs.StringVar(&opts.URLs.KBStatus, "kb-status", "", "KB status URL")
	fs.StringVar(&opts.URLs.KBReset, "kb-reset", "", "KB reset URL")
	tokenEnv := fs.String("token-env", "ZIMMER_SERVICE_TOKEN",
		"environment variable holding the service token")
	tokenFile := fs.String("token-file", "", "file holding the service token "+
		"(instead of -token-env)")
	fs.Int64Var(&opts.UserAutomationID, "user-automation-id", check.DefaultTestID,
		"the test account's user_automation_id")
	fs.Int64Var(&opts.UserID, "user-id", check.DefaultTestID, "the test account's user_id")
	kb := fs.String("kb", "auto", "knowledge base: auto (checked unless it answers 404), "+
		"on (required) or off")
	asJSON := fs.Bool("json", false, "print the report as JSON")

	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return opts, false, errUsage
	}
	switch len(pos) {
	case 0:
	case 1:
		opts.BaseURL = pos[0]
	default:
		return opts, false, checkUsageError(fs, "want at most one BASE_URL")
	}
	if opts.KB, err = parseKBMode(*kb); err != nil {
		return opts, false, checkUsageError(fs, err.Error())
	}
	if opts.UserAutomationID <= 0 || opts.UserID <= 0 {
		return opts, false, checkUsageError(fs, "test account ids must be positive")
	}
	opts.Token, err = readToken(*tokenEnv, *tokenFile, getenv)
	if err != nil {
		return opts, false, checkUsageError(fs, err.Error())
	}
	return opts, *asJSON, nil
}

func checkUsageError(fs *flag.FlagSet, msg string) error {
	fmt.Fprintf(fs.Output(), "%s\n\n", msg)
	fs.Usage()
	return errUsage
}

func parseKBMode(s string) (check.KBMode, error) {
	switch s {
	case "auto":
		return check.KBAuto, nil
	case "on":
		return check.KBRequire, nil
	case "off":
		return check.KBSkip, nil
	}
	return 0, fmt.Errorf("-kb %q: want auto, on or off", s)
}

// readToken reads the service token from file, else from the variable
// env. Errors name the source, never the value.
func readToken(env, file string, getenv func(string) string) (string, error) {
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("read -token-file: %w", err)
		}
		tok := strings.TrimSpace(string(b))
		if tok == "" {
			return "", fmt.Errorf("-token-file %s is empty", file)
		}
		return tok, nil
	}
	tok := strings.TrimSpace(getenv(env))
	if tok == "" {
		return "", fmt.Errorf("no service token: set $%s or use -token-file", env)
	}
	return tok, nil
}

// failSummary names the failed checks for the exit message.
func failSummary(rep *check.Report) string {
	failed := rep.Failed()
	if len(failed) == 0 {
		return "no checks ran"
	}
	names := make([]string, 0, len(failed))
	for _, r := range failed {
		names = append(names, string(r.Endpoint)+" ("+r.Check+")")
	}
	return fmt.Sprintf("%d check(s) failed: %s", len(failed), strings.Join(names, "; "))
}
