//! What wraps every request: a request id (taken or made, echoed, in every log line of the
//! request, with the client's address). The edge's limits are `edge.rs`.

use std::sync::Arc;
use std::time::Instant;

use poem::http::HeaderValue;
use poem::{Endpoint, IntoResponse, Request, Response};
use tracing::Instrument;

use super::state::{RequestId, REQUEST_ID_HEADER};

/// Gives every request an id (echoed in `X-Request-Id`), runs it inside a span carrying that
/// id so every log line of the request names it, and logs its outcome.
pub async fn with_request_id<E: Endpoint>(
    next: Arc<E>,
    mut req: Request,
) -> poem::Result<Response> {
    let id = req
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(|| uuid::Uuid::now_v7().to_string(), str::to_owned);
    req.set_data(RequestId(id.clone()));
    let client_ip = super::edge::client_ip(&req).map(|ip| ip.to_string());
    let span = tracing::info_span!("request", request_id = %id, client_ip = client_ip.as_deref(), method = %req.method(), path = %req.uri().path());
    async move {
        let started = Instant::now();
        let mut resp = next
            .call(req)
            .await
            .map_or_else(|err| err.into_response(), IntoResponse::into_response);
        if let Ok(value) = HeaderValue::from_str(&id) {
            resp.headers_mut().insert(REQUEST_ID_HEADER, value);
        }
        let status = resp.status().as_u16();
        let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
        if resp.status().is_server_error() {
            tracing::error!(status, elapsed_ms, "request failed");
        } else {
            tracing::info!(status, elapsed_ms, "request served");
        }
        Ok(resp)
    }
    .instrument(span)
    .await
}
