//! What the licensed software calls, without authentication and rate-limited per IP address in
//! each instance's memory: `POST /v1/licenses/validate` (writes nothing) and
//! `POST /v1/licenses/heartbeat` (an activation says it is alive).
//!
//! A validation is one read-only statement: the key's row by the unique `key_sha256` index,
//! joined to its subscription and its policy by their primary keys, with its heartbeats, and
//! the database's clock, so that every instance decides with one time. [`decide`] then applies
//! the rules in their documented order.

use aggregates::{License, SiteDomain};
use chrono::{DateTime, Duration, Utc};
use poem::Request;
use poem_openapi::payload::Json;
use poem_openapi::{Enum, Object, OpenApi};
use sqlx::types::Json as SqlJson;
use sqlx::PgPool;
use subtle::ConstantTimeEq;
use uuid::Uuid;

use super::dashboard::LicenseMachine;
use super::licenses::{key_sha256, normalise_key, over_validation_limit, parse_domain};
use super::problem::{db_error, FieldError, Problem};
use super::state::{ApiTags, State};
use crate::api::problem::api_response;

pub struct LicenseValidationApi {
    pub state: State,
}

#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct ValidateLicenseRequest {
    /// The license key, `KEY-XXXX-XXXX-XXXX`, in any case.
    #[oai(validator(min_length = 1, max_length = 64))]
    pub key: String,
    /// The domain the software runs on; a URL is accepted.
    #[oai(validator(min_length = 1, max_length = 253))]
    pub domain: String,
    /// Entitlements the software needs here (feature flags); `ENTITLEMENT_MISSING` when the
    /// key's policy grants not all of them.
    #[oai(validator(max_items = 50))]
    pub entitlements: Option<Vec<String>>,
}

#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct HeartbeatRequest {
    /// The license key, `KEY-XXXX-XXXX-XXXX`, in any case.
    #[oai(validator(min_length = 1, max_length = 64))]
    pub key: String,
    /// The domain the software runs on; a URL is accepted.
    #[oai(validator(min_length = 1, max_length = 253))]
    pub domain: String,
}

/// The outcome of a validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ValidationCode {
    /// The key is active and licensed for the domain.
    Valid,
    /// No such key (also for a malformed key).
    NotFound,
    /// The key exists but its purchase is not paid yet.
    Pending,
    /// The key was deactivated (subscription canceled or unpaid, item or seat removed).
    Inactive,
    /// A quantity key that is not activated on any domain yet.
    NotActivated,
    /// The key is licensed for another domain.
    SiteMismatch,
    /// An operator suspended the key; it validates again once unsuspended.
    Suspended,
    /// An operator revoked the key for good.
    Revoked,
    /// The key's own expiry passed, or its subscription is past due for longer than its
    /// policy's grace period.
    Expired,
    /// The key is activated on more domains than its policy allows (the policy was lowered):
    /// release some.
    TooManyMachines,
    /// The key's policy does not grant every entitlement the request names.
    EntitlementMissing,
}

/// What the licensed software learns about a key it holds.
#[derive(Debug, Clone, Object)]
pub struct ValidatedLicense {
    pub key: String,
    /// `active`, `inactive`, `pending` or `canceled`.
    pub status: String,
    /// `site` or `quantity`.
    pub purchase_type: String,
    /// A site license's site.
    #[oai(nullable)]
    pub site: Option<String>,
    /// The first domain a quantity key is activated on.
    #[oai(nullable)]
    pub used_site: Option<String>,
    /// Every domain (or `*.domain` pattern) the key is activated on, oldest first; activations
    /// whose heartbeat stopped are left out.
    pub machines: Vec<String>,
    /// How many domains it may be activated on.
    pub max_machines: u32,
    /// Its policy, if it has one.
    #[oai(nullable)]
    pub policy_id: Option<String>,
    /// The feature flags its policy grants.
    pub entitlements: Vec<String>,
    /// When it stops validating on its own: its own expiry (its policy's or an operator's) or
    /// the end of a subscription set to cancel, whichever is first; null when neither.
    #[oai(nullable)]
    pub expires_at: Option<DateTime<Utc>>,
    /// While its subscription is past due under a policy with a grace period: when the grace
    /// ends (then `EXPIRED` until paid).
    #[oai(nullable)]
    pub grace_ends_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Object)]
