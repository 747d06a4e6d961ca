//! License keys: a member activates a quantity key on the domain it is used on
//! (`/v1/me/licenses/{key}/activation`), and the licensed software checks a key for a domain
//! (`POST /v1/licenses/validate`, no authentication, rate-limited per IP address in each
//! instance's memory, so a validation writes nothing).
//!
//! Domains are compared as [`License::same_site`] does: normalised by [`SiteDomain`] (lower
//! case, no scheme, port, path or trailing dot) and with one leading `www.` ignored, so a site
//! reached as `www.example.com` and `example.com` is one site; other subdomains are not.
//!
//! Keys are looked up by their SHA-256 (`licenses.key_sha256`, unique index): the index walk
//! compares hashes, so its timing says nothing about how much of a guessed key is right. The
//! stored key is then compared with the given one in constant time, so the final equality
//! does not leak either (and a hash collision could never pass).

use aggregates::{License, LicenseCommand, LicenseKey, SiteDomain};
use chrono::{DateTime, Utc};
use poem::web::Data;
use poem::Request;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{Enum, Object, OpenApi};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use subtle::ConstantTimeEq;
use uuid::Uuid;

use super::dashboard::{DashboardLicense, LICENSE_COLUMNS};
use super::problem::{command_error, db_error};
use super::problem::{FieldError, Problem};
use super::sessions::MemberAuth;
use super::state::{ApiTags, RequestId, State};
use crate::api::problem::api_response;
use crate::store::{Actor, EventMetadata};

pub struct LicensesApi {
    pub state: State,
}

#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct ActivateLicenseRequest {
    /// The domain the key is used on; a URL is accepted (`https://Shop.Example.com/blog` →
    /// `shop.example.com`).
    #[oai(validator(min_length = 1, max_length = 253))]
    pub domain: String,
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
}

/// What the licensed software learns about a key it holds.
#[derive(Debug, Clone, Object, sqlx::FromRow)]
pub struct ValidatedLicense {
    pub key: String,
    /// `active`, `inactive` or `pending`.
    pub status: String,
    /// `site` or `quantity`.
    pub purchase_type: String,
    /// A site license's site.
    #[oai(nullable)]
    pub site: Option<String>,
    /// The domain a quantity key is activated on.
    #[oai(nullable)]
    pub used_site: Option<String>,
    /// When the license ends because its subscription is set to cancel; null while it renews.
    #[oai(nullable)]
    pub expires_at: Option<DateTime<Utc>>,
    #[oai(skip)]
    pub suspended: bool,
    #[oai(skip)]
    pub revoked: bool,
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
    pub enum ActivateLicenseResponse {
        /// The license, activated on the domain.
        #[oai(status = 200)]
        Ok(Json<DashboardLicense>),
    }
    problems {
        /// The body is not valid JSON of the expected shape.
        400 => BadRequest,
        /// No valid member session.
        401 => Unauthorized,
        /// The member has no license with this key.
        404 => NotFound,
        /// The key cannot be activated there: `type` is `/problems/license-already-activated` (on
        /// another domain: release it first), `/problems/license-inactive` or
        /// `/problems/site-license` (site licenses are bound to their site).
        409 => Conflict,
        /// The body is not `application/json`.
        415 => UnsupportedMediaType,
        /// Fields failed validation (`domain` is not a domain name).
        422 => Invalid,
    }
}

api_response! {
    pub enum ReleaseLicenseResponse {
        /// The license is no longer activated on a domain (also when it was not).
        #[oai(status = 204)]
        Released,
    }
    problems {
        /// The request is malformed.
        400 => BadRequest,
        /// No valid member session.
        401 => Unauthorized,
        /// The member has no license with this key.
        404 => NotFound,
    }
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
        /// Fields failed validation: `key` or `domain` empty or too long, or `domain` not a
        /// domain name.
        422 => Invalid,
    }
}

