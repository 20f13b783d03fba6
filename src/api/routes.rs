//! Every route of the API, once: the router is built from this table and so is the OpenAPI
//! document (`GET /v1/openapi.json`), so the two cannot drift apart.

use axum::routing::MethodRouter;
use serde_json::{Map, Value, json};

use super::AppState;
use crate::submission::Submission;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// A bearer token, when tokens are configured.
    Token,
    /// Anyone (health probes, provider receipts, this document).
    Open,
    /// `/metrics`: a token unless `server.metrics_public`.
    Metrics,
}

/// What a route takes as its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestBody {
    None,
    /// One notification (`Submission`).
    Notification,
    /// `{"notifications": [Submission, ...]}`.
    Batch,
    /// A provider's receipt: form-encoded (Twilio) or signed JSON.
    Receipt,
}

/// One route: its path, method, handler and documentation.
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub summary: &'static str,
    pub access: Access,
    pub body: RequestBody,
    pub responses: &'static [(u16, &'static str)],
    pub handler: fn() -> MethodRouter<AppState>,
}

const ERRORS: (u16, &str) = (422, "invalid field (the error names it)");

/// The whole API.
pub fn all() -> Vec<Route> {
    use super::*;
    use Access::*;
    vec![
        Route {
            method: "post",
            path: "/v1/notifications",
            summary: "Enqueue one notification; answered after it is committed.",
            access: Token,
            body: RequestBody::Notification,
            responses: &[
                (202, "accepted: {id, state}"),
                (200, "idempotent replay: the original {id, state}"),
                (400, "invalid JSON"),
                (409, "idempotency key used with a different notification"),
                (413, "body too large"),
                (415, "not JSON"),
                ERRORS,
                (503, "the queue cannot take writes; nothing stored"),
            ],
            handler: || post(create),
        },
        Route {
            method: "post",
            path: "/v1/notifications/batch",
            summary: "Enqueue up to server.max_batch_items notifications in one commit; per-item results.",
            access: Token,
            body: RequestBody::Batch,
            responses: &[
                (200, "{results: [{status, id, state} | {status, error}]}"),
                (400, "invalid JSON"),
                (413, "body too large"),
                ERRORS,
                (503, "queue unavailable"),
            ],
            handler: || post(create_batch),
        },
        Route {
            method: "get",
            path: "/v1/notifications",
            summary: "Search the history, newest first, a page at a time (filters below; pass `next` as `cursor`).",
            access: Token,
            body: RequestBody::None,
            responses: &[(200, "a page: {notifications, next}"), ERRORS],
            handler: || get(history::list),
        },
        Route {
            method: "get",
            path: "/v1/notifications/{id}/content",
            summary: "What a notification says: subject, body, html, data.",
            access: Token,
            body: RequestBody::None,
            responses: &[
                (200, "{id, subject, body, html, data}"),
                (404, "unknown id"),
            ],
            handler: || get(history::content),
        },
        Route {
            method: "get",
            path: "/v1/notifications/{id}",
            summary: "A notification's state, attempts (time, latency, outcome, decision), provider id, receipts.",
            access: Token,
            body: RequestBody::None,
            responses: &[(200, "the notification"), (404, "unknown id")],
            handler: || get(show),
        },
        Route {
            method: "post",
            path: "/v1/notifications/{id}/cancel",
            summary: "Cancel a notification that is still queued.",
            access: Token,
            body: RequestBody::None,
            responses: &[
                (200, "cancelled"),
                (404, "unknown id"),
                (409, "not queued any more"),
            ],
            handler: || post(cancel),
        },
        Route {
            method: "get",
            path: "/v1/dead-letters",
            summary: "Notifications whose retries ran out, newest first (?channel=&limit=).",
            access: Token,
            body: RequestBody::None,
            responses: &[(200, "{dead_letters: [...]}"), (400, "bad query")],
            handler: || get(dead_letters),
        },
        Route {
            method: "post",
            path: "/v1/dead-letters/{id}/retry",
            summary: "Put a dead letter back in the queue with a fresh attempt budget.",
            access: Token,
            body: RequestBody::None,
            responses: &[(200, "queued"), (404, "unknown id"), (409, "not dead")],
            handler: || post(replay),
        },
        Route {
            method: "post",
            path: "/v1/channels/{channel}/dead-letters/replay",
            summary: "Put every dead letter of a channel back in the queue, each with a fresh attempt budget.",
            access: Token,
            body: RequestBody::None,
            responses: &[(200, "{channel, replayed}")],
            handler: || post(history::replay_channel),
        },
        Route {
            method: "get",
            path: "/v1/channels",
            summary: "Each channel: kind, criticality, breaker, rate limit, holds, queue depth, last error.",
            access: Token,
            body: RequestBody::None,
            responses: &[(200, "{channels: [...]}")],
            handler: || get(channels),
        },
        Route {
            method: "post",
            path: "/v1/inbound/{channel}",
            summary: "A provider's delivery receipt; verified by its signature (Twilio or HMAC), never by token.",
            access: Open,
            body: RequestBody::Receipt,
            responses: &[
                (
                    200,
                    "{matched, notification_id, duplicate}: duplicate when this receipt was already stored (nothing changes again)",
                ),
                (401, "unsigned, wrongly signed or stale"),
                (404, "unknown channel or receipts not configured"),
                (413, "body larger than 64 KiB"),
                ERRORS,
            ],
            handler: || post(inbound),
        },
        Route {
            method: "get",
            path: "/metrics",
            summary: "Prometheus text exposition.",
            access: Metrics,
            body: RequestBody::None,
            responses: &[(200, "text/plain; version=0.0.4")],
            handler: || get(metrics),
        },
        Route {
            method: "get",
            path: "/healthz",
            summary: "Liveness.",
            access: Open,
            body: RequestBody::None,
            responses: &[(200, "{status: ok}")],
            handler: || get(healthz),
        },
        Route {
            method: "get",
            path: "/readyz",
            summary: "Readiness: the queue can take a write now.",
            access: Open,
            body: RequestBody::None,
            responses: &[(200, "{status: ready}"), (503, "queue unavailable")],
            handler: || get(readyz),
        },
        Route {
            method: "get",
            path: "/v1/openapi.json",
            summary: "This document.",
            access: Open,
            body: RequestBody::None,
            responses: &[(200, "OpenAPI 3.0")],
            handler: || get(openapi),
        },
    ]
}

