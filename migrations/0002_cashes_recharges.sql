-- Cash requests and their review, and the progress of recharges through Ping++.

-- The seeds' cash records ("提现记录"): status 0 waiting, 1 approved, 2 rejected.
CREATE TABLE cashes (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id     bigint NOT NULL CHECK (user_id > 0),
    value       bigint NOT NULL CHECK (value > 0),
    type        text NOT NULL,
    account     text NOT NULL,
    status      smallint NOT NULL DEFAULT 0 CHECK (status IN (0, 1, 2)),
    remark      text,
    order_id    bigint REFERENCES wallet_orders (id),
    command_id  text NOT NULL REFERENCES commands (id),
    -- The operator and the command that decided it.
    decided_by  bigint,
    decision_command_id text REFERENCES commands (id),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CHECK ((status = 0) = (decision_command_id IS NULL))
);
CREATE INDEX cashes_user ON cashes (user_id, id DESC);

CREATE FUNCTION cash_json(c cashes) RETURNS json LANGUAGE sql STABLE AS $$
    SELECT json_build_object(
        'id', c.id,
        'value', c.value,
        'type', c.type,
        'account', c.account,
        'status', c.status,
        'remark', c.remark,
        'created_at', to_char(c.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'))
$$;

-- A recharge command's progress between its database transactions and its Ping++ call (a
-- recovery point, as Stripe-style idempotency keys keep). The command's row in `commands` is
-- written only with its result, once the charge exists or Ping++ refused it.
CREATE TABLE recharges (
    command_id     text PRIMARY KEY,
    fingerprint    bytea NOT NULL,
    user_id        bigint NOT NULL CHECK (user_id > 0),
    order_id       bigint NOT NULL UNIQUE REFERENCES wallet_orders (id),
    order_no       text NOT NULL UNIQUE,
    -- Exactly what is sent to Ping++, so every retry sends the same request.
    charge_request json NOT NULL,
    charge_id      text UNIQUE,
    livemode       boolean,
    charge         json,
    created_at     timestamptz NOT NULL DEFAULT now(),
    CHECK ((charge_id IS NULL) = (charge IS NULL))
);

-- Orders are linked to their command once it has a result; a recharge's order exists before.
CREATE INDEX wallet_orders_command ON wallet_orders (command_id);
