package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/config"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metering"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metering/bolt"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metering/postgres"
)

// migrate brings the configured ledger's schema up to date and exits.
// `run` does the same at start unless ledger.migrate is false; this
// command lets a deployment migrate once, before rolling out replicas.
func migrate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("migrate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "configuration file (TOML)")
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintln(stderr, "usage: zimmer-sidecar migrate [-config FILE]")
		return errUsage
	}
	cfg, err := loadConfig(configPath(*path), stderr)
	if err != nil {
		return err
	}

	switch cfg.Ledger.Backend {
	case config.BackendPostgres:
		if err := postgres.Migrate(ctx, cfg.Ledger.DSN.Value); err != nil {
			return fmt.Errorf("migrate: %w", err)
		}
		fmt.Fprintf(stdout, "postgres ledger at schema version %d\n",
			postgres.SchemaVersion())
	default:
		// Opening the embedded store upgrades its file in place.
		st, err := bolt.Open(cfg.Ledger.Path, metering.Options{})
		if err != nil {
			return fmt.Errorf("migrate: %w", err)
		}
		if err := st.Close(); err != nil {
			return fmt.Errorf("migrate: %w", err)
		}
		fmt.Fprintf(stdout, "bolt ledger %s is up to date\n", cfg.Ledger.Path)
	}
	return nil
}
