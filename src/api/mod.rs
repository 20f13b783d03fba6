//! The HTTP API (v1): accept notifications, show their state, cancel, inspect and replay dead
//! letters, show channels, and health.

mod ack;
mod auth;
mod history;
mod readiness;
mod recipients;
pub(crate) mod routes;
mod unsubscribe;
mod views;

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use notifyd_channels::field_path;
use serde::Deserialize;

use crate::metrics::ReceiptOutcome;
use crate::outbox::{
    AckSource, ChannelName, Enqueued, NewNotification, NotificationId, Outbox, State as QueueState,
    StoreError, Transition,
};
use crate::submission::{Replay, Submission};
use views::{
    BatchAnswer, BatchResult, Channels, DeadLetters, ItemAnswer, ReceiptAnswer, StateAnswer, Status,
};

use crate::http as body;
pub(crate) use crate::http::{ApiError, AppState, Live};
pub(crate) use history::HistoryPageBody;
pub(crate) use views::dead_letter as views_dead_letter;
pub(crate) use views::notification as views_notification;

/// The API's routes.
pub fn router(state: AppState) -> Router {
    let metrics_public = state.live().server.metrics_public;
    let (mut protected, mut open, mut ingest) = (Router::new(), Router::new(), Router::new());
    for route in routes::all() {
        let needs_token = match route.access {
            routes::Access::Token => true,
            routes::Access::Metrics => !metrics_public,
            routes::Access::Open => false,
            routes::Access::Ingest => {
                ingest = ingest.route(route.path, (route.handler)());
                continue;
            }
        };
        if needs_token {
            protected = protected.route(route.path, (route.handler)());
        } else {
            open = open.route(route.path, (route.handler)());
        }
    }
    let protected = protected.route_layer(auth::RequireToken::new(state.clone()));
    let ingest = ingest.route_layer(axum::middleware::from_fn_with_state(
        state.clone(),
        crate::ingest::require_token,
    ));
    // Only `/readyz` (an open route) reads it: every other request would pay for carrying it.
    let open = open.layer(axum::Extension(
        Arc::new(readiness::ReadinessLog::default()),
    ));
    Router::new()
        .merge(protected)
        .merge(ingest)
        .merge(open)
        .merge(crate::console::routes())
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "no_route",
                "no such endpoint; see /v1/notifications",
            )
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed here",
            )
        })
        .with_state(state)
}

const IDEMPOTENCY_HEADER: &str = "idempotency-key";

/// A submission that did not validate, with what a replay of a stored one is recognised by.
struct Refused {
    error: ApiError,
    replay: Option<Replay>,
}

impl From<ApiError> for Box<Refused> {
    fn from(error: ApiError) -> Self {
        Box::new(Refused {
            error,
            replay: None,
        })
    }
}

/// Validates one submission (`shaped`: the request as one, or the 422 saying why it is not); the
/// `Idempotency-Key` header, when given, is the same as the field. `refused` is a refusal
/// already decided from the request's text (an inexact integer, an item too large): it stands
/// unless the submission replays a stored one.
fn accept(
    live: &Live,
    shaped: Result<Submission, ApiError>,
    header_key: Option<&str>,
    refused: Option<ApiError>,
) -> Result<NewNotification, Box<Refused>> {
    let mut submission = shaped?;
    if let Some(key) = header_key {
        match &submission.idempotency_key {
            Some(field) if field != key => {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_field",
                    "the Idempotency-Key header and the idempotency_key field differ",
                )
                .field("idempotency_key")
                .into());
            }
            _ => submission.idempotency_key = Some(key.to_owned()),
        }
    }
    let replay = submission.replay();
    if let Some(error) = refused {
        return Err(Box::new(Refused { error, replay }));
    }
    submission
        .validate(&live.registry, &live.templates)
        .map_err(|r| {
            Box::new(Refused {
                error: r.into(),
                replay,
            })
        })
}

/// A replay of a stored notification (same key, same content) is answered as its first
/// submission was, even if it would not validate today: its `expires_at` or `send_at` has
/// passed, or its channel or template has gone. `None`: the refusal stands.
async fn replayed_answer(
    outbox: &dyn Outbox,
    refused: &Refused,
) -> Result<Option<(StatusCode, ItemAnswer)>, ApiError> {
    let Some(replay) = &refused.replay else {
        return Ok(None);
    };
    Ok(match outbox.find_key(&replay.key).await? {
        Some(holder) => match holder.answer(&replay.content_hash) {
            answer @ Enqueued::Duplicate { .. } => Some(enqueued_answer(&answer)),
            _ => None,
        },
        None => None,
    })
}

