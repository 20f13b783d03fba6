//! `/v1/unsubscribe/{token}`: the one-click unsubscribe link e-mails carry in `List-Unsubscribe`
//! (RFC 8058). A `POST` with `List-Unsubscribe=One-Click` (what mailbox providers send, and what
//! the confirm page's button sends) opts the notification's recipient out of its channel; a
//! `GET` (a person following the link, or a scanner prefetching it) only shows that button.
//!
//! The token names the notification, never the recipient: recipient and channel are read from
//! the queue, so a link stops working once retention purged its notification.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::clock;
use crate::http as body;
use crate::outbox::{ChannelName, NotificationId, Rule, RuleEvent};
use crate::recipients::normalize;
use crate::signed_link::{self, LinkError, Purpose};

/// A small HTML page; `text` is escaped.
fn page(status: StatusCode, title: &str, text: &str, button: bool) -> Response {
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    let form = if button {
        "<form method=\"post\"><input type=\"hidden\" name=\"List-Unsubscribe\" \
         value=\"One-Click\"><button type=\"submit\">Unsubscribe</button></form>"
    } else {
        ""
    };
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\"><title>{t}</title></head>\
         <body><h1>{t}</h1><p>{p}</p>{form}</body></html>",
        t = esc(title),
        p = esc(text),
    );
    let mut r = (status, html).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // The token is in the URL: never send it on as a referrer.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; form-action 'self'"),
    );
    r
}

/// Why a link does nothing: the status and page to answer with.
struct Refused {
    status: StatusCode,
    title: &'static str,
    text: &'static str,
}

impl Refused {
    fn page(&self) -> Response {
        page(self.status, self.title, self.text, false)
    }
}

const TRY_LATER: &str =
    "We could not process this right now; nothing was changed. Please try again later.";

/// The recipient and channel a valid token's notification went to, or why there are none.
async fn target(
    state: &AppState,
    token: &str,
) -> Result<(NotificationId, String, ChannelName), Refused> {
    let live = state.live();
    let refused = |status, text| {
        Err(Refused {
            status,
            title: "Link not valid",
            text,
        })
    };
    let Some(key) = live.registry.link_key() else {
        return refused(StatusCode::NOT_FOUND, "This link is not valid.");
    };
    let claims = match signed_link::verify(key, token, Purpose::Unsubscribe, clock::now_ms()) {
        Ok(c) => c,
        Err(LinkError::Expired) => {
            return refused(StatusCode::GONE, "This link has expired.");
        }
        Err(_) => return refused(StatusCode::NOT_FOUND, "This link is not valid."),
    };
    let id = NotificationId::from(claims.notification);
    match state.outbox.get(&id).await {
        Ok(Some(n)) => Ok((id, n.to, n.channel)),
        Ok(None) => refused(StatusCode::GONE, "This link no longer works."),
        Err(e) => {
            tracing::warn!(error = %e, "Unsubscribe link: the queue could not be read.");
            Err(Refused {
                status: StatusCode::SERVICE_UNAVAILABLE,
                title: "Try again later",
                text: TRY_LATER,
            })
        }
    }
}

/// `GET`: the confirm page with its button; changes nothing.
pub(super) async fn confirm(State(state): State<AppState>, Path(token): Path<String>) -> Response {
    match target(&state, &token).await {
        Ok(_) => page(
            StatusCode::OK,
            "Unsubscribe",
            "Stop receiving these messages at this address?",
            true,
        ),
        Err(refused) => refused.page(),
    }
}

/// `POST` with `List-Unsubscribe=One-Click`: opts the recipient out of the channel and records
/// the event on the notification whose link it was.
pub(super) async fn one_click(
    State(state): State<AppState>,
    Path(token): Path<String>,
    headers: HeaderMap,
    req: Body,
) -> Response {
    let server = state.live().server;
    let limit = server.max_body_bytes;
    let bytes = match body::read_bytes(&headers, req, limit, server.body_timeout).await {
        Ok(b) => b,
        Err(e) => return page(e.status, "Not processed", &e.message, false),
    };
    let one_click =
        form_urlencoded::parse(&bytes).any(|(k, v)| k == "List-Unsubscribe" && v == "One-Click");
    if !one_click {
        return page(
            StatusCode::BAD_REQUEST,
            "Not processed",
            "Expected the form field List-Unsubscribe=One-Click (RFC 8058); nothing was changed.",
            false,
        );
    }
    let (id, to, channel) = match target(&state, &token).await {
        Ok(t) => t,
        Err(refused) => return refused.page(),
    };
    let address = normalize(&to);
    let event = RuleEvent {
        notification: id.clone(),
        at_ms: clock::now_ms(),
        rule: Rule::Unsubscribe,
        detail: format!("the recipient opted out of {channel} through the one-click link"),
    };
    match state.outbox.opt_out(&address, &channel, Some(event)).await {
        Ok(_) => {
            tracing::info!(notification_id = %id, channel = %channel,
                "Recipient opted out through the unsubscribe link.");
            page(
                StatusCode::OK,
                "Unsubscribed",
                "You will not receive these messages at this address any more.",
                false,
            )
        }
        Err(e) => {
            tracing::warn!(error = %e, "Unsubscribe link: the opt-out could not be stored.");
            page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Try again later",
                TRY_LATER,
                false,
            )
        }
    }
}
