//! Every route of the API, once: the router is built from this table and so is the OpenAPI
//! document (`GET /v1/openapi.json`), so the two cannot drift apart.

use axum::routing::MethodRouter;
use schemars::generate::SchemaGenerator;
use schemars::{JsonSchema, Schema};
use serde_json::{Map, Value, json};

use super::AppState;
use super::views::{
    ChannelReplayed, ContentAnswer, NotificationDetail, RecipientAnswer, RecipientDeleted,
};
use crate::http::ErrorBody;
use crate::ingest::Ingested;
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
    /// Ingest endpoints: a token as senders send it (Bearer, or HTTP Basic with the token as
    /// password), when tokens are configured.
    Ingest,
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
    /// Alertmanager's (or Grafana's) webhook payload.
    Alerts,
    /// An Apprise API notify request: form, JSON or multipart.
    Apprise,
    /// A recipient's preferences (`Preferences`).
    Preferences,
    /// RFC 8058's one-click form: `List-Unsubscribe=One-Click`.
    OneClick,
}

/// One route: its path, method, handler and documentation.
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub summary: &'static str,
    pub access: Access,
    pub body: RequestBody,
    pub responses: &'static [(u16, &'static str)],
    /// The schema of the success body: the type the handler serializes.
    pub answer: Answer,
    pub handler: fn() -> MethodRouter<AppState>,
}

/// Where a route's success schema comes from: [`answer`] of the type its handler answers with.
pub(crate) type Answer = fn(&mut SchemaGenerator) -> Schema;

/// The schema of `T`, a response body (a reference to it among the document's schemas).
fn answer<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    generator.subschema_for::<T>()
}

const ERRORS: (u16, &str) = (422, "invalid field (the error names it)");

const INGEST_ALERTS: &[(u16, &str)] = &[
    (
        200,
        "{notifications: [{id, state, duplicate}]}, after the commit; empty when no target matched",
    ),
    (400, "invalid JSON"),
    (401, "no or wrong token"),
    (404, "no such ingest route"),
    (413, "body too large"),
    (
        422,
        "not an Alertmanager payload (the error names the field), or a target the channel refuses",
    ),
    (
        503,
        "the queue cannot take writes; nothing stored (Alertmanager retries)",
    ),
];

const INGEST_GRAFANA: &[(u16, &str)] = &[
    (
        200,
        "{notifications: [{id, state, duplicate}]}, after the commit; empty when no target matched",
    ),
    (400, "invalid JSON"),
    (
        401,
        "no or wrong token, or a missing, wrong or stale signature: nothing stored",
    ),
    (404, "no such ingest route"),
    (413, "body too large"),
    (422, "not Grafana's payload (the error names the field)"),
    (503, "the queue cannot take writes; nothing stored"),
];

