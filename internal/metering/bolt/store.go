// Package bolt is the embedded metering.Ledger backend: one bbolt file
// holding accounts, idempotency records and an append-only journal.
//
// Writes are group-committed: Provision, Consume, Credit, Refund, Settle
// and Reconcile calls are queued to one writer goroutine, which applies up
// to a bounded batch of them, in arrival order, inside one bbolt
// transaction and so one pair of fsyncs. Each caller is answered only once
// that transaction is durable; when it fails, every call in the batch gets
// the error and nothing of the batch is stored. Reads (Account, Journal)
// run in their own read-only transactions beside the writer.
//
// The package does not log and knows nothing of HTTP.
package bolt

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metering"
)

// DefaultMaxBatch bounds how many writes share one transaction.
const DefaultMaxBatch = 256

// lockTimeout bounds the wait for the file lock another process holds.
const lockTimeout = time.Second

// Store is a metering.Ledger on one bbolt file. It is safe for concurrent
// use. Open starts its writer goroutine; Close stops it.
type Store struct {
	db       *bbolt.DB
	opts     metering.Options // after WithDefaults
	maxBatch int
	// pruneScan bounds the records one pruning step looks at (> 0).
	pruneScan int

	// mu guards closed and the send side of reqs: callers hold it for
	// reading while they check closed and enqueue or read the database;
	// Close holds it for writing to set closed and close reqs, so no send
	// races the close and no read runs on a closed database.
	mu     sync.RWMutex
	closed bool
	reqs   chan *request

	writerDone chan struct{} // closed when the writer goroutine returns
	closeOnce  sync.Once
	closeErr   error

	// commitHook, when set, runs inside every batch transaction after its
	// writes with the batch size; an error fails the commit. Tests only.
	commitHook atomic.Pointer[func(batch int) error]
}

var _ metering.Ledger = (*Store)(nil)

// Open opens or creates the ledger file at path, creating its directory
// (mode 0700) when missing, and starts the writer. It fails when opts are
// invalid, when the file belongs to another schema version, or when
// another process holds the file for more than a second.
func Open(path string, opts metering.Options) (*Store, error) {
	return open(path, opts, DefaultMaxBatch)
}

// open is Open with a batch bound of maxBatch (at least 1).
func open(path string, opts metering.Options, maxBatch int) (*Store, error) {
	if err := opts.Validate(); err != nil {
		return nil, fmt.Errorf("open ledger: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("open ledger: %w", err)
	}
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{
		Timeout:      lockTimeout,
		FreelistType: bbolt.FreelistMapType,
	})
	if errors.Is(err, bbolt.ErrTimeout) {
		return nil, fmt.Errorf("open ledger %s: file locked by another process: %w", path, err)
	}
	if err != nil {
		return nil, fmt.Errorf("open ledger %s: %w", path, err)
	}
	if err := db.Update(initSchema); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open ledger %s: %w", path, err)
	}

	s := &Store{
		db:         db,
		opts:       opts.WithDefaults(),
		maxBatch:   max(maxBatch, 1),
		pruneScan:  defaultPruneScan,
		reqs:       make(chan *request, max(maxBatch, 1)),
		writerDone: make(chan struct{}),
	}
	go s.runWriter()
	return s, nil
}

// Close stops accepting calls, waits until every queued write has been
// committed or failed and answered, then closes the file. It is
// idempotent and safe to call concurrently; every call returns the first
// call's result.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		close(s.reqs)
		s.mu.Unlock()

		<-s.writerDone
		if err := s.db.Close(); err != nil {
			s.closeErr = fmt.Errorf("close ledger: %w", err)
		}
	})
	return s.closeErr
}

// Provision implements metering.Ledger.
func (s *Store) Provision(
	ctx context.Context,
	req metering.ProvisionRequest,
) (metering.ProvisionResult, error) {
	grant, err := metering.GrantFor(req, s.opts.DefaultDemoTokens)
	if err != nil {
		err = fmt.Errorf("provision %d: %w", req.UserAutomationID, err)
		return metering.ProvisionResult{}, err
	}
	var res metering.ProvisionResult
	err = s.submit(ctx, func(tx *bbolt.Tx) (error, error) {
		return provisionStep(tx, req, grant, s.now(), &res)
	})
	if err != nil {
		return metering.ProvisionResult{}, err
	}
	return res, nil
}

