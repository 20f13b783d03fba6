//! ntfy's publish API, on a listener of its own (`[ingest.ntfy] listen`): `PUT|POST /{topic}`
//! with the message as the body, and JSON publish to `/` (`{"topic", "message", "title", ...}`,
//! which Apprise's `ntfy://` plugin always uses). Every parameter is read from its header or
//! query alias, as ntfy does. The topic names a route (or `[ingest.ntfy] route` takes topics
//! with none).

use std::collections::BTreeSet;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::route::{Facts, Tags, pick};
use super::{Content, Draft, Format, content_for, priority_for};
use crate::http::{ApiError, AppState};
use crate::outbox::Priority;

/// ntfy's topic names: what ntfy itself accepts.
fn valid_topic(topic: &str) -> bool {
    !topic.is_empty()
        && topic.len() <= 64
        && topic
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// One publish, with every parameter read.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Publish {
    pub topic: String,
    pub message: String,
    pub title: Option<String>,
    /// ntfy's 1–5 (3 is the default).
    pub priority: Option<u8>,
    pub tags: Vec<String>,
    /// When to send it (Unix ms), from `X-Delay` / `X-At` / `X-In`.
    pub send_at_ms: Option<i64>,
    pub click: Option<String>,
    pub markdown: bool,
}

fn bad(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_field", message).field(field)
}

/// The first of `names` given as a header or a query parameter (ntfy reads every alias in
/// both places).
fn param(headers: &HeaderMap, query: &[(String, String)], names: &[&str]) -> Option<String> {
    names.iter().find_map(|name| {
        headers
            .get(*name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .or_else(|| {
                query
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.clone())
            })
            .filter(|v| !v.is_empty())
    })
}

/// ntfy's priorities: 1–5 or their names.
pub(crate) fn parse_priority(text: &str) -> Option<u8> {
    match text.trim().to_ascii_lowercase().as_str() {
        "1" | "min" => Some(1),
        "2" | "low" => Some(2),
        "3" | "default" => Some(3),
        "4" | "high" => Some(4),
        "5" | "max" | "urgent" => Some(5),
        _ => None,
    }
}

/// notifyd's priority for ntfy's: 1–2 low, 3 normal, 4–5 high.
fn to_priority(p: u8) -> Priority {
    match p {
        1 | 2 => Priority::Low,
        3 => Priority::Normal,
        _ => Priority::High,
    }
}

/// `X-Delay`: a Unix timestamp (seconds) or a duration (`30m`, `2h`, `1d`), relative to `now_ms`.
pub(crate) fn parse_delay(text: &str, now_ms: i64) -> Option<i64> {
    let text = text.trim();
    if !text.is_empty() && text.chars().all(|c| c.is_ascii_digit()) {
        return text.parse::<i64>().ok()?.checked_mul(1000);
    }
    let d = humantime::parse_duration(text).ok()?;
    now_ms.checked_add(i64::try_from(d.as_millis()).ok()?)
}

fn split_tags(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect()
}

fn truthy(text: &str) -> bool {
    matches!(
        text.trim().to_ascii_lowercase().as_str(),
        "1" | "yes" | "true"
    )
}

