-- Cash payouts through Ping++ withdrawals (`pingpp.payout = "withdrawals"`).
--
-- `cash.approve` then creates and confirms a Ping++ withdrawal instead of paying out at once:
-- the cash record is approved (status 1, the seeds' 已审批) while its order stays waiting
-- (state 0) until Ping++ reports the withdrawal succeeded (order state 1, the money moves from
-- pending_payouts to paid_out) or failed / canceled (status 2, order state -1, the money goes
-- back to the wallet).

-- One attempt at paying a cash record out through Ping++, and the recovery point between the
-- approving command's transactions and its Ping++ calls (as `recharges` is for a recharge).
-- A cash record has at most one active attempt; an attempt Ping++ refused is kept, inactive.
CREATE TABLE cash_payouts (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    cash_id        bigint NOT NULL REFERENCES cashes (id),
    -- The cash.approve that began it, with its fingerprint, operator and remark.
    command_id     text NOT NULL,
    fingerprint    bytea NOT NULL,
    operator       bigint NOT NULL,
    remark         text NOT NULL,
    order_no       text NOT NULL UNIQUE,
    -- Exactly what is sent to Ping++, so every retry sends the same request.
    request        json NOT NULL,
    withdrawal_id  text UNIQUE,
    -- Ping++'s status of the withdrawal as last seen: created, pending, processing,
    -- succeeded, failed or canceled.
    status         text,
    withdrawal     json,
    active         boolean NOT NULL DEFAULT true,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    CHECK ((withdrawal_id IS NULL) = (withdrawal IS NULL)),
    CHECK ((withdrawal_id IS NULL) = (status IS NULL))
);
CREATE UNIQUE INDEX cash_payouts_active ON cash_payouts (cash_id) WHERE active;
CREATE INDEX cash_payouts_command ON cash_payouts (command_id);

-- The withdrawal of a cash record, as last seen (copied from its active payout).
ALTER TABLE cashes
    ADD COLUMN withdrawal_id     text,
    ADD COLUMN withdrawal_status text,
    ADD CHECK ((withdrawal_id IS NULL) = (withdrawal_status IS NULL));

-- The seeds' shape, plus the withdrawal's id and status once there is one (manual payouts
-- keep the seeds' shape exactly).
CREATE OR REPLACE FUNCTION cash_json(c cashes) RETURNS json LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN c.withdrawal_id IS NULL THEN
        json_build_object(
            'id', c.id,
            'value', c.value,
            'type', c.type,
            'account', c.account,
            'status', c.status,
            'remark', c.remark,
            'created_at', to_char(c.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'))
    ELSE
        json_build_object(
            'id', c.id,
            'value', c.value,
            'type', c.type,
            'account', c.account,
            'status', c.status,
            'remark', c.remark,
            'created_at', to_char(c.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'),
            'pingpp_withdrawal_id', c.withdrawal_id,
            'pingpp_withdrawal_status', c.withdrawal_status)
    END
$$;

-- Which cash record a Ping++ event settled.
ALTER TABLE pingpp_events ADD COLUMN cash_id bigint REFERENCES cashes (id);
