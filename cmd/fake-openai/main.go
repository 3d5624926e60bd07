// Command fake-openai serves a fake OpenAI-compatible API on a loopback
// address, for trying the sidecar's egress without a real key: chat
// completions (plain and streamed), completions, embeddings and responses,
// with deterministic token usage (internal/fakeopenai). It contacts
// nothing.
//
//	go run ./cmd/fake-openai -addr 127.0.0.1:8199 -key sk-fake-local-key
//
// Then point the sidecar at it (egress.upstream = "http://127.0.0.1:8199",
// egress.keys = the same key) and the app at the sidecar.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/fakeopenai"
)

// keyList is a repeatable -key flag.
type keyList []string

func (k *keyList) String() string { return strings.Join(*k, ",") }

func (k *keyList) Set(v string) error {
	if strings.TrimSpace(v) == "" {
		return errors.New("a key must not be empty")
	}
	*k = append(*k, v)
	return nil
}

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "fake-openai:", err)
		os.Exit(2)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("fake-openai", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:8199", "loopback host:port to listen on")
	words := fs.Int("words", 0, "completion words per answer (0: the fake's default)")
	var keys keyList
	fs.Var(&keys, "key", "a key the fake accepts (repeatable; default sk-fake-local-key)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if len(keys) == 0 {
		keys = keyList{"sk-fake-local-key"}
	}
	host, _, err := net.SplitHostPort(*addr)
	if err != nil {
		return fmt.Errorf("-addr: %w", err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return fmt.Errorf("-addr %q: listen on a loopback address only", *addr)
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler:           fakeopenai.New(fakeopenai.Options{Keys: keys, Words: *words}).Handler(),
		ReadHeaderTimeout: 10 * time.Second,
	}
	log.Printf("fake OpenAI API on http://%s (%d key(s) accepted)", ln.Addr(), len(keys))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return srv.Shutdown(sctx)
}
