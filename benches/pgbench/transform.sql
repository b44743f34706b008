-- `transform` (100..1000 fen to points at ratio 1) as src/engine/mod.rs applies it: claim the
-- command id, lock the wallet and the user's points account (created if missing), look up the
-- two system accounts, a journal with four entries and the balance update, one order, store
-- the result.
\set user random(1, :wallets)
\set amount random(100, 1000)
BEGIN;
INSERT INTO commands (id, type, fingerprint)
    VALUES ('pgb-' || gen_random_uuid(), 'transform',
            sha256(convert_to(:user::text || ':' || :amount::text, 'UTF8')))
    RETURNING id AS cmd \gset
SELECT 1 FROM recharges WHERE command_id = :cmd;
SELECT id AS wa, balance AS wb, entry_count AS wv FROM accounts
 WHERE kind = 'wallet' AND user_id = :user FOR UPDATE \gset
INSERT INTO accounts (kind, user_id, unit) VALUES ('points', :user, 'point')
    ON CONFLICT (kind, user_id) DO NOTHING;
SELECT id AS pa, balance AS pb, entry_count AS pv FROM accounts
 WHERE kind = 'points' AND user_id = :user FOR UPDATE \gset
SELECT id AS rev FROM accounts WHERE name = 'transform_revenue' \gset
SELECT id AS iss FROM accounts WHERE name = 'points_issued' \gset
INSERT INTO journal (kind, command_id) VALUES ('transform', :cmd) RETURNING id AS jid \gset
WITH u(a, d, v, b) AS (VALUES (:wa::bigint, -:amount::bigint, :wv::bigint + 1,
                               :wb::bigint - :amount::bigint),
                              (:rev::bigint, :amount::bigint, NULL, NULL),
                              (:iss::bigint, -:amount::bigint, NULL, NULL),
                              (:pa::bigint, :amount::bigint, :pv::bigint + 1,
                               :pb::bigint + :amount::bigint)),
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
INSERT INTO wallet_orders
       (owner_id, target_type, target_id, title, body, type, amount, state, command_id, journal_id)
VALUES (:user, 'transform', :user::text, '积分转换', '充值' || :amount::text || '积分', -1, :amount, 1,
        NULL, :jid)
RETURNING id, order_json(wallet_orders);
UPDATE commands SET status = 'succeeded',
       result = json_build_object('id', id, 'type', type, 'user_id', :user::bigint,
                    'status', 'succeeded', 'message', json_build_array('操作成功'),
                    'data', json_build_object('points', :amount::bigint, 'order',
                        (SELECT order_json(o) FROM wallet_orders o WHERE o.journal_id = :jid)))
 WHERE id = :cmd;
COMMIT;
