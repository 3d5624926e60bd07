package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/admin"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/config"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/logging"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/reload"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/sidecar"
)

// defaultConfigPath is used when neither -config nor the environment names
// a file.
const defaultConfigPath = "zimmer-sidecar.toml"

func configPath(flagValue string) string {
	if flagValue != "" {
		return flagValue
	}
	if p := os.Getenv(config.EnvConfigPath); p != "" {
		return p
	}
	return defaultConfigPath
}

// loadConfig loads and validates path, printing every problem and warning
// on stderr.
func loadConfig(path string, stderr io.Writer) (*config.Config, error) {
	cfg, err := loadQuiet(path, stderr)
	if err != nil {
		return nil, err
	}
	for _, w := range cfg.Warnings() {
		fmt.Fprintln(stderr, "warning:", w.Format(path))
	}
	return cfg, nil
}

// loadQuiet is loadConfig without the warnings, for callers that log them.
func loadQuiet(path string, stderr io.Writer) (*config.Config, error) {
	cfg, err := config.Load(path, os.Environ())
	if err != nil {
		fmt.Fprintln(stderr, err)
		return nil, fmt.Errorf("invalid configuration %s", path)
	}
	return cfg, nil
}

func runSidecar(ctx context.Context, args []string, stderr io.Writer) error {
	started := time.Now()
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "configuration file (TOML)")
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintln(stderr, "usage: zimmer-sidecar run [-config FILE]")
		return errUsage
	}
	// SIGHUP asks for a reload; caught from the start, it never ends the
	// process. Signals before the watcher runs wait in the channel.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	file := configPath(*path)
	cfg, err := loadQuiet(file, stderr)
	if err != nil {
		return err
	}

	red := logging.NewRedactor()
	level := new(slog.LevelVar)
	level.Set(cfg.Log.Level)
	logger := logging.New(stderr, level, red).
		With(slog.String("version", version))
	for _, w := range cfg.Warnings() {
		logger.Warn("configuration", slog.String("problem", w.Format(file)))
	}
	sc, err := sidecar.New(cfg, sidecar.Options{
		Logger:   logger,
		Redactor: red,
		Started:  started,
		Level:    level,
	})
	if err != nil {
		return err
	}
	stopWatch := watchConfig(ctx, file, hup, logger,
		func() { reloadConfig(file, sc, logger) })
	defer stopWatch()
	return sc.Run(ctx)
}

// watchConfig calls apply once per burst of changes to file and of
// SIGHUPs, until ctx ends or the returned stop is called (which waits
// for a reload in progress). When the file cannot be watched, SIGHUP
// still works.
func watchConfig(ctx context.Context, file string, hup <-chan os.Signal,
	log *slog.Logger, apply func()) (stop func()) {
	opts := reload.Options{
		Path:     file,
		Signals:  hup,
		OnChange: apply,
		OnError: func(err error) {
			log.Warn("configuration watch", slog.Any("err", err))
		},
	}
	w, err := reload.New(opts)
	if err != nil {
		log.Warn("cannot watch the configuration file; reload with SIGHUP",
			slog.String("config", file), slog.Any("err", err))
		opts.Path = ""
		w, _ = reload.New(opts) // without a file it cannot fail
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := w.Run(ctx); err != nil {
			log.Error("configuration watch stopped; restart to reload",
				slog.Any("err", err))
		}
	}()
	return func() {
		cancel()
		<-done
	}
}

// reloadConfig loads file again and applies it to sc. A file that fails
// to load or validate changes nothing and is logged as one line listing
// every problem.
func reloadConfig(file string, sc *sidecar.Sidecar, log *slog.Logger) {
	cfg, err := config.Load(file, os.Environ())
	if err == nil {
		for _, w := range cfg.Warnings() {
			log.Warn("configuration", slog.String("problem", w.Format(file)))
		}
		err = sc.Reload(cfg)
	}
	if err == nil {
		return
	}
	problems := []string{err.Error()}
	if verr, ok := errors.AsType[*config.ValidationError](err); ok {
		problems = make([]string, len(verr.Problems))
		for i, p := range verr.Problems {
			problems[i] = p.Format(verr.File)
		}
	}
	log.Error("reload failed; the running configuration stays",
		slog.String("config", file), slog.Any("problems", problems))
}

