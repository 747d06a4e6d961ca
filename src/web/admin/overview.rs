//! The overview: counts, MRR over time (from `members_paid_subscription_events`) and members
//! by status (from `member_list`), as charts.

use askama::Template;
use chrono::{NaiveDate, Utc};
use poem::web::Data;
use poem::{handler, Request, Response};

use super::charts::{self, BarChart, Frame, StepChart};
use super::{admin_layout, signed_in, unavailable};
use crate::api::state::State;
use crate::web::page::{self, money, Layout};

#[derive(Template)]
#[template(path = "admin/overview.html")]
struct OverviewPage {
    layout: Layout,
    width: f64,
    height: f64,
    frame: Frame,
    members: i64,
    paid: i64,
    /// The current MRR of each currency, largest first.
    mrr_now: Vec<String>,
    active_subscriptions: i64,
    stripe_attention: i64,
    projections_stalled: usize,
    mrr_charts: Vec<MrrChart>,
    status_chart: BarChart,
    statuses: Vec<(String, i64)>,
}

struct MrrChart {
    /// `usd`: the chart's id is `mrr-usd`.
    currency: String,
    chart: StepChart,
    /// The days on which MRR changed, newest first, for the table under the chart.
    days: Vec<(String, String)>,
}

#[handler]
pub async fn show(req: &Request, state: Data<&State>) -> Response {
    if let Err(resp) = signed_in(req, &state).await {
        return resp;
    }
    match load(req, &state).await {
        Ok(page) => page::html(&page),
        Err(err) => unavailable(&err),
    }
}

async fn load(req: &Request, state: &State) -> Result<OverviewPage, sqlx::Error> {
    let by_status: Vec<(String, i64)> =
        sqlx::query_as("SELECT status, count(*) FROM member_list GROUP BY status")
            .fetch_all(&state.pool)
            .await?;
    let count = |status: &str| {
        by_status
            .iter()
            .find(|(s, _)| s == status)
            .map_or(0, |(_, n)| *n)
    };
    let statuses = vec![
        ("Free".to_owned(), count("free")),
        ("Paid".to_owned(), count("paid")),
        ("Comped".to_owned(), count("comped")),
    ];
    let members = by_status.iter().map(|(_, n)| n).sum();
    // Each day's change of MRR, by currency; the running total is the MRR after that day.
    let deltas: Vec<(String, NaiveDate, i64)> = sqlx::query_as(
        "SELECT currency, (created_at AT TIME ZONE 'UTC')::date AS day, sum(mrr_delta)::bigint
         FROM members_paid_subscription_events
         WHERE currency IS NOT NULL
         GROUP BY currency, day
         ORDER BY currency, day",
    )
    .fetch_all(&state.pool)
    .await?;
    let mut series: Vec<(String, Vec<(NaiveDate, i64)>)> = Vec::new();
    for (currency, day, delta) in deltas {
        match series.last_mut() {
            Some((c, points)) if *c == currency => {
                let total = points.last().map_or(0, |&(_, v)| v).saturating_add(delta);
                points.push((day, total));
            }
            _ => series.push((currency, vec![(day, delta)])),
        }
    }
    series.sort_by_key(|(_, points)| std::cmp::Reverse(points.last().map_or(0, |&(_, v)| v)));
    let today = Utc::now().date_naive();
    let mrr_now = series
        .iter()
        .map(|(c, points)| money(points.last().map_or(0, |&(_, v)| v), c))
        .collect();
    let mrr_charts = series
        .into_iter()
        .filter_map(|(currency, points)| {
            let chart = charts::step_chart(&points, today, |v| money(v, &currency))?;
            let days = points
                .iter()
                .rev()
                .map(|&(day, v)| (day.format("%-d %b %Y").to_string(), money(v, &currency)))
                .collect();
            Some(MrrChart {
                currency,
                chart,
                days,
            })
        })
        .collect();
    let active_subscriptions: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM subscriptions WHERE status IN ('active', 'trialing', 'past_due')",
    )
    .fetch_one(&state.pool)
    .await?;
    let stripe_attention: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM stripe_events WHERE status IN ('failed', 'deferred')",
    )
    .fetch_one(&state.pool)
    .await?;
    let projections_stalled = crate::runner::status(&state.pool, state.projections.list())
        .await?
        .iter()
        .filter(|p| p.last_error.is_some() || p.stuck_position.is_some())
        .count();
    Ok(OverviewPage {
        layout: admin_layout(req, "Overview", None),
        width: charts::WIDTH,
        height: charts::HEIGHT,
        frame: charts::frame(),
        members,
        paid: count("paid"),
        mrr_now,
        active_subscriptions,
        stripe_attention,
        projections_stalled,
        mrr_charts,
        status_chart: charts::bar_chart(&statuses),
        statuses,
    })
}
