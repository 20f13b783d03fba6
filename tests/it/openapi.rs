//! The OpenAPI document describes what the API actually answers: every route is called on a
//! real daemon, and each answer (success and error) is checked against the schema
//! `/v1/openapi.json` documents for its route and status, with a small JSON-schema checker
//! for the subset the document uses. The schemathesis fuzz (`fuzz.rs`) checks the same on
//! generated requests where it is installed; this runs everywhere.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::support::*;

/// The places `value` breaks `schema`, resolving `$ref`s in `doc`; empty when it conforms.
/// Panics on a keyword it does not know, so a schema it cannot check never passes unchecked.
fn violations(doc: &Value, schema: &Value, value: &Value, at: &str) -> Vec<String> {
    let mut out = Vec::new();
    check(doc, schema, value, at, &mut out);
    out
}

fn check(doc: &Value, schema: &Value, value: &Value, at: &str, out: &mut Vec<String>) {
    let Some(map) = schema.as_object() else {
        if schema == &json!(false) {
            out.push(format!("{at}: nothing is allowed here"));
        }
        return;
    };
    if let Some(Value::String(r)) = map.get("$ref") {
        let name = r.strip_prefix("#/components/schemas/").unwrap();
        let target = &doc["components"]["schemas"][name];
        assert!(!target.is_null(), "{at}: unresolved $ref {r}");
        return check(doc, target, value, at, out);
    }
    if value.is_null() && map.get("nullable") == Some(&json!(true)) {
        return;
    }
    for (keyword, rule) in map {
        match keyword.as_str() {
            "type" => {
                let ok = match rule.as_str().unwrap() {
                    "object" => value.is_object(),
                    "array" => value.is_array(),
                    "string" => value.is_string(),
                    "boolean" => value.is_boolean(),
                    "integer" => value.is_i64() || value.is_u64(),
                    "number" => value.is_number(),
                    other => panic!("{at}: unknown type {other}"),
                };
                if !ok {
                    out.push(format!("{at}: {value} is not of type {rule}"));
                }
            }
            "enum" => {
                if !rule.as_array().unwrap().contains(value) {
                    out.push(format!("{at}: {value} is not one of {rule}"));
                }
            }
            "const" => {
                if rule != value {
                    out.push(format!("{at}: {value} is not {rule}"));
                }
            }
            "required" => {
                for name in rule.as_array().unwrap() {
                    let name = name.as_str().unwrap();
                    if value.is_object() && value.get(name).is_none() {
                        out.push(format!("{at}: `{name}` is missing"));
                    }
                }
            }
            "properties" => {
                for (name, sub) in rule.as_object().unwrap() {
                    if let Some(v) = value.get(name).filter(|_| value.is_object()) {
                        check(doc, sub, v, &format!("{at}.{name}"), out);
                    }
                }
            }
            "additionalProperties" => {
                let known = map.get("properties").and_then(Value::as_object);
                if let Some(object) = value.as_object() {
                    for (name, v) in object {
                        if known.is_none_or(|k| !k.contains_key(name)) {
                            check(doc, rule, v, &format!("{at}.{name}"), out);
                        }
                    }
                }
            }
            "items" => {
                for (i, v) in value.as_array().into_iter().flatten().enumerate() {
                    check(doc, rule, v, &format!("{at}[{i}]"), out);
                }
            }
            "minimum" => {
                if value.as_f64().is_some_and(|v| v < rule.as_f64().unwrap()) {
                    out.push(format!("{at}: {value} is under {rule}"));
                }
            }
            "maximum" => {
                if value.as_f64().is_some_and(|v| v > rule.as_f64().unwrap()) {
                    out.push(format!("{at}: {value} is over {rule}"));
                }
            }
            "allOf" => {
                for sub in rule.as_array().unwrap() {
                    check(doc, sub, value, at, out);
                }
            }
            "anyOf" | "oneOf" => {
                let passing = rule
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|sub| violations(doc, sub, value, at).is_empty())
                    .count();
                let ok = if keyword == "oneOf" {
                    passing == 1
                } else {
                    passing >= 1
                };
                if !ok {
                    out.push(format!(
                        "{at}: {value} matches {passing} of {keyword} {rule}"
                    ));
                }
            }
            "nullable" | "description" | "title" | "format" | "example" | "examples"
            | "default" | "readOnly" | "writeOnly" | "deprecated" => {}
            other => panic!("{at}: the checker does not know the keyword {other}"),
        }
    }
}

