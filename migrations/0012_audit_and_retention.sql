-- The incremental ledger check (src/db/audit.rs): what it verified last, and the rows changed
-- behind the ledger's back since, so that a check costs what changed, not the whole history.
-- And an index for removing the stored results of reads once they are old.

-- How many entries have moved each account. A posting moves balance and count together; a
-- balance moved without its count is a change without an entry (see audit_note_account).
ALTER TABLE accounts ADD COLUMN entry_count bigint NOT NULL DEFAULT 0;
UPDATE accounts a SET entry_count = e.n
    FROM (SELECT account_id, count(*) AS n FROM ledger_entries GROUP BY account_id) e
    WHERE a.id = e.account_id;

-- Every journal up to `journal_id` (and all its entries) has been verified.
-- This table and the next are the check's own memory, rewritten at every check: unlogged,
-- they cost no WAL. A crash (or a standby promoted) empties both, and the next check is then
-- the full one, which fills them again.
CREATE UNLOGGED TABLE audit_point (
    only_row    boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    journal_id  bigint NOT NULL,
    verified_at timestamptz NOT NULL DEFAULT now()
);

-- Each account as of audit_point: the sum and number of its entries in the verified journals.
-- An account without a row has none. Written only by the check.
-- Room left in each page, so that a check's update of a row stays on its page (no index
-- update).
CREATE UNLOGGED TABLE audit_accounts (
    account_id  bigint PRIMARY KEY,
    balance     bigint NOT NULL,
    entry_count bigint NOT NULL
) WITH (fillfactor = 70);

-- Rows to check in full at the next check: written by the triggers below when something
-- changes the ledger other than by posting (an entry updated or deleted, an entry added to a
-- verified journal, a balance moved without an entry), and by a check for what failed it, so
-- that a failure is seen again until it is repaired. `everything` asks for the full check.
CREATE TABLE audit_suspects (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id bigint,
    journal_id bigint,
    everything boolean NOT NULL DEFAULT false,
    noted_at   timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION audit_note_entry_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        INSERT INTO audit_suspects (account_id, journal_id) VALUES (OLD.account_id, OLD.journal_id);
    END IF;
    IF TG_OP = 'UPDATE' THEN
        INSERT INTO audit_suspects (account_id, journal_id) VALUES (NEW.account_id, NEW.journal_id);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER audit_entry_changed AFTER UPDATE OR DELETE ON ledger_entries
    FOR EACH ROW EXECUTE FUNCTION audit_note_entry_change();

-- Postings add entries to new journals only: an entry added to a journal the check has
-- already passed would otherwise never be looked at again. One call per statement.
CREATE FUNCTION audit_note_late_entries() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO audit_suspects (account_id, journal_id)
        SELECT n.account_id, n.journal_id FROM new_entries n, audit_point p
        WHERE n.journal_id <= p.journal_id;
    RETURN NULL;
END $$;

CREATE TRIGGER audit_entry_added AFTER INSERT ON ledger_entries
    REFERENCING NEW TABLE AS new_entries
    FOR EACH STATEMENT EXECUTE FUNCTION audit_note_late_entries();

CREATE FUNCTION audit_note_account() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO audit_suspects (account_id) VALUES (NEW.id);
    RETURN NULL;
END $$;

-- The WHEN clause is evaluated without calling the function, so postings (which move
-- entry_count with the balance) pay next to nothing.
CREATE TRIGGER audit_account_moved_without_entry AFTER UPDATE ON accounts
    FOR EACH ROW
    WHEN (NEW.entry_count = OLD.entry_count
          AND (NEW.balance, NEW.total_income, NEW.total_expenses)
              IS DISTINCT FROM (OLD.balance, OLD.total_income, OLD.total_expenses))
    EXECUTE FUNCTION audit_note_account();

CREATE TRIGGER audit_account_created_with_money AFTER INSERT ON accounts
    FOR EACH ROW
    WHEN (NEW.balance <> 0 OR NEW.total_income <> 0 OR NEW.total_expenses <> 0
          OR NEW.entry_count <> 0)
    EXECUTE FUNCTION audit_note_account();

CREATE FUNCTION audit_note_everything() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO audit_suspects (everything) VALUES (true);
    RETURN NULL;
END $$;

CREATE TRIGGER audit_entries_truncated AFTER TRUNCATE ON ledger_entries
    FOR EACH STATEMENT EXECUTE FUNCTION audit_note_everything();
CREATE TRIGGER audit_journal_truncated AFTER TRUNCATE ON journal
    FOR EACH STATEMENT EXECUTE FUNCTION audit_note_everything();
CREATE TRIGGER audit_accounts_truncated AFTER TRUNCATE ON accounts
    FOR EACH STATEMENT EXECUTE FUNCTION audit_note_everything();

-- The open cash requests, which the payouts check sums every time, without reading every
-- order there ever was.
CREATE INDEX wallet_orders_open ON wallet_orders (id) WHERE state = 0;

-- The stored results of reads (CommandType::is_local_read), by age, for their removal after
-- worker.read_retention_secs. The predicate must match db::commands::LOCAL_READS word for word.
CREATE INDEX commands_reads_by_age ON commands (created_at)
    WHERE type IN ('orders.list', 'orders.get', 'cashes.list', 'charges.list', 'charges.get',
                   'wallet.get');
