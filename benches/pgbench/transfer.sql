-- One `transfer`, as src/engine applies a command alone, one command per transaction: claim the
-- command id, lock both wallets in user id order, a journal with two ledger entries (each its
-- wallet's next version, with the balance after it) and the balance update, two wallet
-- orders, then store the result.
-- Run with -D wallets=N (wallets 1..N exist and are funded), -M prepared, and -D hot=0 (between
-- two random wallets) or -D hot=1 (from a random wallet to wallet 1, as rewards to one popular
-- user are).
\set from random(1 + :hot, :wallets)
\set off random(1, :wallets - 1)
\set to CASE WHEN :hot = 1 THEN 1 ELSE 1 + (:from - 1 + :off) % :wallets END
\set amount random(1, 100)
BEGIN;
INSERT INTO commands (id, type, fingerprint)
    VALUES ('pgb-' || gen_random_uuid(), 'transfer',
            sha256(convert_to(:from::text || ':' || :to::text || ':' || :amount::text, 'UTF8')))
    RETURNING id AS cmd \gset
SELECT 1 FROM recharges WHERE command_id = :cmd;
SELECT max(id) FILTER (WHERE user_id = :from) AS fa, max(id) FILTER (WHERE user_id = :to) AS ta,
       min(balance) FILTER (WHERE user_id = :from) AS fb,
       min(balance) FILTER (WHERE user_id = :to) AS tb,
       min(entry_count) FILTER (WHERE user_id = :from) AS fv,
       min(entry_count) FILTER (WHERE user_id = :to) AS tv
    FROM (SELECT user_id, id, balance, entry_count FROM accounts
          WHERE kind = 'wallet' AND user_id IN (:from, :to) ORDER BY user_id FOR UPDATE) w \gset
INSERT INTO journal (kind, command_id) VALUES ('transfer', :cmd) RETURNING id AS jid \gset
WITH u(a, d, v, b) AS (VALUES (:fa::bigint, -:amount::bigint, :fv::bigint + 1,
                               :fb::bigint - :amount::bigint),
                              (:ta::bigint, :amount::bigint, :tv::bigint + 1,
                               :tb::bigint + :amount::bigint)),
     h AS (SELECT u.*, ledger_entry_hash(c.head_hash, a, v, d, b, :jid) AS hash
           FROM u JOIN accounts c ON c.id = u.a),
     entries AS (INSERT INTO ledger_entries
                     (journal_id, account_id, amount, version, balance_after, hash)
                 SELECT :jid, a, d, v, b, hash FROM h)
UPDATE accounts SET balance = balance + h.d,
       total_income = total_income + greatest(h.d, 0),
       total_expenses = total_expenses + greatest(-h.d, 0),
       entry_count = entry_count + 1,
       head_hash = h.hash,
       updated_at = now()
  FROM h WHERE accounts.id = h.a;
INSERT INTO wallet_orders
       (owner_id, target_type, target_id, title, body, type, amount, state, command_id, journal_id)
VALUES (:from, 'user', :to::text, '转账', NULL, -1, :amount, 1, NULL, :jid),
       (:to, 'user', :from::text, '转账', NULL, 1, :amount, 1, NULL, :jid)
RETURNING id, order_json(wallet_orders);
UPDATE commands SET status = 'succeeded',
       result = json_build_object('id', id, 'type', type, 'user_id', :from::bigint,
                    'status', 'succeeded', 'message', json_build_array('转账成功'),
                    'data', json_build_object('order',
                        (SELECT order_json(o) FROM wallet_orders o
                          WHERE o.journal_id = :jid AND o.owner_id = :from)))
 WHERE id = :cmd;
COMMIT;
