-- Read models of the member lifecycle: status changes, payments, paid-subscription MRR changes,
-- subscriptions with their items, licenses and a per-member timeline. Each table belongs to one
-- projection (named in the comment) and is emptied when that projection is rebuilt; helper
-- tables hold the state a projection needs of its own, since projections never read each
-- other's tables. Times come from the events (Stripe-derived rows: the Stripe event's
-- `created`), money is bigint minor units plus a lower-case ISO 4217 currency.

-- Projection `members_status_events`: one row per MemberStatusChanged.
CREATE TABLE members_status_events
(
    id          bigint PRIMARY KEY, -- global position of the event
    member_id   uuid        NOT NULL,
    from_status text        NOT NULL,
    to_status   text        NOT NULL,
    reason      text        NOT NULL,
    created_at  timestamptz NOT NULL
);
CREATE INDEX members_status_events_member ON members_status_events (member_id, created_at);
CREATE INDEX members_status_events_created ON members_status_events (created_at);

-- Projection `members_payment_events`: one row per recorded payment, refund or failed attempt.
CREATE TABLE members_payment_events
(
    id              bigint PRIMARY KEY, -- global position of the event
    member_id       uuid        NOT NULL,
    subscription_id text        NOT NULL, -- Stripe `sub_...` (the event's aggregate id)
    invoice_id      text,                 -- null for a refund of a charge without invoice
    kind            text        NOT NULL CHECK (kind IN ('payment', 'refund', 'failure')),
    amount          bigint      NOT NULL, -- paid, refunded or due, minor units
    currency        text        NOT NULL,
    created_at      timestamptz NOT NULL
);
-- A paid invoice is counted once (the aggregate already deduplicates; second line of defence).
CREATE UNIQUE INDEX members_payment_events_invoice_paid
    ON members_payment_events (invoice_id) WHERE kind = 'payment';
CREATE INDEX members_payment_events_member ON members_payment_events (member_id, created_at);
CREATE INDEX members_payment_events_created ON members_payment_events (created_at);

-- Projection `members_paid_subscription_events`: one row per change of a subscription's MRR or
-- plan. The sum of `mrr_delta` over a subscription is its current MRR (0 once canceled).
CREATE TABLE members_paid_subscription_events
(
    id              bigint PRIMARY KEY, -- global position of the event
    member_id       uuid        NOT NULL,
    subscription_id text        NOT NULL,
    type            text        NOT NULL CHECK (type IN ('created', 'updated', 'canceled', 'reactivated')),
    from_plan       text,                 -- price id of the first item before, null if none
    to_plan         text,                 -- price id of the first item after, null if none
    currency        text,                 -- null only while the subscription never had items
    mrr_delta       bigint      NOT NULL, -- minor units per month
    created_at      timestamptz NOT NULL
);
CREATE INDEX members_paid_subscription_events_subscription
    ON members_paid_subscription_events (subscription_id, id);
CREATE INDEX members_paid_subscription_events_member
    ON members_paid_subscription_events (member_id, created_at);
CREATE INDEX members_paid_subscription_events_created
    ON members_paid_subscription_events (created_at);

-- Helper of `members_paid_subscription_events`: each subscription's state as far as MRR goes.
CREATE TABLE paid_subscription_state
(
    subscription_id      text PRIMARY KEY,
    member_id            uuid    NOT NULL,
    status               text    NOT NULL,
    cancel_at_period_end boolean NOT NULL,
    items                jsonb   NOT NULL DEFAULT '[]', -- serde of Vec<SubscriptionItem>, by item_id
    mrr                  bigint  NOT NULL DEFAULT 0,
    plan                 text,
    currency             text,
    created_event_id     text    NOT NULL -- the Stripe event the subscription was created from
);

-- Projection `member_subscriptions`: subscriptions and their items as Stripe last showed them.
CREATE TABLE subscriptions
(
    id                   text PRIMARY KEY, -- Stripe `sub_...`
    member_id            uuid        NOT NULL,
    customer_id          text        NOT NULL,
    status               text        NOT NULL,
    cancel_at_period_end boolean     NOT NULL,
    cancel_at            timestamptz,
    current_period_start timestamptz,
    current_period_end   timestamptz,
    created_at           timestamptz NOT NULL, -- when Stripe created the subscription
    canceled_at          timestamptz,
    mrr                  bigint      NOT NULL DEFAULT 0, -- minor units per month, current items
    currency             text,
    updated_at           timestamptz NOT NULL
);
CREATE INDEX subscriptions_member ON subscriptions (member_id);

CREATE TABLE subscription_items
(
    id              text PRIMARY KEY, -- Stripe `si_...`
    subscription_id text        NOT NULL,
    price_id        text        NOT NULL,
    product_id      text,
    unit_amount     bigint      NOT NULL,
    currency        text        NOT NULL,
    interval        text        NOT NULL, -- day | week | month | year
    interval_count  integer     NOT NULL CHECK (interval_count >= 0),
    quantity        integer     NOT NULL CHECK (quantity >= 0),
    site            text,
    purchase_type   text        NOT NULL, -- site | quantity
    status          text        NOT NULL CHECK (status IN ('active', 'removed')),
    added_at        timestamptz NOT NULL,
    removed_at      timestamptz
);
CREATE INDEX subscription_items_subscription ON subscription_items (subscription_id);

-- Projection `member_licenses`: one row per license key.
CREATE TABLE licenses
(
    id                  uuid PRIMARY KEY,
    key                 text        NOT NULL UNIQUE,
    member_id           uuid        NOT NULL,
    subscription_id     text        NOT NULL,
    item_id             text        NOT NULL,
    purchase_type       text        NOT NULL, -- site | quantity
    site                text,
    seat                integer,
    status              text        NOT NULL CHECK (status IN ('active', 'inactive')),
    deactivation_reason text,
    issued_at           timestamptz NOT NULL,
    updated_at          timestamptz NOT NULL
);
CREATE INDEX licenses_member ON licenses (member_id);
CREATE INDEX licenses_subscription ON licenses (subscription_id);

-- Projection `member_timeline`: one row per event concerning a member, newest first per member.
CREATE TABLE member_timeline
(
    id             bigint PRIMARY KEY, -- global position of the event
    member_id      uuid        NOT NULL,
    aggregate_type text        NOT NULL,
    aggregate_id   text        NOT NULL,
    event_type     text        NOT NULL,
    summary        text        NOT NULL,
    data           jsonb       NOT NULL, -- the event's fields (the payload's inner object)
    created_at     timestamptz NOT NULL  -- when the event was recorded
);
CREATE INDEX member_timeline_member ON member_timeline (member_id, id DESC);

-- Helpers of `member_timeline`: whose subscription / license an event is about.
CREATE TABLE timeline_subscription_members
(
    subscription_id text PRIMARY KEY,
    member_id       uuid NOT NULL
);

CREATE TABLE timeline_license_members
(
    license_id uuid PRIMARY KEY,
    member_id  uuid NOT NULL
);
