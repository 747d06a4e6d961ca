-- Progress of blue/green projection rebuilds (one row per projection, the latest rebuild).
CREATE TABLE projection_rebuilds
(
    name           text PRIMARY KEY,
    state          text        NOT NULL CHECK (state IN ('running', 'done', 'failed')),
    version        integer     NOT NULL,
    events_applied bigint      NOT NULL DEFAULT 0,
    events_total   bigint      NOT NULL DEFAULT 0,
    started_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    finished_at    timestamptz,
    error          text
);
