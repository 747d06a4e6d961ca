-- Outbound webhooks (issue #17): endpoints an admin registers, and a durable outbox of
-- deliveries, fed from the log by the `outbound_webhooks` policy (one row per event and
-- endpoint, exactly once) and emptied by the deliverer (`src/outbound.rs`).
CREATE TABLE webhook_endpoints
(
    id                   uuid PRIMARY KEY,
    url                  text        NOT NULL,
    -- Our event types (`MemberCreated`, `LicenseRevoked`, ...), or `*` for every one.
    event_types          text[]      NOT NULL,
    -- Signs each delivery (HMAC-SHA256); shown once, when the endpoint is registered.
    secret               text        NOT NULL,
    description          text,
    enabled              boolean     NOT NULL DEFAULT true,
    -- Why it was disabled (deliveries kept failing), while it is.
    disabled_reason      text,
    consecutive_failures integer     NOT NULL DEFAULT 0,
    created_at           timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE webhook_deliveries
(
    id              uuid PRIMARY KEY,
    endpoint_id     uuid        NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    -- The event's place in the log: one delivery per event and endpoint.
    global_position bigint      NOT NULL,
    event_type      text        NOT NULL,
    payload         jsonb       NOT NULL,
    status          text        NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    -- The receiving endpoint's last answer: its HTTP status, or why there was none.
    last_status     integer,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    UNIQUE (endpoint_id, global_position)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, global_position DESC);
