//! Outbound webhooks in the console: the endpoints (register one, enable a disabled one) and an
//! endpoint's deliveries with a Redeliver button, the admin API's functions
//! (`api::outbound_webhooks`).

use askama::Template;
use chrono::{DateTime, Utc};
use poem::http::StatusCode;
use poem::web::{Data, Path, Query};
use poem::{handler, Request, Response};
use serde::Deserialize;
use uuid::Uuid;

use super::{admin_form, admin_layout, signed_in};
use crate::api::outbound_webhooks::{self as api, CreateWebhook};
use crate::api::problem::Problem;
use crate::api::state::State;
use crate::web::page::{self, Layout, Notice};

#[derive(Template)]
#[template(path = "admin/webhooks.html")]
struct WebhooksPage {
    layout: Layout,
    rows: Vec<Row>,
    /// The secret of an endpoint just registered (shown once).
    secret: Option<String>,
}

struct Row {
    id: String,
    url: String,
    event_types: String,
    enabled: bool,
    status: String,
}

#[derive(Template)]
#[template(path = "admin/webhook_deliveries.html")]
struct DeliveriesPage {
    layout: Layout,
    endpoint: String,
    url: String,
    rows: Vec<DeliveryRow>,
}

struct DeliveryRow {
    id: String,
    event: String,
    status: String,
    attempts: i32,
    last: String,
    when: String,
}

fn when(at: DateTime<Utc>) -> String {
    at.format("%-d %b %Y %H:%M:%S UTC").to_string()
}

async fn list_page(
    req: &Request,
    state: &State,
    notice: Option<Notice>,
    secret: Option<String>,
    status: StatusCode,
) -> Response {
    let all = match api::list_all(&state.pool).await {
        Ok(all) => all,
        Err(problem) => return page::error_page(problem.status_code(), "reading the webhooks"),
    };
    let rows = all
        .into_iter()
        .map(|w| Row {
            id: w.id.to_string(),
            url: w.url,
            event_types: w.event_types.join(", "),
            enabled: w.enabled,
            status: match (w.enabled, w.disabled_reason) {
                (true, _) if w.consecutive_failures > 0 => {
                    format!("enabled, {} failed in a row", w.consecutive_failures)
                }
                (true, _) => "enabled".to_owned(),
                (false, Some(reason)) => format!("disabled: {reason}"),
                (false, None) => "disabled".to_owned(),
            },
        })
        .collect();
    page::html_status(
        status,
        &WebhooksPage {
            layout: admin_layout(req, "Webhooks", notice),
            rows,
            secret,
        },
    )
}

#[derive(Deserialize)]
pub struct ListQuery {
    enabled: Option<String>,
}

#[handler]
pub async fn list(req: &Request, state: Data<&State>, Query(query): Query<ListQuery>) -> Response {
    if let Err(resp) = signed_in(req, &state).await {
        return resp;
    }
    let notice = query
        .enabled
        .is_some()
        .then(|| Notice::info("The endpoint is enabled: its pending deliveries are due now."));
    list_page(req, &state, notice, None, StatusCode::OK).await
}

#[derive(Deserialize)]
struct RegisterForm {
    #[serde(default)]
    url: String,
    #[serde(default)]
    event_types: String,
    #[serde(default)]
    description: String,
}

/// Registers an endpoint and shows its secret on the page that answers (once).
#[handler]
pub async fn register(req: &Request, body: String, state: Data<&State>) -> Response {
    let form: RegisterForm = match admin_form(req, &body, &state).await {
        Ok(form) => form,
        Err(resp) => return resp,
    };
    let request = CreateWebhook {
        url: form.url,
        event_types: form
            .event_types
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect(),
        description: Some(form.description.trim().to_owned()).filter(|d| !d.is_empty()),
    };
    let refused = |problem: &Problem| Some(Notice::from_problem(problem));
    if request.event_types.is_empty() {
        let problem = Problem::validation(vec![crate::api::problem::FieldError::new(
            "event_types",
            "name at least one event type, or *",
        )]);
        return list_page(req, &state, refused(&problem), None, problem.status_code()).await;
    }
    match api::register(&state.pool, request).await {
        Ok(created) => {
            tracing::info!(endpoint = %created.webhook.id, "admin console: a webhook endpoint registered");
            let notice = Notice::info(
                "The endpoint is registered. Copy its signing secret now: it is not shown again.",
            );
            list_page(
                req,
                &state,
                Some(notice),
                Some(created.secret),
                StatusCode::CREATED,
            )
            .await
        }
        Err(problem) => {
            list_page(req, &state, refused(&problem), None, problem.status_code()).await
        }
    }
}

