-- Split purchases (分账) with the money at Ping++: an order created with `allocation: true` is
-- paid into `allocations_pending`, where Ping++ holds it for the order, until allocations give
-- shares of it to users' e-wallets and the allocation's completion settles the rest on the
-- seller's sub-merchant.

ALTER TABLE pingpp_orders
    ADD COLUMN allocation boolean NOT NULL DEFAULT false,
    -- A reward (打赏): a split order whose commission (fen, to wallet.platform_user_id) and
    -- completion the worker asks for once it is paid; when it looks at it next.
    ADD COLUMN reward boolean NOT NULL DEFAULT false,
    ADD COLUMN commission bigint NOT NULL DEFAULT 0 CHECK (commission >= 0),
    ADD COLUMN settle_due_at timestamptz;

INSERT INTO accounts (kind, name, unit, may_go_negative) VALUES
    ('system', 'allocations_pending', 'fen', false);

-- One per allocation.create, allocation.refund or allocation.complete: what was asked (the
-- shares by pluspay user, in fen) and what Ping++ made of it. A pending allocation holds its
-- amount of the order from the moment it is recorded.
CREATE TABLE allocations (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    order_id    bigint NOT NULL REFERENCES pingpp_orders (order_id),
    command_id  text NOT NULL UNIQUE,
    fingerprint bytea NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('allocation', 'allocation_refund', 'allocation_complete')),
    order_no    text NOT NULL UNIQUE,
    -- The allocation an allocation refund gives back from.
    parent_id   bigint REFERENCES allocations (id),
    -- [{user, amount}] in pluspay users; for a completion, set when it succeeds.
    shares      json NOT NULL,
    amount      bigint NOT NULL CHECK (amount >= 0),
    request     json NOT NULL,
    pingpp_id   text UNIQUE,
    object      json,
    status      text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'succeeded', 'failed')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CHECK ((pingpp_id IS NULL) = (object IS NULL))
);
CREATE INDEX allocations_order ON allocations (order_id);

-- What a succeeded refund of a split order took from what Ping++ still held for the order (the
-- rest came from the seller's sub-merchant, after the completion).
ALTER TABLE order_refunds ADD COLUMN from_held bigint NOT NULL DEFAULT 0 CHECK (from_held >= 0);
