-- Subscriptions the license policy has seen a payment of: one that is first seen already ended
-- (its deletion processed before its activation) was paying once, so in-order delivery issued
-- its licenses and then deactivated them; the policy does the same.
CREATE TABLE policy_license_paid_subscriptions
(
    subscription_id text PRIMARY KEY
);
