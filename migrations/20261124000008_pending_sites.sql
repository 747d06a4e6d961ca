-- Sites a member is paying for (a payment-mode Checkout Session) but that are not added yet.
CREATE TABLE pending_sites
(
    session_id      text        NOT NULL,
    site            text        NOT NULL,
    subscription_id text        NOT NULL,
    member_id       uuid        NOT NULL,
    amount          bigint      NOT NULL, -- the session's prorated total, minor units
    currency        text        NOT NULL,
    status          text        NOT NULL CHECK (status IN ('pending', 'paid', 'expired')),
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    PRIMARY KEY (session_id, site)
);
CREATE INDEX pending_sites_member ON pending_sites (member_id, status);
