//! Bearer-token authentication for the API. `/healthz` and `/readyz` stay open.

use std::future::{Ready, ready};
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::future::Either;
use tower_layer::Layer;
use tower_service::Service;

use super::{ApiError, AppState};
use crate::http::is_one_of;

/// The token of an `Authorization: Bearer <token>` value. The scheme is case-insensitive
/// (RFC 9110 §11.1: `BEARER`, `bearer`); spaces around the token are not part of it.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The token check on the routes that need one (`Router::route_layer`): a request goes on to
/// the route when no token is configured or when it carries a configured one; else it is
/// answered 401. A layer of its own rather than `middleware::from_fn`, which clones and boxes
/// the route and boxes its future for every request (about 4k instructions a `POST`).
#[derive(Clone)]
pub(super) struct RequireToken {
    state: AppState,
}

impl RequireToken {
    pub(super) fn new(state: AppState) -> Self {
        Self { state }
    }
}

impl<S> Layer<S> for RequireToken {
    type Service = TokenChecked<S>;

    fn layer(&self, route: S) -> Self::Service {
        TokenChecked {
            route,
            state: self.state.clone(),
        }
    }
}

/// A route behind [`RequireToken`].
#[derive(Clone)]
pub(super) struct TokenChecked<S> {
    route: S,
    state: AppState,
}

impl<S> Service<Request> for TokenChecked<S>
where
    S: Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Either<S::Future, Ready<Result<Response, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.route.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        if authorized(&self.state, request.headers()) {
            Either::Left(self.route.call(request))
        } else {
            Either::Right(ready(Ok(unauthorized())))
        }
    }
}

/// Whether a request with `headers` may pass: no token is configured, or it carries one.
fn authorized(state: &AppState, headers: &HeaderMap) -> bool {
    let live = state.live();
    let tokens = live.server.tokens();
    if tokens.is_empty() {
        return true;
    }
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token)
        .is_some_and(|p| is_one_of(p, &tokens))
}

/// The 401, with the scheme a client should use.
fn unauthorized() -> Response {
    let mut resp = ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "send Authorization: Bearer <token> with a configured token",
    )
    .into_response();
    resp.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        for value in ["Bearer t0k", "bearer t0k", "BEARER t0k", "BeArEr   t0k "] {
            assert_eq!(bearer_token(value), Some("t0k"), "{value}");
        }
    }

    #[test]
    fn other_schemes_and_empty_tokens_are_not_bearer_tokens() {
        for value in [
            "Basic dXNlcjpwYXNz",
            "Bearert0k",
            "Bearer ",
            "Bearer",
            "t0k",
        ] {
            assert_eq!(bearer_token(value), None, "{value}");
        }
    }
}
