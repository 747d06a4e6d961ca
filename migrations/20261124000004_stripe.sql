-- The Stripe inbox: every verified webhook event, stored before it is answered 200, then
-- processed by the inbox workers.
CREATE TABLE stripe_events
(
    id              text PRIMARY KEY,               -- evt_...
    type            text        NOT NULL,
    created         timestamptz NOT NULL,           -- the event's `created`
    livemode        boolean     NOT NULL DEFAULT false,
    customer_id     text,                           -- data.object's customer, when it has one
    object_id       text,                           -- data.object.id
    payload         jsonb       NOT NULL,           -- the raw event, as received
    parsed          boolean     NOT NULL,           -- async-stripe's typed parser accepted it
    received_at     timestamptz NOT NULL DEFAULT now(),
    status          text        NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'processing', 'processed', 'ignored', 'failed')),
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    lease_until     timestamptz,                    -- while processing; expired = worker died
    last_error      text,
    processed_at    timestamptz
);
CREATE INDEX stripe_events_due ON stripe_events (next_attempt_at, created)
    WHERE status IN ('pending', 'failed', 'processing');
CREATE INDEX stripe_events_status ON stripe_events (status, received_at DESC);

CREATE FUNCTION notify_stripe_event_received() RETURNS trigger
    LANGUAGE plpgsql AS
$$
BEGIN
    PERFORM pg_notify('stripe_event_received', '');
    RETURN NULL;
END;
$$;

CREATE TRIGGER stripe_event_received
    AFTER INSERT OR UPDATE OF next_attempt_at ON stripe_events
    FOR EACH STATEMENT
EXECUTE FUNCTION notify_stripe_event_received();

-- Set validation: one member per Stripe customer.
CREATE TABLE stripe_customers
(
    customer_id text PRIMARY KEY,
    member_id   uuid        NOT NULL,
    linked_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX stripe_customers_member ON stripe_customers (member_id);

-- Set validation: license keys are unique; one key per license (a re-run reuses it).
CREATE TABLE license_keys
(
    key         text PRIMARY KEY,
    license_id  uuid        NOT NULL UNIQUE,
    reserved_at timestamptz NOT NULL DEFAULT now()
);

-- Which invoice and subscription a payment intent paid, so a refunded charge finds its
-- subscription.
CREATE TABLE stripe_payment_intents
(
    payment_intent_id text PRIMARY KEY,
    invoice_id        text NOT NULL,
    subscription_id   text NOT NULL
);

-- Policy state, written in the policy runner's transaction with its checkpoint.
CREATE TABLE policy_member_subscriptions
(
    subscription_id text PRIMARY KEY,
    member_id       uuid    NOT NULL,
    paid            boolean NOT NULL
);
CREATE INDEX policy_member_subscriptions_member ON policy_member_subscriptions (member_id);

CREATE TABLE policy_license_subscriptions
(
    subscription_id text PRIMARY KEY,
    member_id       uuid NOT NULL,
    status          text NOT NULL
);

CREATE TABLE policy_license_items
(
    item_id         text PRIMARY KEY,
    subscription_id text    NOT NULL,
    purchase_type   text    NOT NULL,
    site            text,
    quantity        integer NOT NULL,
    removed         boolean NOT NULL DEFAULT false
);
CREATE INDEX policy_license_items_subscription ON policy_license_items (subscription_id);

-- The licenses a policy issued and whether it last left them active.
CREATE TABLE policy_licenses
(
    license_id uuid PRIMARY KEY,
    item_id    text    NOT NULL,
    seat       integer,
    active     boolean NOT NULL
);
CREATE INDEX policy_licenses_item ON policy_licenses (item_id);
