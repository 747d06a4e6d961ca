//! Rendering pages: a template to an HTML response, redirects, error pages, and problems of
//! the API said in words.

use askama::Template;
use poem::http::{header, StatusCode};
use poem::Response;

use crate::api::problem::Problem;

/// What every page's frame shows: its title, the integrity token for its forms (the sign-out
/// button is one), which navigation, and a notice.
#[derive(Debug, Clone, Default)]
pub struct Layout {
    pub title: String,
    pub csrf: String,
    pub member_nav: bool,
    pub admin_nav: bool,
    pub notice: Option<Notice>,
}

/// A message shown above a page's content: what just happened, or what went wrong and which
/// fields to fix.
#[derive(Debug, Clone, Default)]
pub struct Notice {
    pub error: bool,
    pub text: String,
    /// (field label, reason)
    pub fields: Vec<(String, String)>,
}

impl Notice {
    pub fn info(text: impl Into<String>) -> Self {
        Self {
            error: false,
            text: text.into(),
            fields: Vec::new(),
        }
    }

    pub fn error(text: impl Into<String>) -> Self {
        Self {
            error: true,
            text: text.into(),
            fields: Vec::new(),
        }
    }

    /// An API problem in words a member understands: its detail (the API's details are written
    /// for people), the fields at fault with their reasons, and for the statuses whose detail
    /// is technical, a plain sentence instead.
    pub fn from_problem(problem: &Problem) -> Self {
        let text = match problem.status {
            422 if !problem.errors.is_empty() => "Some fields need fixing.".to_owned(),
            429 => format!(
                "Too many tries. {}",
                problem
                    .detail
                    .as_deref()
                    .and_then(|d| d.split("; ").nth(1))
                    .map(sentence)
                    .unwrap_or_else(|| "Wait a moment and try again.".to_owned())
            ),
            500 => "Something went wrong on our side. Try again in a moment.".to_owned(),
            503 => format!(
                "The service is busy or briefly unavailable: nothing was changed. Try again in a moment.{}",
                problem
                    .detail
                    .as_deref()
                    .map(|d| format!(" ({})", sentence(d)))
                    .unwrap_or_default()
            ),
            _ => problem
                .detail
                .as_deref()
                .map(sentence)
                .unwrap_or_else(|| problem.title.clone()),
        };
        Self {
            error: true,
            text,
            fields: problem
                .errors
                .iter()
                .map(|e| (field_label(&e.field), sentence(&e.reason)))
                .collect(),
        }
    }
}

/// "a site is already licensed" → "A site is already licensed."
fn sentence(text: &str) -> String {
    let mut chars = text.trim().chars();
    let mut out: String = match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => return String::new(),
    };
    if !out.ends_with(['.', '!', '?', ')']) {
        out.push('.');
    }
    out
}

/// An API field name as the form calls it.
fn field_label(field: &str) -> String {
    let base = field.split(['[', '.']).next().unwrap_or(field);
    match base {
        "email" | "new_email" => "Email",
        "name" => "Name",
        "code" => "Code",
        "token" => "Link",
        "sites" | "domain" | "site" => "Site",
        "quantity" => "Number of keys",
        _ => base,
    }
    .to_owned()
}

/// A rendered template, 200.
pub fn html(template: &impl Template) -> Response {
    html_status(StatusCode::OK, template)
}

/// A rendered template with `status`; a template that fails to render (it cannot, short of a
/// bug: they are checked at compile time) is logged and answered with a plain error page.
pub fn html_status(status: StatusCode, template: &impl Template) -> Response {
    match template.render() {
        Ok(body) => Response::builder()
            .status(status)
            .content_type("text/html; charset=utf-8")
            .body(body),
        Err(err) => {
            tracing::error!(error = %err, "rendering a page");
            error_page(StatusCode::INTERNAL_SERVER_ERROR, "")
        }
    }
}

/// 303 See Other: after a form, the browser loads `location` with a GET.
pub fn see_other(location: &str) -> Response {
    Response::builder()
        .status(StatusCode::SEE_OTHER)
        .header(header::LOCATION, location)
        .finish()
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    title: &'a str,
    message: String,
    /// Where to start again: the admin console's overview for its pages, else the account.
    home: &'static str,
    home_label: &'static str,
}

