//! Drop-in ingest: what Alertmanager, Grafana, Apprise and ntfy senders already post, turned
//! into notifications through the same path as `POST /v1/notifications` (validation,
//! idempotency, one commit before the answer, 503 when the queue cannot take it).
//!
//! Each format reads its payload into [`Draft`]s, one per target its route picks (see
//! [`route::pick`]); [`store`] validates them as [`Submission`]s, records where each came from
//! (`source` on `GET /v1/notifications/{id}`) and enqueues them in one commit.

pub(crate) mod alertmanager;
pub(crate) mod apprise;
mod auth;
pub(crate) mod grafana;
pub(crate) mod ntfy;
pub(crate) mod route;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::http::{ApiError, AppState, Live};
use crate::outbox::{Enqueued, Priority, State};
use crate::submission::Submission;

pub(crate) use crate::config::{RouteConfig, Target};
pub(crate) use crate::ingest_counters::{Format, Outcome};
pub(crate) use auth::{require_ntfy_token, require_token};

/// What a draft says: rendered by the format's default message, or by a named template that
/// gets the whole incoming payload as its variables.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Content {
    Text {
        subject: Option<String>,
        body: Option<String>,
        html: Option<String>,
    },
    Template {
        name: String,
        vars: Value,
    },
}

/// One notification to create from what arrived, before validation.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Draft {
    pub target: Target,
    pub content: Content,
    pub priority: Priority,
    /// RFC 3339 time before which it is not sent (ntfy's `X-Delay`).
    pub send_at: Option<String>,
    /// Derived from what identifies the message at its sender, so a sender's retry or an HA
    /// replica's copy finds the notification already stored.
    pub idempotency_key: Option<String>,
    /// The sender's own identifiers, kept in `source.ids`.
    pub ids: Value,
}

/// The content a route gives a target: its template (the target's, else the route's) with the
/// payload as variables, else the format's default message.
pub(crate) fn content_for(
    route: &RouteConfig,
    target: &Target,
    payload: &Value,
    default: impl FnOnce() -> Content,
) -> Content {
    match target.template.as_ref().or(route.template.as_ref()) {
        Some(name) => Content::Template {
            name: name.clone(),
            vars: payload.clone(),
        },
        None => default(),
    }
}

/// The priority of a draft: the sender's own word when it gave one, else the target's, else
/// the route's, else normal.
pub(crate) fn priority_for(
    route: &RouteConfig,
    target: &Target,
    from_sender: Option<Priority>,
) -> Priority {
    from_sender
        .or(target.priority)
        .or(route.priority)
        .unwrap_or_default()
}

/// A notification stored (or found already stored) for one draft.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Stored {
    pub id: crate::outbox::NotificationId,
    pub state: State,
    /// It was already stored under the same idempotency key.
    pub duplicate: bool,
}

/// The answer of an ingest endpoint: what was stored, in order.
#[derive(Debug, Clone, serde::Serialize, schemars::JsonSchema)]
pub(crate) struct Ingested {
    pub notifications: Vec<IngestedEntry>,
}

/// One notification an ingest call stored (or found already stored).
#[derive(Debug, Clone, serde::Serialize, schemars::JsonSchema)]
pub(crate) struct IngestedEntry {
    pub id: crate::outbox::NotificationId,
    pub state: crate::outbox::State,
    /// It was already stored under the same idempotency key.
    pub duplicate: bool,
}

/// Looks up a configured route; 404 naming it when there is none.
pub(crate) fn route<'a>(live: &'a Live, name: &str) -> Result<&'a RouteConfig, ApiError> {
    live.ingest.routes.get(name).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_route",
            format!("no ingest route named {name:?} (configure [ingest.routes.{name}])"),
        )
        .field("route")
    })
}

