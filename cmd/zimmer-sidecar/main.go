// Command zimmer-sidecar makes an unmodified HTTP app a compliant Zimmer
// automation. See README.md for the sub-commands and the configuration.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// version is stamped at build time with -ldflags "-X main.version=...".
var version = "dev"

// errUsage marks a command-line mistake: exit code 2.
var errUsage = errors.New("usage")

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	switch {
	case err == nil:
	case errors.Is(err, errUsage):
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "zimmer-sidecar:", err)
		os.Exit(1)
	}
}

const usage = `usage: zimmer-sidecar <command> [flags]

commands:
  run [-config FILE]          run the sidecar (the default command)
  check-config [FILE]         validate a configuration file and exit
  check [flags] BASE_URL      run the platform's validation against an automation
  ledger show ID              print one account        (via the admin listener)
  ledger credit ID UNITS      add paid tokens          (via the admin listener)
  ledger export               print the journal as NDJSON
  migrate [-config FILE]      bring the ledger's schema up to date and exit
  version                     print the version

The config file defaults to $ZIMMER_SIDECAR_CONFIG, then ./zimmer-sidecar.toml.
`

// run dispatches a sub-command. It returns errUsage (already explained on
// stderr) for command-line mistakes.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cmd := "run"
	switch {
	case len(args) > 0 && (args[0] == "-h" || args[0] == "--help"):
		cmd, args = "help", args[1:]
	case len(args) > 0 && args[0] != "" && args[0][0] != '-':
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "run":
		return runSidecar(ctx, args, stderr)
	case "check-config":
		return checkConfig(args, stdout, stderr)
	case "check":
		return checkCommand(ctx, args, stdout, stderr)
	case "ledger":
		return ledgerCommand(ctx, args, stdout, stderr)
	case "migrate":
		return migrate(ctx, args, stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, "zimmer-sidecar", version)
		return nil
	case "help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprintf(stderr, "unknown command %q\n\n%s", cmd, usage)
	return errUsage
}
