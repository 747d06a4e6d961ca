//! What a member does from the dashboard: add sites and buy keys (on to Stripe Checkout),
//! remove a site (after a confirmation page), activate a seat key on a domain and release it.
//! Each calls the API's own function for it, so the rules and limits are the same.

use askama::Template;
use poem::web::{Data, Query};
use poem::{handler, Request, Response};
use serde::Deserialize;

use super::dashboard::render;
use super::{member_layout, signed_in};
use crate::api::license_purchases::{LicensePurchaseRequest, LicensePurchasesApi};
use crate::api::licenses::LicensesApi;
use crate::api::problem::{FieldError, Problem};
use crate::api::sites::{AddSitesRequest, SitesApi};
use crate::api::state::{RequestId, State};
use crate::web::forms;
use crate::web::page::{self, Layout, Notice};

/// The most sites one form adds, as the API allows.
const MAX_SITES: usize = 20;

/// Signed in and the form's integrity token checked, or the answer instead.
async fn member_form<T: serde::de::DeserializeOwned>(
    req: &Request,
    body: &str,
    state: &State,
) -> Result<(uuid::Uuid, T), Response> {
    let member_id = signed_in(req, state).await?;
    let form = forms::read(req, body)?;
    Ok((member_id, form))
}

/// Where Checkout sends the member back to.
fn return_urls(state: &State) -> (String, String) {
    (
        format!("{}/account?done=paid", state.public_url),
        format!("{}/account?done=checkout-cancelled", state.public_url),
    )
}

/// On to Stripe's page, or the dashboard with why not.
async fn to_checkout(
    req: &Request,
    state: &State,
    member_id: uuid::Uuid,
    url: Result<Option<String>, Problem>,
) -> Response {
    match url {
        Ok(Some(url)) => page::see_other(&url),
        Ok(None) => {
            render(
                req,
                state,
                member_id,
                Some(Notice::error(
                    "Stripe did not give a payment page; nothing was bought. Try again.",
                )),
            )
            .await
        }
        Err(problem) => render(req, state, member_id, Some(Notice::from_problem(&problem))).await,
    }
}

/// Back to the dashboard saying what was `done`, or the dashboard with why not.
async fn to_dashboard<T>(
    req: &Request,
    state: &State,
    member_id: uuid::Uuid,
    outcome: Result<T, Problem>,
    done: &str,
) -> Response {
    match outcome {
        Ok(_) => page::see_other(&format!("/account?done={done}")),
        Err(problem) => render(req, state, member_id, Some(Notice::from_problem(&problem))).await,
    }
}

#[derive(Deserialize)]
struct SitesForm {
    #[serde(default)]
    sites: String,
}

/// Sites, one per line (or separated by commas or spaces), on to Checkout.
#[handler]
pub async fn add_sites(
    req: &Request,
    body: String,
    state: Data<&State>,
    request_id: Data<&RequestId>,
) -> Response {
    let (member_id, form): (_, SitesForm) = match member_form(req, &body, &state).await {
        Ok(ok) => ok,
        Err(resp) => return resp,
    };
    let sites: Vec<String> = form
        .sites
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    let url = if sites.is_empty() || sites.len() > MAX_SITES {
        Err(Problem::validation(vec![FieldError::new(
            "sites",
            format!("give between 1 and {MAX_SITES} domains, such as shop.example.com"),
        )]))
    } else {
        let (success_url, cancel_url) = return_urls(&state);
        SitesApi {
            state: state.clone(),
        }
        .add_sites(
            member_id,
            &request_id,
            AddSitesRequest {
                sites,
                success_url,
                cancel_url,
            },
        )
        .await
        .map(|checkout| checkout.url)
    };
    to_checkout(req, &state, member_id, url).await
}

#[derive(Deserialize)]
struct KeysForm {
    #[serde(default)]
    quantity: String,
}

/// N seat keys, on to Checkout.
#[handler]
pub async fn buy_keys(
    req: &Request,
    body: String,
    state: Data<&State>,
    request_id: Data<&RequestId>,
) -> Response {
    let (member_id, form): (_, KeysForm) = match member_form(req, &body, &state).await {
        Ok(ok) => ok,
        Err(resp) => return resp,
    };
    let url = match form.quantity.trim().parse::<u32>() {
        Ok(quantity @ 1..=100) => {
            let (success_url, cancel_url) = return_urls(&state);
            LicensePurchasesApi {
                state: state.clone(),
            }
            .purchase(
                member_id,
                &request_id,
                LicensePurchaseRequest {
                    quantity,
                    success_url,
                    cancel_url,
                },
            )
            .await
            .map(|purchase| purchase.url)
        }
        _ => Err(Problem::validation(vec![FieldError::new(
            "quantity",
            "give a whole number from 1 to 100",
        )])),
    };
    to_checkout(req, &state, member_id, url).await
}

#[derive(Template)]
#[template(path = "portal/remove_site.html")]
struct RemoveSitePage {
    layout: Layout,
    domain: String,
}

#[derive(Deserialize)]
pub struct DomainQuery {
    #[serde(default)]
    domain: String,
}

/// "Remove shop.example.com?": the confirmation before a site is removed.
#[handler]
pub async fn confirm_remove(
    req: &Request,
    state: Data<&State>,
    Query(query): Query<DomainQuery>,
) -> Response {
    if let Err(resp) = signed_in(req, &state).await {
        return resp;
    }
    page::html(&RemoveSitePage {
        layout: member_layout(req, "Remove a site", None),
        domain: query.domain,
    })
}

#[derive(Deserialize)]
struct DomainForm {
    #[serde(default)]
    domain: String,
}

#[handler]
pub async fn remove_site(
    req: &Request,
    body: String,
    state: Data<&State>,
    request_id: Data<&RequestId>,
) -> Response {
    let (member_id, form): (_, DomainForm) = match member_form(req, &body, &state).await {
        Ok(ok) => ok,
        Err(resp) => return resp,
    };
    let api = SitesApi {
        state: state.clone(),
    };
    let removed = api.remove_site(member_id, &request_id, &form.domain).await;
    to_dashboard(req, &state, member_id, removed, "site-removed").await
}

#[derive(Deserialize)]
struct KeyForm {
    #[serde(default)]
    key: String,
    #[serde(default)]
    domain: String,
}

#[handler]
pub async fn activate_key(
    req: &Request,
    body: String,
    state: Data<&State>,
    request_id: Data<&RequestId>,
) -> Response {
    let (member_id, form): (_, KeyForm) = match member_form(req, &body, &state).await {
        Ok(ok) => ok,
        Err(resp) => return resp,
    };
    let api = LicensesApi {
        state: state.clone(),
    };
    let activated = api
        .activate_on_domain(
            member_id,
            &request_id,
            crate::api::edge::client_ip(req),
            &form.key,
            &form.domain,
        )
        .await;
    to_dashboard(req, &state, member_id, activated, "key-activated").await
}

#[handler]
pub async fn release_key(
    req: &Request,
    body: String,
    state: Data<&State>,
    request_id: Data<&RequestId>,
) -> Response {
    let (member_id, form): (_, KeyForm) = match member_form(req, &body, &state).await {
        Ok(ok) => ok,
        Err(resp) => return resp,
    };
    let api = LicensesApi {
        state: state.clone(),
    };
    // The form names one domain (a machine's release button), or none: every one.
    let domain = Some(form.domain.trim()).filter(|d| !d.is_empty());
    let released = api
        .release_domain(member_id, &request_id, &form.key, domain)
        .await;
    to_dashboard(req, &state, member_id, released, "key-released").await
}
