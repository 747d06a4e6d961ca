-- Offers (issue #16): discounts on a tier and cadence, applied at checkout as Stripe coupons.
-- Written by the inline `offers` projection from the Offer aggregate's events; a code is
-- unique (a second offer with it is refused, its events rolled back).
CREATE TABLE offers
(
    id               uuid PRIMARY KEY,
    name             text        NOT NULL,
    code             text        NOT NULL UNIQUE,
    tier_id          uuid        NOT NULL,
    cadence          text        NOT NULL CHECK (cadence IN ('month', 'year')),
    discount_type    text        NOT NULL CHECK (discount_type IN ('percent', 'amount')),
    -- Percent (1 to 100) or minor units off each period.
    discount_value   bigint      NOT NULL,
    duration         text        NOT NULL CHECK (duration IN ('once', 'repeating', 'forever')),
    duration_months  integer,
    redemption_limit integer,
    stripe_coupon_id text        NOT NULL,
    archived         boolean     NOT NULL DEFAULT false,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL
);
