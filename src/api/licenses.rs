//! License keys as their member uses them: a quantity key is activated on the domains it is
//! used on (`/v1/me/licenses/{key}/activation`, up to its policy's machine limit, one without a
//! policy) and released from one (`/v1/me/licenses/{key}/machines/{domain}`) or all. What the
//! licensed software calls is `license_validation`'s.
//!
//! Domains are compared as [`License::same_site`](aggregates::License::same_site) does: normalised by [`SiteDomain`] (lower
//! case, no scheme, port, path or trailing dot) and with one leading `www.` ignored, so a site
//! reached as `www.example.com` and `example.com` is one site; other subdomains are not.
//!
//! Keys are looked up by their SHA-256 (`licenses.key_sha256`, unique index): the index walk
//! compares hashes, so its timing says nothing about how much of a guessed key is right. The
//! stored key is then compared with the given one in constant time, so the final equality
//! does not leak either (and a hash collision could never pass).

use aggregates::{LicenseCommand, LicenseKey, SiteDomain};
use chrono::Utc;
use poem::web::Data;
use poem::Request;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use subtle::ConstantTimeEq;
use uuid::Uuid;

use super::dashboard::DashboardLicense;
use super::problem::{command_error, db_error, FieldError, Problem};
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
    /// `shop.example.com`). Under a policy that allows patterns, `*.example.com` activates
    /// `example.com` and every name under it, as one machine.
    #[oai(validator(min_length = 1, max_length = 253))]
    pub domain: String,
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
        /// The key cannot be activated there: `type` is `/problems/license-too-many-machines`
        /// (its policy's limit is reached: release a domain first),
        /// `/problems/license-already-activated` (a key without a policy, on another domain),
        /// `/problems/license-inactive`, `/problems/license-pending`,
        /// `/problems/license-suspended`, `/problems/license-revoked` or
        /// `/problems/site-license` (site licenses are bound to their site).
        409 => Conflict,
        /// The body is not `application/json`.
        415 => UnsupportedMediaType,
        /// Fields failed validation (`domain` is not a domain name, or a pattern the key's
        /// policy does not allow).
        422 => Invalid,
    }
}

api_response! {
    pub enum ReleaseLicenseResponse {
        /// The license is no longer activated there (also when it was not).
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

#[OpenApi(tag = "ApiTags::Licenses")]
impl LicensesApi {
    /// Activate a license key on a domain
    ///
    /// Activates one of the signed-in member's quantity keys on a domain it is used on (a
    /// machine), up to its policy's limit (one domain for a key without a policy). Activating
    /// it again on the same domain (or its `www.` variant) changes nothing; past the limit it is
    /// refused until a domain is released, unless an activation's heartbeat stopped (it is
    /// freed to make room). A deactivated key keeps its domains, so they are restored when the
    /// license is reactivated. The address the request came from is recorded.
    #[oai(
        path = "/v1/me/licenses/:key/activation",
        method = "post",
        operation_id = "activateMyLicense"
    )]
    async fn activate(
        &self,
        req: &Request,
        session: MemberAuth,
        request_id: Data<&RequestId>,
        /// The license key.
        key: Path<String>,
        body: Json<ActivateLicenseRequest>,
    ) -> ActivateLicenseResponse {
        let ip = super::edge::client_ip(req);
        match self
            .activate_on_domain(session.0.member_id, &request_id, ip, &key.0, &body.0.domain)
            .await
        {
            Ok(license) => ActivateLicenseResponse::Ok(Json(license)),
            Err(problem) => problem.into(),
        }
    }

    /// Release every domain of a license key
    ///
    /// Releases one of the signed-in member's keys from every domain it is activated on, so
    /// it can be activated elsewhere. Answers 204 also when it was not activated.
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
            .release_domain(session.0.member_id, &request_id, &key.0, None)
            .await
        {
            Ok(()) => ReleaseLicenseResponse::Released,
            Err(problem) => problem.into(),
        }
    }

    /// Release one domain of a license key
    ///
    /// Releases one of the signed-in member's keys from one domain (machine) it is activated
    /// on (`*.example.com` for a pattern); its other domains stay. Answers 204 also when it
    /// was not activated there.
    #[oai(
        path = "/v1/me/licenses/:key/machines/:domain",
        method = "delete",
        operation_id = "releaseMyLicenseMachine"
    )]
    async fn release_machine(
        &self,
        session: MemberAuth,
        request_id: Data<&RequestId>,
        /// The license key.
        key: Path<String>,
        /// The domain, as the license lists it.
        domain: Path<String>,
    ) -> ReleaseLicenseResponse {
        match self
            .release_domain(session.0.member_id, &request_id, &key.0, Some(&domain.0))
            .await
        {
            Ok(()) => ReleaseLicenseResponse::Released,
            Err(problem) => problem.into(),
        }
    }
}

