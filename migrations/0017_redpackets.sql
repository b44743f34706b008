-- Red packets (红包, src/domain/redpacket.rs): a sender's money split into shares when the
-- packet is made, claimed one share per user, the rest given back at expiry. What the open
-- packets still have to give is in the sender's `packets` account (migrations/0016_holds.sql).
CREATE TABLE redpackets (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- The sender.
    user_id         bigint NOT NULL CHECK (user_id > 0),
    total           bigint NOT NULL CHECK (total > 0),
    count           integer NOT NULL CHECK (count > 0),
    mode            text NOT NULL CHECK (mode IN ('equal', 'random')),
    -- Who may claim; NULL: anyone but the sender.
    users           bigint[] CHECK (users IS NULL OR cardinality(users) >= count),
    -- Shares claimed (always the first `claimed` of them) and their sum.
    claimed         integer NOT NULL DEFAULT 0,
    claimed_amount  bigint NOT NULL DEFAULT 0,
    -- What the expiry gave back to the sender.
    refunded        bigint NOT NULL DEFAULT 0,
    status          text NOT NULL DEFAULT 'open'
                    CHECK (status IN ('open', 'finished', 'expired')),
    expires_at      timestamptz NOT NULL,
    command_id      text NOT NULL,
    journal_id      bigint NOT NULL,
    -- The expiry's journal.
    refund_journal_id bigint,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CHECK (total >= count),
    CHECK (claimed BETWEEN 0 AND count),
    CHECK (claimed_amount BETWEEN 0 AND total),
    CHECK ((status = 'finished') = (claimed = count)),
    CHECK ((status = 'expired') = (refund_journal_id IS NOT NULL)),
    CHECK ((status = 'expired') = (refunded > 0)),
    CHECK (status <> 'expired' OR claimed_amount + refunded = total)
);
-- The expiry sweeper's queue, and the audit's sum of what open packets hold.
CREATE INDEX redpackets_open_by_expiry ON redpackets (expires_at) WHERE status = 'open';
CREATE INDEX redpackets_open_by_user ON redpackets (user_id) WHERE status = 'open';

-- One row per share, numbered from 1 in claim order: a claim takes share `claimed + 1`.
CREATE TABLE redpacket_shares (
    redpacket_id    bigint NOT NULL REFERENCES redpackets (id),
    number          integer NOT NULL CHECK (number > 0),
    amount          bigint NOT NULL CHECK (amount > 0),
    claimer         bigint CHECK (claimer > 0),
    claimed_at      timestamptz,
    journal_id      bigint,
    PRIMARY KEY (redpacket_id, number),
    CHECK ((claimer IS NULL) = (claimed_at IS NULL)),
    CHECK ((claimer IS NULL) = (journal_id IS NULL))
);
-- One share per user and packet, whatever the code above it does.
CREATE UNIQUE INDEX redpacket_shares_one_per_claimer ON redpacket_shares (redpacket_id, claimer)
    WHERE claimer IS NOT NULL;

-- A red packet's JSON shape (docs/CONTRACT.md "Red packets"), in one place; times as the
-- orders show them. `remaining`: what it still has to give (0 once finished or expired).
CREATE FUNCTION redpacket_json(p redpackets) RETURNS json LANGUAGE sql STABLE AS $$
    SELECT json_build_object(
        'id', p.id,
        'user_id', p.user_id,
        'total', p.total,
        'count', p.count,
        'mode', p.mode,
        'users', p.users,
        'claimed', p.claimed,
        'claimed_amount', p.claimed_amount,
        'remaining', CASE p.status WHEN 'open' THEN p.total - p.claimed_amount ELSE 0 END,
        'refunded', p.refunded,
        'status', p.status,
        'expires_at', to_char(p.expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'),
        'created_at', to_char(p.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'),
        'updated_at', to_char(p.updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'))
$$;

-- A claimed share's JSON shape: the claim result's `share` and each of `redpacket.get`'s claims.
CREATE FUNCTION redpacket_share_json(s redpacket_shares) RETURNS json LANGUAGE sql STABLE AS $$
    SELECT json_build_object(
        'redpacket', s.redpacket_id,
        'number', s.number,
        'user_id', s.claimer,
        'amount', s.amount,
        'claimed_at', to_char(s.claimed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'))
$$;
