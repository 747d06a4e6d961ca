//! Every 503 tells the client when to retry: `Retry-After` is added to any 503 that does not
//! carry one (a database that is down or busy, a statement or pool timeout, an unconfigured
//! dependency), so no handler has to remember it.

use std::sync::Arc;

use poem::http::{header::RETRY_AFTER, HeaderValue, StatusCode};
use poem::{Endpoint, IntoResponse, Request, Response};

use crate::bounds::RETRY_AFTER_SECS;

pub async fn on_unavailable<E: Endpoint>(next: Arc<E>, req: Request) -> poem::Result<Response> {
    let mut resp = next
        .call(req)
        .await
        .map_or_else(|err| err.into_response(), IntoResponse::into_response);
    if resp.status() == StatusCode::SERVICE_UNAVAILABLE && !resp.headers().contains_key(RETRY_AFTER)
    {
        resp.headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
    }
    Ok(resp)
}