/// The schema documented for `status` of `method path` and its media type.
fn documented<'d>(doc: &'d Value, method: &str, path: &str, status: u16) -> (&'d str, &'d Value) {
    let content = &doc["paths"][path][method]["responses"][status.to_string()]["content"];
    let (media, entry) = content
        .as_object()
        .and_then(|c| c.iter().next())
        .unwrap_or_else(|| panic!("{method} {path} documents no body for {status}"));
    (media.as_str(), &entry["schema"])
}

/// Calls the API and checks each answer against its documented schema.
struct Conformance<'a> {
    d: &'a TestDaemon,
    doc: Value,
    /// `(method, path, status)` of every answer checked.
    seen: BTreeSet<(String, String, u16)>,
}

impl Conformance<'_> {
    /// Sends `method url` with `body` (JSON) and checks the answer as route `path`'s; returns it.
    async fn call(&mut self, method: &str, path: &str, url: &str, body: Option<Value>) -> Value {
        let mut request = self
            .d
            .http
            .request(method.to_uppercase().parse().unwrap(), self.d.url(url));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let resp = request.send().await.unwrap();
        self.check(method, path, resp).await
    }

    async fn check(&mut self, method: &str, path: &str, resp: reqwest::Response) -> Value {
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let text = resp.text().await.unwrap();
        let (media, schema) = documented(&self.doc, method, path, status);
        assert!(
            content_type.starts_with(media),
            "{method} {path} {status}: {content_type}, documented {media}"
        );
        let value = if media == "application/json" {
            serde_json::from_str(&text).unwrap()
        } else {
            Value::String(text)
        };
        let wrong = violations(&self.doc, schema, &value, "$");
        assert!(
            wrong.is_empty(),
            "{method} {path} {status} does not match its schema: {wrong:#?}\n{value:#}"
        );
        self.seen
            .insert((method.to_owned(), path.to_owned(), status));
        value
    }
}

