-- An operator's holds on a license (`LicenseSuspended`, `LicenseUnsuspended`, `LicenseRevoked`):
-- written by the inline `member_licenses`, read by validation, the dashboard and the files.
ALTER TABLE licenses
    ADD COLUMN suspension_reason text,
    ADD COLUMN revoked_at        timestamptz,
    ADD COLUMN revocation_reason text;
