-- Fewer bytes and index updates per posting, nothing lost:
--
-- * Journals, wallet orders and cash decisions no longer reference `commands` by a foreign
--   key. The keys cost an index lookup per row written and an index on each referencing
--   column, which only deletes from `commands` needed (the removal of old reads, which would
--   otherwise check every referencing table per row). The audit checks the same thing instead
--   (`records_name_stored_commands`): money commands' rows are never removed.
-- * Ledger entries are identified by their journal and account (already unique): the
--   surrogate id and its index served nothing.
-- * A command's row holds what a replay needs: its id, type (the routing key), fingerprint,
--   status and exact result, and its time (for the removal of old reads). The user is in the
--   result.
ALTER TABLE journal DROP CONSTRAINT journal_command_id_fkey;
ALTER TABLE wallet_orders DROP CONSTRAINT wallet_orders_command_id_fkey;
ALTER TABLE cashes DROP CONSTRAINT cashes_decision_command_id_fkey;
DROP INDEX journal_command_id;
DROP INDEX wallet_orders_command;

ALTER TABLE commands DROP COLUMN user_id;

ALTER TABLE ledger_entries DROP CONSTRAINT ledger_entries_pkey;
ALTER TABLE ledger_entries DROP COLUMN id;
ALTER TABLE ledger_entries DROP CONSTRAINT ledger_entries_journal_id_account_id_key,
    ADD CONSTRAINT ledger_entries_pkey PRIMARY KEY (journal_id, account_id);

-- A money command's stored result is written once and never removed: a change to one, which
-- the incremental check could not tie to a journal without an index, makes the next check the
-- full one.
CREATE TRIGGER audit_command_result_changed AFTER UPDATE OR DELETE ON commands
    FOR EACH ROW
    WHEN (OLD.result IS NOT NULL
          AND OLD.type NOT IN ('orders.list', 'orders.get', 'cashes.list', 'charges.list',
                               'charges.get', 'wallet.get'))
    EXECUTE FUNCTION audit_note_everything();
