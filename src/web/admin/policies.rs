//! License policies: the list, and a form that creates or replaces one (the admin API's
//! `PUT /v1/license-policies/{id}`, same rules and same refusals).

use askama::Template;
use poem::http::StatusCode;
use poem::web::{Data, Query};
use poem::{handler, Request, Response};
use serde::Deserialize;

use super::{admin_form, admin_layout, signed_in, unavailable};
use crate::api::license_policies::{terms, PutLicensePolicy};
use crate::api::problem::{FieldError, Problem};
use crate::api::state::State;
use crate::license_policies::{self as policies, ExpiryStrategy, Policy, PutError};
use crate::web::page::{self, Layout, Notice};

#[derive(Template)]
#[template(path = "admin/policies.html")]
struct PoliciesPage {
    layout: Layout,
    rows: Vec<Row>,
}

struct Row {
    id: String,
    name: String,
    machines: String,
    expiry: String,
    grace: String,
    heartbeat: String,
    entitlements: String,
    products: String,
}

fn row(p: Policy) -> Row {
    let or_dash =
        |v: Option<i32>, unit: &str| v.map_or("—".to_owned(), |v| format!("{v} {unit}"));
    Row {
        machines: format!(
            "{}{}",
            p.max_machines,
            if p.domain_patterns {
                ", patterns allowed"
            } else {
                ""
            }
        ),
        expiry: match p.expiry {
            ExpiryStrategy::Subscription => "with its subscription".to_owned(),
            ExpiryStrategy::Duration => or_dash(p.duration_days, "days after issue"),
            ExpiryStrategy::Never => "never".to_owned(),
        },
        grace: or_dash(p.grace_days, "days"),
        heartbeat: or_dash(p.heartbeat_minutes, "minutes"),
        entitlements: p.entitlements.join(", "),
        products: p.products.join(", "),
        id: p.id,
        name: p.name,
    }
}

#[derive(Deserialize)]
pub struct ListQuery {
    saved: Option<String>,
}

#[handler]
pub async fn list(req: &Request, state: Data<&State>, Query(query): Query<ListQuery>) -> Response {
    if let Err(resp) = signed_in(req, &state).await {
        return resp;
    }
    let notice = query
        .saved
        .filter(|id| policies::valid_id(id))
        .map(|id| Notice::info(format!("Policy {id} is saved.")));
    render(req, &state, notice, StatusCode::OK).await
}

async fn render(
    req: &Request,
    state: &State,
    notice: Option<Notice>,
    status: StatusCode,
) -> Response {
    match policies::list(&state.pool).await {
        Ok(found) => page::html_status(
            status,
            &PoliciesPage {
                layout: admin_layout(req, "License policies", notice),
                rows: found.into_iter().map(row).collect(),
            },
        ),
        Err(err) => unavailable(&err),
    }
}

#[derive(Deserialize)]
struct PolicyForm {
    #[serde(default)]
    id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    max_machines: String,
    #[serde(default)]
    domain_patterns: Option<String>,
    #[serde(default)]
    expiry: String,
    #[serde(default)]
    duration_days: String,
    #[serde(default)]
    grace_days: String,
    #[serde(default)]
    heartbeat_minutes: String,
    #[serde(default)]
    entitlements: String,
    #[serde(default)]
    products: String,
}

/// A number field: blank is none; anything else must be a whole number.
fn number(field: &str, raw: &str, errors: &mut Vec<FieldError>) -> Option<i32> {
    let raw = raw.trim();
    if raw.is_empty() {
        return None;
    }
    match raw.parse::<i32>() {
        Ok(n) if n >= 0 => Some(n),
        _ => {
            errors.push(FieldError::new(field, "a whole number"));
            None
        }
    }
}

/// A list field: names separated by commas or spaces.
fn list_of(raw: &str) -> Vec<String> {
    raw.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

impl PolicyForm {
    /// The API's body, or the field errors of what is not a number or an expiry.
    fn body(&self) -> Result<PutLicensePolicy, Problem> {
        let mut errors = Vec::new();
        let expiry = match self.expiry.as_str() {
            "subscription" | "" => ExpiryStrategy::Subscription,
            "duration" => ExpiryStrategy::Duration,
            "never" => ExpiryStrategy::Never,
            _ => {
                errors.push(FieldError::new("expiry", "subscription, duration or never"));
                ExpiryStrategy::Subscription
            }
        };
        let body = PutLicensePolicy {
            name: self.name.clone(),
            max_machines: number("max_machines", &self.max_machines, &mut errors).unwrap_or(1),
            domain_patterns: self.domain_patterns.is_some(),
            expiry: Some(expiry),
            duration_days: number("duration_days", &self.duration_days, &mut errors),
            grace_days: number("grace_days", &self.grace_days, &mut errors),
            heartbeat_minutes: number("heartbeat_minutes", &self.heartbeat_minutes, &mut errors),
            entitlements: list_of(&self.entitlements),
            products: list_of(&self.products),
        };
        let limits = [
            ("max_machines", Some(body.max_machines), 1, 10_000),
            ("duration_days", body.duration_days, 1, 36_500),
            ("grace_days", body.grace_days, 0, 365),
            ("heartbeat_minutes", body.heartbeat_minutes, 1, 525_600),
        ];
        for (field, value, min, max) in limits {
            if value.is_some_and(|v| !(min..=max).contains(&v)) {
                errors.push(FieldError::new(field, format!("between {min} and {max}")));
            }
        }
        if errors.is_empty() {
            Ok(body)
        } else {
            Err(Problem::validation(errors))
        }
    }
}

#[handler]
pub async fn save(req: &Request, body: String, state: Data<&State>) -> Response {
    let form: PolicyForm = match admin_form(req, &body, &state).await {
        Ok(form) => form,
        Err(resp) => return resp,
    };
    let id = form.id.trim().to_owned();
    let state: &State = &state;
    let refused = |problem: Problem| async move {
        let status = problem.status_code();
        render(req, state, Some(Notice::from_problem(&problem)), status).await
    };
    let terms = match form.body().and_then(|body| terms(&id, body)) {
        Ok(terms) => terms,
        Err(problem) => return refused(problem).await,
    };
    match policies::put(&state.pool, &id, &terms).await {
        Ok(_) => {
            tracing::info!(policy = %id, "admin console: a license policy saved");
            page::see_other(&format!("/admin/policies?saved={id}"))
        }
        Err(PutError::ProductTaken { product, policy }) => {
            refused(Problem::conflict(
                "product-has-policy",
                format!("Product {product} already has policy {policy}."),
            ))
            .await
        }
        Err(PutError::Db(err)) => unavailable(&err),
    }
}
