-- License activation and public validation.
--
-- Projection `member_licenses` (version 2): a quantity license's activation domain
-- (`LicenseActivatedOnDomain` / `LicenseDomainReleased`). A deactivated license keeps its
-- `used_site`, so a reactivation restores it. The projection is rebuilt from the log on start
-- because its version changed; existing rows have NULL until then.

-- SHA-256 of a license key's UTF-8 bytes. Declared immutable so a generated column can use it:
-- `convert_to` is only stable because encoding conversions are looked up in the catalogue, and
-- the conversion to UTF-8 of a given text never changes (keys are ASCII anyway).
CREATE FUNCTION license_key_sha256(key text) RETURNS bytea
    LANGUAGE sql
    IMMUTABLE
    STRICT
    PARALLEL SAFE
AS
$$
SELECT sha256(convert_to(key, 'UTF8'))
$$;

ALTER TABLE licenses
    ADD COLUMN used_site    text,        -- normalised domain a quantity key is activated on
    ADD COLUMN activated_at timestamptz, -- when it was activated there; NULL while not activated
    -- Public validation (`POST /v1/licenses/validate`) looks a key up by its SHA-256, so the
    -- index walk compares hashes, never the key itself; the API then compares the stored key
    -- with the given one in constant time. Generated, so every writer (and a shadow copy made
    -- with LIKE ... INCLUDING ALL for a rebuild) gets it without setting it.
    ADD COLUMN key_sha256   bytea NOT NULL GENERATED ALWAYS AS (license_key_sha256(key)) STORED;

CREATE UNIQUE INDEX licenses_key_sha256_key ON licenses (key_sha256);
