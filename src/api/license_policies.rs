//! License policies (admin): `GET /v1/license-policies`, `GET`, `PUT` and `DELETE
//! /v1/license-policies/{id}`. What a policy means is `crate::license_policies`'.

use chrono::{DateTime, Utc};
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};

use super::auth::AdminAuth;
use super::license_validation::check_entitlements;
use super::problem::{db_error, FieldError, Problem};
use super::state::{ApiTags, State};
use crate::api::problem::api_response;
use crate::license_policies::{self as policies, DeleteError, ExpiryStrategy, Policy, PutError};

pub struct LicensePoliciesApi {
    pub state: State,
}

/// A license policy: what a key under it may do.
#[derive(Debug, Clone, Object)]
pub struct LicensePolicy {
    pub id: String,
    pub name: String,
    /// How many domains (machines) a key may be activated on at once.
    pub max_machines: i32,
    /// Whether a key may be activated on a pattern, `*.example.com`.
    pub domain_patterns: bool,
    pub expiry: ExpiryStrategy,
    /// For `expiry: duration`: days from issue.
    #[oai(nullable)]
    pub duration_days: Option<i32>,
    /// Days a key keeps validating while its subscription is past due (a failed payment);
    /// null: as long as Stripe keeps it past due.
    #[oai(nullable)]
    pub grace_days: Option<i32>,
    /// An activation not seen (`POST /v1/licenses/heartbeat`) for this many minutes is freed;
    /// null: activations live until released.
    #[oai(nullable)]
    pub heartbeat_minutes: Option<i32>,
    /// The feature flags keys under it grant.
    pub entitlements: Vec<String>,
    /// The Stripe products whose site and seat keys are issued under it.
    pub products: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<Policy> for LicensePolicy {
    fn from(p: Policy) -> Self {
        Self {
            id: p.id,
            name: p.name,
            max_machines: p.max_machines,
            domain_patterns: p.domain_patterns,
            expiry: p.expiry,
            duration_days: p.duration_days,
            grace_days: p.grace_days,
            heartbeat_minutes: p.heartbeat_minutes,
            entitlements: p.entitlements,
            products: p.products,
            created_at: p.created_at,
            updated_at: p.updated_at,
        }
    }
}

fn default_max_machines() -> i32 {
    1
}

/// A policy as an operator writes it; the id is in the path. `expiry` is `subscription` when
/// absent.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct PutLicensePolicy {
    #[oai(validator(min_length = 1, max_length = 100))]
    pub name: String,
    /// Default 1.
    #[oai(
        default = "default_max_machines",
        validator(minimum(value = "1"), maximum(value = "10000"))
    )]
    pub max_machines: i32,
    /// Default false.
    #[oai(default)]
    pub domain_patterns: bool,
    // No doc comment: a described enum field is an `allOf` that client generators refuse.
    pub expiry: Option<ExpiryStrategy>,
    /// Required for, and only for, `expiry: duration`.
    #[oai(validator(minimum(value = "1"), maximum(value = "36500")))]
    pub duration_days: Option<i32>,
    #[oai(validator(minimum(value = "0"), maximum(value = "365")))]
    pub grace_days: Option<i32>,
    #[oai(validator(minimum(value = "1"), maximum(value = "525600")))]
    pub heartbeat_minutes: Option<i32>,
    /// Default none.
    #[oai(default, validator(max_items = 100))]
    pub entitlements: Vec<String>,
    /// Stripe product ids (`prod_...`); a product has at most one policy. Default none.
    #[oai(default, validator(max_items = 100))]
    pub products: Vec<String>,
}

api_response! {
    pub enum ListPoliciesResponse {
        /// Every policy, by id.
        #[oai(status = 200)]
        Ok(Json<Vec<LicensePolicy>>),
    }
    problems {
        /// No admin token.
        401 => Unauthorized,
    }
}

api_response! {
    pub enum GetPolicyResponse {
        #[oai(status = 200)]
        Ok(Json<LicensePolicy>),
    }
    problems {
        /// No admin token.
        401 => Unauthorized,
        /// No policy has this id.
        404 => NotFound,
    }
}

api_response! {
    pub enum PutPolicyResponse {
        /// Created.
        #[oai(status = 201)]
        Created(Json<LicensePolicy>),
        /// Replaced: keys under it follow its new limits, grace, heartbeat and entitlements;
        /// their expiry stays what it was when they got the policy.
        #[oai(status = 200)]
        Replaced(Json<LicensePolicy>),
    }
    problems {
        /// The body is not valid JSON of the expected shape.
        400 => BadRequest,
        /// No admin token.
        401 => Unauthorized,
        /// `/problems/product-has-policy`: a product named has another policy.
        409 => Conflict,
        /// The body is not `application/json`.
        415 => UnsupportedMediaType,
        /// Fields failed validation: `id` (1 to 63 of a-z, 0-9, `-`, `_`), `duration_days`
        /// (required for, and only for, `expiry: duration`), `entitlements` or `products`.
        422 => Invalid,
    }
}

api_response! {
    pub enum DeletePolicyResponse {
        #[oai(status = 204)]
        Deleted,
    }
    problems {
        /// No admin token.
        401 => Unauthorized,
        /// No policy has this id.
        404 => NotFound,
        /// `/problems/policy-in-use`: keys are under it; change their policy first.
        409 => Conflict,
    }
}

