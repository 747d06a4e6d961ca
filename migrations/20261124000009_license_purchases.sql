-- License purchases (`POST /v1/me/license-purchases`): keys are reserved before the member pays.
--
-- Projection `member_licenses` (version 3): a reserved key is `pending` until paid, then
-- `active` on the purchase's item; an unpaid one is `canceled`. It has no item until paid.
ALTER TABLE licenses
    DROP CONSTRAINT licenses_status_check,
    ADD CONSTRAINT licenses_status_check CHECK (status IN ('pending', 'active', 'inactive', 'canceled')),
    ALTER COLUMN item_id DROP NOT NULL,
    ADD COLUMN purchase_id uuid; -- the license purchase that reserved the key
CREATE INDEX licenses_purchase ON licenses (purchase_id) WHERE purchase_id IS NOT NULL;

-- Projection `member_subscriptions` (version 3): purchases of license seats and their state.
CREATE TABLE license_purchases
(
    purchase_id     uuid PRIMARY KEY,
    session_id      text        NOT NULL,
    subscription_id text        NOT NULL,
    member_id       uuid        NOT NULL,
    quantity        integer     NOT NULL,
    amount          bigint      NOT NULL, -- the session's prorated total, minor units
    currency        text        NOT NULL,
    status          text        NOT NULL CHECK (status IN ('pending', 'paid', 'expired')),
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL
);
CREATE INDEX license_purchases_member ON license_purchases (member_id, status);

-- Policy `license_policy`: an item that pays for a license purchase activates the purchase's
-- reserved keys instead of issuing new seat keys.
ALTER TABLE policy_license_items
    ADD COLUMN license_purchase_id uuid;