#[test]
fn the_checker_finds_a_body_that_breaks_its_schema() {
    let doc = json!({"components": {"schemas": {"A": {
        "type": "object", "required": ["id", "state"],
        "properties": {"id": {"type": "string"}, "state": {"type": "string", "enum": ["queued"]},
                       "n": {"type": "integer", "nullable": true}}}}}});
    let schema = json!({"$ref": "#/components/schemas/A"});
    assert!(
        violations(
            &doc,
            &schema,
            &json!({"id": "x", "state": "queued", "n": null}),
            "$"
        )
        .is_empty()
    );
    assert_eq!(
        violations(
            &doc,
            &schema,
            &json!({"id": 1, "state": "gone", "n": 1.5}),
            "$"
        ),
        [
            "$.id: 1 is not of type \"string\"",
            "$.n: 1.5 is not of type \"integer\"",
            "$.state: \"gone\" is not one of [\"queued\"]",
        ]
    );
    assert_eq!(
        violations(&doc, &schema, &json!({"id": "x"}), "$"),
        ["$: `state` is missing"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_as_its_documented_schema_says() {
    let secret = "0123456789abcdef0123456789abcdef";
    let d = TestDaemon::start(&format!(
        "[channels.log]\nkind = \"log\"\n\
         [channels.hooks]\nkind = \"webhook\"\nurl = \"http://127.0.0.1:9/hook\"\n\
         rate_limit = {{ per_second = 5, burst = 10 }}\n\
         receipts = {{ verify = \"hmac\", secret = \"{secret}\" }}\n\
         [channels.down]\nkind = \"webhook\"\nurl = \"http://127.0.0.1:9/hook\"\n\
         retry = {{ max_attempts = 1 }}\n\
         [ingest.routes.alerts]\ntargets = [{{ channel = \"log\", to = \"ops\" }}]\n"
    ))
    .await;
    let (_, doc) = d.get("/v1/openapi.json").await;
    let mut api = Conformance {
        d: &d,
        doc,
        seen: BTreeSet::new(),
    };
    let note = json!({"channel": "log", "to": "alice", "body": "hi", "idempotency_key": "k1"});

    let created = api
        .call(
            "post",
            "/v1/notifications",
            "/v1/notifications",
            Some(note.clone()),
        )
        .await;
    let id = created["id"].as_str().unwrap().to_owned();
    api.call("post", "/v1/notifications", "/v1/notifications", Some(note))
        .await;
    let other = json!({"channel": "log", "to": "bob", "body": "hi", "idempotency_key": "k1"});
    api.call(
        "post",
        "/v1/notifications",
        "/v1/notifications",
        Some(other),
    )
    .await;
    let unknown = json!({"channel": "nope", "to": "bob", "body": "hi"});
    api.call(
        "post",
        "/v1/notifications",
        "/v1/notifications",
        Some(unknown.clone()),
    )
    .await;
    let batch = json!({"notifications": [{"channel": "log", "to": "a", "body": "x"}, unknown]});
    api.call(
        "post",
        "/v1/notifications/batch",
        "/v1/notifications/batch",
        Some(batch),
    )
    .await;
    d.wait_for_state(&id, "delivered").await;
    // Acknowledged: an escalating notification (200), one without escalation (409).
    let escalating = json!({"channel": "log", "to": "alice", "body": "page",
        "escalate": [{"after": "5m", "channel": "log", "to": "bob"}]});
    let (_, escalating) = d.post("/v1/notifications", &escalating).await;
    let escalating = escalating["id"].as_str().unwrap().to_owned();
    let ack = "/v1/notifications/{id}/ack";
    api.call(
        "post",
        ack,
        &format!("/v1/notifications/{escalating}/ack"),
        None,
    )
    .await;
    api.call("post", ack, &format!("/v1/notifications/{id}/ack"), None)
        .await;
    let doomed = json!({"channel": "down", "to": "x", "body": "never"});
    let (_, doomed) = d.post("/v1/notifications", &doomed).await;
    let doomed = doomed["id"].as_str().unwrap().to_owned();
    d.wait_for_state(&doomed, "dead").await;

    let later =
        json!({"channel": "hooks", "to": "x", "body": "later", "send_at": "2999-01-01T00:00:00Z"});
    let (_, later) = d.post("/v1/notifications", &later).await;
    let later = later["id"].as_str().unwrap().to_owned();

    api.call("get", "/v1/notifications", "/v1/notifications", None)
        .await;
    api.call(
        "get",
        "/v1/notifications",
        "/v1/notifications?state=nope",
        None,
    )
    .await;
    let one = "/v1/notifications/{id}";
    let shown = api
        .call("get", one, &format!("/v1/notifications/{id}"), None)
        .await;
    assert_eq!(shown["attempt_log"][0]["outcome"], "delivered", "{shown}");
    api.call("get", one, "/v1/notifications/unknown", None)
        .await;
    let content = "/v1/notifications/{id}/content";
    api.call(
        "get",
        content,
        &format!("/v1/notifications/{id}/content"),
        None,
    )
    .await;
    let cancel = "/v1/notifications/{id}/cancel";
    api.call(
        "post",
        cancel,
        &format!("/v1/notifications/{later}/cancel"),
        None,
    )
    .await;
    api.call(
        "post",
        cancel,
        &format!("/v1/notifications/{id}/cancel"),
        None,
    )
    .await;
    let dead = api
        .call("get", "/v1/dead-letters", "/v1/dead-letters", None)
        .await;
    assert_eq!(dead["dead_letters"][0]["id"], doomed.as_str(), "{dead}");
    let retry = "/v1/dead-letters/{id}/retry";
    api.call("post", retry, &format!("/v1/dead-letters/{id}/retry"), None)
        .await;
    api.call(
        "post",
        retry,
        &format!("/v1/dead-letters/{doomed}/retry"),
        None,
    )
    .await;
    let replay = "/v1/channels/{channel}/dead-letters/replay";
    api.call("post", replay, "/v1/channels/log/dead-letters/replay", None)
        .await;
    let channels = api.call("get", "/v1/channels", "/v1/channels", None).await;
    let hooks = channels["channels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "hooks");
    assert_eq!(hooks.unwrap()["rate_limit"]["burst"], 10, "{channels}");

    let receipt = r#"{"provider_id":"relay-1","status":"delivered"}"#;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let signed = d
        .http
        .post(d.url("/v1/inbound/hooks"))
        .header("content-type", "application/json")
        .header("webhook-timestamp", now.to_string())
        .header(
            "webhook-signature",
            notifyd_channels::webhook::signature(secret.as_bytes(), now, receipt.as_bytes()),
        )
        .body(receipt)
        .send()
        .await
        .unwrap();
    api.check("post", "/v1/inbound/{channel}", signed).await;

    let alerts = json!({"version": "4", "groupKey": "g", "status": "firing", "receiver": "n",
        "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://am",
        "alerts": [{"status": "firing", "labels": {"alertname": "Down"}, "annotations": {},
                    "startsAt": "2026-12-01T10:00:00Z", "endsAt": "0001-01-01T00:00:00Z"}]});
    api.call(
        "post",
        "/ingest/alertmanager/{route}",
        "/ingest/alertmanager/alerts",
        Some(alerts),
    )
    .await;
    api.call(
        "post",
        "/notify/{key}",
        "/notify/alerts",
        Some(json!({"body": "disk full"})),
    )
    .await;
    let recipient = "/v1/recipients/{address}";
    let prefs = json!({"muted": ["log"]});
    let url = "/v1/recipients/alice@example.com";
    let stored = api.call("put", recipient, url, Some(prefs)).await;
    assert_eq!(stored["address"], "alice@example.com", "{stored}");
    api.call("get", recipient, url, None).await;
    api.call("delete", recipient, url, None).await;
    api.call("get", recipient, url, None).await;
    api.call("get", "/metrics", "/metrics", None).await;
    api.call("get", "/healthz", "/healthz", None).await;
    api.call("get", "/readyz", "/readyz", None).await;
    api.call("get", "/v1/openapi.json", "/v1/openapi.json", None)
        .await;

    let statuses: Vec<String> = api
        .seen
        .iter()
        .map(|(m, p, s)| format!("{s} {m} {p}"))
        .collect();
    let success = |m: &str, p: &str| {
        api.seen
            .iter()
            .any(|(sm, sp, s)| sm == m && sp == p && *s < 300)
    };
    // Every route with a success answer of its own was called and checked, but the Grafana
    // and key-in-header Apprise routes, which answer as Alertmanager's and `/notify/{key}` do
    // (same answer type).
    for (path, item) in api.doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            // The unsubscribe and acknowledgement pages answer HTML (documented as a string)
            // and need a signed link: `preferences.rs` and `escalation.rs` drive them.
            if path.starts_with("/ingest/grafana")
                || path == "/notify"
                || path.starts_with("/v1/unsubscribe/")
                || path.starts_with("/v1/links/")
            {
                continue;
            }
            assert!(
                success(method, path),
                "{method} {path} was not checked: {statuses:#?}"
            );
        }
    }
    for expected in [
        "200 post /v1/notifications",
        "202 post /v1/notifications",
        "409 post /v1/notifications",
        "422 post /v1/notifications",
        "422 get /v1/notifications",
        "404 get /v1/notifications/{id}",
        "404 get /v1/recipients/{address}",
        "409 post /v1/notifications/{id}/cancel",
        "409 post /v1/dead-letters/{id}/retry",
    ] {
        assert!(
            statuses.iter().any(|s| s == expected),
            "{expected}: {statuses:#?}"
        );
    }
}