pub struct LicenseValidation {
    /// Whether the software may run licensed on the domain (`code` is `VALID`).
    pub valid: bool,
    pub code: ValidationCode,
    /// The key's license; null when the key is unknown.
    #[oai(nullable)]
    pub license: Option<ValidatedLicense>,
}

api_response! {
    pub enum ValidateLicenseResponse {
        /// The outcome, also for an unknown key (`valid: false`, `code: NOT_FOUND`).
        #[oai(status = 200)]
        Ok(Json<LicenseValidation>),
        /// Too many validations from this IP address; retry after `Retry-After` seconds.
        #[oai(status = 429, content_type = "application/problem+json")]
        TooManyRequests(Json<Problem>, #[oai(header = "Retry-After")] u64),
    }
    problems {
        /// The body is not valid JSON of the expected shape.
        400 => BadRequest,
        /// The body is not `application/json`.
        415 => UnsupportedMediaType,
        /// Fields failed validation: `key` or `domain` empty or too long, `domain` not a
        /// domain name, or more than 50 `entitlements`.
        422 => Invalid,
    }
}

api_response! {
    pub enum HeartbeatResponse {
        /// Recorded: the activation on the domain was seen now.
        #[oai(status = 204)]
        Recorded,
        /// Too many requests from this IP address; retry after `Retry-After` seconds.
        #[oai(status = 429, content_type = "application/problem+json")]
        TooManyRequests(Json<Problem>, #[oai(header = "Retry-After")] u64),
    }
    problems {
        /// The body is not valid JSON of the expected shape.
        400 => BadRequest,
        /// No such key (also for a malformed key).
        404 => NotFound,
        /// `/problems/license-not-activated`: the key is not activated on this domain (never,
        /// released, or freed because its heartbeat stopped): activate it again.
        409 => Conflict,
        /// The body is not `application/json`.
        415 => UnsupportedMediaType,
        /// Fields failed validation (`domain` is not a domain name).
        422 => Invalid,
    }
}

#[OpenApi(prefix_path = "/v1/licenses", tag = "ApiTags::Licenses")]
impl LicenseValidationApi {
    /// Validate a license key for a domain
    ///
    /// For the licensed software; no authentication. Always 200 with a `code` for a
    /// well-formed request. The rules, in order: `NOT_FOUND` (unknown or malformed key),
    /// `REVOKED`, `SUSPENDED`, `PENDING`, `INACTIVE`, `EXPIRED` (its own expiry, or past due
    /// beyond its policy's grace period), then the domain: a site key's site, or a quantity
    /// key's activations (`NOT_ACTIVATED` when it has none, `TOO_MANY_MACHINES` when it has more
    /// than its policy allows, `SITE_MISMATCH` when none covers the domain), then
    /// `ENTITLEMENT_MISSING`; else `VALID`. The domain is normalised (case, scheme, port, path)
    /// and a leading `www.` is ignored on both sides. Rate-limited per IP address; writes
    /// nothing.
    #[oai(path = "/validate", method = "post", operation_id = "validateLicense")]
    async fn validate(
        &self,
        req: &Request,
        body: Json<ValidateLicenseRequest>,
    ) -> ValidateLicenseResponse {
        if let Some((problem, secs)) = over_validation_limit(&self.state, req, "validations") {
            return ValidateLicenseResponse::TooManyRequests(Json(problem), secs);
        }
        let required = body.0.entitlements.unwrap_or_default();
        match validate(&self.state.pool, &body.0.key, &body.0.domain, &required).await {
            Ok(validation) => ValidateLicenseResponse::Ok(Json(validation)),
            Err(problem) => problem.into(),
        }
    }

    /// Record a heartbeat
    ///
    /// For the licensed software; no authentication. Says that the software on `domain` is
    /// alive. Under a policy with a heartbeat, an activation not seen for longer than its
    /// `heartbeat_minutes` is freed (and validates as `NOT_ACTIVATED` or `SITE_MISMATCH`) and
    /// its slot can be taken by another domain. Rate-limited per IP address, with validations.
    #[oai(
        path = "/heartbeat",
        method = "post",
        operation_id = "licenseHeartbeat"
    )]
    async fn heartbeat(&self, req: &Request, body: Json<HeartbeatRequest>) -> HeartbeatResponse {
        if let Some((problem, secs)) = over_validation_limit(&self.state, req, "requests") {
            return HeartbeatResponse::TooManyRequests(Json(problem), secs);
        }
        match heartbeat(&self.state.pool, &body.0.key, &body.0.domain).await {
            Ok(()) => HeartbeatResponse::Recorded,
            Err(problem) => problem.into(),
        }
    }
}