/// The answer for one stored (or replayed, or conflicting) notification.
fn enqueued_answer(result: &Enqueued) -> (StatusCode, ItemAnswer) {
    let stored = |id: &str, state: QueueState| {
        ItemAnswer::Stored(StateAnswer {
            id: id.into(),
            state,
            duplicate_of: None,
        })
    };
    match result {
        Enqueued::Created { id } => (StatusCode::ACCEPTED, stored(id, QueueState::Queued)),
        Enqueued::Duplicate { id, state } => (StatusCode::OK, stored(id, *state)),
        // Merged into the notification holding its dedup key (`crate::rules::dedup`).
        Enqueued::Deduplicated { id, state } => (
            StatusCode::OK,
            ItemAnswer::Stored(StateAnswer {
                id: id.clone(),
                state: *state,
                duplicate_of: Some(id.clone()),
            }),
        ),
        Enqueued::Conflict { id } => {
            let err = ApiError::new(
                StatusCode::CONFLICT,
                "idempotency_conflict",
                "this idempotency key was already used for a different notification",
            )
            .field("idempotency_key")
            .id(id.as_str());
            (StatusCode::CONFLICT, ItemAnswer::Refused(err.body()))
        }
    }
}

async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let live = state.live();
    let json = body::read_json_as(
        &headers,
        body,
        live.server.max_body_bytes,
        live.server.body_timeout,
        Submission::read_whole,
    )
    .await?;
    let inexact = body::inexact_under(&json.inexact_integers, "");
    let header_key = match headers.get(IDEMPOTENCY_HEADER) {
        Some(v) => Some(v.to_str().map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_header",
                "Idempotency-Key must be visible ASCII",
            )
            .field("idempotency_key")
        })?),
        None => None,
    };
    let new = match accept(&live, json.shaped, header_key, inexact) {
        Ok(new) => new,
        Err(refused) => {
            return match replayed_answer(state.outbox.as_ref(), &refused).await? {
                Some((status, body)) => Ok((status, Json(body)).into_response()),
                None => Err(refused.error),
            };
        }
    };
    let (channel, run_at_ms) = (new.channel.clone(), new.run_at_ms);
    let result = state.outbox.enqueue(vec![new]).await?;
    let Some(result) = result.first() else {
        return Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "no result from the queue",
        ));
    };
    if matches!(result, Enqueued::Created { .. }) {
        state
            .counters
            .accepted
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        live.registry
            .wake_if_due(&channel, run_at_ms, state.outbox.now_ms());
    }
    let (status, body) = enqueued_answer(result);
    Ok((status, Json(body)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Batch {
    notifications: Vec<serde_json::Value>,
}

async fn create_batch(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let live = state.live();
    if headers.contains_key(IDEMPOTENCY_HEADER) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_header",
            "a batch has no idempotency key of its own: give each notification its \
             idempotency_key field",
        )
        .field("Idempotency-Key"));
    }
    let json = body::read_json(
        &headers,
        body,
        live.server.max_batch_body_bytes,
        live.server.body_timeout,
    )
    .await?;
    let body::JsonBody {
        value,
        inexact_integers,
    } = json;
    let batch: Batch = body::shape(value)?;
    if batch.notifications.len() > live.server.max_batch_items {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "too_many_items",
            format!(
                "at most {} notifications per batch",
                live.server.max_batch_items
            ),
        )
        .field("notifications"));
    }
    // Validate every item; store the valid ones in one commit; answer per item, in order.
    let mut results: Vec<Option<(StatusCode, ItemAnswer)>> =
        Vec::with_capacity(batch.notifications.len());
    let mut valid = Vec::new();
    for (i, item) in batch.notifications.into_iter().enumerate() {
        let out_of_bounds =
            item_out_of_bounds(&inexact_integers, i, &item, live.server.max_body_bytes);
        match accept(&live, body::shape(item), None, out_of_bounds) {
            Ok(n) => {
                valid.push((i, n));
                results.push(None);
            }
            Err(refused) => {
                let answer = match replayed_answer(state.outbox.as_ref(), &refused).await? {
                    Some(answer) => answer,
                    None => {
                        let mut e = refused.error;
                        let item = format!("notifications[{i}]");
                        e.field = Some(field_path(&item, e.field.as_deref().unwrap_or_default()));
                        (e.status, ItemAnswer::Refused(e.body()))
                    }
                };
                results.push(Some(answer));
            }
        }
    }
    let (indexes, items): (Vec<usize>, Vec<NewNotification>) = valid.into_iter().unzip();
    let due: Vec<_> = items
        .iter()
        .map(|n| (n.channel.clone(), n.run_at_ms))
        .collect();
    let stored = state.outbox.enqueue(items).await?;
    let created = stored
        .iter()
        .filter(|r| matches!(r, Enqueued::Created { .. }))
        .count();
    state
        .counters
        .accepted
        .fetch_add(created as u64, std::sync::atomic::Ordering::Relaxed);
    for (i, result) in indexes.into_iter().zip(stored.iter()) {
        results[i] = Some(enqueued_answer(result));
    }
    live.registry.wake_where_due(due, state.outbox.now_ms());
    let results = results
        .into_iter()
        .map(|r| {
            // Every item was answered above, refused or stored: none is left `None`.
            let (status, answer) = r.unwrap_or_else(|| {
                let lost = ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "no result for this item",
                );
                (lost.status, ItemAnswer::Refused(lost.body()))
            });
            BatchResult {
                status: status.as_u16(),
                answer,
            }
        })
        .collect();
    Ok((StatusCode::OK, Json(BatchAnswer { results })).into_response())
}

