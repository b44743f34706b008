-- Purchases with the money at Ping++: a buyer's Ping++ order paid to a seller's sub-merchant,
-- from the buyer's e-wallet (`balance`) or a channel, and its refunds. A sub-merchant's money
-- at Ping++ is mirrored by an account of kind 'merchant', as a user's e-wallet is by their
-- wallet.

ALTER TABLE accounts DROP CONSTRAINT accounts_kind_check;
ALTER TABLE accounts ADD CONSTRAINT accounts_kind_check
    CHECK (kind IN ('wallet', 'points', 'system', 'merchant'));
ALTER TABLE accounts ADD CONSTRAINT accounts_merchant_in_fen CHECK (kind <> 'merchant' OR unit = 'fen');

-- One per order.create: the buyer's wallet order (its id is pluspay's order id), the request
-- sent, and the Ping++ order as last seen.
CREATE TABLE pingpp_orders (
    order_id          bigint PRIMARY KEY REFERENCES wallet_orders (id),
    command_id        text NOT NULL UNIQUE,
    fingerprint       bytea NOT NULL,
    buyer             bigint NOT NULL CHECK (buyer > 0),
    seller            bigint NOT NULL REFERENCES sub_merchants (user_id),
    amount            bigint NOT NULL CHECK (amount > 0),
    merchant_order_no text NOT NULL UNIQUE,
    request           json NOT NULL,
    pingpp_order_id   text UNIQUE,
    pingpp_order      json,
    -- Ping++'s status as last seen: created, paid, refunded, canceled.
    status            text,
    -- How it was paid (set by order.pay and by the paid order itself), and its charge.
    channel           text,
    charge_id         text,
    -- The seller's income order, once paid.
    seller_order_id   bigint REFERENCES wallet_orders (id),
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CHECK ((pingpp_order_id IS NULL) = (pingpp_order IS NULL))
);

-- One per order.refund: the refund asked for, held against the order's paid amount from the
-- moment it is recorded until Ping++ says it failed.
CREATE TABLE order_refunds (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    order_id    bigint NOT NULL REFERENCES pingpp_orders (order_id),
    command_id  text NOT NULL UNIQUE,
    fingerprint bytea NOT NULL,
    order_no    text NOT NULL UNIQUE,
    amount      bigint NOT NULL CHECK (amount > 0),
    request     json NOT NULL,
    refund_id   text UNIQUE,
    refund      json,
    -- pending until Ping++ says succeeded or failed.
    status      text NOT NULL DEFAULT 'pending'
                CHECK (status IN ('pending', 'succeeded', 'failed')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CHECK ((refund_id IS NULL) = (refund IS NULL))
);
CREATE INDEX order_refunds_order ON order_refunds (order_id);