/// The key's row as a validation reads it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct KeyRow {
    pub id: Uuid,
    pub key: String,
    pub status: String,
    pub purchase_type: String,
    pub site: Option<String>,
    pub machines: SqlJson<Vec<LicenseMachine>>,
    pub suspended: bool,
    pub revoked: bool,
    pub policy_id: Option<String>,
    pub max_machines: i32,
    pub entitlements: Vec<String>,
    pub grace_days: Option<i32>,
    pub heartbeat_minutes: Option<i32>,
    /// The license's own expiry.
    pub license_expires_at: Option<DateTime<Utc>>,
    /// A subscription set to cancel ends then.
    pub subscription_ends_at: Option<DateTime<Utc>>,
    pub past_due_since: Option<DateTime<Utc>>,
    /// When each activation was last seen: `{domain: time}`.
    pub last_seen: SqlJson<std::collections::HashMap<String, DateTime<Utc>>>,
    /// The database's clock.
    pub now: DateTime<Utc>,
}

const KEY_ROW: &str = "SELECT l.id, l.key, l.status, l.purchase_type, l.site, l.machines,
        l.suspension_reason IS NOT NULL AS suspended, l.revoked_at IS NOT NULL AS revoked,
        l.policy_id, coalesce(p.max_machines, 1) AS max_machines,
        coalesce(p.entitlements, '{}') AS entitlements, p.grace_days, p.heartbeat_minutes,
        l.expires_at AS license_expires_at,
        CASE WHEN s.status IS DISTINCT FROM 'canceled' THEN s.cancel_at END AS subscription_ends_at,
        s.past_due_since,
        (SELECT coalesce(jsonb_object_agg(m->>'domain',
                    greatest((m->>'activated_at')::timestamptz, h.seen_at)), '{}')
         FROM jsonb_array_elements(l.machines) m
         LEFT JOIN license_heartbeats h ON h.license_id = l.id AND h.domain = m->>'domain')
            AS last_seen,
        now() AS now
     FROM licenses l
     LEFT JOIN subscriptions s ON s.id = l.subscription_id
     LEFT JOIN license_policies p ON p.id = l.policy_id
     WHERE l.key_sha256 = $1";

/// The row of the license with `key` (as typed), `None` for an unknown or malformed key.
async fn key_row(pool: &PgPool, key: &str) -> Result<Option<KeyRow>, Problem> {
    // A malformed key is just not found: the software gets a uniform answer.
    let Some(key) = normalise_key(key) else {
        return Ok(None);
    };
    let row: Option<KeyRow> = sqlx::query_as(KEY_ROW)
        .bind(&key_sha256(&key)[..])
        .fetch_optional(pool)
        .await
        .map_err(db_error)?;
    Ok(row.filter(|l| bool::from(l.key.as_bytes().ct_eq(key.as_str().as_bytes()))))
}