#[OpenApi(tag = "ApiTags::Licenses")]
impl LicensesApi {
    /// Activate a license key on a domain
    ///
    /// Binds one of the signed-in member's quantity keys to the domain it is used on (one
    /// domain per key). Activating it again on the same domain (or its `www.` variant) changes
    /// nothing; on another domain it is refused until the key is released. A deactivated key
    /// keeps its domain, so it is restored when the license is reactivated.
    #[oai(
        path = "/v1/me/licenses/:key/activation",
        method = "post",
        operation_id = "activateMyLicense"
    )]
    async fn activate(
        &self,
        session: MemberAuth,
        request_id: Data<&RequestId>,
        /// The license key.
        key: Path<String>,
        body: Json<ActivateLicenseRequest>,
    ) -> ActivateLicenseResponse {
        match self
            .activate_on_domain(session.0.member_id, &request_id, &key.0, &body.0.domain)
            .await
        {
            Ok(license) => ActivateLicenseResponse::Ok(Json(license)),
            Err(problem) => problem.into(),
        }
    }

    /// Release a license key's domain
    ///
    /// Unbinds one of the signed-in member's keys from its domain, so it can be activated on
    /// another. Answers 204 also when it was not activated.
    #[oai(
        path = "/v1/me/licenses/:key/activation",
        method = "delete",
        operation_id = "releaseMyLicense"
    )]
    async fn release(
        &self,
        session: MemberAuth,
        request_id: Data<&RequestId>,
        /// The license key.
        key: Path<String>,
    ) -> ReleaseLicenseResponse {
        match self
            .release_domain(session.0.member_id, &request_id, &key.0)
            .await
        {
            Ok(()) => ReleaseLicenseResponse::Released,
            Err(problem) => problem.into(),
        }
    }

    /// Validate a license key for a domain
    ///
    /// For the licensed software; no authentication. Always 200 with a `code` for a
    /// well-formed request: `VALID`, `NOT_FOUND` (unknown or malformed key), `PENDING`,
    /// `INACTIVE`, `NOT_ACTIVATED` (a quantity key not activated on a domain yet) or
    /// `SITE_MISMATCH`. The domain is normalised (case, scheme, port, path) and a leading
    /// `www.` is ignored on both sides. Rate-limited per IP address.
    #[oai(
        path = "/v1/licenses/validate",
        method = "post",
        operation_id = "validateLicense"
    )]
    async fn validate(
        &self,
        req: &Request,
        body: Json<ValidateLicenseRequest>,
    ) -> ValidateLicenseResponse {
        if let Some((problem, secs)) = over_validation_limit(&self.state, req, "validations") {
            return ValidateLicenseResponse::TooManyRequests(Json(problem), secs);
        }
        match validate(&self.state.pool, &body.0.key, &body.0.domain).await {
            Ok(validation) => ValidateLicenseResponse::Ok(Json(validation)),
            Err(problem) => problem.into(),
        }
    }
}

impl LicensesApi {
    pub(crate) async fn activate_on_domain(
        &self,
        member_id: Uuid,
        request_id: &RequestId,
        key: &str,
        domain: &str,
    ) -> Result<DashboardLicense, Problem> {
        let domain = parse_domain(domain)?;
        let license_id = own_license(&self.state.pool, member_id, key).await?;
        let command = LicenseCommand::ActivateOnDomain {
            domain,
            at: Utc::now(),
        };
        self.execute(member_id, request_id, license_id, command)
            .await?;
        let license: Option<DashboardLicense> = sqlx::query_as(&format!(
            "SELECT {LICENSE_COLUMNS} FROM licenses WHERE id = $1"
        ))
        .bind(license_id)
        .fetch_optional(&self.state.pool)
        .await
        .map_err(db_error)?;
        license.ok_or_else(|| Problem::unavailable("the license is not readable yet; retry"))
    }

    pub(crate) async fn release_domain(
        &self,
        member_id: Uuid,
        request_id: &RequestId,
        key: &str,
    ) -> Result<(), Problem> {
        let license_id = own_license(&self.state.pool, member_id, key).await?;
        let command = LicenseCommand::ReleaseDomain { at: Utc::now() };
        self.execute(member_id, request_id, license_id, command)
            .await
    }

    /// Runs `command` as the member and waits until the licenses read model shows it.
    async fn execute(
        &self,
        member_id: Uuid,
        request_id: &RequestId,
        license_id: Uuid,
        command: LicenseCommand,
    ) -> Result<(), Problem> {
        let state = &self.state;
        let metadata = EventMetadata::for_request(&request_id.0, Actor::Member(member_id));
        state
            .licenses
            .execute(&license_id.to_string(), command, metadata)
            .await
            .map_err(command_error)?;
        Ok(())
    }
}

