-- Tiers (issue #16): what members buy, with a monthly and a yearly Stripe price of one
-- product. The inline `tiers` projection writes this table from the Tier aggregate's events.
CREATE TABLE tiers
(
    id                uuid PRIMARY KEY,
    name              text        NOT NULL,
    description       text,
    benefits          jsonb       NOT NULL DEFAULT '[]',
    visibility        text        NOT NULL CHECK (visibility IN ('public', 'none')),
    currency          text        NOT NULL,
    stripe_product_id text        NOT NULL,
    monthly_amount    bigint      NOT NULL,
    monthly_price_id  text        NOT NULL,
    yearly_amount     bigint      NOT NULL,
    yearly_price_id   text        NOT NULL,
    archived          boolean     NOT NULL DEFAULT false,
    created_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL
);
CREATE INDEX tiers_listed ON tiers (monthly_amount, id) WHERE NOT archived AND visibility = 'public';

-- Every Stripe price a tier has had (created with it or repriced), with its cadence: what a
-- subscription's item price says about the tier it buys, also after the tier was repriced.
CREATE TABLE tier_prices
(
    price_id text PRIMARY KEY,
    tier_id  uuid NOT NULL,
    cadence  text NOT NULL CHECK (cadence IN ('month', 'year'))
);
