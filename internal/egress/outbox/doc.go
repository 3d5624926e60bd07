// Package outbox is the egress's durable outbox: every upstream call's
// Record is stored before the call is considered done, and delivered to
// the Zimmer platform later, so that a platform outage loses nothing and
// duplicates nothing.
//
// A Record yields up to two items. A "report" (a call made with a leased
// key) goes to the guide's openai-usage endpoint with the record id as
// Idempotency-Key; it is retried with backoff until the platform takes
// it. A "consume" (when forwarding to the platform's ledger is on and the
// call charged a user) goes to the platform's real consume endpoint,
// which has no idempotency: it is retried only when it surely never
// reached the platform or was not applied, and an attempt whose outcome
// cannot be known is parked as "unknown" for an admin to requeue or drop,
// never repeated on its own. The platform's answer to a consume is handed
// to a hook, which the sidecar wires to its local ledger.
//
// A 401 or 403 refuses the service token, not the item: both kinds are
// retried with backoff (a refused consume was not applied), the breaker
// counts the refusal, and the attempt's error matches ErrTokenRefused.
//
// Three parts:
//
//   - Store keeps items durably: BoltStore in a bbolt file of its own (one
//     process), PostgresStore in a table shared by replicas (claims with
//     FOR UPDATE SKIP LOCKED and a deadline, so a crashed replica's items
//     come back). Both are bounded: Add fails with ErrFull.
//   - Outbox turns Records into items (the egress Sink: Enqueue and
//     Full) and serves the admin view (AdminHandler).
//   - Deliverer claims due items and sends them, behind a circuit
//     breaker; Flush delivers what it can at shutdown.
//
// The package never logs (OnEvent reports attempts) and never puts the
// service token, a key or a platform answer's body in an error, an item
// or an event.
package outbox
