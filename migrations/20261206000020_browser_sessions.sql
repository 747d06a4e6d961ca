-- The member portal and the admin console (src/web/).

-- A browser's session (an HttpOnly cookie) is kept apart from an API client's bearer token:
-- a cookie's token is not accepted as a bearer token, nor a bearer token as a cookie.
ALTER TABLE member_sessions
    ADD COLUMN kind text NOT NULL DEFAULT 'api' CHECK (kind IN ('api', 'browser'));

-- The admin console's cookie sessions, opened by signing in with an admin token. Only hashes.
CREATE TABLE admin_sessions
(
    token_hash   bytea PRIMARY KEY,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_seen_at timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    revoked_at   timestamptz
);

-- Keys every instance must share (the forms' integrity tokens, unsubscribe links): made by
-- the first instance that needs one, read by the others.
CREATE TABLE server_secrets
(
    name       text PRIMARY KEY,
    secret     bytea       NOT NULL CHECK (length(secret) = 32),
    created_at timestamptz NOT NULL DEFAULT now()
);

-- A member's request to change their email: nothing changes until the link sent to the new
-- address is used. Only the link's hash is stored.
CREATE TABLE email_change_requests
(
    token_hash bytea PRIMARY KEY,
    member_id  uuid        NOT NULL,
    new_email  text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    used_at    timestamptz
);
CREATE INDEX email_change_requests_member ON email_change_requests (member_id);
