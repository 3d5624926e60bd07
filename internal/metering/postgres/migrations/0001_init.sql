-- The ledger's first schema: accounts, the journal and idempotency records.
-- Every balance change writes one journal row in the same transaction.

CREATE TABLE accounts (
	user_automation_id bigint      PRIMARY KEY,
	user_id            bigint      NOT NULL,
	demo_tokens        bigint      NOT NULL CHECK (demo_tokens >= 0),
	paid_tokens        bigint      NOT NULL CHECK (paid_tokens >= 0),
	bot_token_given    boolean     NOT NULL,
	provisioned_at     timestamptz NOT NULL,
	-- the call that created the row, so a retried Provision can tell its
	-- own earlier commit from another caller's
	created_call       bytea       NOT NULL
);

-- seq is handed out while the writer holds the journal lock in shared
-- mode (see the package doc), so readers can find a gap-free horizon.
CREATE TABLE journal (
	seq                bigserial   PRIMARY KEY,
	at                 timestamptz NOT NULL,
	kind               text        NOT NULL
		CHECK (kind IN ('provision', 'debit', 'credit', 'refund')),
	user_automation_id bigint      NOT NULL REFERENCES accounts,
	demo_delta         bigint      NOT NULL,
	paid_delta         bigint      NOT NULL,
	usage_type         text        NOT NULL DEFAULT '',
	idempotency_key    text        NOT NULL DEFAULT '',
	reason             text        NOT NULL DEFAULT ''
);

CREATE INDEX journal_account_seq ON journal (user_automation_id, seq);

-- One row per claimed key: the caller's keys and, for unkeyed writes that
-- changed a balance, an internal key of the call (internal = true).
CREATE TABLE idempotency (
	key                text        PRIMARY KEY,
	kind               text        NOT NULL CHECK (kind IN ('debit', 'credit')),
	fingerprint        bytea       NOT NULL,
	user_automation_id bigint      NOT NULL,
	internal           boolean     NOT NULL,
	call_id            bytea       NOT NULL,
	created_at         timestamptz NOT NULL,
	-- the first answer, as JSON: a ConsumeResult or an Account
	result             jsonb       NOT NULL,
	-- the journal entry of an accepted debit, and of its refund once made
	debit_seq          bigint,
	refund_seq         bigint
);

CREATE INDEX idempotency_internal_created ON idempotency (created_at) WHERE internal;
