//! What every HTTP provider needs: a client with explicit timeouts, the one send path
//! ([`send`]: request → whole answer → the provider's classification), `Retry-After` parsing,
//! and the classification of transport failures and generic status codes.
//!
//! A provider keeps only what differs: building its request and reading its own answer (a
//! [`Classify`] function of status, headers and body, unit-testable without a network).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client as Pool;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

pub use ::http::header::{self, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
pub use ::http::{Method, Request, StatusCode, Uri};

use crate::{BuildError, DeliveryError, Receipt, Timeouts};

/// The `User-Agent` notifyd sends to every provider.
pub const USER_AGENT: &str = concat!("notifyd/", env!("CARGO_PKG_VERSION"));

/// A provider's HTTP client: hyper-util's connection pool over rustls (the platform's roots),
/// with connect, read and total timeouts, and no redirects followed (a provider that
/// redirects a POST is misconfigured, and following it could resend a message elsewhere: a 3xx
/// is an answer). Nothing else sits between a request and the connection, so a send costs no
/// URL re-parsing and no middleware layers. Cheap to clone (the pool is shared).
#[derive(Clone)]
pub struct Client {
    pool: Pool<HttpsConnector<HttpConnector>, Full<Bytes>>,
    read: Duration,
    total: Duration,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("read", &self.read)
            .field("total", &self.total)
            .finish_non_exhaustive()
    }
}

/// The TLS settings every client starts from: rustls with the platform's verifier, made once
/// per process, so each channel's client does not load and parse the system's roots again.
fn tls_config() -> Result<Arc<rustls::ClientConfig>, BuildError> {
    static CONFIG: std::sync::OnceLock<Result<Arc<rustls::ClientConfig>, String>> =
        std::sync::OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
            let verifier = rustls_platform_verifier::Verifier::new(provider.clone())
                .map_err(|e| e.to_string())?;
            Ok(Arc::new(
                rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .map_err(|e| e.to_string())?
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(verifier))
                    .with_no_client_auth(),
            ))
        })
        .clone()
        .map_err(BuildError::Http)
}

/// Which HTTP versions a [`Client`] speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Versions {
    /// HTTP/1.1, or HTTP/2 when a TLS server offers it (ALPN).
    Any,
    /// HTTP/2 only: over TLS by ALPN, over plain TCP with prior knowledge (APNs).
    Http2Only,
}

/// A client with connect, read and total timeouts set, no redirects followed, and rustls only.
pub fn client(timeouts: &Timeouts) -> Result<Client, BuildError> {
    Client::new(timeouts, Versions::Any)
}

impl Client {
    /// A client speaking `versions`, with `timeouts`.
    pub fn new(timeouts: &Timeouts, versions: Versions) -> Result<Self, BuildError> {
        let tls = (*tls_config()?).clone();
        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(timeouts.connect));
        let schemes = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http();
        let connector = match versions {
            Versions::Any => schemes.enable_http1().enable_http2().wrap_connector(tcp),
            Versions::Http2Only => schemes.enable_http2().wrap_connector(tcp),
        };
        let pool = Pool::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .http2_only(versions == Versions::Http2Only)
            .build(connector);
        Ok(Self {
            pool,
            read: timeouts.read,
            total: timeouts.total,
        })
    }

    /// Sends `request` and reads the whole answer within the total timeout, each wait for the
    /// answer's head or a piece of its body within the read timeout.
    async fn exchange(&self, request: Request<Bytes>) -> Result<Answer, DeliveryError> {
        let total = self.total;
        tokio::time::timeout(total, self.exchange_unbounded(request))
            .await
            .unwrap_or_else(|_| Err(timed_out("the whole exchange", total)))
    }

    async fn exchange_unbounded(&self, request: Request<Bytes>) -> Result<Answer, DeliveryError> {
        let (mut parts, body) = request.into_parts();
        parts
            .headers
            .entry(header::USER_AGENT)
            .or_insert(HeaderValue::from_static(USER_AGENT));
        parts
            .headers
            .entry(header::ACCEPT)
            .or_insert(HeaderValue::from_static("*/*"));
        let response = tokio::time::timeout(
            self.read,
            self.pool
                .request(Request::from_parts(parts, Full::new(body))),
        )
        .await
        .map_err(|_| timed_out("waiting for the answer", self.read))?
        .map_err(|e| transport_error(&e))?;
        let (head, mut incoming) = response.into_parts();
        let mut first: Option<Bytes> = None;
        let mut rest = BytesMut::new();
        loop {
            let frame = tokio::time::timeout(self.read, incoming.frame())
                .await
                .map_err(|_| timed_out("reading the answer", self.read))?;
            let Some(frame) = frame else { break };
            let frame = frame.map_err(|e| {
                DeliveryError::transient(
                    "bad_response",
                    format!("reading the answer: {}", describe(&e)),
                )
            })?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            match &first {
                None if rest.is_empty() => first = Some(data),
                _ => {
                    if let Some(f) = first.take() {
                        rest.extend_from_slice(&f);
                    }
                    rest.extend_from_slice(&data);
                }
            }
        }
        let body = first.unwrap_or_else(|| rest.freeze());
        Ok(Answer {
            status: head.status,
            headers: head.headers,
            body,
        })
    }
}