const INGEST_APPRISE: &[(u16, &str)] = &[
    (
        200,
        "{notifications: [{id, state, duplicate}]}, after the commit",
    ),
    (
        400,
        "no body, unknown type or format, malformed form (the error names the field)",
    ),
    (401, "no or wrong token"),
    (404, "no such ingest route (the key)"),
    (413, "body too large"),
    (415, "not JSON, a form or multipart"),
    (422, "no target of the route matches the tag"),
    (503, "the queue cannot take writes; nothing stored"),
];

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
            answer: answer::<StateAnswer>,
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
                (415, "not JSON"),
                (
                    422,
                    "invalid field, or an Idempotency-Key header (give each item its idempotency_key)",
                ),
                (503, "queue unavailable"),
            ],
            answer: answer::<BatchAnswer>,
            handler: || post(create_batch),
        },
        Route {
            method: "get",
            path: "/v1/notifications",
            summary: "Search the history, newest first, a page at a time (filters below; pass `next` as `cursor`).",
            access: Token,
            body: RequestBody::None,
            responses: &[(200, "a page: {notifications, next}"), ERRORS],
            answer: answer::<HistoryPageBody>,
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
            answer: answer::<ContentAnswer>,
            handler: || get(history::content),
        },
        Route {
            method: "get",
            path: "/v1/notifications/{id}",
            summary: "A notification's state, attempts (time, latency, outcome, decision), provider id, receipts.",
            access: Token,
            body: RequestBody::None,
            responses: &[(200, "the notification"), (404, "unknown id")],
            answer: answer::<NotificationDetail>,
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
            answer: answer::<StateAnswer>,
            handler: || post(cancel),
        },
        Route {
            method: "post",
            path: "/v1/notifications/{id}/ack",
            summary: "Acknowledge an escalating notification (any message of its chain): its \
                      steps still waiting are cancelled and no further step is sent. Idempotent.",
            access: Token,
            body: RequestBody::None,
            responses: &[
                (
                    200,
                    "{id, escalation_of, acknowledged_at, already, cancelled_steps}",
                ),
                (404, "unknown id"),
                (409, "nothing_to_ack: the notification has no escalation"),
            ],
            answer: answer::<super::views::AckAnswer>,
            handler: || post(ack::acknowledge),
        },
        Route {
            method: "get",
            path: "/v1/links/ack/{token}",
            summary: "The page an acknowledgement link ({{ ack_url }}) opens: a confirm button; \
                      changes nothing.",
            access: Open,
            body: RequestBody::None,
            responses: &[
                (200, "the confirm page"),
                (404, "not a valid link (or links are not configured)"),
                (410, "the link has expired"),
            ],
            answer: answer::<String>,
            handler: || get(ack::link_page),
        },
        Route {
            method: "post",
            path: "/v1/links/ack/{token}",
            summary: "The confirm page's button: acknowledges the notification the link names.",
            access: Open,
            body: RequestBody::None,
            responses: &[
                (200, "acknowledged"),
                (404, "not a valid link, or the notification is gone"),
                (409, "already acknowledged"),
                (410, "the link has expired"),
                (503, "the queue cannot take writes; try again"),
            ],
            answer: answer::<String>,
            handler: || post(ack::link_ack),
        },
        Route {
            method: "get",
            path: "/v1/dead-letters",
            summary: "Notifications whose retries ran out, newest first (?channel=&limit=).",
            access: Token,
            body: RequestBody::None,
            responses: &[(200, "{dead_letters: [...]}"), (400, "bad query")],
            answer: answer::<DeadLetters>,
            handler: || get(dead_letters),
        },
        Route {
            method: "post",
            path: "/v1/dead-letters/{id}/retry",
            summary: "Put a dead letter back in the queue with a fresh attempt budget.",
            access: Token,
            body: RequestBody::None,
            responses: &[(200, "queued"), (404, "unknown id"), (409, "not dead")],
            answer: answer::<StateAnswer>,
            handler: || post(replay),
        },
        Route {
            method: "post",
            path: "/v1/channels/{channel}/dead-letters/replay",
            summary: "Put every dead letter of a channel back in the queue, each with a fresh attempt budget.",
            access: Token,
            body: RequestBody::None,
            responses: &[(200, "{channel, replayed}")],
            answer: answer::<ChannelReplayed>,
            handler: || post(history::replay_channel),
        },
        Route {
            method: "put",
            path: "/v1/recipients/{address}",
            summary: "Store a recipient's preferences (time zone, quiet hours, muted and opted-out channels), replacing any. E-mail addresses match whatever their case.",
            access: Token,
            body: RequestBody::Preferences,
            responses: &[
                (
                    200,
                    "the preferences as stored, with the normalized address",
                ),
                (400, "invalid JSON"),
                (413, "body too large"),
                (415, "not JSON"),
                ERRORS,
                (503, "the queue cannot take writes; nothing stored"),
            ],
            answer: answer::<RecipientAnswer>,
            handler: || axum::routing::put(recipients::put),
        },
        Route {
            method: "get",
            path: "/v1/recipients/{address}",
            summary: "A recipient's preferences.",
            access: Token,
            body: RequestBody::None,
            responses: &[
                (200, "the preferences, with the normalized address"),
                (404, "none stored for this address"),
                ERRORS,
            ],
            answer: answer::<RecipientAnswer>,
            handler: || get(recipients::get),
        },
        Route {
            method: "delete",
            path: "/v1/recipients/{address}",
            summary: "Forget a recipient's preferences.",
            access: Token,
            body: RequestBody::None,
            responses: &[
                (200, "{address, deleted: true}"),
                (404, "none stored for this address"),
                ERRORS,
            ],
            answer: answer::<RecipientDeleted>,
            handler: || axum::routing::delete(recipients::delete),
        },
        Route {
            method: "get",
            path: "/v1/unsubscribe/{token}",
            summary: "The page an e-mail's unsubscribe link opens: a button that POSTs the one-click form. Changes nothing.",
            access: Open,
            body: RequestBody::None,
            responses: &[
                (200, "text/html: the confirm page"),
                (404, "text/html: not a valid link"),
                (410, "text/html: expired, or its notification was purged"),
                (503, "text/html: the queue cannot be read"),
            ],
            answer: answer::<String>,
            handler: || get(unsubscribe::confirm),
        },
        Route {
            method: "post",
            path: "/v1/unsubscribe/{token}",
            summary: "RFC 8058 one-click unsubscribe: opts the recipient out of the notification's channel (List-Unsubscribe-Post).",
            access: Open,
            body: RequestBody::OneClick,
            responses: &[
                (200, "text/html: unsubscribed"),
                (400, "text/html: the body is not List-Unsubscribe=One-Click"),
                (404, "text/html: not a valid link"),
                (408, "text/html: the body did not arrive in time"),
                (410, "text/html: expired, or its notification was purged"),
                (413, "text/html: body larger than server.max_body_bytes"),
                (
                    503,
                    "text/html: the queue cannot take writes; nothing changed",
                ),
            ],
            answer: answer::<String>,
            handler: || post(unsubscribe::one_click),
        },
        Route {
            method: "get",
            path: "/v1/channels",
            summary: "Each channel: kind, criticality, breaker, rate limit, holds, queue depth, last error.",
            access: Token,
            body: RequestBody::None,
            responses: &[(200, "{channels: [...]}")],
            answer: answer::<Channels>,
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
                (
                    401,
                    "unsigned, wrongly signed or stale; also an unknown channel or one without receipts, so a stranger learns nothing",
                ),
                (413, "body larger than 64 KiB"),
                ERRORS,
            ],
            answer: answer::<ReceiptAnswer>,
            handler: || post(inbound),
        },
        Route {
            method: "post",
            path: "/ingest/alertmanager/{route}",
            summary: "Alertmanager's webhook_config receiver (payload version 4); one notification per group (or per alert) for each target the route picks. An HA replica's copy of the same group is the same notification.",
            access: Ingest,
            body: RequestBody::Alerts,
            responses: INGEST_ALERTS,
            answer: answer::<Ingested>,
            handler: || post(crate::ingest::alertmanager::receive),
        },
        Route {
            method: "post",
            path: "/ingest/grafana/{route}",
            summary: "Grafana's webhook contact point; its HMAC-SHA256 signature is checked first when the route has `signature`.",
            access: Ingest,
            body: RequestBody::Alerts,
            responses: INGEST_GRAFANA,
            answer: answer::<Ingested>,
            handler: || post(crate::ingest::grafana::receive),
        },
        Route {
            method: "put",
            path: "/ingest/grafana/{route}",
            summary: "The same, for a contact point set to PUT.",
            access: Ingest,
            body: RequestBody::Alerts,
            responses: INGEST_GRAFANA,
            answer: answer::<Ingested>,
            handler: || axum::routing::put(crate::ingest::grafana::receive),
        },
        Route {
            method: "post",
            path: "/notify/{key}",
            summary: "Apprise API notify (apprise://host/{key}); the key names an ingest route; 200 once stored.",
            access: Ingest,
            body: RequestBody::Apprise,
            responses: INGEST_APPRISE,
            answer: answer::<Ingested>,
            handler: || post(crate::ingest::apprise::notify_key),
        },
        Route {
            method: "post",
            path: "/notify",
            summary: "Apprise API notify with the key in X-Apprise-Config-ID (Apprise's v2 form).",
            access: Ingest,
            body: RequestBody::Apprise,
            responses: INGEST_APPRISE,
            answer: answer::<Ingested>,
            handler: || post(crate::ingest::apprise::notify),
        },
        Route {
            method: "get",
            path: "/metrics",
            summary: "Prometheus text exposition.",
            access: Metrics,
            body: RequestBody::None,
            responses: &[(200, "text/plain; version=0.0.4")],
            answer: answer::<String>,
            handler: || get(metrics),
        },
        Route {
            method: "get",
            path: "/healthz",
            summary: "Liveness.",
            access: Open,
            body: RequestBody::None,
            responses: &[(200, "{status: ok}")],
            answer: answer::<Status>,
            handler: || get(healthz),
        },
        Route {
            method: "get",
            path: "/readyz",
            summary: "Readiness: the queue can take a write now.",
            access: Open,
            body: RequestBody::None,
            responses: &[(200, "{status: ready}"), (503, "queue unavailable")],
            answer: answer::<Status>,
            handler: || get(readyz),
        },
        Route {
            method: "get",
            path: "/v1/openapi.json",
            summary: "This document.",
            access: Open,
            body: RequestBody::None,
            responses: &[(200, "OpenAPI 3.0")],
            answer: answer::<Map<String, Value>>,
            handler: || get(openapi),
        },
    ]
}

