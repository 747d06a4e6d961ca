//! Members: the list with search and filters (the API's list query), and a member's detail
//! with their dashboard and timeline (the API's functions).

use askama::Template;
use chrono::{DateTime, Utc};
use poem::http::StatusCode;
use poem::web::{Data, Path, Query};
use poem::{handler, Request, Response};
use serde::Deserialize;
use uuid::Uuid;

use super::{admin_layout, signed_in, unavailable};
use crate::api::dashboard;
use crate::api::members::{
    find_member, list_members, timeline, ListFilter, MemberSourceDto, MemberStatusDto, MemberView,
};
use crate::api::problem::{FieldError, Problem};
use crate::api::state::State;
use crate::web::page::{self, date, money, Layout, Notice};

const PAGE_SIZE: i64 = 25;
const TIMELINE_SIZE: i64 = 50;

#[derive(Template)]
#[template(path = "admin/members.html")]
struct ListPage {
    layout: Layout,
    q: String,
    status: String,
    label: String,
    members: Vec<MemberRow>,
    /// The query string of the next page, if there is one.
    next: Option<String>,
    /// Whether this is a later page (a link back to the first).
    later_page: bool,
}

struct MemberRow {
    id: Uuid,
    email: String,
    name: String,
    status: &'static str,
    labels: String,
    source: &'static str,
    created: String,
}

#[derive(Deserialize)]
pub struct ListQuery {
    q: Option<String>,
    status: Option<String>,
    label: Option<String>,
    cursor: Option<String>,
}

fn status_word(status: MemberStatusDto) -> &'static str {
    match status {
        MemberStatusDto::Free => "Free",
        MemberStatusDto::Paid => "Paid",
        MemberStatusDto::Comped => "Comped",
    }
}

fn source_word(source: MemberSourceDto) -> &'static str {
    match source {
        MemberSourceDto::Admin => "admin",
        MemberSourceDto::Api => "API",
        MemberSourceDto::Import => "import",
        MemberSourceDto::Signup => "sign-up",
        MemberSourceDto::Stripe => "Stripe",
    }
}

fn row(m: MemberView) -> MemberRow {
    MemberRow {
        id: m.id,
        email: m.email,
        name: m.name.unwrap_or_default(),
        status: status_word(m.status),
        labels: m.labels.join(", "),
        source: source_word(m.source),
        created: date(m.created_at),
    }
}