/// Reads a publish to `/{topic}` (`topic` given) or a JSON publish to `/` (`topic` `None`).
pub(crate) fn parse(
    topic: Option<&str>,
    headers: &HeaderMap,
    query: Option<&str>,
    body: &[u8],
    now_ms: i64,
) -> Result<Publish, ApiError> {
    let query: Vec<(String, String)> = form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let p = |names: &[&str]| param(headers, &query, names);
    let mut title = p(&["x-title", "title", "ti", "t"]);
    let mut message = p(&["x-message", "message", "m"]);
    let mut priority = match p(&["x-priority", "priority", "prio", "p"]) {
        Some(text) => Some(parse_priority(&text).ok_or_else(|| {
            bad(
                "priority",
                format!("{text:?} is not a priority (1-5, min, low, default, high, max, urgent)"),
            )
        })?),
        None => None,
    };
    let mut tags = p(&["x-tags", "tags", "tag", "ta"])
        .map(|t| split_tags(&t))
        .unwrap_or_default();
    let mut delay = p(&["x-delay", "delay", "x-at", "at", "x-in", "in"]);
    let mut click = p(&["x-click", "click"]);
    let mut markdown = p(&["x-markdown", "markdown", "md"]).is_some_and(|m| truthy(&m))
        || headers
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("text/markdown"));
    let topic = match topic {
        Some(t) => {
            let text = String::from_utf8(body.to_vec()).map_err(|_| {
                bad(
                    "message",
                    "the message must be UTF-8 text (attachments are not supported)",
                )
            })?;
            if !text.trim().is_empty() {
                message = Some(text);
            }
            t.to_owned()
        }
        None => {
            let json: Value = serde_json::from_slice(body).map_err(|e| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_json",
                    format!("a publish to / is ntfy's JSON publish: {e}"),
                )
            })?;
            let text = |k: &str| -> Result<Option<String>, ApiError> {
                match json.get(k) {
                    None | Some(Value::Null) => Ok(None),
                    Some(Value::String(s)) => Ok(Some(s.clone())),
                    Some(_) => Err(bad(k, format!("{k} must be a string"))),
                }
            };
            if let Some(m) = text("message")? {
                message = Some(m);
            }
            if let Some(t) = text("title")? {
                title = Some(t);
            }
            if let Some(c) = text("click")? {
                click = Some(c);
            }
            if let Some(d) = text("delay")? {
                delay = Some(d);
            }
            match json.get("priority") {
                None | Some(Value::Null) => {}
                Some(Value::Number(n)) => {
                    priority = Some(
                        n.as_u64()
                            .and_then(|n| u8::try_from(n).ok())
                            .filter(|n| (1..=5).contains(n))
                            .ok_or_else(|| bad("priority", "priority must be 1 to 5"))?,
                    )
                }
                Some(_) => return Err(bad("priority", "priority must be a number 1 to 5")),
            }
            match json.get("tags") {
                None | Some(Value::Null) => {}
                Some(Value::Array(all)) => {
                    tags = all
                        .iter()
                        .map(|t| t.as_str().map(str::to_owned))
                        .collect::<Option<Vec<_>>>()
                        .ok_or_else(|| bad("tags", "tags must be strings"))?;
                }
                Some(_) => return Err(bad("tags", "tags must be a list of strings")),
            }
            if let Some(m) = json.get("markdown") {
                markdown = m
                    .as_bool()
                    .ok_or_else(|| bad("markdown", "markdown must be true or false"))?;
            }
            text("topic")?.ok_or_else(|| bad("topic", "a JSON publish names its topic"))?
        }
    };
    if !valid_topic(&topic) {
        return Err(bad(
            "topic",
            "a topic is 1 to 64 letters, digits, '-' or '_'",
        ));
    }
    let send_at_ms = match delay {
        Some(text) => Some(parse_delay(&text, now_ms).ok_or_else(|| {
            bad(
                "delay",
                format!("{text:?} is neither a Unix timestamp nor a duration like 30m or 2h"),
            )
        })?),
        None => None,
    };
    Ok(Publish {
        topic,
        // ntfy's own default for an empty publish.
        message: message.unwrap_or_else(|| "triggered".into()),
        title,
        priority,
        tags,
        send_at_ms,
        click,
        markdown,
    })
}

/// The drafts a publish makes for its route.
pub(crate) fn drafts(route: &super::RouteConfig, publish: &Publish) -> Vec<Draft> {
    let carried: BTreeSet<String> = publish.tags.iter().cloned().collect();
    let facts = Facts {
        labels: vec![[("topic".to_owned(), publish.topic.clone())].into()],
        tags: Tags::Carried(carried),
    };
    let body = match &publish.click {
        Some(link) => format!("{}\n\n{link}", publish.message),
        None => publish.message.clone(),
    };
    let raw = json!({
        "topic": publish.topic,
        "message": publish.message,
        "title": publish.title,
        "priority": publish.priority,
        "tags": publish.tags,
        "click": publish.click,
        "markdown": publish.markdown,
    });
    let send_at = publish.send_at_ms.and_then(|ms| {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
            .ok()?
            .format(&Rfc3339)
            .ok()
    });
    let ids = json!({"topic": publish.topic, "tags": publish.tags});
    pick(route, &facts)
        .into_iter()
        .map(|target| Draft {
            target: target.clone(),
            content: content_for(route, target, &raw, || Content::Text {
                subject: publish.title.clone(),
                body: Some(body.clone()),
                html: None,
            }),
            priority: priority_for(route, target, publish.priority.map(to_priority)),
            send_at: send_at.clone(),
            idempotency_key: None,
            ids: ids.clone(),
        })
        .collect()
}

/// ntfy's API: `/` and `/{topic}`, behind the API's tokens.
pub(crate) fn router(state: AppState) -> Router {
    Router::new()
        .route("/", post(publish_json).put(publish_json))
        .route("/{topic}", post(publish_topic).put(publish_topic))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            super::require_ntfy_token,
        ))
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "no_route",
                "this is notifyd's ntfy publish API: PUT/POST /{topic}, or a JSON publish to /",
            )
        })
        .with_state(state)
}

async fn publish_json(
    State(state): State<AppState>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    answer(&state, None, uri, headers, body).await
}

async fn publish_topic(
    State(state): State<AppState>,
    Path(topic): Path<String>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    answer(&state, Some(topic), uri, headers, body).await
}