func checkConfig(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("check-config", flag.ContinueOnError)
	fs.SetOutput(stderr)
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	if fs.NArg() > 1 {
		fmt.Fprintln(stderr, "usage: zimmer-sidecar check-config [FILE]")
		return errUsage
	}
	path := configPath(fs.Arg(0))
	if _, err := loadConfig(path, stderr); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: ok\n", path)
	return nil
}

// ledgerCommand implements `ledger show|credit|export` as a client of the
// admin listener, so it works while the sidecar holds the store open.
func ledgerCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errUsage
	}
	sub, args := args[0], args[1:]
	fs := flag.NewFlagSet("ledger "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	adminURL := fs.String("admin", "", "admin listener URL (default: from the config)")
	path := fs.String("config", "", "configuration file, to find the admin listener")
	reason := fs.String("reason", "", "credit: why the tokens are added (journaled)")
	key := fs.String("idempotency-key", "", "credit: a key that makes a retry safe")
	after := fs.Uint64("after", 0, "export: only entries after this sequence number")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return errUsage
	}

	// 1. Check the command line completely before reading any config.
	var call func(*admin.Client) error
	switch sub {
	case "show":
		id, err := positionals(pos, "ID")
		if err != nil {
			return ledgerUsage(stderr, "ledger show ID", err)
		}
		call = func(c *admin.Client) error {
			acct, err := c.Account(id[0])
			if err != nil {
				return err
			}
			return printJSON(stdout, acct)
		}
	case "credit":
		n, err := positionals(pos, "ID", "UNITS")
		if err != nil {
			return ledgerUsage(stderr, "ledger credit ID UNITS "+
				"[-reason TEXT] [-idempotency-key KEY]", err)
		}
		body := admin.CreditBody{UserAutomationID: n[0], Units: n[1], Reason: *reason}
		if *key == "" {
			// Every credit is keyed, so an operator who lost the answer can
			// repeat the command without crediting twice.
			*key = newKey()
			fmt.Fprintf(stderr, "idempotency key %s: to retry this credit safely, "+
				"repeat it with -idempotency-key %s\n", *key, *key)
		}
		call = func(c *admin.Client) error {
			acct, err := c.Credit(body, *key)
			if err != nil {
				return err
			}
			return printJSON(stdout, acct)
		}
	case "export":
		if _, err := positionals(pos); err != nil {
			return ledgerUsage(stderr, "ledger export [-after SEQ]", err)
		}
		call = func(c *admin.Client) error { return c.Journal(*after, stdout) }
	default:
		fmt.Fprintf(stderr, "unknown ledger command %q\n\n%s", sub, usage)
		return errUsage
	}

	// 2. Find the admin listener and call it.
	client, err := adminClient(*adminURL, *path, stderr)
	if err != nil {
		return err
	}
	return call(client)
}

func ledgerUsage(stderr io.Writer, form string, err error) error {
	fmt.Fprintf(stderr, "%v\nusage: zimmer-sidecar %s\n", err, form)
	return errUsage
}

// adminClient finds the admin listener from -admin or the config file.
func adminClient(flagURL, path string, stderr io.Writer) (*admin.Client, error) {
	c := &admin.Client{Base: flagURL}
	if c.Base != "" {
		return c, nil
	}
	cfg, err := loadConfig(configPath(path), stderr)
	if err != nil {
		return nil, err
	}
	if cfg.Listen.Admin == "" {
		return nil, errors.New("the admin listener is disabled (listen.admin is empty)")
	}
	c.Base = "http://" + dialable(cfg.Listen.Admin)
	for _, t := range cfg.Auth.Tokens {
		if t.Kind == config.TokenPlain {
			c.Token = t.Value // needed when admin is not on loopback
			break
		}
	}
	return c, nil
}

// parseInterleaved parses flags that may stand before, between or after
// the positional arguments, and returns the positional ones.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

// positionals parses exactly len(names) positive integers.
func positionals(pos []string, names ...string) ([]int64, error) {
	if len(pos) != len(names) {
		return nil, fmt.Errorf("want %d argument(s), got %d", len(names), len(pos))
	}
	out := make([]int64, len(pos))
	for i, p := range pos {
		n, err := strconv.ParseInt(p, 10, 64)
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("%s must be a positive integer", names[i])
		}
		out[i] = n
	}
	return out, nil
}

// dialable turns a listen address into one a client can dial: an empty or
// unspecified host becomes loopback.
func dialable(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

// newKey returns a random idempotency key for a credit.
func newKey() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return "cli-" + hex.EncodeToString(b[:])
}
