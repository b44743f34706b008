-- Frozen wallets and daily limits, decided under the wallet's lock in the transaction that
-- moves the money.

-- Read with the wallet's row when it is locked, so that the check costs no statement.
ALTER TABLE accounts ADD COLUMN frozen boolean NOT NULL DEFAULT false;
ALTER TABLE accounts ADD CONSTRAINT accounts_only_wallets_freeze CHECK (kind = 'wallet' OR NOT frozen);

-- Every freeze and unfreeze, by whom and why: the wallet's state is the last row's.
CREATE TABLE wallet_freezes (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id     bigint NOT NULL CHECK (user_id > 0),
    frozen      boolean NOT NULL,
    reason      text NOT NULL,
    operator_id bigint NOT NULL,
    command_id  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX wallet_freezes_by_user ON wallet_freezes (user_id, id DESC);

-- A user's own daily limit on a command type, set by an operator (`limits.set`); it replaces
-- the settings' limit on that type for that user. NULL: no limit of that kind.
CREATE TABLE wallet_limits (
    user_id      bigint NOT NULL CHECK (user_id > 0),
    type         text NOT NULL,
    daily_count  bigint CHECK (daily_count >= 0),
    daily_amount bigint CHECK (daily_amount >= 0),
    operator_id  bigint NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, type)
);

-- What a user sent of a limited type on a day, kept only while a limit applies to them. Written
-- under the user's wallet lock. A missing row is counted from the day's orders first.
CREATE TABLE daily_usage (
    user_id bigint NOT NULL,
    type    text NOT NULL,
    day     date NOT NULL,
    count   bigint NOT NULL,
    amount  bigint NOT NULL,
    PRIMARY KEY (user_id, type, day)
);
