//! The HTTP API contract: every success and every error case, with its status and JSON body.

use std::sync::Arc;
use std::time::Duration;

use notifyd::Registry;
use notifyd::ServerConfig;
use notifyd::outbox::{SqliteOptions, SqliteOutbox};
use notifyd::{AppState, router};
use serde_json::{Value, json};

use crate::support::*;

const LOG: &str = "[channels.log]\nkind = \"log\"\n";

fn assert_error(status: u16, body: &Value, want_status: u16, code: &str, field: Option<&str>) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    match field {
        Some(f) => assert_eq!(body["error"]["field"], f, "{body}"),
        None => assert!(body["error"].get("field").is_none(), "{body}"),
    }
}

#[tokio::test]
async fn an_accepted_notification_answers_202_and_is_delivered() {
    let d = TestDaemon::start(LOG).await;
    let (status, body) = d
        .post(
            "/v1/notifications",
            &json!({"channel": "log", "to": "a@example.com", "body": "hi"}),
        )
        .await;
    assert_eq!(status, 202);
    assert_eq!(body["state"], "queued");
    let id = body["id"].as_str().unwrap();
    let view = d.wait_for_state(id, "delivered").await;
    assert_eq!(view["channel"], "log");
    assert_eq!(view["to"], "a@example.com");
    assert_eq!(view["attempts"], 1);
    assert_eq!(view["provider_id"], format!("log:{id}"));
    assert_eq!(view["attempt_log"][0]["outcome"], "delivered");
    assert!(
        view["attempt_log"][0]["at"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
    d.stop().await;
}

#[tokio::test]
async fn invalid_json_is_400() {
    let d = TestDaemon::start(LOG).await;
    let resp = d
        .http
        .post(d.url("/v1/notifications"))
        .header("content-type", "application/json")
        .body("{\"channel\": ")
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap();
    assert_error(status, &body, 400, "invalid_json", None);
}

#[tokio::test]
async fn a_non_json_content_type_is_415() {
    let d = TestDaemon::start(LOG).await;
    let resp = d
        .http
        .post(d.url("/v1/notifications"))
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap();
    assert_error(status, &body, 415, "unsupported_media_type", None);
}

#[tokio::test]
async fn an_unknown_channel_is_422_naming_channel() {
    let d = TestDaemon::start(LOG).await;
    let (s, b) = d
        .post(
            "/v1/notifications",
            &json!({"channel": "pager", "to": "x", "body": "b"}),
        )
        .await;
    assert_error(s, &b, 422, "unknown_channel", Some("channel"));
}

#[tokio::test]
async fn an_empty_recipient_is_422_naming_to() {
    let d = TestDaemon::start(LOG).await;
    let (s, b) = d
        .post(
            "/v1/notifications",
            &json!({"channel": "log", "to": "  ", "body": "b"}),
        )
        .await;
    assert_error(s, &b, 422, "invalid_recipient", Some("to"));
}

#[tokio::test]
async fn a_missing_recipient_is_422_naming_to() {
    let d = TestDaemon::start(LOG).await;
    let (s, b) = d
        .post("/v1/notifications", &json!({"channel": "log", "body": "b"}))
        .await;
    assert_error(s, &b, 422, "invalid_field", Some("to"));
}

#[tokio::test]
async fn no_content_at_all_is_422_naming_body() {
    let d = TestDaemon::start(LOG).await;
    let (s, b) = d
        .post("/v1/notifications", &json!({"channel": "log", "to": "x"}))
        .await;
    assert_error(s, &b, 422, "missing_content", Some("body"));
}

#[tokio::test]
async fn an_unknown_field_is_422_naming_it() {
    let d = TestDaemon::start(LOG).await;
    let (s, b) = d
        .post(
            "/v1/notifications",
            &json!({"channel": "log", "to": "x", "body": "b", "colour": "red"}),
        )
        .await;
    assert_error(s, &b, 422, "invalid_field", Some("colour"));
}

#[tokio::test]
async fn a_bad_priority_is_422_naming_priority() {
    let d = TestDaemon::start(LOG).await;
    let (s, b) = d
        .post(
            "/v1/notifications",
            &json!({"channel": "log", "to": "x", "body": "b", "priority": "urgent"}),
        )
        .await;
    assert_error(s, &b, 422, "invalid_field", Some("priority"));
}

#[tokio::test]
async fn a_bad_send_at_is_422_naming_send_at() {
    let d = TestDaemon::start(LOG).await;
    let (s, b) = d
        .post(
            "/v1/notifications",
            &json!({"channel": "log", "to": "x", "body": "b", "send_at": "tomorrow"}),
        )
        .await;
    assert_error(s, &b, 422, "invalid_time", Some("send_at"));
}

#[tokio::test]
async fn an_expiry_in_the_past_is_422_naming_expires_at() {
    let d = TestDaemon::start(LOG).await;
    let (s, b) = d
        .post("/v1/notifications", &json!({"channel": "log", "to": "x", "body": "b", "expires_at": "2001-01-01T00:00:00Z"}))
        .await;
    assert_error(s, &b, 422, "invalid_time", Some("expires_at"));
}

#[tokio::test]
async fn a_fallback_to_an_unknown_channel_is_422_naming_it() {
    let d = TestDaemon::start(LOG).await;
    let (s, b) = d
        .post("/v1/notifications", &json!({"channel": "log", "to": "x", "body": "b", "fallback": [{"channel": "sms", "to": "+1"}]}))
        .await;
    assert_error(s, &b, 422, "unknown_channel", Some("fallback[0].channel"));
}

#[tokio::test]
async fn a_body_over_one_mebibyte_is_413() {
    let d = TestDaemon::start(LOG).await;
    let big = "x".repeat(1024 * 1024 + 1);
    let (s, b) = d
        .post(
            "/v1/notifications",
            &json!({"channel": "log", "to": "x", "body": big}),
        )
        .await;
    assert_error(s, &b, 413, "payload_too_large", None);
}

#[tokio::test]
async fn an_unknown_id_is_404() {
    let d = TestDaemon::start(LOG).await;
    let (s, b) = d.get("/v1/notifications/does-not-exist").await;
    assert_error(s, &b, 404, "not_found", None);
    let (s, b) = d
        .post("/v1/notifications/does-not-exist/cancel", &json!({}))
        .await;
    assert_error(s, &b, 404, "not_found", None);
    let (s, b) = d
        .post("/v1/dead-letters/does-not-exist/retry", &json!({}))
        .await;
    assert_error(s, &b, 404, "not_found", None);
}

#[tokio::test]
async fn an_unknown_route_is_a_json_404() {
    let d = TestDaemon::start(LOG).await;
    let (s, b) = d.get("/v2/whatever").await;
    assert_error(s, &b, 404, "no_route", None);
}

#[tokio::test]
async fn a_replay_with_the_same_key_and_body_answers_200_with_the_original() {
    let d = TestDaemon::start(LOG).await;
    let body = json!({"channel": "log", "to": "x", "body": "b"});
    let first = d
        .http
        .post(d.url("/v1/notifications"))
        .header("idempotency-key", "order-42")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(first.status().as_u16(), 202);
    let first: Value = first.json().await.unwrap();
    let again = d
        .http
        .post(d.url("/v1/notifications"))
        .header("idempotency-key", "order-42")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status().as_u16(), 200);
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["id"], first["id"]);
    assert!(
        again["state"] == "queued" || again["state"] == "sending" || again["state"] == "delivered"
    );
}

