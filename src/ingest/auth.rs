//! The API's tokens, in the forms senders can send them: `Authorization: Bearer <token>`,
//! HTTP Basic with the token as password (Apprise's `apprise://:token@host`, Alertmanager's and
//! Grafana's basic auth, ntfy's `user:token`), or ntfy's `?auth=` (the base64 of either header).

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;

use super::{Format, Outcome};
use crate::http::{ApiError, AppState, is_one_of};

/// The token an `Authorization` header value carries: Bearer's token, or Basic's password (its
/// user name when the password is empty).
fn from_header_value(value: &str) -> Option<String> {
    let (scheme, rest) = value.trim().split_once(' ')?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(rest.to_owned());
    }
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())?;
    let (user, password) = decoded.split_once(':').unwrap_or((&decoded, ""));
    Some(if password.is_empty() { user } else { password }.to_owned())
}

/// ntfy's `?auth=`: the `Authorization` header value, base64 (URL-safe or standard, padded or
/// not).
fn from_query(query: &str) -> Option<String> {
    let value = form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "auth")
        .map(|(_, v)| v.into_owned())?;
    let trimmed = value.trim_end_matches('=');
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(trimmed)
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(trimmed))
        .ok()?;
    from_header_value(&String::from_utf8(bytes).ok()?)
}

/// The token a request presents, in any of the accepted forms.
pub(super) fn presented(request: &Request) -> Option<String> {
    request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(from_header_value)
        .or_else(|| request.uri().query().and_then(from_query))
}

/// The format an ingest path on the API listener belongs to.
fn format_of(path: &str) -> Format {
    if path.starts_with("/ingest/alertmanager/") {
        Format::Alertmanager
    } else if path.starts_with("/ingest/grafana/") {
        Format::Grafana
    } else {
        Format::Apprise
    }
}

/// [`require_token`] for the API listener's ingest routes.
pub(crate) async fn require_token(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let format = format_of(request.uri().path());
    check(&state, format, request, next).await
}

/// [`require_token`] for ntfy's listener.
pub(crate) async fn require_ntfy_token(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    check(&state, Format::Ntfy, request, next).await
}

/// Lets a request through when no token is configured or when it presents a configured one; a
/// refusal is counted under its format.
async fn check(state: &AppState, format: Format, request: Request, next: Next) -> Response {
    let live = state.live();
    let tokens = live.server.tokens();
    if tokens.is_empty() {
        return next.run(request).await;
    }
    if presented(&request).is_some_and(|p| is_one_of(&p, &tokens)) {
        return next.run(request).await;
    }
    state.counters.ingest.count(format, Outcome::Refused);
    let mut resp = ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "send a configured token: Authorization: Bearer <token>, HTTP Basic with the token as \
         password, or ntfy's ?auth=",
    )
    .into_response();
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer, Basic realm=\"notifyd\""),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(text: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(text)
    }

    #[test]
    fn bearer_and_basic_carry_the_token() {
        assert_eq!(
            from_header_value("Bearer tk_abc").as_deref(),
            Some("tk_abc")
        );
        let basic = format!("Basic {}", b64("anyone:tk_abc"));
        assert_eq!(from_header_value(&basic).as_deref(), Some("tk_abc"));
        let user_only = format!("Basic {}", b64("tk_abc:"));
        assert_eq!(from_header_value(&user_only).as_deref(), Some("tk_abc"));
        assert_eq!(from_header_value("Digest x"), None);
    }

    #[test]
    fn ntfys_auth_query_is_the_base64_of_the_header() {
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("Bearer tk_abc");
        assert_eq!(
            from_query(&format!("t=x&auth={raw}")).as_deref(),
            Some("tk_abc")
        );
        assert_eq!(from_query("t=x"), None);
    }
}
