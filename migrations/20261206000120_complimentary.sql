-- Complimentary access (issue #16): a tier an admin gives a member for free. The inline
-- `member_comps` projection keeps each member's current comp from `MemberCompGranted` and
-- `MemberCompEnded`; the sweeper finds the expired ones by `until`.
CREATE TABLE member_comps
(
    member_id  uuid PRIMARY KEY,
    tier_id    uuid        NOT NULL,
    until      timestamptz,
    granted_at timestamptz NOT NULL
);
CREATE INDEX member_comps_until ON member_comps (until) WHERE until IS NOT NULL;

-- The license policy's comp licenses: one per member and tier (`License::id_for_comp`),
-- active while the member's comp is that tier.
CREATE TABLE policy_license_comps
(
    license_id uuid PRIMARY KEY,
    member_id  uuid    NOT NULL,
    tier_id    uuid    NOT NULL,
    active     boolean NOT NULL
);
CREATE INDEX policy_license_comps_member ON policy_license_comps (member_id);