/// A URL as a request's `Uri`: read as a URL first (as a browser would, percent-encoding
/// what needs it), then as the URI of a request. The error says why, for a config message.
pub fn uri(url: &str) -> Result<Uri, String> {
    let url = url::Url::parse(url).map_err(|e| e.to_string())?;
    Uri::try_from(url.as_str()).map_err(|e| e.to_string())
}

/// The `Authorization: Bearer` value of `token`, kept out of debug output.
pub fn bearer(token: &str) -> Result<HeaderValue, DeliveryError> {
    sensitive(format!("Bearer {token}"))
}

/// The `Authorization: Basic` value of `user` and `password`, kept out of debug output.
pub fn basic(user: &str, password: &str) -> Result<HeaderValue, DeliveryError> {
    use base64::Engine as _;
    let pair = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    sensitive(format!("Basic {pair}"))
}

fn sensitive(text: String) -> Result<HeaderValue, DeliveryError> {
    let mut value = HeaderValue::try_from(text)
        .map_err(|_| DeliveryError::transient("transport", "a credential is not a header value"))?;
    value.set_sensitive(true);
    Ok(value)
}

/// A form body of `pairs` (sent with `Content-Type: application/x-www-form-urlencoded`).
pub fn form(pairs: &[(&str, &str)]) -> Bytes {
    let mut out = form_urlencoded::Serializer::new(String::new());
    out.extend_pairs(pairs);
    Bytes::from(out.finish())
}

/// A request that could not be built (a header value a provider or a notification made that
/// is not one): the same transient `transport` failure as the client's own refusals.
pub fn unbuildable(err: impl Into<::http::Error>) -> DeliveryError {
    DeliveryError::transient("transport", format!("builder error: {}", err.into()))
}

/// A provider's whole answer: what its [`Classify`] function reads.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    /// This answer as the provider reads it.
    pub fn classify(&self, classify: Classify) -> Result<Receipt, DeliveryError> {
        classify(self.status, &self.headers, &self.body)
    }
}

/// A provider's reading of its answer: the receipt of a delivered message, or the class of its
/// failure (200-with-error bodies included). One per provider, pure.
pub type Classify = fn(StatusCode, &HeaderMap, &[u8]) -> Result<Receipt, DeliveryError>;

/// Sends `request` and reads the whole answer. Failing to get one (connect, timeout, a body cut
/// short) is a transient [`DeliveryError`] (see [`transport_error`]); any status is an answer.
pub async fn exchange(client: &Client, request: Request<Bytes>) -> Result<Answer, DeliveryError> {
    client.exchange(request).await
}

/// The one send path of an HTTP provider: request → whole answer → the provider's reading.
pub async fn send(
    client: &Client,
    request: Request<Bytes>,
    classify: Classify,
) -> Result<Receipt, DeliveryError> {
    client.exchange(request).await?.classify(classify)
}

/// The provider's requested wait: `Retry-After` (delta-seconds or an HTTP date), else a
/// rate-limit reset header (`RateLimit-Reset` in seconds, or `X-RateLimit-Reset` in seconds or as
/// a Unix time); `None` if absent or unreadable.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    retry_after_header(headers).or_else(|| rate_limit_reset(headers))
}

