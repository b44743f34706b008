-- The double-entry ledger, the seed-format wallet orders and the command log.

CREATE TABLE accounts (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind            text NOT NULL CHECK (kind IN ('wallet', 'points', 'system')),
    user_id         bigint CHECK (user_id > 0),
    name            text,
    unit            text NOT NULL CHECK (unit IN ('fen', 'point')),
    -- Only system accounts that stand for the outside world (money paid in, points issued) may
    -- go below zero.
    may_go_negative boolean NOT NULL DEFAULT false,
    balance         bigint NOT NULL DEFAULT 0,
    total_income    bigint NOT NULL DEFAULT 0 CHECK (total_income >= 0),
    total_expenses  bigint NOT NULL DEFAULT 0 CHECK (total_expenses >= 0),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CHECK (may_go_negative OR balance >= 0),
    CHECK ((kind = 'system') = (user_id IS NULL)),
    CHECK ((kind = 'system') = (name IS NOT NULL)),
    CHECK (kind <> 'wallet' OR unit = 'fen'),
    CHECK (kind <> 'points' OR unit = 'point'),
    UNIQUE (kind, user_id),
    UNIQUE (name)
);

INSERT INTO accounts (kind, name, unit, may_go_negative) VALUES
    ('system', 'pingpp_clearing', 'fen', true),
    ('system', 'pending_payouts', 'fen', false),
    ('system', 'paid_out', 'fen', false),
    ('system', 'transform_revenue', 'fen', false),
    ('system', 'points_issued', 'point', true);

-- The seeds' wallet: balance and its totals, in fen.
CREATE VIEW wallets AS
    SELECT id, user_id, balance, total_income, total_expenses, created_at, updated_at
    FROM accounts WHERE kind = 'wallet';

CREATE TABLE commands (
    id          text PRIMARY KEY,
    type        text NOT NULL,
    user_id     bigint NOT NULL,
    -- SHA-256 of the canonical content: the same id with other content is a conflict.
    fingerprint bytea NOT NULL,
    status      text CHECK (status IN ('succeeded', 'rejected')),
    -- The exact result published; kept as text (json) so a replay is byte-identical.
    result      json,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CHECK ((status IS NULL) = (result IS NULL))
);

CREATE TABLE journal (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind       text NOT NULL,
    command_id text REFERENCES commands (id),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX journal_command_id ON journal (command_id);

CREATE TABLE ledger_entries (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    journal_id bigint NOT NULL REFERENCES journal (id),
    account_id bigint NOT NULL REFERENCES accounts (id),
    amount     bigint NOT NULL CHECK (amount <> 0),
    UNIQUE (journal_id, account_id)
);
CREATE INDEX ledger_entries_account_id ON ledger_entries (account_id);

-- The seeds' wallet orders ("钱包流水"), what upstream lists and shows.
CREATE TABLE wallet_orders (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    owner_id    bigint NOT NULL CHECK (owner_id > 0),
    target_type text NOT NULL,
    target_id   text NOT NULL,
    title       text NOT NULL,
    body        text,
    type        smallint NOT NULL CHECK (type IN (1, -1)),
    amount      bigint NOT NULL CHECK (amount > 0),
    state       smallint NOT NULL CHECK (state IN (0, 1, -1)),
    command_id  text REFERENCES commands (id),
    journal_id  bigint REFERENCES journal (id),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX wallet_orders_owner ON wallet_orders (owner_id, id DESC);
CREATE INDEX wallet_orders_journal ON wallet_orders (journal_id);

-- The seeds' JSON shape of an order, in one place.
CREATE FUNCTION order_json(o wallet_orders) RETURNS json LANGUAGE sql STABLE AS $$
    SELECT json_build_object(
        'id', o.id,
        'owner_id', o.owner_id,
        'target_type', o.target_type,
        'target_id', o.target_id,
        'title', o.title,
        'body', o.body,
        'type', o.type,
        'amount', o.amount,
        'state', o.state,
        'created_at', to_char(o.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'),
        'updated_at', to_char(o.updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'))
$$;
