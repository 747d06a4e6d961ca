-- Passwordless sign-in: one row per emailed code + magic link. Only hashes are stored.
CREATE TABLE login_codes
(
    id             uuid PRIMARY KEY,
    email          text        NOT NULL CHECK (email = lower(email)),
    member_id      uuid,                  -- null: a signup, the member is created on verification
    code_hash      bytea       NOT NULL,  -- sha256(id || code)
    token_hash     bytea       NOT NULL UNIQUE,
    signup         jsonb,                 -- name, attribution, newsletters of a signup
    created_at     timestamptz NOT NULL DEFAULT now(),
    expires_at     timestamptz NOT NULL,
    attempts       integer     NOT NULL DEFAULT 0,
    used_at        timestamptz,
    invalidated_at timestamptz
);
CREATE INDEX login_codes_open ON login_codes (email, created_at DESC)
    WHERE used_at IS NULL AND invalidated_at IS NULL;

-- Member sessions: 256-bit bearer tokens, stored as sha256, sliding expiry.
CREATE TABLE member_sessions
(
    token_hash   bytea PRIMARY KEY,
    member_id    uuid        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_seen_at timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    revoked_at   timestamptz
);
CREATE INDEX member_sessions_member ON member_sessions (member_id);

-- Fixed-window counters, shared by every server instance.
CREATE TABLE rate_limits
(
    key          text        NOT NULL,
    window_start timestamptz NOT NULL,
    count        integer     NOT NULL,
    PRIMARY KEY (key, window_start)
);

-- Emails to send, written with what caused them; a mailer delivers and retries them.
CREATE TABLE outbox_emails
(
    id              uuid PRIMARY KEY,
    to_address      text        NOT NULL,
    subject         text        NOT NULL,
    text_body       text        NOT NULL,
    html_body       text        NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    sent_at         timestamptz,
    last_error      text
);
CREATE INDEX outbox_emails_due ON outbox_emails (next_attempt_at) WHERE sent_at IS NULL;

CREATE FUNCTION notify_outbox_email() RETURNS trigger
    LANGUAGE plpgsql AS
$$
BEGIN
    PERFORM pg_notify('outbox_email', '');
    RETURN NULL;
END;
$$;

CREATE TRIGGER outbox_email_queued
    AFTER INSERT ON outbox_emails
    FOR EACH STATEMENT
EXECUTE FUNCTION notify_outbox_email();

-- Read models.
CREATE TABLE newsletters
(
    id                  uuid PRIMARY KEY,
    name                text        NOT NULL,
    description         text,
    status              text        NOT NULL CHECK (status IN ('active', 'archived')),
    subscribe_on_signup boolean     NOT NULL,
    created_at          timestamptz NOT NULL,
    updated_at          timestamptz NOT NULL
);

CREATE TABLE member_newsletters
(
    member_id     uuid        NOT NULL,
    newsletter_id uuid        NOT NULL,
    subscribed_at timestamptz NOT NULL,
    PRIMARY KEY (member_id, newsletter_id)
);
CREATE INDEX member_newsletters_newsletter ON member_newsletters (newsletter_id);

CREATE TABLE members_login_events
(
    id         bigint PRIMARY KEY, -- global position of the MemberLoggedIn event
    member_id  uuid        NOT NULL,
    method     text        NOT NULL,
    created_at timestamptz NOT NULL
);
CREATE INDEX members_login_events_member ON members_login_events (member_id, created_at DESC);

-- Signup attribution's UTM parameters (the other attribution columns exist since 0002).
ALTER TABLE members_created_events
    ADD COLUMN utm_source   text,
    ADD COLUMN utm_medium   text,
    ADD COLUMN utm_campaign text,
    ADD COLUMN utm_term     text,
    ADD COLUMN utm_content  text;
