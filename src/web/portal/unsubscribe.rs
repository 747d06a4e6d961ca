//! Unsubscribing from an email's link, without signing in: `?member=<id>&key=<hmac>` (see
//! `crate::links`). The page lists the member's newsletters with a button for each and one for
//! all; the buttons post the same member and key back (with the form's integrity token), and
//! the change goes through the member command bus as the API's does. A link whose key does not
//! match changes nothing and says so.

use askama::Template;
use chrono::Utc;
use poem::http::StatusCode;
use poem::web::{Data, Query};
use poem::{get, handler, Request, Response, Route};
use serde::Deserialize;
use uuid::Uuid;

use super::member_layout;
use crate::api::state::{RequestId, State};
use crate::store::{Actor, EventMetadata};
use crate::web::page::{self, Layout, Notice};
use crate::web::{forms, WebKeys};

pub fn routes() -> Route {
    Route::new().at("/", get(show).post(unsubscribe))
}

#[derive(Template)]
#[template(path = "portal/unsubscribe.html")]
struct UnsubscribePage {
    layout: Layout,
    member: Uuid,
    key: String,
    email: String,
    newsletters: Vec<Subscribed>,
}

#[derive(sqlx::FromRow)]
struct Subscribed {
    id: Uuid,
    name: String,
}

#[derive(Template)]
#[template(path = "portal/bad_link.html")]
struct BadLinkPage {
    layout: Layout,
    message: &'static str,
}

fn layout(req: &Request, title: &str, notice: Option<Notice>) -> Layout {
    Layout {
        member_nav: false,
        ..member_layout(req, title, notice)
    }
}

/// The member the link names, when its key is theirs; else the page to answer.
fn check(req: &Request, keys: &WebKeys, member: &str, key: &str) -> Result<Uuid, Response> {
    match member.trim().parse::<Uuid>() {
        Ok(member_id) if crate::links::unsubscribe_key_valid(&keys.links, member_id, key) => {
            Ok(member_id)
        }
        _ => Err(page::html_status(
            StatusCode::FORBIDDEN,
            &BadLinkPage {
                layout: layout(req, "This unsubscribe link does not work", None),
                message: "The link is incomplete or was changed, so nothing was changed. Open the unsubscribe link in the email again, or sign in to choose your newsletters.",
            },
        )),
    }
}

#[derive(Deserialize)]
pub struct LinkQuery {
    #[serde(default)]
    member: String,
    #[serde(default)]
    key: String,
    done: Option<String>,
}

#[handler]
pub async fn show(
    req: &Request,
    state: Data<&State>,
    keys: Data<&WebKeys>,
    Query(query): Query<LinkQuery>,
) -> Response {
    let member_id = match check(req, &keys, &query.member, &query.key) {
        Ok(id) => id,
        Err(resp) => return resp,
    };
    let notice = match query.done.as_deref() {
        Some("all") => Some(Notice::info(
            "You are unsubscribed from all newsletters. You will get no more of them.",
        )),
        Some("one") => Some(Notice::info("You are unsubscribed from that newsletter.")),
        _ => None,
    };
    render(req, &state, member_id, query.key.trim(), notice).await
}

async fn render(
    req: &Request,
    state: &State,
    member_id: Uuid,
    key: &str,
    notice: Option<Notice>,
) -> Response {
    let email: Option<String> = match sqlx::query_scalar(
        "SELECT email FROM member_emails WHERE member_id = $1 ORDER BY reserved_at DESC LIMIT 1",
    )
    .bind(member_id)
    .fetch_optional(&state.pool)
    .await
    {
        Ok(email) => email,
        Err(err) => return page::error_page(StatusCode::SERVICE_UNAVAILABLE, &err.to_string()),
    };
    let Some(email) = email else {
        return page::html_status(
            StatusCode::NOT_FOUND,
            &BadLinkPage {
                layout: layout(req, "No such member", None),
                message: "This link belongs to a membership that no longer exists, so there is nothing to unsubscribe from.",
            },
        );
    };
    let newsletters: Vec<Subscribed> = match sqlx::query_as(
        "SELECT n.id, n.name FROM member_newsletters m JOIN newsletters n ON n.id = m.newsletter_id
         WHERE m.member_id = $1 ORDER BY n.name, n.id",
    )
    .bind(member_id)
    .fetch_all(&state.pool)
    .await
    {
        Ok(rows) => rows,
        Err(err) => return page::error_page(StatusCode::SERVICE_UNAVAILABLE, &err.to_string()),
    };
    page::html(&UnsubscribePage {
        layout: layout(req, "Unsubscribe", notice),
        member: member_id,
        key: key.to_owned(),
        email,
        newsletters,
    })
}

