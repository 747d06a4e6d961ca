-- A Stripe event's payload is kept as the `json` text Stripe sent, not as `jsonb`: the webhook
-- endpoint stores it (checked, not converted) and the workers read it back whole (output as
-- stored, not serialised again), which is all the inbox does with it on its hot paths. The
-- two lookups into it (a checkout's subscription, behind a partial index, and a checkout's
-- email) read a few rows by customer or by that index, where parsing the text is cheap.
-- A change of type forgets the column's compression: lz4 is asked for again in the same
-- statement (see 20261206000080), so that the rewritten rows use it too.
DO $$
BEGIN
    ALTER TABLE stripe_events ALTER COLUMN payload TYPE json USING payload::json,
                              ALTER COLUMN payload SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
    ALTER TABLE stripe_events ALTER COLUMN payload TYPE json USING payload::json;
END $$;
