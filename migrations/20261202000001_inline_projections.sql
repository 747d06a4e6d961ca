-- Inline projections: read models written in the transaction that appends their events (see
-- docs/architecture.md, "Inline and asynchronous read models"). `mode = 'inline'` says the live
-- tables hold every committed event: the appending transactions keep them, not a runner, and
-- the position columns only record where the projection was when it turned inline (the server
-- catches a projection up to the log under a lock on `events` before it serves commands).
ALTER TABLE projection_checkpoints
    ADD COLUMN mode text NOT NULL DEFAULT 'async' CHECK (mode IN ('inline', 'async'));

-- `member_emails` is now the inline projection that enforces one member per email: a row is
-- the member's current address, written with its MemberCreated or MemberEmailChanged event.
-- The server rebuilds it from the log the first time it starts (it has no checkpoint yet), so
-- the reservations the old code left behind are dropped then. `reserved_at` is kept as the
-- time the row was written.
COMMENT ON COLUMN member_emails.reserved_at IS 'when the row was written';
