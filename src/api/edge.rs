//! The HTTP edge: what wraps every request before a handler sees it and every response after.
//! The client's address (through trusted proxies only), bounded headers and bodies, slow
//! bodies timed out, CORS for the endpoints a member site calls from the browser, response
//! hardening headers, and compression. Its settings are `crate::edge`.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use poem::http::header::{self, HeaderName};
use poem::http::{HeaderValue, Method, StatusCode};
use poem::middleware::{Cors, CorsEndpoint};
use poem::web::{Compress, CompressionAlgo, CompressionLevel};
use poem::{Endpoint, IntoResponse, Middleware, Request, Response};

use super::problem::Problem;
use super::state::{State, REQUEST_ID_HEADER};

/// Largest request body the API accepts.
pub const MAX_BODY: usize = 1024 * 1024;

/// Largest total of a request's header names and values, and its target. hyper refuses a head
/// over its buffer (about 400 KB) itself; this keeps what handlers see much smaller.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;

/// The client's address, resolved once per request by [`client_address`].
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub IpAddr);

/// The client's address: the one source of it for rate limits and logs. The peer's address,
/// or, when the peer is a trusted proxy, the one its forwarding header names
/// (`edge::TrustedProxies::client_ip`). `None` only for a request that came in other than over
/// TCP.
pub fn client_ip(req: &Request) -> Option<IpAddr> {
    req.data::<ClientIp>().map(|c| c.0)
}

fn state(req: &Request) -> poem::Result<State> {
    req.data::<State>()
        .cloned()
        .ok_or_else(|| poem::Error::from_status(StatusCode::INTERNAL_SERVER_ERROR))
}

/// Resolves the client's address (see [`client_ip`]) for everything inside.
pub async fn client_address<E: Endpoint>(next: Arc<E>, mut req: Request) -> poem::Result<Response> {
    let state = state(&req)?;
    if let Some(peer) = req
        .remote_addr()
        .as_socket_addr()
        .map(std::net::SocketAddr::ip)
    {
        let ip = state.edge.trusted_proxies.client_ip(peer, req.headers());
        req.set_data(ClientIp(ip));
    }
    next.call(req).await.map(IntoResponse::into_response)
}

/// Refuses a request whose headers (with its target) exceed [`MAX_HEADER_BYTES`] with 431, or
/// whose body is compressed with 415, and reads its body whole before the handler runs: at
/// most [`MAX_BODY`] (413, whether or not it declared its length) within the body timeout
/// (408), so a slow client holds no handler. Bodies are JSON or a webhook's payload, which
/// handlers read whole anyway; only a member import's file is streamed ([`streamed_upload`]).
pub async fn bounded_request<E: Endpoint>(
    next: Arc<E>,
    mut req: Request,
) -> poem::Result<Response> {
    let head: usize = req.uri().to_string().len()
        + req
            .headers()
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len())
            .sum::<usize>();
    if head > MAX_HEADER_BYTES {
        return Ok(Problem::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers-too-large",
            format!(
                "the request's headers are larger than {} KiB",
                MAX_HEADER_BYTES / 1024
            ),
        )
        .into_response());
    }
    // Bodies are read as sent: a compressed one would be parsed as garbage, and inflating it
    // would need a bound of its own.
    if req
        .headers()
        .get(header::CONTENT_ENCODING)
        .is_some_and(|coding| coding != "identity")
    {
        return Ok(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-content-encoding",
            "request bodies are not accepted compressed; send them without Content-Encoding",
        )
        .into_response());
    }
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let edge = state(&req)?.edge.clone();
    if is_upload(&req) {
        if declared.is_some_and(|len| len > edge.upload_max_bytes) {
            return Ok(upload_too_large(edge.upload_max_bytes));
        }
        return streamed_upload(next, req, edge.upload_max_bytes, edge.body_timeout).await;
    }
    let too_large = || {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload-too-large",
            "the request body is larger than 1 MiB",
        )
        .into_response()
    };
    if declared.is_some_and(|len| len > MAX_BODY as u64) {
        return Ok(too_large());
    }
    let timeout = edge.body_timeout;
    let body = req.take_body();
    match tokio::time::timeout(timeout, body.into_bytes_limit(MAX_BODY)).await {
        Ok(Ok(body)) => req.set_body(body),
        Ok(Err(poem::error::ReadBodyError::PayloadTooLarge)) => return Ok(too_large()),
        Ok(Err(err)) => {
            return Ok(
                Problem::bad_request(format!("the request body could not be read: {err}"))
                    .into_response(),
            )
        }
        Err(_) => {
            return Ok(Problem::new(
                StatusCode::REQUEST_TIMEOUT,
                "request-timeout",
                format!(
                    "the request body did not arrive within {} s",
                    timeout.as_secs()
                ),
            )
            .into_response())
        }
    }
    next.call(req).await.map(IntoResponse::into_response)
}

/// Whether the request is an upload too large to read whole before its handler: a member
/// import's CSV file (`POST /v1/members/imports`).
fn is_upload(req: &Request) -> bool {
    req.method() == Method::POST && req.uri().path().trim_end_matches('/') == "/v1/members/imports"
}

