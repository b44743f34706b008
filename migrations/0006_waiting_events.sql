-- A Ping++ event that arrives before what it completes was recorded (a charge paid before its
-- recharge command recorded it) waits here, off the queue, instead of holding a worker slot:
-- outcome 'waiting', put back on the webhooks queue at retry_at (NULL once put back), and
-- dead-lettered ('dead_lettered') after worker.event_wait_secs.
ALTER TABLE pingpp_events
    ADD COLUMN attempts       integer NOT NULL DEFAULT 0,
    ADD COLUMN retry_at       timestamptz,
    ADD COLUMN waiting_reason text;

CREATE INDEX pingpp_events_due ON pingpp_events (retry_at) WHERE outcome = 'waiting';
