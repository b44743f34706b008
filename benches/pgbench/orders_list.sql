-- `orders.list` (first page of 15, newest first) as src/engine/mod.rs applies it: claim the
-- command id, read the page, store the result.
\set user random(1, :wallets)
BEGIN;
INSERT INTO commands (id, type, fingerprint)
    VALUES ('pgb-' || gen_random_uuid(), 'orders.list',
            sha256(convert_to(:user::text || '/orders.list', 'UTF8')))
    RETURNING id AS cmd \gset
SELECT 1 FROM recharges WHERE command_id = :cmd;
UPDATE commands SET status = 'succeeded',
       result = json_build_object('id', id, 'type', type, 'user_id', :user::bigint,
                    'status', 'succeeded', 'message', json_build_array(),
                    'data', (SELECT coalesce(json_agg(order_json(o) ORDER BY o.id DESC), '[]'::json)
                               FROM (SELECT * FROM wallet_orders WHERE owner_id = :user
                                     ORDER BY id DESC LIMIT 15) o))
 WHERE id = :cmd;
COMMIT;
