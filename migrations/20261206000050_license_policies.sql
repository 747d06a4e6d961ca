-- License policies (issue #15): machine limits, domain patterns, expiry, grace, heartbeats and
-- entitlements, named per product. Operators' configuration, not a read model: it is not
-- rebuilt from the log, and licenses name their policy by id in their events.
CREATE TABLE license_policies
(
    id                text PRIMARY KEY CHECK (id ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    name              text        NOT NULL,
    -- How many domains (machines) a key may be activated on at once.
    max_machines      integer     NOT NULL DEFAULT 1 CHECK (max_machines BETWEEN 1 AND 10000),
    -- Whether a key may be activated on a pattern, `*.example.com`.
    domain_patterns   boolean     NOT NULL DEFAULT false,
    -- `subscription`: the key ends with its subscription (today's rule); `duration`: it expires
    -- `duration_days` after issue; `never`.
    expiry            text        NOT NULL DEFAULT 'subscription'
        CHECK (expiry IN ('subscription', 'duration', 'never')),
    duration_days     integer CHECK (duration_days > 0),
    -- After a failed payment (subscription past due), the key validates this many days, then
    -- answers EXPIRED until paid. NULL: as long as Stripe keeps the subscription past due.
    grace_days        integer CHECK (grace_days >= 0),
    -- An activation not seen (heartbeat) for this long frees itself. NULL: never.
    heartbeat_minutes integer CHECK (heartbeat_minutes > 0),
    entitlements      text[]      NOT NULL DEFAULT '{}',
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CHECK ((expiry = 'duration') = (duration_days IS NOT NULL))
);

-- The Stripe products whose site and seat keys get a policy; a product has at most one.
CREATE TABLE license_policy_products
(
    product_id text PRIMARY KEY,
    policy_id  text NOT NULL REFERENCES license_policies (id) ON DELETE CASCADE
);
CREATE INDEX license_policy_products_policy ON license_policy_products (policy_id);

-- The licenses read model: granted keys have no subscription; a key's policy, own expiry and
-- every activation (`machines`: [{domain, activated_at, ip}], oldest first; `used_site` stays
-- the first one's domain).
ALTER TABLE licenses
    ALTER COLUMN subscription_id DROP NOT NULL,
    ADD COLUMN policy_id  text,
    ADD COLUMN expires_at timestamptz,
    ADD COLUMN grant_note text,
    ADD COLUMN machines   jsonb NOT NULL DEFAULT '[]';
UPDATE licenses
SET machines = jsonb_build_array(jsonb_build_object('domain', used_site, 'activated_at', activated_at, 'ip', NULL))
WHERE used_site IS NOT NULL;
CREATE INDEX licenses_policy ON licenses (policy_id) WHERE policy_id IS NOT NULL;

-- Heartbeats of activations (`POST /v1/licenses/heartbeat`): the last time the licensed
-- software on a domain said it is alive. Not an event: only its absence is (LicenseMachineExpired).
CREATE TABLE license_heartbeats
(
    license_id uuid        NOT NULL,
    domain     text        NOT NULL,
    seen_at    timestamptz NOT NULL,
    PRIMARY KEY (license_id, domain)
);

-- Since when a subscription is past due (the grace period's start); filled by member_subscriptions 4.
ALTER TABLE subscriptions ADD COLUMN past_due_since timestamptz;

-- The license policy remembers each item's product, to give its keys the product's policy.
ALTER TABLE policy_license_items ADD COLUMN product_id text;
