-- `wallet.changed`: one event per version of a user's wallet or points account, published by
-- the worker from the ledger itself (src/worker/wallet_changed.rs). The entries are written in
-- the money's own transaction, so the ledger is the outbox and posting writes nothing more;
-- this row says how far the events have gone out: every entry of a journal up to
-- `journal_id` has been published (and confirmed by the broker). A crash before the row moves
-- publishes the same events again, with the same `event_id` and the same bytes.
--
-- It starts at 0: a database with history publishes its whole history once, in journal order,
-- so that a consumer starting now can hold every account's versions from 1 (docs/OPERATIONS.md,
-- "wallet.changed", says how to start from the present instead).
CREATE TABLE wallet_changed_cursor (
    only_row   boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    journal_id bigint NOT NULL CHECK (journal_id >= 0),
    updated_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO wallet_changed_cursor (journal_id) VALUES (0);
