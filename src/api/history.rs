//! The history endpoints: search (`GET /v1/notifications`), a notification's content, and
//! replaying every dead letter of a channel.

use super::views::{ChannelReplayed, ContentAnswer};
use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use schemars::JsonSchema;
use serde::Serialize;

use super::{ApiError, AppState};
use crate::outbox::{
    ChannelName, HistoryItem, HistoryPage, NotificationId, Priority, State as QueueState,
};

/// One page of `GET /v1/notifications`: the response body, and its schema in the OpenAPI
/// document.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct HistoryPageBody {
    /// Newest first.
    pub notifications: Vec<HistoryEntry>,
    /// Pass as `cursor` for the next (older) page; `null` on the last page.
    pub next: Option<String>,
}

/// A notification in the history.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct HistoryEntry {
    pub id: String,
    pub channel: String,
    pub to: String,
    pub state: QueueState,
    pub priority: Priority,
    pub attempts: u32,
    pub subject: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339: the last change of state.
    pub updated_at: String,
    /// The notification this one is a fallback of.
    pub fallback_of: Option<String>,
    /// The code of the last failed attempt, if any.
    pub last_code: Option<String>,
}

fn time(ms: i64) -> String {
    super::views::rfc3339(ms)
        .as_str()
        .map(str::to_owned)
        .unwrap_or_default()
}

impl From<&HistoryItem> for HistoryEntry {
    fn from(i: &HistoryItem) -> Self {
        Self {
            id: i.id.clone(),
            channel: i.channel.clone(),
            to: i.to.clone(),
            state: i.state,
            priority: i.priority,
            attempts: i.attempts,
            subject: i.subject.clone(),
            created_at: time(i.created_at_ms),
            updated_at: time(i.updated_at_ms),
            fallback_of: i.parent_id.clone(),
            last_code: i.last_code.clone(),
        }
    }
}

impl From<&HistoryPage> for HistoryPageBody {
    fn from(p: &HistoryPage) -> Self {
        Self {
            notifications: p.items.iter().map(HistoryEntry::from).collect(),
            next: p.next.as_ref().map(|c| c.encode()),
        }
    }
}

/// `GET /v1/notifications?state=&channel=&to=&...`
pub(super) async fn list(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let raw = query.unwrap_or_default();
    let pairs: Vec<(String, String)> = form_urlencoded::parse(raw.as_bytes())
        .into_owned()
        .collect();
    let q = crate::search::parse(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
    let page = state.outbox.history(&q).await?;
    Ok(Json(HistoryPageBody::from(&page)).into_response())
}

/// `GET /v1/notifications/{id}/content`
pub(super) async fn content(
    State(state): State<AppState>,
    Path(id): Path<NotificationId>,
) -> Result<Response, ApiError> {
    let c = state
        .outbox
        .content(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(&id))?;
    Ok(Json(ContentAnswer {
        id,
        subject: c.subject,
        body: c.body,
        html: c.html,
        data: c.data,
    })
    .into_response())
}

/// `POST /v1/channels/{channel}/dead-letters/replay`
pub(super) async fn replay_channel(
    State(state): State<AppState>,
    Path(channel): Path<ChannelName>,
) -> Result<Response, ApiError> {
    let replayed = state.outbox.replay_channel(&channel).await?;
    if replayed > 0 {
        state.live().registry.wake(&channel);
    }
    Ok((StatusCode::OK, Json(ChannelReplayed { channel, replayed })).into_response())
}
