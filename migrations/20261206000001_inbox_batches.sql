-- The Stripe inbox claims batches (docs/architecture.md, "Stripe").
--
-- `deferred`: the event waits for another event of its customer (a subscription seen before
-- the checkout that names its member). It becomes due again as soon as an event of that
-- customer is processed; `next_attempt_at` is then its deadline: claimed at it and still
-- waiting, it becomes `failed`. `failed` means an operator should look.
ALTER TABLE stripe_events
    DROP CONSTRAINT stripe_events_status_check;
ALTER TABLE stripe_events
    ADD CONSTRAINT stripe_events_status_check
        CHECK (status IN ('pending', 'processing', 'processed', 'ignored', 'failed', 'deferred'));

-- When the event first waited; the bound on waiting counts from it. Cleared by an operator's
-- retry.
ALTER TABLE stripe_events
    ADD COLUMN deferred_since timestamptz;

-- The claim scans the oldest open events in Stripe's order, then reads the chosen customers'
-- open events; waking a customer's deferred events reads them by customer.
DROP INDEX stripe_events_due;
CREATE INDEX stripe_events_due ON stripe_events (created, received_at)
    WHERE status IN ('pending', 'failed', 'deferred', 'processing');
CREATE INDEX stripe_events_open_customer ON stripe_events (customer_id, created)
    WHERE status IN ('pending', 'failed', 'deferred', 'processing');
