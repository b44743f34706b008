-- Sub-merchants (子商户) with the money at Ping++: a user's Ping++ sub-app and its business
-- user, the applications that open it (企业开户, 小微企业开户) and its settle accounts. No field of
-- an application is kept (they hold ID numbers, names, mobiles, bank accounts): an application
-- is never sent twice, so nothing needs them again. Ping++'s objects are kept masked.

CREATE TABLE sub_merchants (
    user_id        bigint PRIMARY KEY CHECK (user_id > 0),
    -- The merchant.create that began it.
    command_id     text NOT NULL UNIQUE,
    fingerprint    bytea NOT NULL,
    pingpp_user_id text NOT NULL UNIQUE,
    sub_app_id     text UNIQUE,
    sub_app        json,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    CHECK ((sub_app_id IS NULL) = (sub_app IS NULL))
);

CREATE TABLE merchant_applications (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id        bigint NOT NULL REFERENCES sub_merchants (user_id),
    command_id     text NOT NULL UNIQUE,
    fingerprint    bytea NOT NULL,
    kind           text NOT NULL CHECK (kind IN ('enterprise', 'micro')),
    order_no       text NOT NULL UNIQUE,
    -- sending: being sent (a crash now leaves it unknown); unsent: certainly never reached
    -- Ping++, so it may be sent; unknown: sent, and whether Ping++ took it can't be known (the
    -- document forbids sending it again).
    status         text NOT NULL DEFAULT 'sending'
                   CHECK (status IN ('sending', 'unsent', 'pending', 'completed', 'failed',
                                     'unknown')),
    application_id text UNIQUE,
    application    json,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    CHECK ((application_id IS NULL) = (application IS NULL))
);
CREATE INDEX merchant_applications_user ON merchant_applications (user_id, id DESC);
-- One application at a time under way or done; after a refusal or an unknown outcome a new
-- command applies again.
CREATE UNIQUE INDEX merchant_applications_one_live ON merchant_applications (user_id)
    WHERE status IN ('sending', 'unsent', 'pending', 'completed');

CREATE TABLE merchant_settle_accounts (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id           bigint NOT NULL REFERENCES sub_merchants (user_id),
    command_id        text NOT NULL UNIQUE REFERENCES commands (id),
    settle_account_id text NOT NULL,
    -- Ping++'s settle_account, its account number masked.
    settle_account    json NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now()
);