#[OpenApi(tag = "ApiTags::Licenses")]
impl LicensePoliciesApi {
    /// List license policies
    #[oai(
        path = "/v1/license-policies",
        method = "get",
        operation_id = "listLicensePolicies"
    )]
    async fn list(&self, _auth: AdminAuth) -> ListPoliciesResponse {
        match policies::list(&self.state.pool).await {
            Ok(list) => {
                ListPoliciesResponse::Ok(Json(list.into_iter().map(LicensePolicy::from).collect()))
            }
            Err(err) => db_error(err).into(),
        }
    }

    /// Get a license policy
    #[oai(
        path = "/v1/license-policies/:id",
        method = "get",
        operation_id = "getLicensePolicy"
    )]
    async fn get(&self, _auth: AdminAuth, id: Path<String>) -> GetPolicyResponse {
        match policies::get(&self.state.pool, &id.0).await {
            Ok(Some(policy)) => GetPolicyResponse::Ok(Json(policy.into())),
            Ok(None) => Problem::not_found("no policy has this id").into(),
            Err(err) => db_error(err).into(),
        }
    }

    /// Create or replace a license policy
    ///
    /// Keys get a policy when an operator grants them or changes their policy, and Stripe site
    /// and seat keys of its `products` when they are issued. Keys issued before keep theirs.
    #[oai(
        path = "/v1/license-policies/:id",
        method = "put",
        operation_id = "putLicensePolicy"
    )]
    async fn put(
        &self,
        _auth: AdminAuth,
        /// 1 to 63 of a-z, 0-9, `-` and `_`, starting with a letter or digit.
        id: Path<String>,
        body: Json<PutLicensePolicy>,
    ) -> PutPolicyResponse {
        let terms = match terms(&id.0, body.0) {
            Ok(terms) => terms,
            Err(problem) => return problem.into(),
        };
        match policies::put(&self.state.pool, &id.0, &terms).await {
            Ok((policy, true)) => PutPolicyResponse::Created(Json(policy.into())),
            Ok((policy, false)) => PutPolicyResponse::Replaced(Json(policy.into())),
            Err(PutError::ProductTaken { product, policy }) => Problem::conflict(
                "product-has-policy",
                format!("product {product} already has policy {policy}"),
            )
            .with_field("products", format!("{product} has policy {policy}"))
            .into(),
            Err(PutError::Db(err)) => db_error(err).into(),
        }
    }

    /// Delete a license policy
    ///
    /// Refused while keys are under it.
    #[oai(
        path = "/v1/license-policies/:id",
        method = "delete",
        operation_id = "deleteLicensePolicy"
    )]
    async fn delete(&self, _auth: AdminAuth, id: Path<String>) -> DeletePolicyResponse {
        match policies::delete(&self.state.pool, &id.0).await {
            Ok(()) => DeletePolicyResponse::Deleted,
            Err(DeleteError::NotFound) => Problem::not_found("no policy has this id").into(),
            Err(DeleteError::InUse(n)) => Problem::conflict(
                "policy-in-use",
                format!("{n} license(s) are under this policy; change their policy first"),
            )
            .into(),
            Err(DeleteError::Db(err)) => db_error(err).into(),
        }
    }
}

/// The body's terms, or a 422 naming each field that breaks a rule.
pub(crate) fn terms(id: &str, body: PutLicensePolicy) -> Result<policies::PolicyTerms, Problem> {
    let mut errors = Vec::new();
    if !policies::valid_id(id) {
        errors.push(FieldError::new(
            "id",
            "1 to 63 of a-z, 0-9, - and _, starting with a letter or digit",
        ));
    }
    let expiry = body.expiry.unwrap_or(ExpiryStrategy::Subscription);
    match (expiry, body.duration_days) {
        (ExpiryStrategy::Duration, None) => errors.push(FieldError::new(
            "duration_days",
            "required when expiry is duration",
        )),
        (ExpiryStrategy::Subscription | ExpiryStrategy::Never, Some(_)) => errors.push(
            FieldError::new("duration_days", "only for expiry: duration"),
        ),
        _ => {}
    }
    if body.name.trim().is_empty() || body.name.chars().any(char::is_control) {
        errors.push(FieldError::new(
            "name",
            "must not be blank or hold control characters",
        ));
    }
    if let Err(problem) = check_entitlements("entitlements", &body.entitlements) {
        errors.extend(problem.errors);
    }
    if let Some(bad) = body.products.iter().find(|p| {
        p.is_empty() || p.len() > 255 || p.chars().any(|c| c.is_whitespace() || c.is_control())
    }) {
        errors.push(FieldError::new(
            "products",
            format!("{bad:?} is not a Stripe product id"),
        ));
    }
    if !errors.is_empty() {
        return Err(Problem::validation(errors));
    }
    let mut entitlements = body.entitlements;
    entitlements.sort();
    entitlements.dedup();
    let mut products = body.products;
    products.sort();
    products.dedup();
    Ok(policies::PolicyTerms {
        name: body.name.trim().to_owned(),
        max_machines: body.max_machines,
        domain_patterns: body.domain_patterns,
        expiry,
        duration_days: body.duration_days,
        grace_days: body.grace_days,
        heartbeat_minutes: body.heartbeat_minutes,
        entitlements,
        products,
    })
}

impl poem_openapi::types::Example for PutLicensePolicy {
    fn example() -> Self {
        Self {
            name: "Pro, three sites".into(),
            max_machines: 3,
            domain_patterns: false,
            expiry: Some(ExpiryStrategy::Subscription),
            duration_days: None,
            grace_days: Some(7),
            heartbeat_minutes: None,
            entitlements: vec!["updates".into(), "priority-support".into()],
            products: vec!["prod_NWjs8kKbJWmuuc".into()],
        }
    }
}
