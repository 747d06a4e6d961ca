-- `casefold(text)`: an address lowercased as the server lowercases it (Rust's `to_lowercase`,
-- every cased letter, not only ASCII), for the statements that compare addresses stored
-- outside the member's own rows (erasure). The local cluster runs with the C locale, whose
-- `lower()` lowercases ASCII only ('JOSÉ' → 'josÉ'); ICU's root locale lowercases all of it.
-- A server built without ICU keeps `lower()`: addresses are then compared in full only in
-- ASCII, which the erasure's other match, by member and by Stripe customer, does not need.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_collation WHERE collname = 'und-x-icu') THEN
        CREATE FUNCTION casefold(t text) RETURNS text
            LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
            AS $f$ SELECT lower(t COLLATE "und-x-icu") $f$;
    ELSE
        CREATE FUNCTION casefold(t text) RETURNS text
            LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
            AS $f$ SELECT lower(t) $f$;
    END IF;
END
$$;