// Consume implements metering.Ledger.
func (s *Store) Consume(
	ctx context.Context,
	req metering.ConsumeRequest,
) (metering.ConsumeResult, error) {
	if err := s.checkConsume(req); err != nil {
		return metering.ConsumeResult{}, err
	}
	var res metering.ConsumeResult
	err := s.submit(ctx, func(tx *bbolt.Tx) (error, error) {
		return consumeStep(tx, req, s.opts.DemoRule, s.now(), &res)
	})
	if err != nil {
		return metering.ConsumeResult{}, err
	}
	return res, nil
}

// Credit implements metering.Ledger.
func (s *Store) Credit(ctx context.Context, req metering.CreditRequest) (metering.Account, error) {
	if err := metering.CheckIdempotencyKey(req.IdempotencyKey); err != nil {
		return metering.Account{}, fmt.Errorf("credit %d: %w", req.UserAutomationID, err)
	}
	if req.Units <= 0 {
		err := metering.CheckCredit(0, req.Units)
		return metering.Account{}, fmt.Errorf("credit %d: %w", req.UserAutomationID, err)
	}
	var acct metering.Account
	err := s.submit(ctx, func(tx *bbolt.Tx) (error, error) {
		return creditStep(tx, req, s.now(), &acct)
	})
	if err != nil {
		return metering.Account{}, err
	}
	return acct, nil
}

// Refund implements metering.Ledger. Like the other writes it goes
// through the writer, so a refund queued behind its debit in one batch
// sees that debit.
func (s *Store) Refund(ctx context.Context, req metering.RefundRequest) (metering.Account, error) {
	id := req.UserAutomationID
	if err := metering.CheckIdempotencyKey(req.IdempotencyKey); err != nil {
		return metering.Account{}, fmt.Errorf("refund %d: %w", id, err)
	}
	if req.IdempotencyKey == "" {
		return metering.Account{}, fmt.Errorf("refund %d: no idempotency key: %w",
			id, metering.ErrUnknownDebit)
	}
	var acct metering.Account
	err := s.submit(ctx, func(tx *bbolt.Tx) (error, error) {
		return refundStep(tx, req, s.now(), &acct)
	})
	if err != nil {
		return metering.Account{}, err
	}
	return acct, nil
}

// Account implements metering.Ledger.
func (s *Store) Account(ctx context.Context, userAutomationID int64) (metering.Account, error) {
	var acct metering.Account
	err := s.view(ctx, func(tx *bbolt.Tx) error {
		a, ok, err := getAccount(tx, userAutomationID)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("account %d: %w", userAutomationID, metering.ErrUnknownAccount)
		}
		acct = a
		return nil
	})
	return acct, err
}

// journalChunk is how many entries Journal reads per read transaction.
const journalChunk = 256

// Journal implements metering.Ledger. It reads the journal in chunks, each
// in its own read transaction, and calls fn outside any transaction and
// lock, so fn may call the Store. Entries appended while Journal runs may
// or may not be visited.
func (s *Store) Journal(
	ctx context.Context,
	after uint64,
	limit int,
	fn func(metering.Entry) error,
) error {
	visited := 0
	for {
		n := journalChunk
		if limit > 0 && limit-visited < n {
			n = limit - visited
		}
		var chunk []metering.Entry
		err := s.view(ctx, func(tx *bbolt.Tx) error {
			var err error
			chunk, err = readJournal(tx, after, n)
			return err
		})
		if err != nil {
			return err
		}
		for _, e := range chunk {
			if err := fn(e); err != nil {
				return err
			}
			after = e.Seq
		}
		visited += len(chunk)
		if len(chunk) < n || (limit > 0 && visited >= limit) {
			return nil
		}
	}
}

// checkConsume validates a consume request before it is queued.
func (s *Store) checkConsume(req metering.ConsumeRequest) error {
	if err := metering.CheckUnits(req.Units, s.opts.MaxUnits); err != nil {
		return fmt.Errorf("consume %d: %w", req.UserAutomationID, err)
	}
	if err := metering.CheckIdempotencyKey(req.IdempotencyKey); err != nil {
		return fmt.Errorf("consume %d: %w", req.UserAutomationID, err)
	}
	return nil
}

// now is the configured clock in UTC.
func (s *Store) now() time.Time { return s.opts.Now().UTC() }

// view runs fn in a read-only transaction unless the store is closed or
// ctx is done.
func (s *Store) view(ctx context.Context, fn func(*bbolt.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return metering.ErrClosed
	}
	return s.db.View(fn)
}