#[tokio::test]
async fn the_same_key_with_a_different_body_is_409_naming_the_original() {
    let d = TestDaemon::start(LOG).await;
    let (_, first) = d
        .post(
            "/v1/notifications",
            &json!({"channel": "log", "to": "x", "body": "b", "idempotency_key": "k"}),
        )
        .await;
    let (s, b) = d
        .post(
            "/v1/notifications",
            &json!({"channel": "log", "to": "x", "body": "other", "idempotency_key": "k"}),
        )
        .await;
    assert_error(s, &b, 409, "idempotency_conflict", Some("idempotency_key"));
    assert_eq!(b["error"]["id"], first["id"]);
}

#[tokio::test]
async fn an_idempotency_key_survives_a_restart() {
    let d = TestDaemon::start(LOG).await;
    let body = json!({"channel": "log", "to": "x", "body": "b", "idempotency_key": "restart-1"});
    let (_, first) = d.post("/v1/notifications", &body).await;
    let dir = d.stop().await;
    let config = load_config(&config_text(dir.path(), LOG), dir.path());
    let daemon = notifyd::Daemon::start(config).await.unwrap();
    let resp = reqwest::Client::new()
        .post(format!("http://{}/v1/notifications", daemon.addr()))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let again: Value = resp.json().await.unwrap();
    assert_eq!(again["id"], first["id"]);
    daemon.stop();
    daemon.wait().await;
}

