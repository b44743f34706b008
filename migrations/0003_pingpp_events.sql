-- Ping++ webhook events applied, so each takes effect once whatever the deliveries.
CREATE TABLE pingpp_events (
    id          text PRIMARY KEY,
    type        text NOT NULL,
    livemode    boolean NOT NULL,
    body        json NOT NULL,
    -- What it did: 'credited', 'failed', 'unchanged' or 'recorded'.
    outcome     text NOT NULL,
    order_id    bigint REFERENCES wallet_orders (id),
    -- The event published on <namespace>.events because of it, re-published on redelivery.
    published   json,
    routing_key text,
    received_at timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE journal ADD COLUMN event_id text REFERENCES pingpp_events (id) DEFERRABLE INITIALLY DEFERRED;
