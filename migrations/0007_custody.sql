-- The users' money held at Ping++ (`wallet.custody = "pingpp"`): each user's e-wallet there,
-- its opening, and deposits into it. A user's wallet account is then the exact mirror of their
-- e-wallet; the system accounts below say where the rest of the money is.

-- Which custody this database keeps records for, pinned at the first start: a ledger kept for
-- one mode would be wrong read as the other. A database with any history (a command, an order,
-- a journal) was kept for the platform, the only mode before this one.
CREATE TABLE custody (
    only_row   boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    mode       text NOT NULL CHECK (mode IN ('platform', 'pingpp')),
    created_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO custody (mode) SELECT 'platform'
    WHERE EXISTS (SELECT 1 FROM journal) OR EXISTS (SELECT 1 FROM wallet_orders)
       OR EXISTS (SELECT 1 FROM commands);

INSERT INTO accounts (kind, name, unit, may_go_negative) VALUES
    -- The world outside the users' e-wallets: deposits come from it, paid withdrawals go to it.
    ('system', 'ewallet_outside', 'fen', true),
    -- Money in users' e-wallets held for withdrawals under way.
    ('system', 'ewallet_withdrawals', 'fen', false);

-- The user's Ping++ user (the holder of the e-wallet), as last seen.
CREATE TABLE ewallet_users (
    user_id        bigint PRIMARY KEY CHECK (user_id > 0),
    pingpp_user_id text NOT NULL UNIQUE,
    -- Ping++'s user object, personal data masked.
    pingpp_user    json NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);

-- Personal account applications (个人用户开户), one per account.open command. What was applied
-- with (name, ID number, mobile) is never kept: a retry after a crash sends it again from the
-- redelivered command, whose keyed fingerprint must match.
CREATE TABLE cus_applications (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id        bigint NOT NULL CHECK (user_id > 0),
    command_id     text NOT NULL UNIQUE,
    fingerprint    bytea NOT NULL,
    order_no       text NOT NULL UNIQUE,
    -- pending until Ping++ decides; failed also when Ping++ refused to take it at all.
    status         text NOT NULL DEFAULT 'pending'
                   CHECK (status IN ('pending', 'succeeded', 'failed')),
    application_id text UNIQUE,
    -- Ping++'s cus_application object as last seen, personal data masked.
    application    json,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    CHECK ((application_id IS NULL) = (application IS NULL))
);
CREATE INDEX cus_applications_user ON cus_applications (user_id, id DESC);
-- At most one application under review or successful per user.
CREATE UNIQUE INDEX cus_applications_one_live ON cus_applications (user_id)
    WHERE status IN ('pending', 'succeeded');

-- Deposits into a user's e-wallet (`recharge` in this mode), the recovery point between the
-- command's transactions and its Ping++ call, as `recharges` is for charges.
CREATE TABLE deposits (
    command_id  text PRIMARY KEY,
    fingerprint bytea NOT NULL,
    user_id     bigint NOT NULL CHECK (user_id > 0),
    order_id    bigint NOT NULL UNIQUE REFERENCES wallet_orders (id),
    order_no    text NOT NULL UNIQUE,
    -- Exactly what is sent to Ping++, so every retry sends the same request.
    request     json NOT NULL,
    deposit_id  text UNIQUE,
    -- Ping++'s status as last seen, and the deposit object (its payment link inside).
    status      text,
    deposit     json,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CHECK ((deposit_id IS NULL) = (deposit IS NULL)),
    CHECK ((deposit_id IS NULL) = (status IS NULL))
);

-- An e-wallet withdrawal (`cash` in this mode) records its cash record before its command's
-- result is stored, since the withdrawal is created between the command's transactions (as a
-- recharge's order is): the command row comes with the result.
ALTER TABLE cashes DROP CONSTRAINT cashes_command_id_fkey;
