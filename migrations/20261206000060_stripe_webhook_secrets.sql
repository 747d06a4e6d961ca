-- Signing secrets of the webhook endpoint `memberledger stripe setup` registered at Stripe
-- (Stripe shows a secret only when it creates the endpoint). Deliveries are verified with
-- STRIPE_WEBHOOK_SECRET and every secret here not retired for more than a day: a replaced
-- endpoint's deliveries still in flight keep verifying.
CREATE TABLE stripe_webhook_secrets
(
    secret      text PRIMARY KEY,
    endpoint_id text        NOT NULL,
    url         text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    retired_at  timestamptz
);
CREATE UNIQUE INDEX stripe_webhook_secrets_one_active ON stripe_webhook_secrets ((true))
    WHERE retired_at IS NULL;
