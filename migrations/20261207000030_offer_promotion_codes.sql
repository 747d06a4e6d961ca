-- Offers' Stripe promotion codes (issue #16): the code buyers type at Checkout, created with
-- the coupon (`OfferCreated` 1.1). Offers created before have none (1.0 events upcast to
-- null), so the column stays nullable and no rebuild is needed.
ALTER TABLE offers ADD COLUMN stripe_promotion_code_id text;
