-- Set validation for the write side: one member per email, compared case-insensitively.
-- A row is reserved before the command that uses the address runs; a reservation whose member
-- never came to exist (a crash in between) can be taken over after a minute.
CREATE TABLE member_emails
(
    email       text PRIMARY KEY CHECK (email = lower(email)),
    member_id   uuid        NOT NULL,
    reserved_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX member_emails_member ON member_emails (member_id);

-- Admin API tokens, stored only as SHA-256 hashes.
CREATE TABLE admin_tokens
(
    token_hash bytea PRIMARY KEY,
    label      text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Read model: one row per member, for listing, filtering and reading members.
CREATE TABLE member_list
(
    id         uuid PRIMARY KEY,
    email      text        NOT NULL,
    name       text,
    note       text,
    labels     text[]      NOT NULL DEFAULT '{}',
    status     text        NOT NULL DEFAULT 'free',
    source     text        NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);
CREATE INDEX member_list_created ON member_list (created_at DESC, id DESC);
CREATE INDEX member_list_status_created ON member_list (status, created_at DESC, id DESC);

-- Read model: one row per member creation, for analysts (signup sources, later attribution).
CREATE TABLE members_created_events
(
    id              bigint PRIMARY KEY, -- global position of the MemberCreated event
    member_id       uuid        NOT NULL UNIQUE,
    created_at      timestamptz NOT NULL,
    source          text        NOT NULL,
    attribution_id  text,
    attribution_type text,
    attribution_url text,
    referrer_source text,
    referrer_medium text,
    referrer_url    text
);
CREATE INDEX members_created_events_created ON members_created_events (created_at);