/// The per-IP limit that license validations and license files share, in this instance's
/// memory: the 429 problem and its `Retry-After` seconds when the client's address is over it.
pub(crate) fn over_validation_limit(
    state: &State,
    req: &Request,
    what: &str,
) -> Option<(Problem, u64)> {
    let ip = super::edge::client_ip(req)?;
    let wait = state.validation_limit.hit(&ip)?;
    crate::metrics::rate_limited("license_validate_per_ip");
    Some(super::edge::too_many_requests(wait, what))
}

/// The domain of a request, or a 422 naming `domain`.
fn parse_domain(raw: &str) -> Result<SiteDomain, Problem> {
    SiteDomain::parse(raw)
        .map_err(|e| Problem::validation(vec![FieldError::new("domain", e.reason())]))
}

/// A key as typed: trimmed and upper-cased; `None` when it cannot be a key.
pub(crate) fn normalise_key(raw: &str) -> Option<LicenseKey> {
    LicenseKey::parse(&raw.trim().to_ascii_uppercase()).ok()
}

pub(crate) fn key_sha256(key: &LicenseKey) -> [u8; 32] {
    Sha256::digest(key.as_str().as_bytes()).into()
}

/// The id of the member's license with `key`. A malformed key, an unknown one and another
/// member's are the same 404, so a member cannot learn whether someone else's key exists.
async fn own_license(pool: &PgPool, member_id: Uuid, key: &str) -> Result<Uuid, Problem> {
    let not_found = || Problem::not_found("you have no license with this key");
    let key = normalise_key(key).ok_or_else(not_found)?;
    let row: Option<(Uuid, Uuid, String)> =
        sqlx::query_as("SELECT id, member_id, key FROM licenses WHERE key_sha256 = $1")
            .bind(&key_sha256(&key)[..])
            .fetch_optional(pool)
            .await
            .map_err(db_error)?;
    match row {
        Some((id, owner, stored))
            if bool::from(stored.as_bytes().ct_eq(key.as_str().as_bytes()))
                && owner == member_id =>
        {
            Ok(id)
        }
        _ => Err(not_found()),
    }
}

/// Answers a validation from the `licenses` read model with one read-only query (by the unique
/// `key_sha256` index, joined to the subscription by its primary key).
async fn validate(pool: &PgPool, key: &str, domain: &str) -> Result<LicenseValidation, Problem> {
    let domain = parse_domain(domain)?;
    let not_found = LicenseValidation {
        valid: false,
        code: ValidationCode::NotFound,
        license: None,
    };
    // A malformed key is just not found: the software gets a uniform answer.
    let Some(key) = normalise_key(key) else {
        return Ok(not_found);
    };
    let license: Option<ValidatedLicense> = sqlx::query_as(
        "SELECT l.key, l.status, l.purchase_type, l.site, l.used_site,
                CASE WHEN s.status IS DISTINCT FROM 'canceled' THEN s.cancel_at END AS expires_at,
                l.suspension_reason IS NOT NULL AS suspended, l.revoked_at IS NOT NULL AS revoked
         FROM licenses l LEFT JOIN subscriptions s ON s.id = l.subscription_id
         WHERE l.key_sha256 = $1",
    )
    .bind(&key_sha256(&key)[..])
    .fetch_optional(pool)
    .await
    .map_err(db_error)?;
    let Some(license) =
        license.filter(|l| bool::from(l.key.as_bytes().ct_eq(key.as_str().as_bytes())))
    else {
        return Ok(not_found);
    };
    let code = decide(&license, &domain);
    Ok(LicenseValidation {
        valid: code == ValidationCode::Valid,
        code,
        license: Some(license),
    })
}

/// The validation rules, in order: an operator's hold (revoked, then suspended), the status
/// (pending, anything not active), then the domain: a site license's site, a quantity key's
/// activation domain.
fn decide(license: &ValidatedLicense, domain: &SiteDomain) -> ValidationCode {
    if license.revoked {
        return ValidationCode::Revoked;
    }
    if license.suspended {
        return ValidationCode::Suspended;
    }
    match license.status.as_str() {
        "active" => {}
        "pending" => return ValidationCode::Pending,
        _ => return ValidationCode::Inactive,
    }
    let bound = if license.purchase_type == "site" {
        match &license.site {
            Some(site) => site,
            None => return ValidationCode::SiteMismatch,
        }
    } else {
        match &license.used_site {
            Some(used) => used,
            None => return ValidationCode::NotActivated,
        }
    };
    if License::same_site(bound, domain.as_str()) {
        ValidationCode::Valid
    } else {
        ValidationCode::SiteMismatch
    }
}

