-- Hash chains: every versioned entry (migrations/0020) carries the SHA-256 of its own figures
-- and of the entry before it of the same account, so an entry changed, removed or moved
-- afterwards breaks the chain from there on (`pluspay verify`). The account row keeps the
-- hash of its last entry, `head_hash`, which a posting chains its entries onto without
-- reading any entry, as it numbers them (docs/CONTRACT.md §5 "Hash chains" gives the
-- encoding and a Python check).
--
-- One entry's hash, and the only place the encoding is written in SQL: the UTF-8 text
-- `{prev}|{account_id}|{version}|{amount}|{balance_after}|{journal_id}`, `{prev}` the previous
-- entry's hash in lowercase hex (64 zeros before version 1), the numbers in decimal.
-- A plain SQL function: the planner inlines it.
CREATE FUNCTION ledger_entry_hash(prev bytea, account_id bigint, version bigint, amount bigint,
                                  balance_after bigint, journal_id bigint)
    RETURNS bytea LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT sha256(convert_to(
        coalesce(encode(prev, 'hex'), repeat('0', 64)) || '|' || account_id || '|' || version || '|' || amount || '|' || balance_after
        || '|' || journal_id, 'UTF8'))
$$;

-- The chain of one account in one pass: as a running (window) aggregate in version order,
-- each row gets its hash from the row before it, starting from `start` (the account's head
-- before the rows, NULL for none) on the first row. A posting with many entries of one
-- account (a hot wallet in a batch) then hashes them in one sort, where a recursive query
-- would take a step per entry (docs/BENCHMARKS.md "Hash chains"). The step is PL/pgSQL: a
-- transition function in SQL is not inlined, and running its body as a query of its own
-- cost about 70 µs a row in a posting, three times the posting's own work.
CREATE FUNCTION ledger_chain_step(state bytea, start bytea, account_id bigint, version bigint,
                                  amount bigint, balance_after bigint, journal_id bigint)
    RETURNS bytea LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
    RETURN ledger_entry_hash(CASE WHEN state IS NULL THEN start ELSE state END,
                             account_id, version, amount, balance_after, journal_id);
END $$;
CREATE AGGREGATE ledger_chain(start bytea, account_id bigint, version bigint, amount bigint,
                              balance_after bigint, journal_id bigint) (
    SFUNC = ledger_chain_step,
    STYPE = bytea
);

ALTER TABLE ledger_entries ADD COLUMN hash bytea CHECK (octet_length(hash) = 32);
ALTER TABLE accounts ADD COLUMN head_hash bytea CHECK (octet_length(head_hash) = 32);

-- The history as it stands, chained. The audit's trigger on updated entries is off for this
-- statement only, as in 0020 (the ALTER above holds the table's exclusive lock).
ALTER TABLE ledger_entries DISABLE TRIGGER audit_entry_changed;
UPDATE ledger_entries e SET hash = c.hash
    FROM (SELECT x.journal_id, x.account_id,
                 ledger_chain(NULL::bytea, x.account_id, x.version, x.amount, x.balance_after,
                              x.journal_id)
                     OVER (PARTITION BY x.account_id ORDER BY x.version
                           ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS hash
          FROM ledger_entries x WHERE x.version IS NOT NULL) c
    WHERE e.journal_id = c.journal_id AND e.account_id = c.account_id;
ALTER TABLE ledger_entries ENABLE TRIGGER audit_entry_changed;
ALTER TABLE ledger_entries
    ADD CONSTRAINT ledger_entries_version_with_hash CHECK ((version IS NULL) = (hash IS NULL));
UPDATE accounts a SET head_hash = e.hash
    FROM ledger_entries e
    WHERE e.account_id = a.id AND e.version = a.entry_count AND a.kind <> 'system';

-- `pluspay verify --incremental`: each account's last verified entry, and the journal up to
-- which every entry was looked at. Unlogged like the audit's memory (0012): lost in a crash,
-- the next incremental verification is the full one.
CREATE UNLOGGED TABLE chain_point (
    only_row    boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    journal_id  bigint NOT NULL,
    verified_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNLOGGED TABLE chain_accounts (
    account_id    bigint PRIMARY KEY,
    version       bigint NOT NULL,
    balance_after bigint NOT NULL,
    -- NULL with version 0: nothing of the account verified yet.
    hash          bytea,
    -- A chain found broken: checked again by every incremental run until it is repaired.
    broken        boolean NOT NULL DEFAULT false
);
CREATE INDEX chain_accounts_broken ON chain_accounts (account_id) WHERE broken;

-- The daily Merkle roots over every user account's head (docs/CONTRACT.md §5 "Daily roots"),
-- one row a day, recorded once after the day ended (UTC).
CREATE TABLE ledger_roots (
    day         date PRIMARY KEY,
    root        bytea NOT NULL CHECK (octet_length(root) = 32),
    leaves      bigint NOT NULL CHECK (leaves >= 0),
    -- Levels above the leaves (0: one leaf or none, the root is the leaf or 32 zero bytes).
    height      integer NOT NULL CHECK (height >= 0),
    recorded_at timestamptz NOT NULL DEFAULT now()
);
-- Every node of every day's tree, leaves at level 0 (with their account and its version
-- then), so that a proof is one lookup of the leaf and one of its siblings.
CREATE TABLE ledger_root_nodes (
    day        date NOT NULL REFERENCES ledger_roots (day) ON DELETE CASCADE,
    level      smallint NOT NULL CHECK (level >= 0),
    position   bigint NOT NULL CHECK (position >= 0),
    hash       bytea NOT NULL,
    account_id bigint,
    version    bigint,
    PRIMARY KEY (day, level, position),
    CHECK ((level = 0) = (account_id IS NOT NULL) AND (account_id IS NULL) = (version IS NULL))
);
CREATE UNIQUE INDEX ledger_root_leaves ON ledger_root_nodes (account_id, day)
    WHERE account_id IS NOT NULL;

-- `wallet.proof` is a read like `wallet.get` (see 0020): the index's predicate must match
-- db::commands::LOCAL_READS word for word.
DROP INDEX commands_reads_by_age;
CREATE INDEX commands_reads_by_age ON commands (created_at)
    WHERE type IN ('orders.list', 'orders.get', 'cashes.list', 'charges.list', 'charges.get',
                   'wallet.get', 'wallet.changes', 'wallet.proof');
DROP TRIGGER audit_command_result_changed ON commands;
CREATE TRIGGER audit_command_result_changed AFTER UPDATE OR DELETE ON commands
    FOR EACH ROW
    WHEN (OLD.result IS NOT NULL
          AND OLD.type NOT IN ('orders.list', 'orders.get', 'cashes.list', 'charges.list',
                               'charges.get', 'wallet.get', 'wallet.changes', 'wallet.proof'))
    EXECUTE FUNCTION audit_note_everything();