fn upload_too_large(max: u64) -> Response {
    Problem::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload-too-large",
        format!(
            "the file is larger than {} MiB (MEMBER_IMPORT_MAX_MB)",
            max / (1024 * 1024)
        ),
    )
    .into_response()
}

/// Passes an upload's body on as a stream (the handler stores it as it arrives): each part
/// within `timeout` of the previous one (408) and `max` bytes in all (413), whether or not it
/// declared its length. The handler sees a failing stream; its answer is then replaced by the
/// 413 or 408.
async fn streamed_upload<E: Endpoint>(
    next: Arc<E>,
    mut req: Request,
    max: u64,
    timeout: Duration,
) -> poem::Result<Response> {
    use futures::StreamExt;
    use std::sync::atomic::{AtomicU8, Ordering};
    const TOO_LARGE: u8 = 1;
    const TOO_SLOW: u8 = 2;
    let cut = Arc::new(AtomicU8::new(0));
    let body = req.take_body().into_bytes_stream();
    let flag = cut.clone();
    let limited = futures::stream::try_unfold((body, 0u64), move |(mut body, seen)| {
        let flag = flag.clone();
        async move {
            let chunk = match tokio::time::timeout(timeout, body.next()).await {
                Err(_) => {
                    flag.store(TOO_SLOW, Ordering::Relaxed);
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the upload stalled",
                    ));
                }
                Ok(None) => return Ok(None),
                Ok(Some(chunk)) => chunk?,
            };
            let seen = seen + chunk.len() as u64;
            if seen > max {
                flag.store(TOO_LARGE, Ordering::Relaxed);
                return Err(std::io::Error::other("the upload is too large"));
            }
            Ok(Some((chunk, (body, seen))))
        }
    });
    req.set_body(poem::Body::from_bytes_stream(limited));
    let response = next.call(req).await.map(IntoResponse::into_response);
    match cut.load(Ordering::Relaxed) {
        TOO_LARGE => Ok(upload_too_large(max)),
        TOO_SLOW => Ok(Problem::new(
            StatusCode::REQUEST_TIMEOUT,
            "request-timeout",
            format!(
                "the upload stalled: no part of it arrived within {} s",
                timeout.as_secs()
            ),
        )
        .into_response()),
        _ => response,
    }
}

/// `X-Content-Type-Options`, `Referrer-Policy` and (when `PUBLIC_URL` is https)
/// `Strict-Transport-Security` on every response; `Cache-Control: no-store` on every API
/// answer (they carry members' data, session tokens, or credentials were sent), unless the
/// handler chose a policy itself. The spec and Swagger UI stay cacheable.
pub async fn harden<E: Endpoint>(next: Arc<E>, req: Request) -> poem::Result<Response> {
    let hsts = state(&req)?.edge.hsts;
    let path = req.uri().path();
    let private = req.headers().contains_key(header::AUTHORIZATION)
        || path.starts_with("/v1/")
        || path.starts_with("/webhooks/");
    let mut resp = next.call(req).await?.into_response();
    let headers = resp.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if hsts {
        headers.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
    if private && !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    Ok(resp)
}

/// The coding the client prefers among brotli and gzip (`Accept-Encoding`, by q-value; brotli
/// on a tie), if any.
fn preferred_coding(req: &Request) -> Option<CompressionAlgo> {
    let mut best: Option<(CompressionAlgo, u16)> = None;
    for item in req
        .headers()
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
    {
        let mut parts = item.split(';');
        let coding = parts.next().unwrap_or_default().trim();
        let algo = if coding.eq_ignore_ascii_case("br") {
            CompressionAlgo::BR
        } else if coding.eq_ignore_ascii_case("gzip") {
            CompressionAlgo::GZIP
        } else {
            continue;
        };
        // q in thousandths: `q=0` refuses the coding.
        let q = parts
            .filter_map(|p| p.trim().strip_prefix("q="))
            .find_map(|q| q.trim().parse::<f32>().ok())
            .map_or(1000, |q| (q.clamp(0.0, 1.0) * 1000.0).round() as u16);
        let better = match best {
            None => true,
            Some((held, held_q)) => {
                q > held_q || (q == held_q && algo == CompressionAlgo::BR && held != algo)
            }
        };
        if q > 0 && better {
            best = Some((algo, q));
        }
    }
    best.map(|(algo, _)| algo)
}

/// Compresses responses with brotli or gzip when the client accepts it (the spec and Swagger UI
/// are 1.9 MB as they are). Not empty bodies, `HEAD`, 204/304, nor a body already encoded.
/// Brotli at quality 4: near gzip's speed, smaller output; its default (11) is far slower.
pub async fn compress<E: Endpoint>(next: Arc<E>, req: Request) -> poem::Result<Response> {
    let coding = if req.method() == Method::HEAD {
        None
    } else {
        preferred_coding(&req)
    };
    let mut resp = next.call(req).await?.into_response();
    resp.headers_mut()
        .append(header::VARY, HeaderValue::from_static("accept-encoding"));
    let Some(algo) = coding else {
        return Ok(resp);
    };
    let status = resp.status();
    let body = resp.take_body();
    let empty = body.is_empty();
    resp.set_body(body);
    if empty
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
        || status.is_informational()
        || resp.headers().contains_key(header::CONTENT_ENCODING)
    {
        return Ok(resp);
    }
    let level = match algo {
        CompressionAlgo::BR => CompressionLevel::Precise(4),
        _ => CompressionLevel::Default,
    };
    Ok(Compress::new(resp, algo)
        .with_quality(level)
        .into_response())
}

/// Whether a member site calls this path from the browser: sign-in, checkout, license
/// validation, and the signed-in member's own `/v1/me` (which sign-in's session token is for).
fn is_browser_path(path: &str) -> bool {
    path.starts_with("/v1/auth/")
        || path.starts_with("/v1/checkout/")
        || path == "/v1/licenses/validate"
        || path == "/v1/me"
        || path.starts_with("/v1/me/")
}

/// CORS for the browser paths ([`is_browser_path`]), for the origins of
/// `CORS_ALLOWED_ORIGINS` only: their preflights are answered, their requests get
/// `Access-Control-Allow-Origin`. A request from any other origin is served as if CORS did not
/// exist (no CORS headers, so the browser withholds the answer); poem's `Cors` would refuse it
/// with 403. No origins configured: no CORS headers anywhere. Credentials are bearer tokens,
/// never cookies, so `Allow-Credentials` is not sent.
pub struct BrowserCors {
    origins: Vec<HeaderValue>,
}

impl BrowserCors {
    pub fn new(origins: &[String]) -> Self {
        Self {
            origins: origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o).ok())
                .collect(),
        }
    }
}