/// An RFC 3339 time `ms` milliseconds from now.
fn in_ms(ms: i64) -> String {
    (time::OffsetDateTime::now_utc() + time::Duration::milliseconds(ms))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

#[tokio::test]
async fn a_replay_after_its_expiry_has_passed_is_200_with_the_original() {
    let d = TestDaemon::start(LOG).await;
    let body = json!({"channel": "log", "to": "x", "body": "b", "idempotency_key": "late-1",
        "expires_at": in_ms(300)});
    let (s, first) = d.post("/v1/notifications", &body).await;
    assert_eq!(s, 202);
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let (s, again) = d.post("/v1/notifications", &body).await;
    assert_eq!(s, 200, "{again}");
    assert_eq!(again["id"], first["id"]);
}

#[tokio::test]
async fn a_batch_item_replayed_after_its_expiry_is_200_with_the_original() {
    let d = TestDaemon::start(LOG).await;
    let item = json!({"channel": "log", "to": "x", "body": "b", "idempotency_key": "late-2",
        "expires_at": in_ms(300)});
    let (_, first) = d
        .post("/v1/notifications/batch", &json!({"notifications": [item]}))
        .await;
    assert_eq!(first["results"][0]["status"], 202);
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let (s, again) = d
        .post("/v1/notifications/batch", &json!({"notifications": [item]}))
        .await;
    assert_eq!(s, 200);
    assert_eq!(again["results"][0]["status"], 200, "{again}");
    assert_eq!(again["results"][0]["id"], first["results"][0]["id"]);
}

#[tokio::test]
async fn a_reused_key_with_other_content_and_a_past_expiry_is_still_422() {
    let d = TestDaemon::start(LOG).await;
    let (s, _) = d
        .post(
            "/v1/notifications",
            &json!({"channel": "log", "to": "x", "body": "b", "idempotency_key": "late-3"}),
        )
        .await;
    assert_eq!(s, 202);
    let (s, b) = d
        .post(
            "/v1/notifications",
            &json!({"channel": "log", "to": "x", "body": "other", "idempotency_key": "late-3",
                "expires_at": "2001-01-01T00:00:00Z"}),
        )
        .await;
    assert_error(s, &b, 422, "invalid_time", Some("expires_at"));
}

#[tokio::test]
async fn header_and_field_keys_that_differ_are_422() {
    let d = TestDaemon::start(LOG).await;
    let resp = d
        .http
        .post(d.url("/v1/notifications"))
        .header("idempotency-key", "a")
        .json(&json!({"channel": "log", "to": "x", "body": "b", "idempotency_key": "b"}))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap();
    assert_error(status, &body, 422, "invalid_field", Some("idempotency_key"));
}

#[tokio::test]
async fn a_batch_answers_per_item_and_stores_the_valid_ones() {
    let d = TestDaemon::start(LOG).await;
    let (s, b) = d
        .post(
            "/v1/notifications/batch",
            &json!({"notifications": [
                {"channel": "log", "to": "a", "body": "1"},
                {"channel": "nope", "to": "b", "body": "2"},
                {"channel": "log", "to": "c"},
                {"channel": "log", "to": "d", "body": "4"},
            ]}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let r = b["results"].as_array().unwrap();
    assert_eq!(r.len(), 4);
    assert_eq!(r[0]["status"], 202);
    assert_eq!(r[1]["status"], 422);
    assert_eq!(r[1]["error"]["field"], "notifications[1].channel");
    assert_eq!(r[2]["status"], 422);
    assert_eq!(r[2]["error"]["code"], "missing_content");
    assert_eq!(r[3]["status"], 202);
    d.wait_for_state(r[0]["id"].as_str().unwrap(), "delivered")
        .await;
    d.wait_for_state(r[3]["id"].as_str().unwrap(), "delivered")
        .await;
}

#[tokio::test]
async fn a_batch_over_the_item_limit_is_422() {
    let d = TestDaemon::start(LOG).await;
    let items: Vec<Value> = (0..1001)
        .map(|i| json!({"channel": "log", "to": "x", "body": i.to_string()}))
        .collect();
    let (s, b) = d
        .post("/v1/notifications/batch", &json!({"notifications": items}))
        .await;
    assert_error(s, &b, 422, "too_many_items", Some("notifications"));
}

#[tokio::test]
async fn a_scheduled_notification_can_be_cancelled_but_not_twice() {
    let d = TestDaemon::start(LOG).await;
    let id = d
        .accept(
            json!({"channel": "log", "to": "x", "body": "b", "send_at": "2099-01-01T00:00:00Z"}),
        )
        .await;
    let (s, b) = d
        .post(&format!("/v1/notifications/{id}/cancel"), &json!({}))
        .await;
    assert_eq!((s, b["state"].clone()), (200, json!("cancelled")));
    let (s, b) = d
        .post(&format!("/v1/notifications/{id}/cancel"), &json!({}))
        .await;
    assert_error(s, &b, 409, "invalid_state", None);
    assert_eq!(
        d.get(&format!("/v1/notifications/{id}")).await.1["state"],
        "cancelled"
    );
}

#[tokio::test]
async fn channels_lists_each_channel_with_its_queue() {
    let d = TestDaemon::start(&format!(
        "{LOG}concurrency = 7\ncriticality = \"critical\"\n"
    ))
    .await;
    d.accept(json!({"channel": "log", "to": "x", "body": "b", "send_at": "2099-01-01T00:00:00Z"}))
        .await;
    let (s, b) = d.get("/v1/channels").await;
    assert_eq!(s, 200);
    let c = &b["channels"][0];
    assert_eq!(c["name"], "log");
    assert_eq!(c["kind"], "log");
    assert_eq!(c["criticality"], "critical");
    assert_eq!(c["concurrency"], 7);
    assert_eq!(c["queue"]["queued"], 1);
}

#[tokio::test]
async fn health_and_readiness_answer_200() {
    let d = TestDaemon::start(LOG).await;
    assert_eq!(d.get("/healthz").await.0, 200);
    assert_eq!(d.get("/readyz").await, (200, json!({"status": "ready"})));
}

#[tokio::test]
async fn readiness_is_503_below_the_configured_free_space() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = load_config(&config_text(dir.path(), LOG), dir.path());
    // More than any disk has.
    config.queue.min_free_bytes = u64::MAX;
    let daemon = notifyd::Daemon::start(config).await.unwrap();
    let resp = reqwest::get(format!("http://{}/readyz", daemon.addr()))
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 503);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "queue_unavailable", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("queue.min_free_bytes"), "{message}");
    daemon.stop();
    daemon.wait().await;
}

