-- Dead letters an operator removed without replaying them (`pluspay dead discard`): who, when,
-- why, and what the message was, its personal data masked as listings show it. Written and
-- committed before the message is acknowledged off the dead-letter queue, so a discarded
-- message always leaves this record.
CREATE TABLE dead_letter_discards (
    id bigserial PRIMARY KEY,
    -- The dead letter's id as `pluspay dead list` showed it (header x-pluspay-dead-id, or a
    -- hash of body and reason for messages dead-lettered before that header existed).
    dead_id text NOT NULL,
    operator text NOT NULL CHECK (length(btrim(operator)) BETWEEN 1 AND 200),
    note text NOT NULL CHECK (length(btrim(note)) BETWEEN 1 AND 1000),
    kind text,
    command_id text,
    reason text,
    body_masked text NOT NULL,
    dead_since timestamptz,
    discarded_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX dead_letter_discards_dead_id ON dead_letter_discards (dead_id);
