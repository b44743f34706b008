-- `wallet.statement` is a read like `wallet.get` and `wallet.proof`: its stored results are
-- removed after worker.read_retention_secs (the index's predicate must match
-- db::commands::LOCAL_READS word for word), and their removal does not call for the full
-- ledger check.
DROP INDEX commands_reads_by_age;
CREATE INDEX commands_reads_by_age ON commands (created_at)
    WHERE type IN ('orders.list', 'orders.get', 'cashes.list', 'charges.list', 'charges.get',
                   'wallet.get', 'wallet.changes', 'wallet.statement', 'wallet.proof');
DROP TRIGGER audit_command_result_changed ON commands;
CREATE TRIGGER audit_command_result_changed AFTER UPDATE OR DELETE ON commands
    FOR EACH ROW
    WHEN (OLD.result IS NOT NULL
          AND OLD.type NOT IN ('orders.list', 'orders.get', 'cashes.list', 'charges.list',
                               'charges.get', 'wallet.get', 'wallet.changes', 'wallet.statement',
                               'wallet.proof'))
    EXECUTE FUNCTION audit_note_everything();