async fn answer(
    state: &AppState,
    topic: Option<String>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let result = handle(state, topic, &uri, &headers, body).await;
    state.counters.ingest.count(
        Format::Ntfy,
        super::outcome_of(result.as_ref().map(|(_, s)| s.as_slice())),
    );
    let (publish, stored) = result?;
    let now = crate::clock::now_secs();
    // ntfy's answer: the message as published.
    let mut message = json!({
        "id": stored.first().map(|s| s.id.clone()),
        "time": now,
        "event": "message",
        "topic": publish.topic,
        "message": publish.message,
        "notifications": super::ingested(&stored).notifications,
    });
    if let Some(t) = &publish.title {
        message["title"] = json!(t);
    }
    if let Some(p) = publish.priority {
        message["priority"] = json!(p);
    }
    if !publish.tags.is_empty() {
        message["tags"] = json!(publish.tags);
    }
    if let Some(c) = &publish.click {
        message["click"] = json!(c);
    }
    Ok((StatusCode::OK, Json(message)).into_response())
}

async fn handle(
    state: &AppState,
    topic: Option<String>,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
    body: Body,
) -> Result<(Publish, Vec<super::Stored>), ApiError> {
    let live = state.live();
    let bytes = crate::http::read_bytes(
        headers,
        body,
        live.server.max_body_bytes,
        live.server.body_timeout,
    )
    .await?;
    let publish = parse(
        topic.as_deref(),
        headers,
        uri.query(),
        &bytes,
        crate::outbox::now_ms(),
    )?;
    let route_name = if live.ingest.routes.contains_key(&publish.topic) {
        publish.topic.clone()
    } else {
        live.ingest.ntfy.route.clone().ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_topic",
                format!(
                    "no ingest route named {:?} and no [ingest.ntfy] route for other topics",
                    publish.topic
                ),
            )
            .field("topic")
        })?
    };
    let route = super::route(&live, &route_name)?;
    let drafts = drafts(route, &publish);
    if drafts.is_empty() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "no_target",
            format!("no target of route {route_name:?} matches this message's topic and tags"),
        )
        .field("tags"));
    }
    let stored = super::store(state, &live, Format::Ntfy, &route_name, drafts).await?;
    Ok((publish, stored))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn a_topic_publish_reads_headers_and_query_aliases() {
        let p = parse(
            Some("backups"),
            &headers(&[
                ("X-Title", "Backup"),
                ("X-Tags", "warning, disk"),
                ("Click", "https://x/y"),
            ]),
            Some("p=high&md=yes"),
            b"Nightly backup failed",
            0,
        )
        .unwrap();
        assert_eq!(p.topic, "backups");
        assert_eq!(p.message, "Nightly backup failed");
        assert_eq!(p.title.as_deref(), Some("Backup"));
        assert_eq!(p.priority, Some(4));
        assert_eq!(p.tags, vec!["warning", "disk"]);
        assert_eq!(p.click.as_deref(), Some("https://x/y"));
        assert!(p.markdown);
    }

    #[test]
    fn a_json_publish_to_the_root_names_its_topic_and_keeps_header_priority() {
        let p = parse(
            None,
            &headers(&[("X-Priority", "max")]),
            None,
            br#"{"topic": "backups", "title": "T", "message": "M"}"#,
            0,
        )
        .unwrap();
        assert_eq!((p.topic.as_str(), p.message.as_str()), ("backups", "M"));
        assert_eq!(p.title.as_deref(), Some("T"));
        assert_eq!(p.priority, Some(5));
    }

    #[test]
    fn delay_takes_a_timestamp_or_a_duration() {
        assert_eq!(parse_delay("1700000000", 0), Some(1_700_000_000_000));
        assert_eq!(parse_delay("30m", 1_000), Some(1_000 + 30 * 60_000));
        assert_eq!(parse_delay("tomorrow, 10am", 0), None);
        let err = parse(
            Some("t"),
            &headers(&[("X-Delay", "soonish")]),
            None,
            b"m",
            0,
        )
        .unwrap_err();
        assert_eq!(err.field.as_deref(), Some("delay"));
    }

    #[test]
    fn bad_priorities_and_topics_are_named() {
        let err = parse(Some("t"), &headers(&[("X-Priority", "9")]), None, b"m", 0).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("priority"));
        let err = parse(None, &HeaderMap::new(), None, br#"{"message": "m"}"#, 0).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("topic"));
        let err = parse(None, &HeaderMap::new(), None, br#"{"topic": "a/b"}"#, 0).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("topic"));
    }

    #[test]
    fn an_empty_publish_is_triggered_as_in_ntfy() {
        assert_eq!(
            parse(Some("t"), &HeaderMap::new(), None, b"", 0)
                .unwrap()
                .message,
            "triggered"
        );
    }
}