#[derive(Deserialize)]
struct UnsubscribeForm {
    #[serde(default)]
    member: String,
    #[serde(default)]
    key: String,
    /// One newsletter; absent: all of them.
    newsletter: Option<Uuid>,
}

/// Whether a post is RFC 8058's one-click unsubscribe (a mail client's, from the
/// `List-Unsubscribe-Post` header): `List-Unsubscribe=One-Click`, the member and key in the URL.
/// RFC 8058 allows the field urlencoded or as `multipart/form-data`.
fn one_click(body: &str) -> bool {
    let urlencoded =
        serde_urlencoded::from_str::<Vec<(String, String)>>(body).is_ok_and(|fields| {
            fields
                .iter()
                .any(|(name, value)| name == "List-Unsubscribe" && value == "One-Click")
        });
    let multipart = body.contains("name=\"List-Unsubscribe\"")
        && body.lines().any(|line| line.trim() == "One-Click");
    urlencoded || multipart
}

#[handler]
pub async fn unsubscribe(
    req: &Request,
    body: String,
    state: Data<&State>,
    keys: Data<&WebKeys>,
    request_id: Data<&RequestId>,
    Query(query): Query<LinkQuery>,
) -> Response {
    if one_click(&body) {
        // No form and no integrity token: the mail client posts, and the signed link is the
        // only proof needed (as it is for the page's buttons).
        let member_id = match check(req, &keys, &query.member, &query.key) {
            Ok(id) => id,
            Err(resp) => return resp,
        };
        return match leave(&state, &request_id.0 .0, member_id, None).await {
            Ok(()) => Response::builder()
                .status(StatusCode::OK)
                .content_type("text/plain; charset=utf-8")
                .body("Unsubscribed from all newsletters."),
            Err(problem) => Response::builder()
                .status(problem.status_code())
                .content_type("text/plain; charset=utf-8")
                .body(
                    problem
                        .detail
                        .clone()
                        .unwrap_or_else(|| problem.title.clone()),
                ),
        };
    }
    let form: UnsubscribeForm = match forms::read(req, &body) {
        Ok(form) => form,
        Err(resp) => return resp,
    };
    let member_id = match check(req, &keys, &form.member, &form.key) {
        Ok(id) => id,
        Err(resp) => return resp,
    };
    if let Err(problem) = leave(&state, &request_id.0 .0, member_id, form.newsletter).await {
        return render(
            req,
            &state,
            member_id,
            form.key.trim(),
            Some(Notice::from_problem(&problem)),
        )
        .await;
    }
    let done = if form.newsletter.is_some() {
        "one"
    } else {
        "all"
    };
    page::see_other(&format!(
        "/account/unsubscribe?member={member_id}&key={}&done={done}",
        form.key.trim()
    ))
}

/// Unsubscribes `member_id` from `newsletter`, or from all of them.
async fn leave(
    state: &State,
    request_id: &str,
    member_id: Uuid,
    newsletter: Option<Uuid>,
) -> Result<(), crate::api::problem::Problem> {
    let subscribed: Vec<Uuid> =
        sqlx::query_scalar("SELECT newsletter_id FROM member_newsletters WHERE member_id = $1")
            .bind(member_id)
            .fetch_all(&state.pool)
            .await
            .map_err(crate::api::problem::db_error)?;
    let leaving: Vec<Uuid> = match newsletter {
        Some(one) => subscribed.into_iter().filter(|id| *id == one).collect(),
        None => subscribed,
    };
    for newsletter_id in leaving {
        let metadata = EventMetadata::for_request(request_id, Actor::Member(member_id));
        let command = aggregates::MemberCommand::UnsubscribeNewsletter {
            newsletter_id,
            at: Utc::now(),
        };
        state
            .members
            .execute(&member_id.to_string(), command, metadata)
            .await
            .map_err(|err| {
                crate::api::problem::command_error(err)
                    .when_unavailable("the change could not be saved; retry")
            })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn one_click_posts_are_told_from_the_pages_forms() {
        assert!(super::one_click("List-Unsubscribe=One-Click"));
        let multipart = "--b\r\nContent-Disposition: form-data; name=\"List-Unsubscribe\"\r\n\r\nOne-Click\r\n--b--\r\n";
        assert!(super::one_click(multipart));
        assert!(!super::one_click("csrf_token=x&member=m&key=k"));
        assert!(!super::one_click("List-Unsubscribe=Other"));
        assert!(!super::one_click(""));
    }
}