impl poem_openapi::types::Example for ActivateLicenseRequest {
    fn example() -> Self {
        Self {
            domain: "shop.example.com".into(),
        }
    }
}

impl poem_openapi::types::Example for ValidateLicenseRequest {
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

    fn license(
        status: &str,
        purchase_type: &str,
        site: Option<&str>,
        used: Option<&str>,
    ) -> ValidatedLicense {
        ValidatedLicense {
            key: "KEY-ABCD-EFGH-JK23".into(),
            status: status.into(),
            purchase_type: purchase_type.into(),
            site: site.map(str::to_owned),
            used_site: used.map(str::to_owned),
            expires_at: None,
            suspended: false,
            revoked: false,
        }
    }

    #[test]
    fn a_hold_decides_before_status_and_domain_revocation_first() {
        let mut held = license("inactive", "site", Some("example.com"), None);
        held.suspended = true;
        assert_eq!(
            decide(&held, &domain("example.com")),
            ValidationCode::Suspended
        );
        assert_eq!(
            decide(&held, &domain("other.com")),
            ValidationCode::Suspended
        );
        held.revoked = true;
        assert_eq!(
            decide(&held, &domain("example.com")),
            ValidationCode::Revoked
        );
    }

    fn domain(raw: &str) -> SiteDomain {
        SiteDomain::parse(raw).expect("valid domain")
    }

    #[test]
    fn a_site_license_is_valid_for_its_site_and_its_www_variant_only() {
        let site = license("active", "site", Some("example.com"), None);
        for ok in [
            "example.com",
            "https://WWW.Example.com/shop?x=1",
            "example.com:8443",
        ] {
            assert_eq!(decide(&site, &domain(ok)), ValidationCode::Valid, "{ok}");
        }
        for other in ["shop.example.com", "example.org", "notexample.com"] {
            assert_eq!(
                decide(&site, &domain(other)),
                ValidationCode::SiteMismatch,
                "{other}"
            );
        }
    }

    #[test]
    fn a_quantity_key_is_valid_only_where_it_is_activated() {
        let unbound = license("active", "quantity", None, None);
        assert_eq!(
            decide(&unbound, &domain("a.example.com")),
            ValidationCode::NotActivated
        );
        let bound = license("active", "quantity", None, Some("a.example.com"));
        assert_eq!(
            decide(&bound, &domain("A.example.com")),
            ValidationCode::Valid
        );
        assert_eq!(
            decide(&bound, &domain("b.example.com")),
            ValidationCode::SiteMismatch
        );
    }

    #[test]
    fn status_comes_before_the_domain() {
        let d = domain("example.com");
        assert_eq!(
            decide(&license("pending", "site", Some("example.com"), None), &d),
            ValidationCode::Pending
        );
        assert_eq!(
            decide(&license("inactive", "site", Some("example.com"), None), &d),
            ValidationCode::Inactive
        );
        assert_eq!(
            decide(
                &license("inactive", "quantity", None, Some("example.com")),
                &d
            ),
            ValidationCode::Inactive
        );
        assert_eq!(
            decide(
                &license("something_new", "quantity", None, Some("example.com")),
                &d
            ),
            ValidationCode::Inactive
        );
    }

    #[test]
    fn keys_are_trimmed_and_upper_cased_and_malformed_ones_are_none() {
        assert_eq!(
            normalise_key("  key-abcd-efgh-jk23\n").map(String::from),
            Some("KEY-ABCD-EFGH-JK23".to_owned())
        );
        for bad in [
            "",
            "KEY-0000-0000-0000",
            "not a key",
            "KEY-ABCD-EFGH-JK23-X",
        ] {
            assert!(normalise_key(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn the_key_hash_is_sha256_of_the_normalised_key() {
        let key = normalise_key("key-abcd-efgh-jk23").expect("valid");
        // What the generated column of migration 20261124000006 stores for this key.
        assert_eq!(
            hex::encode(key_sha256(&key)),
            "ac5e016b09a230b3301209db237630d6f9e20a459abaac80f50bae97095859cf"
        );
    }
}
