-- A Stripe Payment Link checkout names the site in a custom field of its Checkout Session, not in
-- the subscription's metadata. The translator finds a subscription's completed session in the
-- inbox by the subscription's id.
CREATE INDEX stripe_events_checkout_subscription
    ON stripe_events ((payload -> 'data' -> 'object' ->> 'subscription'))
    WHERE type = 'checkout.session.completed';
