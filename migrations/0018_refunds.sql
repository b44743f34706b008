-- Refunds of recharges through their Ping++ charge (`recharge.refund`, wallet.custody =
-- "platform").
--
-- The money leaves the wallet when the refund is requested, into `pending_refunds`, with the
-- refund's own expense order (target_type `recharge_refund`, state 0). When Ping++ reports the
-- refund succeeded it goes on to `pingpp_clearing` (the recharge reversed) and the order is 1;
-- when it failed it goes back to the wallet and the order is -1. The order keeps the journal
-- of the request, the one that moved the wallet.

INSERT INTO accounts (kind, name, unit, may_go_negative) VALUES
    ('system', 'pending_refunds', 'fen', false);

-- One per recharge.refund, and the recovery point between its transactions and its Ping++
-- call. Ping++ keys a charge refund by nothing of ours, so each is marked with
-- `metadata.refund_no` (`f` and the id in 19 digits) and found in the charge's refund list
-- when an answer was lost.
CREATE TABLE recharge_refunds (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    command_id        text NOT NULL UNIQUE,
    fingerprint       bytea NOT NULL,
    user_id           bigint NOT NULL CHECK (user_id > 0),
    -- The recharge refunded, and the refund's own order.
    recharge_order_id bigint NOT NULL REFERENCES wallet_orders (id),
    order_id          bigint NOT NULL UNIQUE REFERENCES wallet_orders (id),
    charge_id         text NOT NULL,
    amount            bigint NOT NULL CHECK (amount > 0),
    description       text NOT NULL,
    status            text NOT NULL DEFAULT 'pending'
                          CHECK (status IN ('pending', 'succeeded', 'failed')),
    -- Ping++'s refund, as last seen.
    refund_id         text UNIQUE,
    refund            json,
    failure_code      text,
    failure_msg       text,
    -- Creates sent, and when the last one that may have reached Ping++ was: a retry looks in
    -- the list first, and sends again only once the earlier one can no longer turn up. Twins
    -- of one command take turns by bumping `sends` from the value they read.
    sends             integer NOT NULL DEFAULT 0,
    sent_at           timestamptz,
    -- When a refund still pending is next asked about (the worker's pull), and how often it
    -- was.
    pull_due_at       timestamptz,
    pulls             integer NOT NULL DEFAULT 0,
    succeeded_at      timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CHECK ((refund_id IS NULL) = (refund IS NULL)),
    CHECK ((status = 'succeeded') = (succeeded_at IS NOT NULL))
);
CREATE INDEX recharge_refunds_recharge ON recharge_refunds (recharge_order_id);
-- The audit sums the pending ones every time; the worker pulls those due.
CREATE INDEX recharge_refunds_pending ON recharge_refunds (pull_due_at) WHERE status = 'pending';

-- The refund as results and events show it, Ping++'s refund object's fields where they fit
-- (times in unix seconds, as Ping++'s).
CREATE FUNCTION recharge_refund_json(r recharge_refunds) RETURNS json LANGUAGE sql STABLE AS $$
    SELECT json_build_object(
        'id', r.refund_id,
        'object', 'refund',
        'order', r.recharge_order_id,
        'refund_order', r.order_id,
        'charge', r.charge_id,
        'amount', r.amount,
        'description', r.description,
        'status', r.status,
        'created', extract(epoch FROM r.created_at)::bigint,
        'time_succeed', extract(epoch FROM r.succeeded_at)::bigint,
        'failure_code', r.failure_code,
        'failure_msg', r.failure_msg)
$$;
