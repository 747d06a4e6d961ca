//! Billing: a Stripe Billing Portal session (update the payment method, cancel at period end
//! or resume). Filled in by the billing work; until then the form answers that it is not
//! available.

use poem::{handler, Response};

#[handler]
pub async fn open() -> Response {
    super::super::page::error_page(poem::http::StatusCode::NOT_FOUND, "")
}