fn rate_limit_reset(headers: &HeaderMap) -> Option<Duration> {
    let value = headers
        .get("ratelimit-reset")
        .or_else(|| headers.get("x-ratelimit-reset"))?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()?;
    // Values this large are Unix times, not waits (a billion seconds is 31 years).
    if value > 1_000_000_000 {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .ok()?
            .as_secs();
        return Some(Duration::from_secs(value.saturating_sub(now)));
    }
    Some(Duration::from_secs(value))
}

fn retry_after_header(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    // Fractional seconds are not in RFC 9110 but some services send them. The provider chooses
    // the value: a negative, NaN, infinite or too large one (`1e20` overflows a Duration, and
    // `from_secs_f64` would panic in the send task) is ignored, not trusted.
    if let Ok(secs) = value.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).ok();
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(
        when.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// Classifies a failure to get an answer: always transient, since the message may not have
/// reached the provider and a retry is safe thanks to the idempotency key. A connect that timed
/// out is a `timeout`, as any other wait that ran out.
pub fn transport_error(err: &hyper_util::client::legacy::Error) -> DeliveryError {
    let code = if caused_by_timeout(err) {
        "timeout"
    } else if err.is_connect() {
        "connect"
    } else {
        "transport"
    };
    DeliveryError::transient(code, format!("error sending request: {}", describe(err)))
}

fn timed_out(what: &str, after: Duration) -> DeliveryError {
    DeliveryError::transient(
        "timeout",
        format!("operation timed out: {what} took over {after:?}"),
    )
}

fn caused_by_timeout(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(cause) = source {
        if cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        {
            return true;
        }
        source = cause.source();
    }
    false
}

/// The error and its causes on one line. Neither hyper's errors nor the connector's name the
/// URL (which may carry a token).
fn describe(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The generic meaning of a non-success status for an API whose status is its whole answer
/// (the `webhook` kind, Web Push): 408, 425, 5xx → transient; 429 → rate limited; 401/403 and
/// other 4xx → permanent. A JSON provider whose error body did not parse uses
/// [`classify_unrecognized`] instead.
pub fn classify_status(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> DeliveryError {
    let code = format!("http_{}", status.as_u16());
    let reason = snippet(body);
    match status.as_u16() {
        429 => DeliveryError::RateLimited {
            retry_after: retry_after(headers),
        },
        408 | 425 | 500..=599 => DeliveryError::Transient {
            code,
            reason,
            retry_after: retry_after(headers),
        },
        _ => DeliveryError::Permanent { code, reason },
    }
}

/// The meaning of a non-success answer whose body is not the provider's error format (HTML,
/// empty, truncated or foreign JSON) from a provider that always explains its errors in its
/// body: a proxy, WAF, load balancer or misrouted base URL answered, not the provider, so the
/// status says nothing about the message. 429 → rate limited; everything else → transient.
pub fn classify_unrecognized(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
) -> DeliveryError {
    let retry_after = retry_after(headers);
    if status == StatusCode::TOO_MANY_REQUESTS {
        return DeliveryError::RateLimited { retry_after };
    }
    DeliveryError::Transient {
        code: format!("http_{}", status.as_u16()),
        reason: format!("not the provider's answer: {}", snippet(body)),
        retry_after,
    }
}

/// The first 200 characters of a response body, made printable: enough to diagnose, never a
/// whole HTML error page in an attempt record.
pub fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut out: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(200)
        .collect();
    if text.chars().count() > 200 {
        out.push('…');
    }
    out.trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(retry_after: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_str(retry_after).unwrap_or_else(|_| HeaderValue::from_static("x")),
        );
        h
    }

    #[test]
    fn retry_after_in_seconds() {
        assert_eq!(retry_after(&headers("120")), Some(Duration::from_secs(120)));
    }

    #[test]
    fn retry_after_as_http_date_in_the_future() {
        let when = SystemTime::now() + Duration::from_secs(90);
        let got = retry_after(&headers(&httpdate::fmt_http_date(when))).unwrap_or_default();
        assert!(
            got > Duration::from_secs(85) && got <= Duration::from_secs(90),
            "{got:?}"
        );
    }

    #[test]
    fn retry_after_in_the_past_is_zero() {
        assert_eq!(
            retry_after(&headers("Wed, 21 Oct 2015 07:28:00 GMT")),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn a_rate_limit_reset_header_is_used_without_retry_after() {
        let mut h = HeaderMap::new();
        h.insert("ratelimit-reset", HeaderValue::from_static("12"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(12)));
        let mut h = HeaderMap::new();
        let at = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
            + 30;
        h.insert(
            "x-ratelimit-reset",
            HeaderValue::from_str(&at.to_string()).unwrap_or(HeaderValue::from_static("0")),
        );
        let got = retry_after(&h).unwrap_or_default();
        assert!(
            got > Duration::from_secs(28) && got <= Duration::from_secs(30),
            "{got:?}"
        );
    }

    #[test]
    fn retry_after_wins_over_a_reset_header() {
        let mut h = headers("3");
        h.insert("ratelimit-reset", HeaderValue::from_static("60"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
    }

    #[test]
    fn unreadable_retry_after_is_ignored() {
        assert_eq!(retry_after(&headers("soon")), None);
    }

    #[test]
    fn fractional_retry_after_in_seconds() {
        assert_eq!(
            retry_after(&headers("1.5")),
            Some(Duration::from_millis(1500))
        );
    }

    #[test]
    fn a_retry_after_too_large_for_a_duration_is_ignored_not_a_panic() {
        assert_eq!(retry_after(&headers("1e20")), None);
    }

    #[test]
    fn a_negative_retry_after_is_ignored() {
        assert_eq!(retry_after(&headers("-1")), None);
        assert_eq!(retry_after(&headers("-0.5")), None);
    }

    #[test]
    fn a_nan_or_infinite_retry_after_is_ignored() {
        for value in ["NaN", "nan", "inf", "-inf", "infinity"] {
            assert_eq!(retry_after(&headers(value)), None, "{value}");
        }
    }

    #[test]
    fn an_unusable_retry_after_falls_back_to_the_reset_header() {
        let mut h = headers("1e20");
        h.insert("ratelimit-reset", HeaderValue::from_static("7"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
    }

    #[test]
    fn huge_or_negative_rate_limit_resets_do_not_panic() {
        let mut h = HeaderMap::new();
        h.insert(
            "x-ratelimit-reset",
            HeaderValue::from_static("18446744073709551615"),
        );
        assert!(retry_after(&h).is_some_and(|d| d > Duration::from_secs(1 << 60)));
        let mut h = HeaderMap::new();
        h.insert("ratelimit-reset", HeaderValue::from_static("-3"));
        assert_eq!(retry_after(&h), None);
        let mut h = HeaderMap::new();
        h.insert("ratelimit-reset", HeaderValue::from_static("1e20"));
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn status_classes() {
        let h = HeaderMap::new();
        assert_eq!(
            classify_status(StatusCode::SERVICE_UNAVAILABLE, &h, b"").class(),
            "transient"
        );
        assert_eq!(
            classify_status(StatusCode::REQUEST_TIMEOUT, &h, b"").class(),
            "transient"
        );
        assert_eq!(
            classify_status(StatusCode::TOO_MANY_REQUESTS, &h, b"").class(),
            "rate_limited"
        );
        assert_eq!(
            classify_status(StatusCode::NOT_FOUND, &h, b"").code(),
            "http_404"
        );
        assert_eq!(
            classify_status(StatusCode::BAD_REQUEST, &h, b"").class(),
            "permanent"
        );
    }

    #[test]
    fn an_unrecognized_4xx_body_is_transient_and_429_stays_rate_limited() {
        let h = headers("5");
        let err = classify_unrecognized(StatusCode::FORBIDDEN, &h, b"<html>WAF</html>");
        assert_eq!(
            err,
            DeliveryError::Transient {
                code: "http_403".into(),
                reason: "not the provider's answer: <html>WAF</html>".into(),
                retry_after: Some(Duration::from_secs(5)),
            }
        );
        assert_eq!(
            classify_unrecognized(StatusCode::TOO_MANY_REQUESTS, &h, b"<html/>"),
            DeliveryError::RateLimited {
                retry_after: Some(Duration::from_secs(5))
            }
        );
    }

    #[test]
    fn snippet_is_bounded_and_printable() {
        let body = format!("<html>\n{}</html>", "x".repeat(500));
        let s = snippet(body.as_bytes());
        assert!(s.starts_with("<html> x"));
        assert_eq!(s.chars().count(), 201);
    }
}