/// The OpenAPI 3.0 document of [`all`].
pub(crate) fn document() -> Value {
    let mut generator = schemars::generate::SchemaSettings::openapi3().into_generator();
    let submission = generator.subschema_for::<Submission>().to_value();
    let preferences = generator
        .subschema_for::<crate::recipients::Preferences>()
        .to_value();
    let error = generator.subschema_for::<ErrorBody>().to_value();
    let mut paths = Map::new();
    for route in all() {
        let success = (route.answer)(&mut generator).to_value();
        let mut op = Map::new();
        op.insert("summary".into(), json!(route.summary));
        op.insert(
            "operationId".into(),
            json!(format!("{} {}", route.method, route.path)),
        );
        let mut responses = route.responses.to_vec();
        if route.access == Access::Ingest {
            op.insert("security".into(), json!([{"bearer": []}, {"basic": []}]));
            responses.push((401, "no token, or not a configured one"));
        } else if route.access != Access::Open {
            op.insert("security".into(), json!([{"bearer": []}]));
            responses.push((401, "no token, or not a configured one"));
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
            RequestBody::Preferences => Some(json!({"application/json": {"schema": preferences}})),
            RequestBody::OneClick => Some(json!({"application/x-www-form-urlencoded": {"schema": {
                "type": "object", "required": ["List-Unsubscribe"],
                "properties": {"List-Unsubscribe": {"type": "string", "enum": ["One-Click"]}}}}})),
            RequestBody::Batch => Some(json!({"application/json": {"schema": {
                "type": "object", "required": ["notifications"],
                "properties": {"notifications": {"type": "array", "items": submission}}}}})),
            RequestBody::Alerts => Some(json!({"application/json": {"schema": {
                "type": "object", "required": ["status", "alerts"],
                "description": "Alertmanager's webhook payload (version 4) or Grafana's (version 1); unknown fields are accepted",
                "properties": {"groupKey": {"type": "string"}, "status": {"type": "string", "enum": ["firing", "resolved"]},
                    "alerts": {"type": "array", "items": {"type": "object"}}, "truncatedAlerts": {"type": "integer"}}}}})),
            RequestBody::Apprise => {
                let schema = json!({"type": "object", "required": ["body"], "properties": {
                    "title": {"type": "string"}, "body": {"type": "string"},
                    "type": {"type": "string", "enum": ["info", "success", "warning", "failure"]},
                    "format": {"type": "string", "enum": ["text", "markdown", "html"]},
                    "tag": {"type": "string"}}});
                Some(
                    json!({"application/x-www-form-urlencoded": {"schema": schema},
                    "application/json": {"schema": schema}, "multipart/form-data": {"schema": schema}}),
                )
            }
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
        let responses: Map<String, Value> = responses
            .iter()
            .map(|(status, description)| {
                let mut r = json!({"description": description});
                let html = route.path.starts_with("/v1/unsubscribe/")
                    || route.path.starts_with("/v1/links/");
                let (media, schema) = match *status {
                    _ if html => ("text/html", &success),
                    400.. => ("application/json", &error),
                    _ if route.path == "/metrics" => ("text/plain", &success),
                    _ => ("application/json", &success),
                };
                let mut content = Map::new();
                content.insert(media.to_owned(), json!({ "schema": schema }));
                r["content"] = Value::Object(content);
                (status.to_string(), r)
            })
            .collect();
        op.insert("responses".into(), Value::Object(responses));
        let entry = paths.entry(route.path).or_insert_with(|| json!({}));
        entry[route.method] = Value::Object(op);
    }
    let schemas = generator.take_definitions(true);
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
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"},
                "basic": {"type": "http", "scheme": "basic", "description": "any user name, a token as password"}},
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Where a documented body's schema is missing or names nothing: `None` when it is there.
    fn missing_schema(doc: &Value, schema: Option<&Value>) -> Option<String> {
        let schema = schema.and_then(Value::as_object).filter(|s| !s.is_empty());
        let Some(schema) = schema else {
            return Some("no schema".into());
        };
        match schema.get("$ref").and_then(Value::as_str) {
            Some(reference) => {
                let name = reference.rsplit('/').next().unwrap_or_default();
                let found = doc["components"]["schemas"].get(name);
                found
                    .is_none_or(|s| s.as_object().is_none_or(|o| o.is_empty()))
                    .then(|| format!("{reference} names no schema"))
            }
            None => ["type", "properties", "oneOf", "anyOf", "allOf", "enum"]
                .iter()
                .all(|k| !schema.contains_key(*k))
                .then(|| "a schema that says nothing".into()),
        }
    }

    #[test]
    fn every_documented_response_has_a_body_schema() {
        let doc = document();
        let mut missing = Vec::new();
        let mut responses = 0;
        for (path, methods) in doc["paths"].as_object().unwrap() {
            for (method, op) in methods.as_object().unwrap() {
                for (status, response) in op["responses"].as_object().unwrap() {
                    responses += 1;
                    let content = response["content"].as_object();
                    if content.is_none_or(|c| c.is_empty()) {
                        missing.push(format!("{method} {path} {status}: no body"));
                    }
                    for (media, body) in content.into_iter().flatten() {
                        if let Some(why) = missing_schema(&doc, body.get("schema")) {
                            missing.push(format!("{method} {path} {status} {media}: {why}"));
                        }
                    }
                }
            }
        }
        assert!(responses > all().len(), "every route documents its answers");
        assert_eq!(missing, Vec::<String>::new());
    }

    #[test]
    fn a_response_without_a_schema_is_found() {
        let doc = json!({"components": {"schemas": {"Status": {"type": "object"}}}});
        assert_eq!(
            missing_schema(&doc, Some(&json!({"$ref": "#/components/schemas/Status"}))),
            None
        );
        assert!(
            missing_schema(&doc, Some(&json!({"$ref": "#/components/schemas/Gone"}))).is_some()
        );
        assert!(missing_schema(&doc, Some(&json!({}))).is_some());
        assert!(missing_schema(&doc, None).is_some());
    }
}
