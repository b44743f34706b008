-- Versioned accounts: every entry of a user's account (wallet, points, held, packets, merchant)
-- is that account's next version, and carries the balance after it. A consumer that saw
-- version 7 after 5 knows it missed one and asks for it (`wallet.changes`); later, what is
-- built on an account's history (statements, balances at a time, chains of hashes) reads
-- these two columns rather than summing entries again.
--
-- System accounts stay unversioned (NULL): they are shared rows moved once per transaction
-- for many users' journals (db::ledger::SystemDeltas), and giving each of their entries a
-- version would make every posting read and lock them.
--
-- An account's versions are 1 to its entry_count, in journal order, so a posting numbers its
-- entries from the locked account row alone, without reading any entry; the audit checks it
-- (`versions_follow_entries`).
ALTER TABLE ledger_entries
    ADD COLUMN version bigint CHECK (version > 0),
    ADD COLUMN balance_after bigint,
    ADD CONSTRAINT ledger_entries_version_with_balance
        CHECK ((version IS NULL) = (balance_after IS NULL));

-- The history as it stands, numbered. The incremental audit's trigger on updated entries would
-- note every row as suspect (two rows each in audit_suspects) for a change of columns it does
-- not check: it is off for this statement only, which nothing else can see (the ALTER above
-- holds the table's exclusive lock until the migration commits).
ALTER TABLE ledger_entries DISABLE TRIGGER audit_entry_changed;
UPDATE ledger_entries e SET version = v.version, balance_after = v.balance_after
    FROM (SELECT x.journal_id, x.account_id,
                 row_number() OVER w AS version,
                 sum(x.amount) OVER w AS balance_after
          FROM ledger_entries x JOIN accounts a ON a.id = x.account_id
          WHERE a.kind <> 'system'
          WINDOW w AS (PARTITION BY x.account_id ORDER BY x.journal_id
                       ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)) v
    WHERE e.journal_id = v.journal_id AND e.account_id = v.account_id;
ALTER TABLE ledger_entries ENABLE TRIGGER audit_entry_changed;

-- An account's changes in version order (`wallet.changes`), and no version twice. It also
-- serves every lookup by account the old index served (system accounts' entries all have
-- NULL there, which a unique index allows), so it replaces it: a posting still updates one
-- index per entry besides the primary key.
CREATE UNIQUE INDEX ledger_entries_versions ON ledger_entries (account_id, version);
DROP INDEX ledger_entries_account_id;

-- `wallet.changes` is a read like `wallet.get`: its stored results are removed after
-- worker.read_retention_secs (the index's predicate must match db::commands::LOCAL_READS word
-- for word), and their removal does not call for the full ledger check.
DROP INDEX commands_reads_by_age;
CREATE INDEX commands_reads_by_age ON commands (created_at)
    WHERE type IN ('orders.list', 'orders.get', 'cashes.list', 'charges.list', 'charges.get',
                   'wallet.get', 'wallet.changes');
DROP TRIGGER audit_command_result_changed ON commands;
CREATE TRIGGER audit_command_result_changed AFTER UPDATE OR DELETE ON commands
    FOR EACH ROW
    WHEN (OLD.result IS NOT NULL
          AND OLD.type NOT IN ('orders.list', 'orders.get', 'cashes.list', 'charges.list',
                               'charges.get', 'wallet.get', 'wallet.changes'))
    EXECUTE FUNCTION audit_note_everything();