impl LicensesApi {
    pub(crate) async fn activate_on_domain(
        &self,
        member_id: Uuid,
        request_id: &RequestId,
        ip: Option<std::net::IpAddr>,
        key: &str,
        domain: &str,
    ) -> Result<DashboardLicense, Problem> {
        let license_id = own_license(&self.state.pool, member_id, key).await?;
        let command = activation(&self.state.pool, license_id, domain, ip).await?;
        self.execute(member_id, request_id, license_id, command)
            .await?;
        super::dashboard::license_by_id(&self.state.pool, license_id).await
    }

    /// Releases the key from `domain`, or from every domain when `None`.
    pub(crate) async fn release_domain(
        &self,
        member_id: Uuid,
        request_id: &RequestId,
        key: &str,
        domain: Option<&str>,
    ) -> Result<(), Problem> {
        let license_id = own_license(&self.state.pool, member_id, key).await?;
        let command = LicenseCommand::ReleaseDomain {
            domain: domain.map(machine_name),
            at: Utc::now(),
        };
        self.execute(member_id, request_id, license_id, command)
            .await
    }

    /// Runs `command` as the member; when it returns, the inline read model shows it.
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

/// A machine's name as typed for a release: trimmed and lower-cased (a pattern keeps its `*.`).
fn machine_name(raw: &str) -> String {
    raw.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// The command that activates license `license_id` on `raw` (a domain or, where its policy
/// allows, a `*.domain` pattern) from `ip`: with its policy's machine limit, and the
/// activations whose heartbeat stopped, which may make room.
pub(crate) async fn activation(
    pool: &PgPool,
    license_id: Uuid,
    raw: &str,
    ip: Option<std::net::IpAddr>,
) -> Result<LicenseCommand, Problem> {
    let (wildcard, rest) = match raw.trim().strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, raw),
    };
    let domain = parse_domain(rest)?;
    let policy = crate::license_policies::of_license(pool, license_id)
        .await
        .map_err(db_error)?;
    if wildcard && !policy.as_ref().is_some_and(|p| p.domain_patterns) {
        return Err(Problem::validation(vec![FieldError::new(
            "domain",
            "this key's policy does not allow domain patterns such as *.example.com",
        )]));
    }
    if wildcard && !domain.as_str().contains('.') {
        return Err(Problem::validation(vec![FieldError::new(
            "domain",
            "a pattern covers the names under a registered domain, such as *.example.com",
        )]));
    }
    let stale = match policy.as_ref().and_then(|p| p.heartbeat_minutes) {
        Some(minutes) => crate::license_machines::stale(pool, license_id, minutes)
            .await
            .map_err(db_error)?,
        None => Vec::new(),
    };
    Ok(LicenseCommand::ActivateOnDomain {
        domain,
        wildcard,
        ip: ip.map(|ip| ip.to_string()),
        max_machines: crate::license_policies::Policy::limit(policy.as_ref()),
        stale,
        at: Utc::now(),
    })
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
pub(crate) fn parse_domain(raw: &str) -> Result<SiteDomain, Problem> {
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

impl poem_openapi::types::Example for ActivateLicenseRequest {
    fn example() -> Self {
        Self {
            domain: "shop.example.com".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
