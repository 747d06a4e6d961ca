-- Crypto-shredding (src/store/personal.rs): one data key per aggregate whose events carry
-- personal fields (a member; a license, for activation addresses). The fields are stored in
-- `events.payload` encrypted with it. Erasure sets `key` to NULL and `shredded_at`: the
-- ciphertext stays in the append-only log and can never be read again, and no new personal
-- data is stored for the aggregate (its fields are written as the erased placeholder).
CREATE TABLE personal_data_keys
(
    aggregate_type text        NOT NULL,
    aggregate_id   text        NOT NULL,
    key            bytea CHECK (key IS NULL OR octet_length(key) = 32),
    created_at     timestamptz NOT NULL DEFAULT now(),
    shredded_at    timestamptz,
    PRIMARY KEY (aggregate_type, aggregate_id),
    CHECK ((key IS NULL) = (shredded_at IS NOT NULL))
);
