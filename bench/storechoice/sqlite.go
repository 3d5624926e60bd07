package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"

	_ "modernc.org/sqlite" // registers the "sqlite" driver (pure Go)
)

// sqliteStore holds the accounts and journal in one SQLite database in
// WAL mode with synchronous=FULL: a commit returns after its fsync.
type sqliteStore struct {
	db    *sql.DB
	total int64
	group *grouper // nil: one transaction per debit
}

const sqliteSchema = `
CREATE TABLE accounts (id INTEGER PRIMARY KEY, balance INTEGER NOT NULL);
CREATE TABLE journal (seq INTEGER PRIMARY KEY, account INTEGER NOT NULL,
	amount INTEGER NOT NULL);`

func openSQLite(dir string, accounts int, balance int64) (*sqliteStore, error) {
	dsn := "file:" + filepath.Join(dir, "sqlite.db") +
		"?_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)&_pragma=busy_timeout(10000)"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, err
	}
	// SQLite has one writer; one connection queues the callers in Go
	// instead of having them spin on SQLITE_BUSY.
	db.SetMaxOpenConns(1)
	s := &sqliteStore{db: db, total: int64(accounts) * balance}
	if err := s.init(accounts, balance); err != nil {
		return nil, errors.Join(err, db.Close())
	}
	return s, nil
}

func (s *sqliteStore) init(accounts int, balance int64) error {
	var mode string
	if err := s.db.QueryRow("PRAGMA journal_mode").Scan(&mode); err != nil {
		return err
	}
	var syncMode int
	if err := s.db.QueryRow("PRAGMA synchronous").Scan(&syncMode); err != nil {
		return err
	}
	if mode != "wal" || syncMode != 2 {
		return fmt.Errorf("journal_mode %s synchronous %d, want wal and 2 (FULL)", mode, syncMode)
	}
	if _, err := s.db.Exec(sqliteSchema); err != nil {
		return err
	}
	tx, err := s.db.Begin()
	if err != nil {
		return err
	}
	for id := range accounts {
		if _, err := tx.Exec("INSERT INTO accounts VALUES (?, ?)", id, balance); err != nil {
			return errors.Join(err, tx.Rollback())
		}
	}
	return tx.Commit()
}

func openSQLiteTx(dir string, accounts int, balance int64) (debiter, error) {
	return openSQLite(dir, accounts, balance)
}

func openSQLiteGroup(dir string, accounts int, balance int64) (debiter, error) {
	s, err := openSQLite(dir, accounts, balance)
	if err != nil {
		return nil, err
	}
	s.group = newGrouper(func(batch []*groupReq) error {
		return s.inTx(func(tx *sql.Tx) error {
			for _, r := range batch {
				ok, err := debitSQL(tx, r.acct, r.n)
				if err != nil {
					return err
				}
				r.ok = ok
			}
			return nil
		})
	})
	return s, nil
}

func (s *sqliteStore) Debit(acct int, n int64) (bool, error) {
	if s.group != nil {
		return s.group.Debit(acct, n)
	}
	var ok bool
	err := s.inTx(func(tx *sql.Tx) error {
		var err error
		ok, err = debitSQL(tx, acct, n)
		return err
	})
	return ok && err == nil, err
}

// inTx runs fn in one transaction and commits it.
func (s *sqliteStore) inTx(fn func(*sql.Tx) error) error {
	tx, err := s.db.BeginTx(context.Background(), nil)
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		return errors.Join(err, tx.Rollback())
	}
	return tx.Commit()
}

// debitSQL takes n from acct if the balance allows and journals it.
func debitSQL(tx *sql.Tx, acct int, n int64) (bool, error) {
	res, err := tx.Exec(
		"UPDATE accounts SET balance = balance - ? WHERE id = ? AND balance >= ?", n, acct, n)
	if err != nil {
		return false, err
	}
	rows, err := res.RowsAffected()
	if err != nil || rows == 0 {
		return false, err
	}
	_, err = tx.Exec("INSERT INTO journal (account, amount) VALUES (?, ?)", acct, n)
	return err == nil, err
}

func (s *sqliteStore) Check(accepted int64) error {
	if s.group != nil {
		s.group.stop()
	}
	var sum, journaled, rows, negative int64
	err := s.db.QueryRow(`SELECT
		(SELECT COALESCE(SUM(balance), 0) FROM accounts),
		(SELECT COUNT(*) FROM accounts WHERE balance < 0),
		(SELECT COALESCE(SUM(amount), 0) FROM journal),
		(SELECT COUNT(*) FROM journal)`).Scan(&sum, &negative, &journaled, &rows)
	if err == nil && negative > 0 {
		err = fmt.Errorf("%d negative balances", negative)
	}
	if err == nil {
		err = balanceCheck(s.total, sum, journaled, rows, accepted)
	}
	return errors.Join(err, s.db.Close())
}