impl KeyRow {
    /// The activations whose heartbeat did not stop.
    fn live_machines(&self) -> Vec<&str> {
        self.machines
            .0
            .iter()
            .filter(|m| match self.heartbeat_minutes {
                None => true,
                Some(minutes) => {
                    let seen = self.last_seen.0.get(&m.domain).copied();
                    let seen = seen.unwrap_or(m.activated_at);
                    seen >= self.now - Duration::minutes(minutes.into())
                }
            })
            .map(|m| m.domain.as_str())
            .collect()
    }

    fn grace_ends_at(&self) -> Option<DateTime<Utc>> {
        let since = self.past_due_since?;
        Some(since + Duration::days(self.grace_days?.into()))
    }

    fn expires_at(&self) -> Option<DateTime<Utc>> {
        match (self.license_expires_at, self.subscription_ends_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

async fn validate(
    pool: &PgPool,
    key: &str,
    domain: &str,
    required: &[String],
) -> Result<LicenseValidation, Problem> {
    let domain = parse_domain(domain)?;
    let Some(row) = key_row(pool, key).await? else {
        return Ok(LicenseValidation {
            valid: false,
            code: ValidationCode::NotFound,
            license: None,
        });
    };
    let code = decide(&row, &domain, required);
    let machines: Vec<String> = row.live_machines().into_iter().map(str::to_owned).collect();
    let license = ValidatedLicense {
        used_site: row.machines.0.first().map(|m| m.domain.clone()),
        machines,
        max_machines: u32::try_from(row.max_machines).unwrap_or(1),
        expires_at: row.expires_at(),
        grace_ends_at: row.grace_ends_at(),
        key: row.key,
        status: row.status,
        purchase_type: row.purchase_type,
        site: row.site,
        policy_id: row.policy_id,
        entitlements: row.entitlements,
    };
    Ok(LicenseValidation {
        valid: code == ValidationCode::Valid,
        code,
        license: Some(license),
    })
}

/// The validation rules, in order: an operator's hold (revoked, then suspended), the status
/// (pending, anything not active), expiry (its own, then a past-due grace period), the domain
/// (a site license's site; a quantity key's live activations: none, more than its policy
/// allows, none covering the domain), then the entitlements asked for.
pub(crate) fn decide(row: &KeyRow, domain: &SiteDomain, required: &[String]) -> ValidationCode {
    if row.revoked {
        return ValidationCode::Revoked;
    }
    if row.suspended {
        return ValidationCode::Suspended;
    }
    match row.status.as_str() {
        "active" => {}
        "pending" => return ValidationCode::Pending,
        _ => return ValidationCode::Inactive,
    }
    if row.license_expires_at.is_some_and(|at| at <= row.now)
        || row.grace_ends_at().is_some_and(|at| at <= row.now)
    {
        return ValidationCode::Expired;
    }
    let covered = if row.purchase_type == "site" {
        row.site
            .as_deref()
            .is_some_and(|site| License::same_site(site, domain.as_str()))
    } else {
        let live = row.live_machines();
        if live.is_empty() {
            return ValidationCode::NotActivated;
        }
        if live.len() > usize::try_from(row.max_machines.max(1)).unwrap_or(1) {
            return ValidationCode::TooManyMachines;
        }
        live.iter().any(|m| License::covers(m, domain.as_str()))
    };
    if !covered {
        return ValidationCode::SiteMismatch;
    }
    if required.iter().any(|e| !row.entitlements.contains(e)) {
        return ValidationCode::EntitlementMissing;
    }
    ValidationCode::Valid
}

async fn heartbeat(pool: &PgPool, key: &str, domain: &str) -> Result<(), Problem> {
    let domain = parse_domain(domain)?;
    let Some(row) = key_row(pool, key).await? else {
        return Err(Problem::not_found("no license has this key"));
    };
    let Some(machine) = row
        .machines
        .0
        .iter()
        .find(|m| License::covers(&m.domain, domain.as_str()))
    else {
        return Err(Problem::conflict(
            "license-not-activated",
            format!(
                "the key is not activated on {}; activate it first",
                domain.as_str()
            ),
        )
        .with_field("domain", "the key is not activated on this domain"));
    };
    crate::license_machines::beat(pool, row.id, &machine.domain)
        .await
        .map_err(db_error)
}

/// 422 for an entitlement name that is not one (checked where policies are written).
pub(crate) fn check_entitlements(field: &str, names: &[String]) -> Result<(), Problem> {
    let bad = names.iter().find(|n| {
        n.is_empty()
            || n.len() > 64
            || !n
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
    });
    match bad {
        Some(name) => Err(Problem::validation(vec![FieldError::new(
            field,
            format!("{name:?} is not an entitlement name: 1 to 64 of a-z, A-Z, 0-9, _ - . :"),
        )])),
        None => Ok(()),
    }
}

impl poem_openapi::types::Example for ValidateLicenseRequest {
    fn example() -> Self {
        Self {
            key: "KEY-7K2M-Q9XD-4HRT".into(),
            domain: "shop.example.com".into(),
            entitlements: None,
        }
    }
}

impl poem_openapi::types::Example for HeartbeatRequest {
    fn example() -> Self {
        Self {
            key: "KEY-7K2M-Q9XD-4HRT".into(),
            domain: "shop.example.com".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-12-06T12:00:00Z")
            .expect("time")
            .with_timezone(&Utc)
    }

    fn license(
        status: &str,
        purchase_type: &str,
        site: Option<&str>,
        used: Option<&str>,
    ) -> KeyRow {
        KeyRow {
            id: Uuid::nil(),
            key: "KEY-ABCD-EFGH-JK23".into(),
            status: status.into(),
            purchase_type: purchase_type.into(),
            site: site.map(str::to_owned),
            machines: SqlJson(used.map(machine).into_iter().collect()),
            suspended: false,
            revoked: false,
            policy_id: None,
            max_machines: 1,
            entitlements: vec![],
            grace_days: None,
            heartbeat_minutes: None,
            license_expires_at: None,
            subscription_ends_at: None,
            past_due_since: None,
            last_seen: SqlJson(Default::default()),
            now: now(),
        }
    }

    fn machine(domain: &str) -> LicenseMachine {
        LicenseMachine {
            domain: domain.into(),
            activated_at: now() - Duration::days(1),
            ip: None,
        }
    }

    fn domain(raw: &str) -> SiteDomain {
        SiteDomain::parse(raw).expect("valid domain")
    }

    fn decide_for(row: &KeyRow, raw: &str) -> ValidationCode {
        decide(row, &domain(raw), &[])
    }

    #[test]
    fn a_hold_decides_before_status_and_domain_revocation_first() {
        let mut held = license("inactive", "site", Some("example.com"), None);
        held.suspended = true;
        assert_eq!(decide_for(&held, "example.com"), ValidationCode::Suspended);
        assert_eq!(decide_for(&held, "other.com"), ValidationCode::Suspended);
        held.revoked = true;
        assert_eq!(decide_for(&held, "example.com"), ValidationCode::Revoked);
    }

    #[test]
    fn a_site_license_is_valid_for_its_site_and_its_www_variant_only() {
        let site = license("active", "site", Some("example.com"), None);
        for ok in [
            "example.com",
            "https://WWW.Example.com/shop?x=1",
            "example.com:8443",
        ] {
            assert_eq!(decide_for(&site, ok), ValidationCode::Valid, "{ok}");
        }
        for other in ["shop.example.com", "example.org", "notexample.com"] {
            assert_eq!(
                decide_for(&site, other),
                ValidationCode::SiteMismatch,
                "{other}"
            );
        }
    }

    #[test]
    fn a_quantity_key_is_valid_only_where_it_is_activated() {
        let unbound = license("active", "quantity", None, None);
        assert_eq!(
            decide_for(&unbound, "a.example.com"),
            ValidationCode::NotActivated
        );
        let bound = license("active", "quantity", None, Some("a.example.com"));
        assert_eq!(decide_for(&bound, "A.example.com"), ValidationCode::Valid);
        assert_eq!(
            decide_for(&bound, "b.example.com"),
            ValidationCode::SiteMismatch
        );
    }

    #[test]
    fn status_comes_before_the_domain() {
        let d = "example.com";
        assert_eq!(
            decide_for(&license("pending", "site", Some(d), None), d),
            ValidationCode::Pending
        );
        assert_eq!(
            decide_for(&license("inactive", "site", Some(d), None), d),
            ValidationCode::Inactive
        );
        assert_eq!(
            decide_for(&license("inactive", "quantity", None, Some(d)), d),
            ValidationCode::Inactive
        );
        assert_eq!(
            decide_for(&license("something_new", "quantity", None, Some(d)), d),
            ValidationCode::Inactive
        );
    }

    #[test]
    fn an_own_expiry_gives_expired_from_its_moment_on() {
        let mut key = license("active", "quantity", None, Some("a.example.com"));
        key.license_expires_at = Some(now() + Duration::seconds(1));
        assert_eq!(decide_for(&key, "a.example.com"), ValidationCode::Valid);
        key.license_expires_at = Some(now());
        assert_eq!(decide_for(&key, "a.example.com"), ValidationCode::Expired);
        // A hold still comes first.
        key.suspended = true;
        assert_eq!(decide_for(&key, "a.example.com"), ValidationCode::Suspended);
    }

    #[test]
    fn past_due_validates_through_the_grace_period_then_expires() {
        let mut key = license("active", "site", Some("example.com"), None);
        key.past_due_since = Some(now() - Duration::days(6));
        // No grace period in the policy (or no policy): today's rule, valid while past due.
        assert_eq!(decide_for(&key, "example.com"), ValidationCode::Valid);
        key.grace_days = Some(7);
        assert_eq!(decide_for(&key, "example.com"), ValidationCode::Valid);
        key.past_due_since = Some(now() - Duration::days(7));
        assert_eq!(decide_for(&key, "example.com"), ValidationCode::Expired);
    }

    #[test]
    fn more_live_machines_than_the_policy_allows_is_too_many() {
        let mut key = license("active", "quantity", None, Some("a.example.com"));
        key.machines.0.push(machine("b.example.com"));
        key.max_machines = 1;
        assert_eq!(
            decide_for(&key, "a.example.com"),
            ValidationCode::TooManyMachines
        );
        key.max_machines = 2;
        assert_eq!(decide_for(&key, "b.example.com"), ValidationCode::Valid);
    }

    #[test]
    fn an_activation_whose_heartbeat_stopped_does_not_count() {
        let mut key = license("active", "quantity", None, Some("a.example.com"));
        key.heartbeat_minutes = Some(60);
        // Activated a day ago, never seen since.
        assert_eq!(
            decide_for(&key, "a.example.com"),
            ValidationCode::NotActivated
        );
        key.last_seen
            .0
            .insert("a.example.com".into(), now() - Duration::minutes(59));
        assert_eq!(decide_for(&key, "a.example.com"), ValidationCode::Valid);
    }

    #[test]
    fn a_pattern_covers_the_names_under_it() {
        let key = license("active", "quantity", None, Some("*.example.com"));
        assert_eq!(decide_for(&key, "shop.example.com"), ValidationCode::Valid);
        assert_eq!(decide_for(&key, "example.com"), ValidationCode::Valid);
        assert_eq!(
            decide_for(&key, "example.org"),
            ValidationCode::SiteMismatch
        );
    }

    #[test]
    fn entitlements_are_checked_last() {
        let mut key = license("active", "site", Some("example.com"), None);
        key.entitlements = vec!["sso".into(), "export".into()];
        let d = domain("example.com");
        assert_eq!(decide(&key, &d, &["sso".into()]), ValidationCode::Valid);
        assert_eq!(
            decide(&key, &d, &["sso".into(), "audit".into()]),
            ValidationCode::EntitlementMissing
        );
        assert_eq!(
            decide(&key, &domain("other.com"), &["audit".into()]),
            ValidationCode::SiteMismatch
        );
    }
}