/// Why a batch item is refused on its own before it is validated: it holds an integer that
/// would not be kept exactly, or is larger than a single `POST` may be (a batch is no way
/// around that limit). Fields are relative to the item.
fn item_out_of_bounds(
    inexact_integers: &[String],
    i: usize,
    item: &serde_json::Value,
    max_bytes: usize,
) -> Option<ApiError> {
    let prefix = format!("notifications[{i}]");
    if let Some(mut inexact) = body::inexact_under(inexact_integers, &prefix) {
        inexact.field = inexact.field.map(|f| {
            let relative = f.strip_prefix(&prefix).unwrap_or(&f);
            relative.strip_prefix('.').unwrap_or(relative).to_owned()
        });
        return Some(inexact);
    }
    (crate::json_bounds::encoded_len(item) > max_bytes).then(|| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "too_large",
            format!(
                "one notification is at most {max_bytes} bytes of JSON (server.max_body_bytes)"
            ),
        )
    })
}

async fn show(
    State(state): State<AppState>,
    Path(id): Path<NotificationId>,
) -> Result<Response, ApiError> {
    let view = state
        .outbox
        .get(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(&id))?;
    Ok(Json(views::notification(&view)).into_response())
}

fn transition_answer(id: &str, t: Transition, action: &str) -> Result<Response, ApiError> {
    match t {
        Transition::Done(state) => Ok((
            StatusCode::OK,
            Json(StateAnswer {
                id: id.into(),
                state,
                duplicate_of: None,
            }),
        )
            .into_response()),
        Transition::NotFound => Err(ApiError::not_found(id)),
        Transition::Refused(state) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "invalid_state",
            format!("cannot {action} a notification that is {state}"),
        )
        .id(id)),
    }
}

async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<NotificationId>,
) -> Result<Response, ApiError> {
    let t = state.outbox.cancel(&id).await?;
    transition_answer(&id, t, "cancel")
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeadLetterQuery {
    channel: Option<ChannelName>,
    limit: Option<usize>,
}

async fn dead_letters(
    State(state): State<AppState>,
    query: Result<Query<DeadLetterQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", e.body_text()))?;
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let items = state.outbox.dead_letters(q.channel.as_ref(), limit).await?;
    let dead_letters = items.iter().map(views::dead_letter).collect();
    Ok(Json(DeadLetters { dead_letters }).into_response())
}

async fn replay(
    State(state): State<AppState>,
    Path(id): Path<NotificationId>,
) -> Result<Response, ApiError> {
    let t = state.outbox.replay(&id).await?;
    if matches!(t, Transition::Done(_))
        && let Ok(Some(view)) = state.outbox.get(&id).await
    {
        state.live().registry.wake(&view.channel);
    }
    transition_answer(&id, t, "replay")
}

async fn channels(State(state): State<AppState>) -> Result<Response, ApiError> {
    let depth = state.outbox.depth().await?;
    let live = state.live();
    let oldest = state.outbox.oldest_due(&live.registry.names()).await?;
    let now = crate::outbox::now_ms();
    let channels: Vec<_> = live
        .registry
        .iter()
        .map(|rt| {
            let due = oldest
                .iter()
                .find(|(c, _)| *c == rt.name)
                .map(|(_, at)| *at);
            views::channel(rt, &depth, due, now)
        })
        .collect();
    Ok(Json(Channels { channels }).into_response())
}

async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let text = crate::metrics::render(
        &state.live().registry,
        &state.counters,
        state.outbox.as_ref(),
    )
    .await?;
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            crate::metrics::CONTENT_TYPE,
        )],
        text,
    )
        .into_response())
}

