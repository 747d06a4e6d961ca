-- A stuck projection (docs/operations.md, "A stuck projection"). When a projection or policy
-- cannot apply an event, its runner narrows the failing batch down to that one event, records
-- it here and keeps retrying it with backoff (a transient failure heals by itself); only an
-- operator's `memberledger projections skip NAME POSITION` moves past it.
ALTER TABLE projection_checkpoints
    -- The global position of the event the projection is stuck on (its error is `last_error`);
    -- NULL while it applies, or when a failure is not tied to one event (the database down).
    ADD COLUMN stuck_position bigint,
    -- Since when it has been failing on that event.
    ADD COLUMN stuck_since    timestamptz;

-- Events an operator skipped for a projection. The event stays in `events` (the foreign key
-- keeps it there): a fixed projection can be rebuilt from the log with it.
CREATE TABLE projection_dead_letters
(
    projection      text        NOT NULL,
    global_position bigint      NOT NULL REFERENCES events (global_position),
    transaction_id  xid8        NOT NULL,
    aggregate_type  text        NOT NULL,
    aggregate_id    text        NOT NULL,
    event_type      text        NOT NULL,
    -- The error the projection failed with, as it was recorded when the event was skipped.
    error           text        NOT NULL,
    -- Who skipped it: `cli`, or `api` (an admin token).
    skipped_by      text        NOT NULL,
    skipped_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (projection, global_position)
);