impl<E: Endpoint + 'static> Middleware<E> for BrowserCors {
    type Output = BrowserCorsEndpoint<E>;

    fn transform(&self, ep: E) -> Self::Output {
        let inner = Arc::new(ep);
        let cors = Cors::new()
            .allow_origins(self.origins.iter().cloned())
            .allow_methods([Method::GET, Method::POST, Method::PATCH, Method::DELETE])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                HeaderName::from_static(REQUEST_ID_HEADER),
            ])
            .expose_headers([
                HeaderName::from_static(REQUEST_ID_HEADER),
                header::RETRY_AFTER,
            ])
            .max_age(3600)
            .transform(inner.clone());
        BrowserCorsEndpoint {
            inner,
            cors,
            origins: self.origins.clone(),
        }
    }
}

pub struct BrowserCorsEndpoint<E> {
    inner: Arc<E>,
    cors: CorsEndpoint<Arc<E>>,
    origins: Vec<HeaderValue>,
}

impl<E: Endpoint> Endpoint for BrowserCorsEndpoint<E> {
    type Output = Response;

    async fn call(&self, req: Request) -> poem::Result<Response> {
        if self.origins.is_empty() || !is_browser_path(req.uri().path()) {
            return self.inner.call(req).await.map(IntoResponse::into_response);
        }
        let allowed = req
            .headers()
            .get(header::ORIGIN)
            .is_some_and(|origin| self.origins.contains(origin));
        let mut resp = if allowed {
            // Only a preflight asking for a method or header not allowed fails here.
            self.cors
                .call(req)
                .await
                .unwrap_or_else(|err| Problem::from_poem(&err).into_response())
        } else {
            self.inner.call(req).await?.into_response()
        };
        // The answer depends on the Origin: shared caches must keep one per origin.
        resp.headers_mut()
            .append(header::VARY, HeaderValue::from_static("origin"));
        Ok(resp)
    }
}

/// A 429 for a rate limit that refused `what`, with the whole seconds to put in
/// `Retry-After`. (Whoever applied the limit counts the refusal: `crate::metrics::rate_limited`.)
pub fn too_many_requests(wait: Duration, what: &str) -> (Problem, u64) {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let secs = secs.max(1);
    (
        Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate-limited",
            format!("too many {what}; retry in {secs} s"),
        ),
        secs,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accepting(value: &'static str) -> Request {
        Request::builder()
            .header(header::ACCEPT_ENCODING, value)
            .finish()
    }

    #[test]
    fn brotli_is_preferred_on_a_tie_and_q_values_decide_otherwise() {
        assert_eq!(
            preferred_coding(&accepting("gzip, deflate, br")),
            Some(CompressionAlgo::BR)
        );
        assert_eq!(
            preferred_coding(&accepting("br;q=0.5, gzip")),
            Some(CompressionAlgo::GZIP)
        );
        assert_eq!(preferred_coding(&accepting("gzip;q=0, br;q=0")), None);
        assert_eq!(preferred_coding(&accepting("identity, deflate")), None);
    }

    #[test]
    fn browser_paths_are_the_public_ones_and_the_members_own() {
        for path in [
            "/v1/auth/code",
            "/v1/checkout/sessions",
            "/v1/licenses/validate",
            "/v1/me",
            "/v1/me/sites",
        ] {
            assert!(is_browser_path(path), "{path}");
        }
        for path in ["/v1/members", "/v1/mex", "/v1/events", "/webhooks/stripe"] {
            assert!(!is_browser_path(path), "{path}");
        }
    }
}