/// Largest receipt body accepted. The endpoint is open to anyone before the signature is checked,
/// so it gets far less than `server.max_body_bytes`; a real status callback is under 2 KiB.
pub const MAX_RECEIPT_BYTES: usize = 64 * 1024;

/// Provider receipts: open (providers cannot send our token), authenticated by their signature.
async fn inbound(
    State(state): State<AppState>,
    Path(channel): Path<ChannelName>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let live = state.live();
    // Anyone can post here. Every refusal is the same 401, so a stranger learns nothing about
    // which channels exist or take receipts; why is in the debug log, and a line per refusal
    // at a higher level would let a flood fill the journal. The count is in /metrics
    // (notifyd_inbound_receipts_total{outcome="refused"}).
    let refuse = |why: &str| {
        state.counters.receipt_outcome(ReceiptOutcome::Refused);
        tracing::debug!(channel = %channel, reason = %why, "Refused an unverified receipt.");
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_signature",
            "the receipt could not be verified",
        )
    };
    let bytes =
        body::read_bytes(&headers, body, MAX_RECEIPT_BYTES, live.server.body_timeout).await?;
    let rt = live
        .registry
        .get(&channel)
        .ok_or_else(|| refuse("no channel by that name"))?;
    let config = rt.policy.receipts.as_ref().ok_or_else(|| {
        refuse("the channel does not accept receipts (set receipts = { verify = ... })")
    })?;
    let now = crate::clock::now_secs();
    let receipt =
        crate::inbound::verify_and_parse(config, &channel, &headers, uri.query(), &bytes, now)
            .map_err(|e| match e {
                crate::inbound::InboundError::Unauthorized(why) => refuse(&why),
                crate::inbound::InboundError::Invalid(refused) => refused.into(),
            })?;
    let status = receipt.status;
    let acknowledges = crate::rules::escalation::receipt_acknowledges(&receipt.provider_status);
    let recorded = state.outbox.record_receipt(receipt).await?;
    // A `read` receipt acknowledges the chain its message belongs to; again on a provider's
    // retry (acknowledging is idempotent), so a failure here is made good by the retry.
    if let (true, Some(id)) = (acknowledges, &recorded.notification_id) {
        state.outbox.acknowledge(id, AckSource::Receipt).await?;
    }
    let outcome = if recorded.duplicate {
        ReceiptOutcome::Duplicate
    } else if recorded.notification_id.is_some() {
        ReceiptOutcome::Matched
    } else {
        ReceiptOutcome::Unmatched
    };
    state.counters.receipt_outcome(outcome);
    if !recorded.duplicate {
        state.counters.receipt(status);
    }
    Ok(Json(ReceiptAnswer {
        matched: recorded.notification_id.is_some(),
        notification_id: recorded.notification_id,
        duplicate: recorded.duplicate,
    })
    .into_response())
}

async fn openapi() -> impl IntoResponse {
    Json(routes::document())
}

async fn healthz() -> impl IntoResponse {
    Json(Status { status: "ok" })
}

async fn readyz(
    State(state): State<AppState>,
    axum::Extension(log): axum::Extension<Arc<readiness::ReadinessLog>>,
) -> Response {
    let checked = state.outbox.check_writable().await;
    match (log.observe(checked.is_ok()), &checked) {
        // Why it is not ready is what an operator needs to see (no secret is in it).
        (Some(readiness::Change::BecameUnready), Err(why)) => {
            tracing::warn!(reason = %why, "Not ready; the next line says when it is again.");
        }
        (Some(readiness::Change::BecameReady), _) => tracing::info!("Ready again."),
        _ => {}
    }
    match checked {
        Ok(()) => Json(Status { status: "ready" }).into_response(),
        Err(StoreError::Unavailable(why)) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "queue_unavailable",
            format!("not ready: {why}"),
        )
        .into_response(),
        Err(e) => {
            let mut err = ApiError::from(e);
            err.status = StatusCode::SERVICE_UNAVAILABLE;
            err.into_response()
        }
    }
}
