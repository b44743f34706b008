-- Holds (money set aside for a bounty or a purchase until it is paid or given back) and red
-- packets keep their money in accounts of the user's own: `held` for their open holds, `packets`
-- for what their red packets still have to give. Per user, so that no row is shared by every
-- hold or every packet of the platform.
ALTER TABLE accounts DROP CONSTRAINT accounts_kind_check;
ALTER TABLE accounts ADD CONSTRAINT accounts_kind_check
    CHECK (kind IN ('wallet', 'points', 'system', 'merchant', 'held', 'packets'));
ALTER TABLE accounts ADD CONSTRAINT accounts_held_and_packets_in_fen
    CHECK (kind NOT IN ('held', 'packets') OR unit = 'fen');

CREATE TABLE holds (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id     bigint NOT NULL CHECK (user_id > 0),
    amount      bigint NOT NULL CHECK (amount > 0),
    -- What a capture paid to `receiver`, and what went back to the wallet (by a capture of
    -- less than the amount, a release or the expiry). Both zero while the hold is open.
    captured    bigint NOT NULL DEFAULT 0 CHECK (captured >= 0),
    released    bigint NOT NULL DEFAULT 0 CHECK (released >= 0),
    receiver    bigint CHECK (receiver > 0),
    status      text NOT NULL DEFAULT 'held'
                CHECK (status IN ('held', 'captured', 'released', 'expired')),
    reason      text NOT NULL,
    expires_at  timestamptz NOT NULL,
    command_id  text NOT NULL,
    journal_id  bigint NOT NULL,
    -- The journal that closed it (capture, release or expiry).
    closed_journal_id bigint,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CHECK ((status = 'held') = (closed_journal_id IS NULL)),
    CHECK (status <> 'held' OR (captured = 0 AND released = 0)),
    CHECK (status = 'held' OR captured + released = amount),
    CHECK ((status = 'captured') = (captured > 0)),
    CHECK ((status = 'captured') = (receiver IS NOT NULL))
);
-- The expiry sweeper's queue, and the audit's sum of what is held, read without the closed ones.
CREATE INDEX holds_open_by_expiry ON holds (expires_at) WHERE status = 'held';
CREATE INDEX holds_open_by_user ON holds (user_id) WHERE status = 'held';

-- A hold's JSON shape (docs/CONTRACT.md §5), in one place; times as the orders show them.
CREATE FUNCTION hold_json(h holds) RETURNS json LANGUAGE sql STABLE AS $$
    SELECT json_build_object(
        'id', h.id,
        'user_id', h.user_id,
        'amount', h.amount,
        'captured', h.captured,
        'released', h.released,
        'receiver', h.receiver,
        'status', h.status,
        'reason', h.reason,
        'expires_at', to_char(h.expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'),
        'created_at', to_char(h.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'),
        'updated_at', to_char(h.updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'))
$$;

-- Events that happen without a command (a hold or red packet expired), written in the
-- transaction that makes them true and published on <namespace>.events after its commit by the
-- worker (src/worker/outbox.rs), which deletes each row once the broker confirmed it. A crash
-- between the two publishes the row again: the event's `event_id` tells the copies apart.
CREATE TABLE outbox (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    routing_key text NOT NULL,
    body        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