/// Log lines written while the guard lives (a current-thread test: the daemon's tasks log here).
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn lines_containing(&self, needle: &str) -> usize {
        let text = String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned();
        text.lines().filter(|l| l.contains(needle)).count()
    }
}

#[tokio::test]
async fn an_unready_daemon_logs_once_not_once_per_probe() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let dir = tempfile::tempdir().unwrap();
    let mut config = load_config(&config_text(dir.path(), LOG), dir.path());
    config.queue.min_free_bytes = u64::MAX;
    let daemon = notifyd::Daemon::start(config).await.unwrap();
    for _ in 0..5 {
        let resp = reqwest::get(format!("http://{}/readyz", daemon.addr()))
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 503);
    }
    assert_eq!(captured.lines_containing("Not ready"), 1);
    daemon.stop();
    daemon.wait().await;
}

#[tokio::test]
async fn a_full_disk_is_503_and_nothing_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let config = load_config(&config_text(dir.path(), LOG), dir.path());
    let outbox = SqliteOutbox::open(&SqliteOptions {
        max_page_count: Some(1),
        ..SqliteOptions::new(dir.path().join("full.db"))
    })
    .unwrap();
    let state = AppState {
        outbox: Arc::new(outbox),
        live: Arc::new(std::sync::RwLock::new(notifyd::Live {
            registry: Arc::new(Registry::build(&config).unwrap()),
            templates: Default::default(),
            server: Arc::new(ServerConfig::default()),
            ingest: Default::default(),
        })),
        counters: Default::default(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router(state)).await.unwrap() });
    let resp = reqwest::Client::new()
        .post(format!("http://{addr}/v1/notifications"))
        .json(&json!({"channel": "log", "to": "x", "body": "y".repeat(200_000)}))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap();
    assert_error(status, &body, 503, "queue_unavailable", None);
    let check = SqliteOutbox::open(&SqliteOptions::new(dir.path().join("full.db"))).unwrap();
    use notifyd::outbox::Outbox;
    assert!(check.depth().await.unwrap().is_empty());
}

