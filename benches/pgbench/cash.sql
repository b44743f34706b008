-- `cash` (a 100..1000 fen payout request) as src/engine/mod.rs applies it: claim the command
-- id, lock the wallet, look up pending_payouts, a journal with two entries and the balance
-- update, the cash record, its order, link them, read the record back, store the result.
\set user random(1, :wallets)
\set value random(100, 1000)
BEGIN;
INSERT INTO commands (id, type, fingerprint)
    VALUES ('pgb-' || gen_random_uuid(), 'cash',
            sha256(convert_to(:user::text || ':' || :value::text, 'UTF8')))
    RETURNING id AS cmd \gset
SELECT 1 FROM recharges WHERE command_id = :cmd;
SELECT id AS wa, balance AS wb, entry_count AS wv FROM accounts
 WHERE kind = 'wallet' AND user_id = :user FOR UPDATE \gset
SELECT id AS pp FROM accounts WHERE name = 'pending_payouts' \gset
INSERT INTO journal (kind, command_id) VALUES ('cash', :cmd) RETURNING id AS jid \gset
WITH u(a, d, v, b) AS (VALUES (:wa::bigint, -:value::bigint, :wv::bigint + 1,
                               :wb::bigint - :value::bigint),
                              (:pp::bigint, :value::bigint, NULL, NULL)),
     h AS (SELECT u.*, ledger_entry_hash(c.head_hash, a, v, d, b, :jid) AS hash
           FROM u JOIN accounts c ON c.id = u.a),
     entries AS (INSERT INTO ledger_entries
                     (journal_id, account_id, amount, version, balance_after, hash)
                 SELECT :jid, a, d, v, b, hash FROM h)
UPDATE accounts SET balance = balance + h.d,
       total_income = total_income + greatest(h.d, 0),
       total_expenses = total_expenses + greatest(-h.d, 0),
       entry_count = entry_count + 1,
       head_hash = coalesce(h.hash, head_hash),
       updated_at = now()
  FROM h WHERE accounts.id = h.a;
INSERT INTO cashes (user_id, value, type, account, command_id)
    VALUES (:user, :value, 'alipay', 'bench@example.com', :cmd) RETURNING id AS cash \gset
INSERT INTO wallet_orders
       (owner_id, target_type, target_id, title, body, type, amount, state, command_id, journal_id)
VALUES (:user, 'widthdraw', :cash::text, '提现', NULL, -1, :value, 0, NULL, :jid)
RETURNING id AS oid \gset
UPDATE cashes SET order_id = :oid WHERE id = :cash;
SELECT cash_json(c) FROM cashes c WHERE id = :cash;
UPDATE commands SET status = 'succeeded',
       result = json_build_object('id', id, 'type', type, 'user_id', :user::bigint,
                    'status', 'succeeded', 'message', json_build_array('申请提现成功'),
                    'data', json_build_object(
                        'cash', (SELECT cash_json(c) FROM cashes c WHERE c.id = :cash),
                        'order', (SELECT order_json(o) FROM wallet_orders o WHERE o.id = :oid)))
 WHERE id = :cmd;
COMMIT;
