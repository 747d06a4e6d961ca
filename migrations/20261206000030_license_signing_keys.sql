-- Ed25519 keys that sign license files (src/license_files.rs). One is active (no retired_at);
-- rotation retires it and makes a new one. Retired keys stay listed, so software that still
-- holds files signed by them can be told the key id, and an operator can drop them for good.
CREATE TABLE license_signing_keys
(
    kid        text PRIMARY KEY,
    secret     bytea       NOT NULL CHECK (length(secret) = 32),
    created_at timestamptz NOT NULL DEFAULT now(),
    retired_at timestamptz
);
-- At most one active key, whichever instance makes it first.
CREATE UNIQUE INDEX license_signing_keys_one_active ON license_signing_keys ((true)) WHERE retired_at IS NULL;