fn template_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().join("order_shipped");
    std::fs::create_dir_all(&t).unwrap();
    std::fs::write(t.join("subject.txt"), "Order {{ order }} shipped").unwrap();
    std::fs::write(
        t.join("body.txt"),
        "Hi {{ name }}, order {{ order }} is on its way.",
    )
    .unwrap();
    dir
}

#[tokio::test]
async fn a_template_is_rendered_at_accept_time_and_delivered() {
    let templates = template_dir();
    let sink = Sink::ok().await;
    let channels = format!(
        "{}[templates]\ndir = \"{}\"\n",
        webhook("hooks", &sink.url(), ""),
        templates.path().display()
    );
    let d = TestDaemon::start(&channels).await;
    let id = d
        .accept(json!({"channel": "hooks", "to": "t", "template": "order_shipped", "vars": {"name": "Ann", "order": 42}}))
        .await;
    d.wait_for_state(&id, "delivered").await;
    let got = sink.received();
    assert_eq!(got[0].body["subject"], "Order 42 shipped");
    assert_eq!(got[0].body["body"], "Hi Ann, order 42 is on its way.");
}

#[tokio::test]
async fn a_missing_template_variable_is_422_naming_vars() {
    let templates = template_dir();
    let channels = format!(
        "{LOG}[templates]\ndir = \"{}\"\n",
        templates.path().display()
    );
    let d = TestDaemon::start(&channels).await;
    let (s, b) = d
        .post("/v1/notifications", &json!({"channel": "log", "to": "x", "template": "order_shipped", "vars": {"order": 42}}))
        .await;
    assert_error(s, &b, 422, "template_error", Some("vars"));
    assert!(
        b["error"]["message"].as_str().unwrap().contains("name"),
        "{b}"
    );
    let (s, b) = d
        .post(
            "/v1/notifications",
            &json!({"channel": "log", "to": "x", "template": "nope", "vars": {}}),
        )
        .await;
    assert_error(s, &b, 422, "unknown_template", Some("template"));
}

const TOKENS: &str = "auth_token = \"old-token-0123456789 new-token-0123456789\"";

async fn with_tokens() -> TestDaemon {
    TestDaemon::start_with(TOKENS, LOG).await
}

