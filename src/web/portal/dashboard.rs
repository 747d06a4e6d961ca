//! The member's dashboard: account, subscriptions, sites and their keys, seat keys, payments,
//! and the forms to buy more. Read in one statement (`api::dashboard::load`), as the API's.

use askama::Template;
use poem::web::{Data, Query};
use poem::{handler, Request, Response};
use serde::Deserialize;

use super::{member_layout, signed_in};
use crate::api::dashboard::{self, Dashboard, DashboardLicense};
use crate::api::state::State;
use crate::web::page::{self, date, money, Layout, Notice};

#[derive(Template)]
#[template(path = "portal/dashboard.html")]
struct DashboardPage {
    layout: Layout,
    email: String,
    name: String,
    status: &'static str,
    subscriptions: Vec<SubscriptionRow>,
    sites: Vec<SiteRow>,
    pending_sites: Vec<PendingRow>,
    seat_keys: Vec<SeatKeyRow>,
    pending_keys: Vec<PendingRow>,
    payments: Vec<PaymentRow>,
    /// An active subscription to add sites or keys to.
    can_buy: bool,
    has_billing: bool,
    /// We stopped sending emails to the address (it refused them for good).
    email_disabled: bool,
}

struct SubscriptionRow {
    status: String,
    renewal: String,
    amount: String,
    sites: i64,
}

struct SiteRow {
    domain: String,
    key: String,
    status: String,
    active: bool,
}

struct PendingRow {
    what: String,
    amount: String,
    since: String,
}

struct SeatKeyRow {
    seat: String,
    key: String,
    status: String,
    /// The domains it is activated on, oldest first.
    domains: Vec<String>,
    /// Whether it can be activated on one more domain.
    room: bool,
}

struct PaymentRow {
    when: String,
    what: String,
    amount: String,
    status: String,
}

#[derive(Deserialize)]
pub struct DashboardQuery {
    done: Option<String>,
}

/// What a redirect back to the dashboard says happened (fixed messages: nothing from the
/// query string is shown).
fn done_notice(done: Option<&str>) -> Option<Notice> {
    let text = match done? {
        "paid" => "Thank you! Your payment is being confirmed; your new sites or keys appear here in a moment.",
        "checkout-cancelled" => "The payment was cancelled; nothing was bought.",
        "site-removed" => "The site is removed and its license key no longer works.",
        "key-activated" => "The key is activated on the domain.",
        "key-released" => "The key is released; you can activate it on another domain.",
        "billing" => "Welcome back from billing.",
        "email-changed" => "Your email address is changed.",
        "newsletters" => "Your newsletters are saved.",
        _ => return None,
    };
    Some(Notice::info(text))
}

#[handler]
pub async fn show(
    req: &Request,
    state: Data<&State>,
    Query(query): Query<DashboardQuery>,
) -> Response {
    let member_id = match signed_in(req, &state).await {
        Ok(id) => id,
        Err(resp) => return resp,
    };
    render(req, &state, member_id, done_notice(query.done.as_deref())).await
}

/// The dashboard of `member_id` with `notice` above it (also after a refused form).
pub(crate) async fn render(
    req: &Request,
    state: &State,
    member_id: uuid::Uuid,
    notice: Option<Notice>,
) -> Response {
    let status = if notice.as_ref().is_some_and(|n| n.error) {
        poem::http::StatusCode::UNPROCESSABLE_ENTITY
    } else {
        poem::http::StatusCode::OK
    };
    match dashboard::load(&state.pool, member_id).await {
        Ok(Some(dashboard)) => {
            let mut page = view(req, dashboard, notice);
            page.email_disabled = crate::api::members::email_disabled(&state.pool, member_id)
                .await
                .ok()
                .flatten()
                .is_some();
            page::html_status(status, &page)
        }
        Ok(None) => page::see_other("/account/signin"),
        Err(err) => page::error_page(
            poem::http::StatusCode::SERVICE_UNAVAILABLE,
            &err.to_string(),
        ),
    }
}

fn member_status(status: &str) -> &'static str {
    match status {
        "paid" => "Paid member",
        "comped" => "Complimentary member",
        _ => "Free member",
    }
}