/// The filter of a query, or the problem with it (said as the API would).
fn filter(query: &ListQuery) -> Result<ListFilter, Problem> {
    let text = |v: &Option<String>| {
        v.as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let (q, label) = (text(&query.q), text(&query.label));
    let mut errors = Vec::new();
    for (field, value) in [("search", &q), ("label", &label)] {
        if value
            .as_deref()
            .is_some_and(|v| v.chars().count() > 191 || v.contains('\0'))
        {
            errors.push(FieldError::new(
                field,
                "must be at most 191 characters, without NUL",
            ));
        }
    }
    let status = match query.status.as_deref().unwrap_or_default() {
        "" => None,
        "free" => Some(MemberStatusDto::Free),
        "paid" => Some(MemberStatusDto::Paid),
        "comped" => Some(MemberStatusDto::Comped),
        _ => {
            errors.push(FieldError::new("status", "must be free, paid or comped"));
            None
        }
    };
    if !errors.is_empty() {
        return Err(Problem::validation(errors));
    }
    Ok(ListFilter {
        status,
        search: q,
        newsletter: None,
        label,
        created_after: None,
        created_before: None,
        limit: PAGE_SIZE,
        cursor: text(&query.cursor).filter(|c| c.len() <= 200),
    })
}

#[handler]
pub async fn list(req: &Request, state: Data<&State>, Query(query): Query<ListQuery>) -> Response {
    if let Err(resp) = signed_in(req, &state).await {
        return resp;
    }
    let mut page = ListPage {
        layout: admin_layout(req, "Members", None),
        q: query.q.clone().unwrap_or_default(),
        status: query.status.clone().unwrap_or_default(),
        label: query.label.clone().unwrap_or_default(),
        members: Vec::new(),
        next: None,
        later_page: query.cursor.is_some(),
    };
    let result = match filter(&query) {
        Ok(filter) => list_members(&state, filter).await,
        Err(problem) => Err(problem),
    };
    match result {
        Ok(found) => {
            page.next = found.next_cursor.map(|cursor| {
                serde_urlencoded::to_string([
                    ("q", page.q.as_str()),
                    ("status", page.status.as_str()),
                    ("label", page.label.as_str()),
                    ("cursor", cursor.as_str()),
                ])
                .unwrap_or_default()
            });
            page.members = found.items.into_iter().map(row).collect();
            page::html(&page)
        }
        Err(problem) => {
            let field_names = [
                ("search", "Search"),
                ("status", "Status"),
                ("label", "Label"),
            ];
            let mut notice = Notice::from_problem(&problem);
            for (field, _) in &mut notice.fields {
                if let Some((_, label)) = field_names.iter().find(|(f, _)| f == field) {
                    *field = (*label).to_owned();
                }
            }
            if problem.status == 400 {
                notice.text =
                    "That page link is not valid any more: start again from the first page."
                        .to_owned();
            }
            page.layout.notice = Some(notice);
            page::html_status(problem.status_code(), &page)
        }
    }
}

#[derive(Template)]
#[template(path = "admin/member.html")]
struct DetailPage {
    layout: Layout,
    member: MemberRow,
    note: String,
    customer_ids: String,
    subscriptions: Vec<[String; 5]>,
    licenses: Vec<LicenseView>,
    /// The policy ids a key can be granted under or moved to.
    policies: Vec<String>,
    payments: Vec<[String; 4]>,
    timeline: Vec<TimelineRow>,
    /// The query string of older entries, if there are any.
    older: Option<String>,
    /// Why member emails to the address stopped (it refused them for good), while they have.
    email_disabled: Option<String>,
}

struct TimelineRow {
    when: String,
    summary: String,
    event_type: String,
}

#[derive(Deserialize)]
pub struct DetailQuery {
    before: Option<String>,
    /// What a license hold did (`licenses::hold` redirects here): fixed messages only.
    done: Option<String>,
    refused: Option<String>,
}

/// The notice of a license hold's redirect.
fn hold_notice(query: &DetailQuery) -> Option<Notice> {
    let info = match query.done.as_deref() {
        Some("suspended") => Some("The license is suspended: it validates as SUSPENDED."),
        Some("unsuspended") => Some("The suspension is lifted."),
        Some("revoked") => Some("The license is revoked for good: it validates as REVOKED."),
        Some("granted") => Some("The key is granted: it is on the member's dashboard."),
        Some("expiry") => Some("The license's expiry is changed."),
        Some("policy") => Some("The license's policy is changed, and its expiry with it."),
        Some("released") => Some("The domain is released: the member can activate another."),
        Some("email-enabled") => Some("The member's email is enabled: member emails go out again."),
        _ => None,
    };
    if let Some(text) = info {
        return Some(Notice::info(text));
    }
    let error = match query.refused.as_deref()? {
        "revoked" => "The license is revoked: it cannot be changed any more.",
        "reason" => "Give a reason in words.",
        "expires" => "Give an expiry date in the future, YYYY-MM-DD.",
        "policy" => "No policy has this id.",
        "note" => "Write the note without control characters.",
        "not-found" => "No license has this id.",
        _ => "The change could not be made now; nothing changed. Try again in a moment.",
    };
    Some(Notice::error(error))
}

/// A license as the member page lists it, with the holds an admin can take.
struct LicenseView {
    id: String,
    key: String,
    what: String,
    status: String,
    /// The domains it is activated on.
    machines: Vec<String>,
    suspended: bool,
    revoked: bool,
    /// Its expiry as a date input's value (`YYYY-MM-DD`), blank when none.
    expires: String,
    policy: String,
}

fn when(at: DateTime<Utc>) -> String {
    at.format("%-d %b %Y %H:%M UTC").to_string()
}

fn not_found() -> Response {
    page::error_page(StatusCode::NOT_FOUND, "")
}

#[handler]
pub async fn detail(
    req: &Request,
    state: Data<&State>,
    Path(id): Path<String>,
    Query(query): Query<DetailQuery>,
) -> Response {
    if let Err(resp) = signed_in(req, &state).await {
        return resp;
    }
    let Ok(id) = id.parse::<Uuid>() else {
        return not_found();
    };
    let member = match find_member(&state, id).await {
        Ok(Some(member)) => member,
        Ok(None) => return not_found(),
        Err(problem) => return page::error_page(problem.status_code(), "reading a member"),
    };
    let dashboard = match dashboard::load(&state.pool, id).await {
        Ok(Some(dashboard)) => dashboard,
        Ok(None) => return not_found(),
        Err(err) => return unavailable(&err),
    };
    let (entries, notice) = match timeline(&state, id, TIMELINE_SIZE, query.before.as_deref()).await
    {
        Ok(found) => (found, None),
        // A link from an older page that no longer reads: the newest entries instead.
        Err(problem) if problem.status == 400 => match timeline(&state, id, TIMELINE_SIZE, None)
            .await
        {
            Ok(found) => (
                found,
                Some(Notice::error(
                    "That timeline link is not valid any more: the newest entries are shown.",
                )),
            ),
            Err(problem) => return page::error_page(problem.status_code(), "reading a timeline"),
        },
        Err(problem) => return page::error_page(problem.status_code(), "reading a timeline"),
    };
    let policies = match crate::license_policies::list(&state.pool).await {
        Ok(found) => found.into_iter().map(|p| p.id).collect(),
        Err(err) => return unavailable(&err),
    };
    let email_disabled = match crate::api::members::email_disabled(&state.pool, id).await {
        Ok(found) => found.map(|d| d.reason),
        Err(err) => return unavailable(&err),
    };
    let note = member.note.clone().unwrap_or_default();
    let page = DetailPage {
        email_disabled,
        layout: admin_layout(
            req,
            &format!("Member {}", member.email),
            notice.or_else(|| hold_notice(&query)),
        ),
        note,
        customer_ids: dashboard.customer_ids.join(", "),
        subscriptions: dashboard
            .subscriptions
            .iter()
            .map(|s| {
                [
                    s.id.clone(),
                    if s.cancel_at_period_end {
                        format!("{}, cancels at period end", s.status)
                    } else {
                        s.status.clone()
                    },
                    s.current_period_end.map(date).unwrap_or_default(),
                    s.currency
                        .as_deref()
                        .map(|c| money(s.mrr, c))
                        .unwrap_or_default(),
                    s.site_count.to_string(),
                ]
            })
            .collect(),
        licenses: dashboard
            .licenses
            .iter()
            .map(|l| LicenseView {
                id: l.id.to_string(),
                key: l.key.clone(),
                what: {
                    let what = l
                        .site
                        .clone()
                        .or_else(|| l.seat.map(|s| format!("seat {s}")))
                        .unwrap_or_else(|| "granted".to_owned());
                    let policy = l
                        .policy_id
                        .as_ref()
                        .map(|p| format!(", policy {p}"))
                        .unwrap_or_default();
                    let expiry = l
                        .expires_at
                        .map(|at| format!(", expires {}", when(at)))
                        .unwrap_or_default();
                    format!("{what}{policy}{expiry}")
                },
                status: match (&l.revocation_reason, &l.suspension_reason) {
                    (Some(reason), _) => format!("revoked ({reason})"),
                    (None, Some(reason)) => format!("{}, suspended ({reason})", l.status),
                    (None, None) => match l.deactivation_reason.as_deref() {
                        Some(reason) => format!("{} ({})", l.status, reason.replace('_', " ")),
                        None => l.status.clone(),
                    },
                },
                machines: l.machines.iter().map(|m| m.domain.clone()).collect(),
                suspended: l.suspension_reason.is_some(),
                revoked: l.revoked_at.is_some(),
                expires: l
                    .expires_at
                    .map(|at| at.format("%Y-%m-%d").to_string())
                    .unwrap_or_default(),
                policy: l.policy_id.clone().unwrap_or_default(),
            })
            .collect(),
        policies,
        payments: dashboard
            .payments
            .iter()
            .map(|p| {
                [
                    date(p.created_at),
                    p.kind.replace('_', " "),
                    money(p.amount, &p.currency),
                    p.status.clone(),
                ]
            })
            .collect(),
        timeline: entries
            .items
            .into_iter()
            .map(|e| TimelineRow {
                when: when(e.created_at),
                summary: e.summary,
                event_type: e.event_type,
            })
            .collect(),
        older: entries
            .next_cursor
            .map(|c| serde_urlencoded::to_string([("before", c)]).unwrap_or_default()),
        member: row(member),
    };
    page::html(&page)
}

#[derive(Deserialize)]
struct EnableEmailForm {
    member: String,
}

/// Lifts the suppression of a member's email, as `POST /v1/members/{id}/email/enable` does.
#[handler]
pub async fn enable_email(
    req: &Request,
    body: String,
    state: Data<&State>,
    request_id: Data<&crate::api::state::RequestId>,
) -> Response {
    let form: EnableEmailForm = match super::admin_form(req, &body, &state).await {
        Ok(form) => form,
        Err(resp) => return resp,
    };
    let Ok(member) = form.member.parse::<Uuid>() else {
        return page::error_page_at("/admin", StatusCode::NOT_FOUND, "");
    };
    let metadata =
        crate::store::EventMetadata::for_request(&request_id.0 .0, crate::store::Actor::Admin);
    match crate::members::enable_email(&state.members, member, metadata).await {
        Ok(()) => page::see_other(&format!("/admin/members/{member}?done=email-enabled")),
        Err(err) => {
            let problem = crate::api::problem::command_error(err);
            page::error_page_at("/admin", problem.status_code(), "")
        }
    }
}