/// Validates every draft, then stores them all in one commit. A draft whose idempotency key is
/// already taken is answered as that notification: the key is derived from what identifies the
/// message at its sender, so a replica's copy that differs in detail (another `externalURL`)
/// is still the same message, never a conflict.
pub(crate) async fn store(
    state: &AppState,
    live: &Live,
    format: Format,
    route_name: &str,
    drafts: Vec<Draft>,
) -> Result<Vec<Stored>, ApiError> {
    if drafts.is_empty() {
        return Ok(Vec::new());
    }
    let targets = live
        .ingest
        .routes
        .get(route_name)
        .map(|r| r.targets.as_slice())
        .unwrap_or_default();
    let mut items = Vec::with_capacity(drafts.len());
    for draft in drafts {
        let i = targets
            .iter()
            .position(|t| *t == draft.target)
            .unwrap_or_default();
        let (subject, body, html, template, vars) = match draft.content {
            Content::Text {
                subject,
                body,
                html,
            } => {
                // Apprise and ntfy messages need no title; an e-mail needs a subject.
                let is_email = live
                    .registry
                    .get(&draft.target.channel)
                    .is_some_and(|rt| crate::templates::family(rt.kind) == Some("email"));
                let subject = match subject {
                    None if is_email => body.as_deref().and_then(subject_from),
                    s => s,
                };
                (subject, body, html, None, None)
            }
            Content::Template { name, vars } => (None, None, None, Some(name), Some(vars)),
        };
        let submission = Submission {
            channel: draft.target.channel.clone(),
            to: draft.target.to.clone(),
            subject,
            body,
            html,
            data: None,
            template,
            vars,
            priority: Some(draft.priority),
            send_at: draft.send_at,
            expires_at: None,
            idempotency_key: draft.idempotency_key,
            fallback: draft.target.fallback.clone(),
            deliver_between: None,
            dedup_key: None,
            dedup_window: None,
            digest_key: None,
            escalate: Vec::new(),
        };
        let mut new = submission
            .validate(&live.registry, &live.templates)
            .map_err(|r| {
                let field = match r.field.as_str() {
                    // What the sender sent: its own names.
                    "send_at" => "delay".to_owned(),
                    // What the route says: the route's key, so the operator can fix it.
                    "vars" => format!("ingest.routes.{route_name}.template"),
                    f => format!("ingest.routes.{route_name}.targets[{i}].{f}"),
                };
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    r.code,
                    format!(
                        "route {route_name:?}, target {:?}: {}",
                        draft.target.channel, r.message
                    ),
                )
                .field(field)
            })?;
        new.source = Some(
            json!({"format": format.as_str(), "route": route_name, "ids": draft.ids}).to_string(),
        );
        items.push(new);
    }
    let due: Vec<_> = items
        .iter()
        .map(|n| (n.channel.clone(), n.run_at_ms))
        .collect();
    let results = state.outbox.enqueue(items).await?;
    live.registry.wake_where_due(due, state.outbox.now_ms());
    let mut stored = Vec::with_capacity(results.len());
    for result in results {
        stored.push(match result {
            Enqueued::Created { id } => Stored {
                id,
                state: State::Queued,
                duplicate: false,
            },
            Enqueued::Duplicate { id, state } | Enqueued::Deduplicated { id, state } => Stored {
                id,
                state,
                duplicate: true,
            },
            Enqueued::Conflict { id } => {
                let view = state.outbox.get(&id).await?;
                Stored {
                    id,
                    state: view.map(|v| v.state).unwrap_or(State::Queued),
                    duplicate: true,
                }
            }
        });
    }
    Ok(stored)
}

/// Counts a request's outcome from what storing it gave.
pub(crate) fn outcome_of(result: Result<&[Stored], &ApiError>) -> Outcome {
    match result {
        Ok([]) => Outcome::Unrouted,
        Ok(stored) if stored.iter().all(|s| s.duplicate) => Outcome::Duplicate,
        Ok(_) => Outcome::Stored,
        Err(e) if e.status.is_server_error() => Outcome::Failed,
        Err(_) => Outcome::Refused,
    }
}

/// Counts a request's outcome and answers it: 200 with what was stored, or the error.
pub(crate) fn respond(
    state: &AppState,
    format: Format,
    result: Result<Vec<Stored>, ApiError>,
) -> Result<Response, ApiError> {
    state
        .counters
        .ingest
        .count(format, outcome_of(result.as_deref()));
    let stored = result?;
    Ok((StatusCode::OK, Json(ingested(&stored))).into_response())
}

/// The answer listing what was stored.
pub(crate) fn ingested(stored: &[Stored]) -> Ingested {
    Ingested {
        notifications: stored
            .iter()
            .map(|s| IngestedEntry {
                id: s.id.clone(),
                state: s.state,
                duplicate: s.duplicate,
            })
            .collect(),
    }
}

/// Longest subject made from a message's first line.
const MAX_DERIVED_SUBJECT: usize = 78;

/// A subject for a message that came without a title: its first non-empty line, shortened.
pub(crate) fn subject_from(body: &str) -> Option<String> {
    let line = body.lines().map(str::trim).find(|l| !l.is_empty())?;
    if line.chars().count() <= MAX_DERIVED_SUBJECT {
        return Some(line.to_owned());
    }
    let cut: String = line.chars().take(MAX_DERIVED_SUBJECT - 1).collect();
    Some(format!("{}…", cut.trim_end()))
}

/// SHA-256 of `parts` (length-prefixed, so no two lists hash alike), hex, shortened: the body of
/// a derived idempotency key.
pub(crate) fn key_digest(parts: &[&str]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p.as_bytes());
    }
    hex::encode(&h.finalize()[..20])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subject_is_the_first_line_of_the_message_shortened() {
        assert_eq!(
            subject_from("\n  Backup failed on db-1\nexit 2").as_deref(),
            Some("Backup failed on db-1")
        );
        let long = "é".repeat(100);
        let subject = subject_from(&long).unwrap();
        assert_eq!(subject.chars().count(), MAX_DERIVED_SUBJECT);
        assert!(subject.ends_with('…'));
        assert_eq!(subject_from(" \n "), None);
    }
}