fn license_status(license: &DashboardLicense) -> String {
    if license.revoked_at.is_some() {
        return "Revoked".to_owned();
    }
    if let Some(reason) = &license.suspension_reason {
        return format!("Suspended ({reason})");
    }
    match license.status.as_str() {
        "active" => "Active".to_owned(),
        "pending" => "Waiting for payment".to_owned(),
        "canceled" => "Cancelled (never paid)".to_owned(),
        _ => match license.deactivation_reason.as_deref() {
            Some(reason) => format!("Inactive ({})", reason.replace('_', " ")),
            None => "Inactive".to_owned(),
        },
    }
}

fn view(req: &Request, d: Dashboard, notice: Option<Notice>) -> DashboardPage {
    let subscriptions: Vec<SubscriptionRow> = d
        .subscriptions
        .iter()
        .map(|s| SubscriptionRow {
            status: match (s.status.as_str(), s.cancel_at_period_end) {
                ("active" | "trialing", true) => "Active, cancels at period end".to_owned(),
                ("active", false) => "Active".to_owned(),
                ("trialing", false) => "Trial".to_owned(),
                ("past_due", _) => "Payment overdue".to_owned(),
                ("canceled", _) => "Cancelled".to_owned(),
                (other, _) => other.replace('_', " "),
            },
            renewal: match (s.current_period_end, s.cancel_at_period_end) {
                (Some(end), true) => format!("Ends {}", date(end)),
                (Some(end), false) if s.status != "canceled" => format!("Renews {}", date(end)),
                _ => String::new(),
            },
            amount: s
                .currency
                .as_deref()
                .map(|c| format!("{} / month", money(s.mrr, c)))
                .unwrap_or_default(),
            sites: s.site_count,
        })
        .collect();
    let can_buy = d
        .subscriptions
        .iter()
        .any(|s| matches!(s.status.as_str(), "active" | "trialing"));
    let sites = d
        .licenses
        .iter()
        .filter(|l| l.purchase_type == "site" && l.status != "pending")
        .map(|l| SiteRow {
            domain: l.site.clone().unwrap_or_default(),
            key: l.key.clone(),
            status: license_status(l),
            active: l.status == "active",
        })
        .collect();
    let mut seat_licenses: Vec<&DashboardLicense> = d
        .licenses
        .iter()
        .filter(|l| l.purchase_type == "quantity" && l.status != "pending")
        .collect();
    seat_licenses.sort_by_key(|l| (l.subscription_id.clone(), l.seat));
    let seat_keys = seat_licenses
        .into_iter()
        .map(|l| SeatKeyRow {
            seat: l
                .seat
                .map_or_else(|| "Granted".to_owned(), |s| format!("Seat {s}")),
            key: l.key.clone(),
            status: license_status(l),
            domains: l.machines.iter().map(|m| m.domain.clone()).collect(),
            room: l.status == "active"
                && l.suspension_reason.is_none()
                && l.revoked_at.is_none()
                && l.machines.len() < usize::try_from(l.max_machines).unwrap_or(1),
        })
        .collect();
    let pending_sites = d
        .pending_sites
        .iter()
        .map(|p| PendingRow {
            what: p.domain.clone(),
            amount: money(p.amount, &p.currency),
            since: date(p.created_at),
        })
        .collect();
    let pending_keys = d
        .pending_license_purchases
        .iter()
        .map(|p| PendingRow {
            what: format!(
                "{} key{}",
                p.quantity,
                if p.quantity == 1 { "" } else { "s" }
            ),
            amount: money(p.amount, &p.currency),
            since: date(p.created_at),
        })
        .collect();
    let payments = d
        .payments
        .iter()
        .map(|p| PaymentRow {
            when: date(p.created_at),
            what: match (p.kind.as_str(), &p.site, p.quantity) {
                ("purchase", Some(sites), _) => format!("Sites added: {sites}"),
                ("purchase", None, Some(n)) => format!("{n} license keys"),
                ("refund", _, _) => "Refund".to_owned(),
                ("failure", _, _) => "Failed payment".to_owned(),
                _ => "Subscription payment".to_owned(),
            },
            amount: money(p.amount, &p.currency),
            status: match p.status.as_str() {
                "paid" => "Paid",
                "refunded" => "Refunded",
                "failed" => "Failed",
                _ => "",
            }
            .to_owned(),
        })
        .collect();
    DashboardPage {
        email_disabled: false,
        layout: member_layout(req, "Your account", notice),
        email: d.email,
        name: d.name.unwrap_or_default(),
        status: member_status(&d.status),
        has_billing: !d.customer_ids.is_empty(),
        subscriptions,
        sites,
        pending_sites,
        seat_keys,
        pending_keys,
        payments,
        can_buy,
    }
}
