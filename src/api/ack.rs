//! Acknowledging an escalating notification: `POST /v1/notifications/{id}/ack` for programs,
//! and the signed link (`{{ ack_url }}`) for people: `GET /v1/links/ack/{token}` shows a confirm
//! page and changes nothing (mail scanners and previews follow links), the page's button POSTs to
//! the same URL and acknowledges. Either way an acknowledgement stops the rest of the chain.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{ApiError, AppState};
use crate::outbox::{AckSource, Acknowledged, NotificationId};
use crate::signed_link::LinkError;

/// `POST /v1/notifications/{id}/ack`: idempotent. 200 with the chain's first notification and
/// when it was acknowledged (`already` when an earlier acknowledgement did it), 404 for an
/// unknown id, 409 `nothing_to_ack` for a notification without escalation.
pub(super) async fn acknowledge(
    State(state): State<AppState>,
    Path(id): Path<NotificationId>,
) -> Result<Response, ApiError> {
    let done = state.outbox.acknowledge(&id, AckSource::Api).await?;
    let (root, at_ms, already, cancelled) = match done {
        Acknowledged::Done {
            root,
            at_ms,
            cancelled,
        } => (root, at_ms, false, cancelled),
        Acknowledged::Already { root, at_ms } => (root, at_ms, true, 0),
        Acknowledged::NotFound => return Err(ApiError::not_found(&id)),
        Acknowledged::NothingToAck => return Err(nothing_to_ack(&id)),
    };
    Ok(Json(super::views::AckAnswer {
        id,
        escalation_of: root,
        acknowledged_at: super::views::rfc3339_text(at_ms),
        already,
        cancelled_steps: cancelled,
    })
    .into_response())
}

fn nothing_to_ack(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "nothing_to_ack",
        "this notification has no escalation to acknowledge",
    )
    .id(id)
}

/// `GET /v1/links/ack/{token}`: the confirm page (its button POSTs here), or why the link does
/// not work. Nothing changes.
pub(super) async fn link_page(
    State(state): State<AppState>,
    Path(token): Path<String>,
) -> Response {
    match check_link(&state, &token) {
        Ok(_) => page(
            StatusCode::OK,
            "Acknowledge this alert?",
            "Acknowledging stops the escalation: nobody else will be notified.",
            true,
        ),
        Err(refused) => refused.page(),
    }
}

/// `POST /v1/links/ack/{token}`: acknowledges; a link already used (or an alert someone else
/// acknowledged) answers 409 "already acknowledged".
pub(super) async fn link_ack(State(state): State<AppState>, Path(token): Path<String>) -> Response {
    let notification = match check_link(&state, &token) {
        Ok(id) => id,
        Err(refused) => return refused.page(),
    };
    match state
        .outbox
        .acknowledge(&notification, AckSource::Link)
        .await
    {
        Ok(Acknowledged::Done { .. }) => page(
            StatusCode::OK,
            "Acknowledged",
            "Thank you. The escalation has stopped.",
            false,
        ),
        Ok(Acknowledged::Already { .. }) => page(
            StatusCode::CONFLICT,
            "Already acknowledged",
            "This alert was already acknowledged; nothing changed.",
            false,
        ),
        // Purged by retention since the link was made, or never escalating.
        Ok(Acknowledged::NotFound | Acknowledged::NothingToAck) => page(
            StatusCode::NOT_FOUND,
            "Nothing to acknowledge",
            "This alert is no longer known.",
            false,
        ),
        Err(e) => {
            tracing::warn!(notification_id = %notification, error = %e,
                "Could not store an acknowledgement from a link.");
            page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Try again",
                "The acknowledgement could not be stored just now. Please try again.",
                true,
            )
        }
    }
}

/// Why a link does not work.
enum LinkRefused {
    /// `[links]` is not configured.
    Disabled,
    Expired,
    /// Malformed, forged, or for another purpose: all the same to the clicker.
    Invalid,
}

impl LinkRefused {
    fn page(self) -> Response {
        let (status, title, text) = match self {
            LinkRefused::Disabled => (
                StatusCode::NOT_FOUND,
                "Link not valid",
                "Acknowledgement links are not enabled.",
            ),
            LinkRefused::Expired => (
                StatusCode::GONE,
                "Link expired",
                "This acknowledgement link has expired.",
            ),
            LinkRefused::Invalid => (
                StatusCode::NOT_FOUND,
                "Link not valid",
                "This acknowledgement link is not valid.",
            ),
        };
        page(status, title, text, false)
    }
}

/// The notification a link token is about, or why the link does not work.
fn check_link(state: &AppState, token: &str) -> Result<NotificationId, LinkRefused> {
    let live = state.live();
    let links = live.templates.ack_links().ok_or(LinkRefused::Disabled)?;
    match links.verify(token, crate::clock::now_ms()) {
        Ok(claims) => Ok(claims.notification.into()),
        Err(LinkError::Expired) => Err(LinkRefused::Expired),
        Err(_) => Err(LinkRefused::Invalid),
    }
}

/// A small self-contained page: no script, no outside resource, never framed (a framed button
/// could be clicked by trickery), never cached, and the token in the URL never sent on as a
/// referrer. Only fixed text goes into it.
fn page(status: StatusCode, title: &str, text: &str, button: bool) -> Response {
    let form = if button {
        r#"<form method="post"><button type="submit">Acknowledge</button></form>"#
    } else {
        ""
    };
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title><style>body{{font-family:system-ui,sans-serif;max-width:32rem;\
         margin:4rem auto;padding:0 1rem}}button{{font-size:1.2rem;padding:.6rem 1.4rem}}</style>\
         </head><body><h1>{title}</h1><p>{text}</p>{form}</body></html>"
    );
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
            ),
        ],
        html,
    )
        .into_response()
}