#[derive(Deserialize)]
struct IdForm {
    #[serde(default)]
    id: String,
}

#[handler]
pub async fn enable(req: &Request, body: String, state: Data<&State>) -> Response {
    let form: IdForm = match admin_form(req, &body, &state).await {
        Ok(form) => form,
        Err(resp) => return resp,
    };
    let Ok(id) = form.id.parse::<Uuid>() else {
        return page::error_page_at("/admin/webhooks", StatusCode::NOT_FOUND, "");
    };
    match api::enable(&state.pool, id).await {
        Ok(_) => page::see_other("/admin/webhooks?enabled=1"),
        Err(problem) => page::error_page_at("/admin/webhooks", problem.status_code(), ""),
    }
}

#[derive(Deserialize)]
pub struct DeliveriesQuery {
    redelivered: Option<String>,
}

#[handler]
pub async fn deliveries(
    req: &Request,
    state: Data<&State>,
    Path(id): Path<String>,
    Query(query): Query<DeliveriesQuery>,
) -> Response {
    if let Err(resp) = signed_in(req, &state).await {
        return resp;
    }
    let Ok(id) = id.parse::<Uuid>() else {
        return page::error_page(StatusCode::NOT_FOUND, "");
    };
    let found = match api::deliveries(&state.pool, id, None).await {
        Ok(found) => found,
        Err(problem) => return page::error_page(problem.status_code(), ""),
    };
    let url = api::list_all(&state.pool)
        .await
        .ok()
        .and_then(|all| all.into_iter().find(|w| w.id == id))
        .map(|w| w.url)
        .unwrap_or_default();
    let rows = found
        .into_iter()
        .map(|d| DeliveryRow {
            id: d.id.to_string(),
            event: format!("{} (position {})", d.event_type, d.global_position),
            status: d.status,
            attempts: d.attempts,
            last: match (d.last_status, d.last_error) {
                (_, Some(error)) => error,
                (Some(status), None) => format!("answered {status}"),
                (None, None) => String::new(),
            },
            when: when(d.delivered_at.unwrap_or(d.next_attempt_at)),
        })
        .collect();
    let notice = query
        .redelivered
        .is_some()
        .then(|| Notice::info("The delivery is due again now."));
    page::html(&DeliveriesPage {
        layout: admin_layout(req, "Webhook deliveries", notice),
        endpoint: id.to_string(),
        url,
        rows,
    })
}

#[derive(Deserialize)]
struct RedeliverForm {
    #[serde(default)]
    id: String,
    #[serde(default)]
    endpoint: String,
}

#[handler]
pub async fn redeliver(req: &Request, body: String, state: Data<&State>) -> Response {
    let form: RedeliverForm = match admin_form(req, &body, &state).await {
        Ok(form) => form,
        Err(resp) => return resp,
    };
    let (Ok(id), Ok(endpoint)) = (form.id.parse::<Uuid>(), form.endpoint.parse::<Uuid>()) else {
        return page::error_page_at("/admin/webhooks", StatusCode::NOT_FOUND, "");
    };
    match api::redeliver(&state.pool, id).await {
        Ok(_) => page::see_other(&format!("/admin/webhooks/{endpoint}?redelivered=1")),
        Err(problem) => page::error_page_at("/admin/webhooks", problem.status_code(), ""),
    }
}