/// The OpenAPI 3.0 document of [`all`].
pub fn document() -> Value {
    let mut generator = schemars::generate::SchemaSettings::openapi3().into_generator();
    let submission = generator.subschema_for::<Submission>().to_value();
    let history_page = generator
        .subschema_for::<super::history::HistoryPageBody>()
        .to_value();
    let mut schemas = generator.take_definitions(true);
    schemas.insert(
        "Error".into(),
        json!({"type": "object", "required": ["error"], "properties": {"error": {
            "type": "object", "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"},
                           "field": {"type": "string"}, "id": {"type": "string"}}}}}),
    );
    let mut paths = Map::new();
    for route in all() {
        let mut op = Map::new();
        op.insert("summary".into(), json!(route.summary));
        op.insert(
            "operationId".into(),
            json!(format!("{} {}", route.method, route.path)),
        );
        if route.access != Access::Open {
            op.insert("security".into(), json!([{"bearer": []}]));
        }
        let mut params: Vec<Value> = route
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        let searches = (route.method, route.path) == ("get", "/v1/notifications");
        if searches {
            params.extend(crate::search::PARAMETERS.iter().map(|(name, what)| {
                json!({"name": name, "in": "query", "required": false, "description": what, "schema": {"type": "string"}})
            }));
        }
        if !params.is_empty() {
            op.insert("parameters".into(), Value::Array(params));
        }
        let body = match route.body {
            RequestBody::None => None,
            RequestBody::Notification => Some(json!({"application/json": {"schema": submission}})),
            RequestBody::Batch => Some(json!({"application/json": {"schema": {
                "type": "object", "required": ["notifications"],
                "properties": {"notifications": {"type": "array", "items": submission}}}}})),
            RequestBody::Receipt => Some(json!({
                "application/x-www-form-urlencoded": {"schema": {"type": "object", "description": "Twilio status callback parameters"}},
                "application/json": {"schema": {"type": "object", "required": ["provider_id", "status"], "properties": {
                    "provider_id": {"type": "string"}, "status": {"type": "string"}, "error_code": {"type": "string"}}}}})),
        };
        if let Some(content) = body {
            op.insert(
                "requestBody".into(),
                json!({"required": true, "content": content}),
            );
        }
        let responses: Map<String, Value> = route
            .responses
            .iter()
            .map(|(status, description)| {
                let mut r = json!({"description": description});
                if *status >= 400 {
                    r["content"] = json!({"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}});
                } else if searches && *status == 200 {
                    r["content"] = json!({"application/json": {"schema": history_page}});
                }
                (status.to_string(), r)
            })
            .collect();
        op.insert("responses".into(), Value::Object(responses));
        let entry = paths.entry(route.path).or_insert_with(|| json!({}));
        entry[route.method] = Value::Object(op);
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "notifyd",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Accepts notifications durably and delivers them over many channels.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    })
}
