-- Emails members expect (issue #17): welcome, payment failed, cancellation, sent through the
-- outbox by the `member_mail` policy; suppression of addresses that refused mail for good.

-- Inline read model of MemberEmailDisabled / MemberEmailEnabled: the members whose address is
-- suppressed now, and why.
CREATE TABLE member_email_suppressions
(
    member_id   uuid PRIMARY KEY,
    -- The address that refused mail (a new address is not suppressed).
    email       text        NOT NULL,
    -- The SMTP server's permanent refusal.
    reason      text        NOT NULL,
    disabled_at timestamptz NOT NULL
);

-- What a message is, for whom, and how to unsubscribe: member emails carry all three; sign-in
-- codes and email-change links (asked for by whoever types the address) carry none.
ALTER TABLE outbox_emails
    ADD COLUMN member_id       uuid,
    -- `welcome`, `welcome_paid`, `payment_failed`, `cancellation`, ...
    ADD COLUMN kind            text,
    -- The `List-Unsubscribe` target (RFC 2369, one-click per RFC 8058).
    ADD COLUMN unsubscribe_url text,
    -- Not retried any more: after a permanent SMTP refusal, or the address being suppressed
    -- (the reason is `last_error`), or after `MAX_ATTEMPTS`.
    ADD COLUMN given_up_at     timestamptz,
    -- The event that caused a member email: one message per event and kind.
    ADD COLUMN global_position bigint;
CREATE UNIQUE INDEX outbox_emails_cause ON outbox_emails (global_position, kind)
    WHERE global_position IS NOT NULL;
CREATE INDEX outbox_emails_member ON outbox_emails (member_id, created_at) WHERE member_id IS NOT NULL;
DROP INDEX outbox_emails_due;
CREATE INDEX outbox_emails_due ON outbox_emails (next_attempt_at) WHERE sent_at IS NULL AND given_up_at IS NULL;

-- The policy's state: members it has welcomed on a first payment (once per member).
CREATE TABLE policy_member_mail_paid
(
    member_id uuid PRIMARY KEY
);

-- The policy starts at the head of the log: a deployment's past signups and payments get no
-- emails now. (Its runner creates no row where this one exists.)
INSERT INTO projection_checkpoints (name, version, transaction_id, global_position)
SELECT 'member_mail', 1, transaction_id, global_position
FROM events
ORDER BY transaction_id DESC, global_position DESC
LIMIT 1;