/// A page for an error outside a handler's own (unknown page, wrong method, unreadable form,
/// an integrity token missing), in words, linking back to the member's account.
pub fn error_page(status: StatusCode, detail: &str) -> Response {
    error_page_at("/account", status, detail)
}

/// [`error_page`] for a request to `path`: an admin console page links back to the console.
pub fn error_page_at(path: &str, status: StatusCode, detail: &str) -> Response {
    let (title, message) = match status {
        StatusCode::NOT_FOUND => (
            "Page not found",
            "There is no page at this address. Check the link, or start again from the link below.".to_owned(),
        ),
        StatusCode::FORBIDDEN => (
            "This form has expired",
            "The form was not sent from this site or has expired. Go back, reload the page, and try again.".to_owned(),
        ),
        StatusCode::METHOD_NOT_ALLOWED => (
            "Not available",
            "This page cannot be opened this way. Start again from the link below.".to_owned(),
        ),
        StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY | StatusCode::UNSUPPORTED_MEDIA_TYPE => (
            "The form could not be read",
            "Some of what was sent is missing or not in the expected form. Go back and check the form.".to_owned(),
        ),
        StatusCode::TOO_MANY_REQUESTS => (
            "Too many tries",
            "Wait a moment, then try again.".to_owned(),
        ),
        StatusCode::SERVICE_UNAVAILABLE => (
            "Briefly unavailable",
            "The service is busy or briefly unavailable. Try again in a moment.".to_owned(),
        ),
        _ => (
            "Something went wrong",
            "Something went wrong on our side. Try again in a moment.".to_owned(),
        ),
    };
    if status.is_server_error() && !detail.is_empty() {
        tracing::warn!(%status, detail, "a page answered with an error");
    }
    let (home, home_label) = if path.starts_with("/admin") {
        ("/admin", "Go to the admin console")
    } else {
        ("/account", "Go to your account")
    };
    let page = ErrorPage {
        title,
        message,
        home,
        home_label,
    };
    match page.render() {
        Ok(body) => Response::builder()
            .status(status)
            .content_type("text/html; charset=utf-8")
            .body(body),
        Err(_) => Response::builder().status(status).body(title),
    }
}

/// Minor units as money: `1999, "usd"` → `19.99 USD`.
pub fn money(amount: i64, currency: &str) -> String {
    let sign = if amount < 0 { "-" } else { "" };
    let abs = amount.unsigned_abs();
    format!(
        "{sign}{}.{:02} {}",
        abs / 100,
        abs % 100,
        currency.to_uppercase()
    )
}

/// A date as people read it, in UTC: `6 Dec 2026`.
pub fn date(at: chrono::DateTime<chrono::Utc>) -> String {
    at.format("%-d %b %Y").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_and_dates_read_as_people_write_them() {
        assert_eq!(money(1999, "usd"), "19.99 USD");
        assert_eq!(money(-500, "eur"), "-5.00 EUR");
        assert_eq!(money(7, "usd"), "0.07 USD");
        let at = chrono::DateTime::parse_from_rfc3339("2026-12-06T10:00:00Z")
            .expect("date")
            .to_utc();
        assert_eq!(date(at), "6 Dec 2026");
    }

    #[test]
    fn a_problem_is_said_in_words_with_its_fields() {
        let problem = Problem::validation(vec![crate::api::problem::FieldError::new(
            "sites[0]",
            "is not a domain name",
        )]);
        let notice = Notice::from_problem(&problem);
        assert!(notice.error);
        assert_eq!(notice.text, "Some fields need fixing.");
        assert_eq!(
            notice.fields,
            vec![("Site".to_owned(), "Is not a domain name.".to_owned())]
        );
        let conflict = Problem::conflict("x", "a site is already on your subscription");
        assert_eq!(
            Notice::from_problem(&conflict).text,
            "A site is already on your subscription."
        );
    }
}
