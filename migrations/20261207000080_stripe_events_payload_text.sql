-- A Stripe event's payload is kept as `text`: the bytes Stripe sent, which the webhook
-- endpoint has parsed (it refuses a body that is not JSON) before storing it. As `json`, each
-- insert parsed the 4-5 kB again to validate it: more than half the insert's cost (6,500 of
-- the benchmark's events: 343–370 ms as `json`, 126–133 ms as `text`, measured on its cluster). The
-- workers read it back as text and parse it themselves, as they did. The two lookups into it
-- (a checkout's subscription, behind this partial index, and a checkout's email) cast the few
-- rows they read. A change of type forgets the column's compression: lz4 is asked for again.
DROP INDEX stripe_events_checkout_subscription;
DO $$
BEGIN
    ALTER TABLE stripe_events ALTER COLUMN payload TYPE text USING payload::text,
                              ALTER COLUMN payload SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
    ALTER TABLE stripe_events ALTER COLUMN payload TYPE text USING payload::text;
END $$;
CREATE INDEX stripe_events_checkout_subscription
    ON stripe_events ((payload::json -> 'data' -> 'object' ->> 'subscription'))
    WHERE type = 'checkout.session.completed';