#[tokio::test]
async fn with_tokens_configured_a_request_without_one_is_401() {
    let d = with_tokens().await;
    let (s, b) = d
        .post(
            "/v1/notifications",
            &json!({"channel": "log", "to": "x", "body": "b"}),
        )
        .await;
    assert_error(s, &b, 401, "unauthorized", None);
    let resp = d
        .http
        .get(d.url("/v1/channels"))
        .bearer_auth("wrong-token-0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    assert_eq!(resp.headers()["www-authenticate"], "Bearer");
}

#[tokio::test]
async fn with_tokens_configured_either_token_is_accepted() {
    let d = with_tokens().await;
    for token in ["old-token-0123456789", "new-token-0123456789"] {
        let resp = d
            .http
            .post(d.url("/v1/notifications"))
            .bearer_auth(token)
            .json(&json!({"channel": "log", "to": "x", "body": "b"}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 202);
    }
}

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive() {
    let d = with_tokens().await;
    for scheme in ["BEARER", "bearer", "Bearer"] {
        let resp = d
            .http
            .post(d.url("/v1/notifications"))
            .header("authorization", format!("{scheme} new-token-0123456789"))
            .json(&json!({"channel": "log", "to": "x", "body": "b"}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 202, "{scheme}");
    }
}

#[tokio::test]
async fn health_endpoints_stay_open_with_tokens_configured() {
    let d = with_tokens().await;
    assert_eq!(d.get("/healthz").await.0, 200);
    assert_eq!(d.get("/readyz").await.0, 200);
}

async fn metrics_text(d: &TestDaemon, token: Option<&str>) -> (u16, String) {
    let mut req = d.http.get(d.url("/metrics"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

#[tokio::test]
async fn metrics_count_accepted_and_attempts_by_outcome_without_recipients() {
    let d = TestDaemon::start(LOG).await;
    let id = d
        .accept(json!({"channel": "log", "to": "secret-recipient@example.com", "body": "b"}))
        .await;
    d.wait_for_state(&id, "delivered").await;
    d.accept(
        json!({"channel": "log", "to": "x", "body": "later", "send_at": "2099-01-01T00:00:00Z"}),
    )
    .await;
    let (status, text) = metrics_text(&d, None).await;
    assert_eq!(status, 200);
    assert!(text.contains("notifyd_accepted_total 2\n"), "{text}");
    assert!(
        text.contains(
            "notifyd_attempts_total{channel=\"log\",kind=\"log\",outcome=\"delivered\"} 1\n"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "notifyd_attempts_total{channel=\"log\",kind=\"log\",outcome=\"transient\"} 0\n"
        ),
        "{text}"
    );
    assert!(
        text.contains("notifyd_delivery_duration_seconds_count{channel=\"log\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains("notifyd_queue_depth{channel=\"log\",state=\"queued\"} 1\n"),
        "{text}"
    );
    // A float gauge: prometheus-client writes zero as `0.0`, the same sample for Prometheus.
    let oldest: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("notifyd_queue_oldest_due_seconds{channel=\"log\"} "))
        .unwrap_or_else(|| panic!("{text}"))
        .parse()
        .unwrap();
    assert_eq!(oldest, 0.0, "{text}");
    assert!(
        text.contains("notifyd_breaker_state{channel=\"log\"} 0\n"),
        "{text}"
    );
    assert!(
        !text.contains("secret-recipient") && !text.contains(&id),
        "labels must stay bounded"
    );
}

#[tokio::test]
async fn metrics_need_a_token_when_tokens_are_configured_unless_public() {
    let d = with_tokens().await;
    assert_eq!(metrics_text(&d, None).await.0, 401);
    assert_eq!(metrics_text(&d, Some("new-token-0123456789")).await.0, 200);
    let public = TestDaemon::start_with(&format!("{TOKENS}\nmetrics_public = true"), LOG).await;
    assert_eq!(metrics_text(&public, None).await.0, 200);
}

#[tokio::test]
async fn the_openapi_document_lists_every_route_and_every_listed_route_is_served() {
    let d = TestDaemon::start(LOG).await;
    let (s, doc) = d.get("/v1/openapi.json").await;
    assert_eq!(s, 200);
    assert_eq!(doc["openapi"], "3.0.3");
    let paths = doc["paths"].as_object().unwrap();
    let documented: Vec<(String, String)> = paths
        .iter()
        .flat_map(|(p, ops)| {
            ops.as_object()
                .unwrap()
                .keys()
                .map(move |m| (m.clone(), p.clone()))
        })
        .collect();
    for route in notifyd::api_routes() {
        assert!(
            documented.contains(&(route.method.to_owned(), route.path.to_owned())),
            "{} {} is served but not documented",
            route.method,
            route.path
        );
    }
    assert_eq!(documented.len(), notifyd::api_routes().len());
    for (method, path) in &documented {
        let url = d.url(&path.replace("{id}", "some-id").replace("{channel}", "log"));
        let req = match method.as_str() {
            "get" => d.http.get(url),
            other => d
                .http
                .request(other.to_uppercase().parse().unwrap(), url)
                .json(&json!({})),
        };
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        assert!(
            status != 405 && body["error"]["code"] != "no_route",
            "{method} {path} is documented but not served: {status} {body}"
        );
    }
    // The request schema comes from the Submission type itself.
    let submission = &doc["components"]["schemas"]["Submission"];
    assert_eq!(submission["required"], json!(["channel", "to"]));
    assert!(submission["properties"]["fallback"].is_object());
    assert_eq!(doc["paths"]["/healthz"]["get"].get("security"), None);
    assert_eq!(
        doc["paths"]["/v1/notifications"]["post"]["security"],
        json!([{"bearer": []}])
    );
}
