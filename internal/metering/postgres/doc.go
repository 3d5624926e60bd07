// Package postgres is the metering.Ledger backend on PostgreSQL, for
// several sidecar replicas that share one ledger. It keeps the embedded
// store's semantics exactly (the ledgertest conformance suite runs against
// both): atomic consumes under the configured demo rule, idempotency keys
// committed with the change they answer, an append-only journal with one
// entry per balance change, credits, refunds, settles and reconciles.
//
// # Transactions
//
// Every write is one READ COMMITTED transaction. Consume, Credit, Refund,
// Settle and Reconcile lock the account row (SELECT ... FOR UPDATE; Refund
// and Settle lock the debit's idempotency record first), decide with the
// shared rule helpers of package metering, and then write the balances,
// the journal entry and the idempotency record in one pipelined round
// trip before COMMIT. The balances also carry CHECK (>= 0) constraints, a
// last guard that no bug can overspend. Two requests racing with one new
// key both pass the key lookup; the second to insert the key gets a
// unique violation, its transaction rolls back, and its retry reads the
// winner's stored answer: a replay, never a second debit.
//
// # Retries and ambiguous commits
//
// A failed attempt is retried, with capped exponential backoff and at
// most PoolOptions.Retries times, when the failure is transient:
// serialization failures, deadlocks, the unique violation above, a server
// shutting down or in recovery (a failover), a read-only primary, and a
// lost or refused connection. The context's cancellation or deadline is
// never retried.
//
// A connection lost during COMMIT is ambiguous: the server may have
// committed. Retrying is still safe because every write that changes a
// balance claims a key in the same transaction: the caller's idempotency
// key, or, for an unkeyed call, an internal key made of a random id drawn
// once per call (internal keys hold a byte no caller key may hold, so the
// two never meet). The retry looks its key up first; if the lost commit
// did happen, it finds its own record and returns that answer, marked as
// an original (Replayed false) because the record carries the same call
// id. Provision needs no key: the account row names the call that created
// it. Refund is idempotent by itself; Settle stores its call id with the
// settle it records, so its retry answers as the original; Reconcile
// sets absolute balances, so its retry finds them set and writes nothing.
// An unkeyed refusal writes nothing, so retrying it is harmless.
//
// When the context ends during COMMIT there is no retry, and the error
// does not say whether the write happened. A caller that retries such a
// write itself must use an idempotency key, as with any ledger.
//
// # Key holds
//
// Store implements metering.KeyHolder on the key_holds table: one INSERT
// ... ON CONFLICT statement takes a key unless another live hold has it,
// one DELETE frees it, and each hold carries a random token so that a
// release or a retried hold acts on its own hold only. A hold lapses at
// an expiry on the database's clock (replicas' clocks never enter it);
// the next hold of a lapsed key takes it over, and PruneHolds deletes
// lapsed holds nobody took.
//
// # Pruning
//
// Idempotency records are kept until pruned: PruneIdempotency deletes
// callers' records older than a cutoff (metering.Pruner), PruneCalls the
// internal call records, which are needed only while their call runs.
// Both delete in bounded batches that skip locked rows, so pruning never
// waits for a write and replicas may prune at once. Nothing prunes the
// journal or the accounts.
//
// # Journal order
//
// Sequence numbers come from a sequence, and transactions may commit out
// of sequence order. So that Journal never skips an entry that commits
// late, writers take a per-schema advisory lock in shared mode when they
// append (held until commit), and Journal takes it exclusively for an
// instant to read the last handed-out number: every entry up to it is
// then committed or rolled back for good. Journal visits entries up to
// that horizon; later ones may or may not be visited, as with the
// embedded store.
//
// # Schema
//
// Migrations are SQL files embedded in the binary and numbered; the
// schema_migrations table records the applied ones. Open applies pending
// migrations unless PoolOptions.SkipMigrate is set (then it only checks
// the version); Migrate does the same alone. A session advisory lock lets
// replicas that start together migrate once. A schema newer than the
// binary is refused.
//
// The package does not log, knows nothing of HTTP, and never puts the DSN
// in an error: it may hold a password.
package postgres
