-- Whether async-stripe's typed parser accepts an event is now asked when the event is read
-- (`GET /v1/stripe-events`), by the version of the library the server runs: the webhook
-- endpoint verifies the signature without the typed parse, which the translator never used.
ALTER TABLE stripe_events DROP COLUMN parsed;
