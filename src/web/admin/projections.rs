//! Projections and policies: where each stands (position, lag, stalled with its error), and
//! a Rebuild button with the rebuild's progress (`GET /v1/projections`,
//! `POST /v1/projections/{name}/rebuild`). While a rebuild runs the page reloads itself every
//! few seconds (a `Refresh` header: no script).

use askama::Template;
use poem::http::{HeaderValue, StatusCode};
use poem::web::{Data, Query};
use poem::{handler, Request, Response};
use serde::Deserialize;

use super::{admin_form, admin_layout, signed_in, unavailable};
use crate::api::projections_api::{start_rebuild, views, ProjectionView};
use crate::api::state::State;
use crate::web::page::{self, Layout, Notice};

/// Seconds between reloads while a rebuild runs.
const REFRESH_SECS: u32 = 2;

#[derive(Template)]
#[template(path = "admin/projections.html")]
struct ProjectionsPage {
    layout: Layout,
    rows: Vec<Row>,
    running: bool,
    refresh_secs: u32,
}

struct Row {
    name: String,
    version: String,
    /// Written in its events' transaction: no position of its own, never behind.
    inline: bool,
    position: i64,
    lag: String,
    stalled: bool,
    status: String,
    stuck_position: Option<i64>,
    rebuildable: bool,
    rebuild_running: bool,
    rebuild: Option<RebuildRow>,
}

struct RebuildRow {
    state: String,
    applied: i64,
    total: i64,
    percent: i64,
    detail: String,
}

fn row(view: ProjectionView, rebuildable: bool, inline: bool) -> Row {
    let stalled = view.last_error.is_some() || view.stuck_position.is_some();
    let status = match (&view.last_error, view.stuck_position, view.stuck_since) {
        (None, None, _) => "Running".to_owned(),
        (error, position, since) => {
            let mut text = "Stalled".to_owned();
            if let Some(position) = position {
                text.push_str(&format!(" on the event at position {position}"));
            }
            if let Some(since) = since {
                text.push_str(&format!(
                    " since {}",
                    since.format("%-d %b %Y %H:%M:%S UTC")
                ));
            }
            if let Some(error) = error {
                text.push_str(&format!(": {error}"));
            }
            text
        }
    };
    let version = if view.version == view.code_version {
        view.version.to_string()
    } else {
        format!(
            "{} (the code's is {}: rebuild to change)",
            view.version, view.code_version
        )
    };
    let lag = if view.lag_events == 0 {
        "caught up".to_owned()
    } else {
        let more = if view.lag_events >= crate::eventlog::BACKLOG_COUNTED_UP_TO {
            " or more"
        } else {
            ""
        };
        format!(
            "{} events{more}, {:.1} s",
            view.lag_events,
            view.lag_ms as f64 / 1000.0
        )
    };
    Row {
        rebuild_running: view.rebuild.as_ref().is_some_and(|r| r.state == "running"),
        rebuild: view.rebuild.map(|r| {
            let percent = if r.events_total > 0 {
                (r.events_applied.saturating_mul(100) / r.events_total).clamp(0, 100)
            } else if r.state == "done" {
                100
            } else {
                0
            };
            let detail = match r.state.as_str() {
                "running" => format!(
                    "{:.0} events/s{}",
                    r.events_per_second,
                    r.eta_seconds
                        .map(|eta| format!(", about {eta:.0} s left"))
                        .unwrap_or_default()
                ),
                "failed" => r.error.clone().unwrap_or_default(),
                _ => r
                    .finished_at
                    .map(|at| format!("finished {}", at.format("%-d %b %Y %H:%M:%S UTC")))
                    .unwrap_or_default(),
            };
            RebuildRow {
                state: r.state,
                applied: r.events_applied,
                total: r.events_total,
                percent,
                detail,
            }
        }),
        name: view.name,
        version,
        inline,
        position: view.global_position,
        lag,
        stalled,
        stuck_position: view.stuck_position,
        status,
        rebuildable,
    }
}

#[derive(Deserialize)]
pub struct ListQuery {
    done: Option<String>,
}

#[handler]
pub async fn list(req: &Request, state: Data<&State>, Query(query): Query<ListQuery>) -> Response {
    if let Err(resp) = signed_in(req, &state).await {
        return resp;
    }
    let notice = match query.done.as_deref() {
        Some("rebuild") => Some(Notice::info(
            "The rebuild started. The live tables keep serving until the new ones are swapped in.",
        )),
        _ => None,
    };
    render(req, &state, notice, StatusCode::OK).await
}

async fn render(
    req: &Request,
    state: &State,
    notice: Option<Notice>,
    status: StatusCode,
) -> Response {
    let views = match views(state).await {
        Ok(views) => views,
        Err(err) => return unavailable(&err),
    };
    let known = state.projections.list();
    let rows: Vec<Row> = views
        .into_iter()
        .map(|view| {
            let known = known.iter().find(|p| p.name() == view.name);
            row(
                view,
                known.is_some_and(|p| p.rebuildable()),
                known.is_some_and(|p| p.mode() == projections::Mode::Inline),
            )
        })
        .collect();
    let running = rows.iter().any(|r| r.rebuild_running);
    let mut resp = page::html_status(
        status,
        &ProjectionsPage {
            layout: admin_layout(req, "Projections", notice),
            rows,
            running,
            refresh_secs: REFRESH_SECS,
        },
    );
    if running {
        if let Ok(value) = HeaderValue::from_str(&format!("{REFRESH_SECS}; url=/admin/projections"))
        {
            resp.headers_mut().insert("refresh", value);
        }
    }
    resp
}

#[derive(Deserialize)]
struct RebuildForm {
    #[serde(default)]
    name: String,
}

/// Starts a rebuild, as the API's does.
#[handler]
pub async fn rebuild(req: &Request, body: String, state: Data<&State>) -> Response {
    let form: RebuildForm = match admin_form(req, &body, &state).await {
        Ok(form) => form,
        Err(resp) => return resp,
    };
    if form.name.is_empty() || form.name.len() > 100 {
        return render(
            req,
            &state,
            Some(Notice::error("No projection was named to rebuild.")),
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    }
    match start_rebuild(&state, &form.name).await {
        Ok(()) => {
            tracing::info!(projection = %form.name, "admin console: a rebuild started");
            page::see_other("/admin/projections?done=rebuild")
        }
        Err(problem) => {
            render(
                req,
                &state,
                Some(Notice::from_problem(&problem)),
                problem.status_code(),
            )
            .await
        }
    }
}
