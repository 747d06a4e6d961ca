-- Offers at work (issue #16): the redemptions the offers were started with, and the
-- discounts that the MRR read models discount by.

-- Written by the inline `offers` projection from `OfferRedeemed` (a Subscription event): one
-- row per subscription and offer, so a replayed event counts once. Checkout counts them
-- against the offer's `redemption_limit`.
CREATE TABLE offer_redemptions
(
    offer_id        uuid        NOT NULL,
    subscription_id text        NOT NULL,
    member_id       uuid        NOT NULL,
    redeemed_at     timestamptz NOT NULL,
    PRIMARY KEY (offer_id, subscription_id)
);

-- The discounts in force on a subscription (serde of Vec<Discount>), which its MRR is
-- discounted by; none for every subscription known before discounts were recorded.
ALTER TABLE paid_subscription_state ADD COLUMN discounts jsonb NOT NULL DEFAULT '[]';
ALTER TABLE subscriptions ADD COLUMN discounts jsonb NOT NULL DEFAULT '[]';
