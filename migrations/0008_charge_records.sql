-- The older wallet API's charge records (凭据, GET /wallet/charges): not a table of their own
-- but a view of the wallet orders, each with the channel, account and Ping++ ids of what it
-- belongs to, so they can never disagree with the orders.
--
-- `id` is the order's id; `action` 1 income, 2 expense; `status` 0 waiting, 1 succeeded,
-- 2 failed. `channel` names how the money moved: a Ping++ channel for a recharge, the cash
-- record's payout method for a cash request, and, as the seed says of the platform's own
-- kinds, `user` (with the other user's id as `account`) for transfers and rewards, `transform`
-- for a transform.
--
-- Each source of orders is one arm of the UNION ALL below, gated on the order's target_type,
-- so another source is one more arm and nothing else changes.
CREATE VIEW charge_records AS
    SELECT o.id,
           o.owner_id AS user_id,
           s.channel,
           s.account,
           s.charge_id,
           CASE o.type WHEN 1 THEN 1 ELSE 2 END::smallint AS action,
           o.amount,
           'cny'::text AS currency,
           o.title AS subject,
           o.body,
           s.transaction_no,
           CASE o.state WHEN 0 THEN 0 WHEN 1 THEN 1 ELSE 2 END::smallint AS status,
           o.created_at,
           o.updated_at
    FROM wallet_orders o
    LEFT JOIN LATERAL (
        -- A recharge: the channel asked for and the charge Ping++ made (none until made). The
        -- stored charge is the one Ping++ answered at creation, so the payment's
        -- transaction_no comes from the charge.succeeded event that credited the order.
        SELECT r.charge_request ->> 'channel' AS channel,
               NULL::text AS account,
               r.charge_id,
               coalesce(r.charge ->> 'transaction_no',
                        (SELECT e.body -> 'data' -> 'object' ->> 'transaction_no'
                         FROM pingpp_events e
                         WHERE e.order_id = o.id AND e.outcome IN ('credited', 'credited_late')
                         LIMIT 1)) AS transaction_no
        FROM recharges r
        WHERE o.target_type = 'recharge_ping_p_p' AND r.order_id = o.id
        UNION ALL
        -- A deposit into the user's e-wallet (wallet.custody = "pingpp"), paid at YeePay's
        -- cashier: the deposit as last seen (its transaction_no once paid).
        SELECT 'yeepay', NULL, d.deposit_id, d.deposit ->> 'transaction_no'
        FROM deposits d
        WHERE o.target_type = 'recharge_ping_p_p' AND d.order_id = o.id
        UNION ALL
        -- A cash request: its payout method and account, and its Ping++ withdrawal if it is
        -- paid out through one.
        SELECT c.type, c.account, c.withdrawal_id, p.withdrawal ->> 'transaction_no'
        FROM cashes c
        LEFT JOIN cash_payouts p ON p.withdrawal_id = c.withdrawal_id
        WHERE o.target_type = 'widthdraw' AND c.order_id = o.id
        UNION ALL
        SELECT 'user', o.target_id, NULL, NULL
        WHERE o.target_type IN ('user', 'reward')
        UNION ALL
        SELECT 'transform', NULL, NULL, NULL
        WHERE o.target_type = 'transform'
    ) s ON true;

-- The lookups the view makes per order.
CREATE INDEX cashes_order ON cashes (order_id);
CREATE INDEX pingpp_events_order ON pingpp_events (order_id) WHERE order_id IS NOT NULL;

-- The seed's JSON shape of a charge record, in one place.
CREATE FUNCTION charge_record_json(c charge_records) RETURNS json LANGUAGE sql STABLE AS $$
    SELECT json_build_object(
        'id', c.id,
        'user_id', c.user_id,
        'channel', c.channel,
        'account', c.account,
        'charge_id', c.charge_id,
        'action', c.action,
        'amount', c.amount,
        'currency', c.currency,
        'subject', c.subject,
        'body', c.body,
        'transaction_no', c.transaction_no,
        'status', c.status,
        'created_at', to_char(c.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'),
        'updated_at', to_char(c.updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'),
        'deleted_at', NULL)
$$;
