//! Hostile and careless input over HTTP: what the API accepts it can store exactly and read
//! back; what it cannot, it refuses with a 422 naming the field.

use std::time::Duration;

use axum::http::StatusCode;
use notifyd::MAX_JSON_DEPTH as MAX_DEPTH;
use serde_json::{Value, json};

use crate::support::*;

const LOG: &str = "[channels.log]\nkind = \"log\"\n";

/// `{"a":{"a":…1…}}`, `levels` objects deep.
fn nested(levels: usize) -> Value {
    (0..levels).fold(json!(1), |inner, _| json!({ "a": inner }))
}

fn assert_refused(status: u16, body: &Value, code: &str, field: &str) {
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert_eq!(body["error"]["field"], field, "{body}");
}

/// A daemon whose `hooks` webhook rejects everything for good, with a template `deep` whose
/// Slack part wraps `vars.v` two levels deeper, and a `slack_webhook` channel `ops` that
/// records what it is sent.
async fn templated_fallback() -> (TestDaemon, wiremock::MockServer, tempfile::TempDir) {
    use wiremock::matchers::method;
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let templates = tempfile::tempdir().unwrap();
    let t = templates.path().join("deep");
    std::fs::create_dir_all(&t).unwrap();
    std::fs::write(t.join("body.txt"), "deep").unwrap();
    std::fs::write(t.join("data.json"), "{{ v }}").unwrap();
    std::fs::write(t.join("slack.json"), "{\"attachments\": [{{ v }}]}").unwrap();
    let slack = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_string("ok"))
        .mount(&slack)
        .await;
    let sink = Sink::start(|_, _| (StatusCode::UNPROCESSABLE_ENTITY, vec![], Duration::ZERO)).await;
    let channels = format!(
        "{}[channels.ops]\nkind = \"slack_webhook\"\nurl = \"{}/services/T0/B0/x\"\n[templates]\ndir = \"{}\"\n",
        webhook("hooks", &sink.url(), ""),
        slack.uri(),
        templates.path().display()
    );
    (TestDaemon::start(&channels).await, slack, templates)
}

fn deep_request(vars_depth: usize) -> Value {
    // vars = {"v": V}: V is one level shallower than vars.
    json!({"channel": "hooks", "to": "t", "template": "deep",
           "vars": {"v": nested(vars_depth - 1)},
           "fallback": [{"channel": "ops", "to": "#ops"}]})
}

#[tokio::test]
async fn the_deepest_accepted_input_is_stored_read_back_claimed_and_its_fallback_sent() {
    let (d, slack, _templates) = templated_fallback().await;
    // The Slack part nests the value two levels deeper than vars, so the deepest vars whose
    // rendering is still accepted is MAX_DEPTH - 1.
    let id = d.accept(deep_request(MAX_DEPTH - 1)).await;
    let (status, view) = d.get(&format!("/v1/notifications/{id}")).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["fallback"][0]["channel"], "ops", "{view}");
    d.wait_for_state(&id, "failed").await;
    let child = d.fallback_child(&id);
    let view = d.wait_for_state(&child, "delivered").await;
    assert_eq!(view["fallback_of"], id.as_str());
    let sent: Value = slack.received_requests().await.unwrap()[0]
        .body_json()
        .unwrap();
    assert_eq!(sent["attachments"][0], nested(MAX_DEPTH - 2));
}

#[tokio::test]
async fn vars_one_level_over_the_limit_are_422_naming_vars() {
    let (d, _slack, _templates) = templated_fallback().await;
    let (s, b) = d
        .post("/v1/notifications", &deep_request(MAX_DEPTH + 1))
        .await;
    assert_refused(s, &b, "too_deep", "vars");
}

#[tokio::test]
async fn a_template_that_renders_data_over_the_limit_is_422_naming_template() {
    let (d, _slack, _templates) = templated_fallback().await;
    // Within the limit as vars; the Slack part adds two levels for the fallback route.
    let (s, b) = d.post("/v1/notifications", &deep_request(MAX_DEPTH)).await;
    assert_refused(s, &b, "too_deep", "template");
}

#[tokio::test]
async fn the_deep_vars_of_the_report_are_422_not_stored() {
    let (d, _slack, _templates) = templated_fallback().await;
    let (s, b) = d.post("/v1/notifications", &deep_request(124)).await;
    assert_refused(s, &b, "too_deep", "vars");
}

#[tokio::test]
async fn data_at_the_limit_is_delivered_and_one_level_over_is_422_naming_data() {
    let sink = Sink::ok().await;
    let d = TestDaemon::start(&webhook("hooks", &sink.url(), "")).await;
    let id = d
        .accept(json!({"channel": "hooks", "to": "t", "data": nested(MAX_DEPTH)}))
        .await;
    d.wait_for_state(&id, "delivered").await;
    assert_eq!(sink.received()[0].body["data"], nested(MAX_DEPTH));
    let (s, b) = d
        .post(
            "/v1/notifications",
            &json!({"channel": "hooks", "to": "t", "data": nested(MAX_DEPTH + 1)}),
        )
        .await;
    assert_refused(s, &b, "too_deep", "data");
}

#[tokio::test]
async fn a_batch_item_over_the_depth_limit_is_refused_on_its_own() {
    let d = TestDaemon::start(LOG).await;
    let (s, b) = d
        .post(
            "/v1/notifications/batch",
            &json!({"notifications": [
                {"channel": "log", "to": "x", "data": nested(MAX_DEPTH + 1)},
                {"channel": "log", "to": "x", "body": "fine"},
            ]}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let results = b["results"].as_array().unwrap();
    assert_eq!(results[0]["status"], 422, "{b}");
    assert_eq!(results[0]["error"]["code"], "too_deep");
    assert_eq!(results[0]["error"]["field"], "notifications[0].data");
    assert_eq!(results[1]["status"], 202, "{b}");
}

/// Posts raw JSON text (a client may write integers `serde_json::Value` cannot hold).
async fn post_text(d: &TestDaemon, path: &str, text: &str) -> (u16, Value) {
    let resp = d
        .http
        .post(d.url(path))
        .header("content-type", "application/json")
        .body(text.to_owned())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

#[tokio::test]
async fn integers_outside_i64_in_data_are_422_naming_their_path() {
    let d = TestDaemon::start(LOG).await;
    for (literal, field) in [
        ("18446744073709551616", "data.n"),
        ("9223372036854775808", "data.n"),
        ("-9223372036854775809", "data.n"),
    ] {
        let text = format!(r#"{{"channel": "log", "to": "x", "data": {{"n": {literal}}}}}"#);
        let (s, b) = post_text(&d, "/v1/notifications", &text).await;
        assert_refused(s, &b, "inexact_integer", field);
    }
    let text = r#"{"channel": "log", "to": "x", "template": "t", "vars": {"ids": [1, 99999999999999999999]}}"#;
    let (s, b) = post_text(&d, "/v1/notifications", text).await;
    assert_refused(s, &b, "inexact_integer", "vars.ids[1]");
}

#[tokio::test]
async fn integers_at_the_ends_of_i64_are_delivered_exactly() {
    let sink = Sink::ok().await;
    let d = TestDaemon::start(&webhook("hooks", &sink.url(), "")).await;
    let text = r#"{"channel": "hooks", "to": "t", "data": {"max": 9223372036854775807, "min": -9223372036854775808}}"#;
    let (s, b) = post_text(&d, "/v1/notifications", text).await;
    assert_eq!(s, 202, "{b}");
    d.wait_for_state(b["id"].as_str().unwrap(), "delivered")
        .await;
    let data = &sink.received()[0].body["data"];
    assert_eq!(data["max"].as_i64(), Some(i64::MAX), "{data}");
    assert_eq!(data["min"].as_i64(), Some(i64::MIN), "{data}");
}

#[tokio::test]
async fn a_batch_item_with_an_inexact_integer_is_refused_on_its_own() {
    let d = TestDaemon::start(LOG).await;
    let text = r#"{"notifications": [{"channel": "log", "to": "x", "body": "fine"},
        {"channel": "log", "to": "x", "data": {"n": 18446744073709551616}}]}"#;
    let (s, b) = post_text(&d, "/v1/notifications/batch", text).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["results"][0]["status"], 202, "{b}");
    assert_eq!(b["results"][1]["status"], 422, "{b}");
    assert_eq!(b["results"][1]["error"]["code"], "inexact_integer");
    assert_eq!(b["results"][1]["error"]["field"], "notifications[1].data.n");
}

#[tokio::test]
async fn a_batch_item_larger_than_a_single_post_may_be_is_refused_on_its_own() {
    let d = TestDaemon::start_with("max_body_bytes = 4096", LOG).await;
    let (s, b) = d
        .post(
            "/v1/notifications/batch",
            &json!({"notifications": [
                {"channel": "log", "to": "x", "body": "y".repeat(5000)},
                {"channel": "log", "to": "x", "body": "fine"},
            ]}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["results"][0]["status"], 422, "{b}");
    assert_eq!(b["results"][0]["error"]["code"], "too_large");
    assert_eq!(b["results"][0]["error"]["field"], "notifications[0]");
    assert_eq!(b["results"][1]["status"], 202, "{b}");
}

#[tokio::test]
async fn an_idempotency_key_header_on_a_batch_is_422_naming_it() {
    let d = TestDaemon::start(LOG).await;
    let resp = d
        .http
        .post(d.url("/v1/notifications/batch"))
        .header("idempotency-key", "k1")
        .json(&json!({"notifications": [{"channel": "log", "to": "x", "body": "b"}]}))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap();
    assert_refused(status, &body, "invalid_header", "Idempotency-Key");
    let (_, depth) = d.get("/v1/channels").await;
    assert_eq!(depth["channels"][0]["queue"]["queued"], 0, "{depth}");
}

#[tokio::test]
async fn a_replay_of_a_notification_stored_before_the_integer_check_answers_the_original() {
    let d = TestDaemon::start(LOG).await;
    let text = r#"{"channel": "log", "to": "x", "send_at": "2099-01-01T00:00:00Z",
        "data": {"n": 18446744073709551616}, "idempotency_key": "before-upgrade"}"#;
    // Stored by an earlier version, which took the integer as a float (as serde_json does).
    let hash = serde_json::from_str::<notifyd::Submission>(text)
        .unwrap()
        .replay()
        .unwrap()
        .content_hash;
    let id: String = rusqlite::Connection::open(d.queue_path())
        .unwrap()
        .query_row(
            "INSERT INTO notifications (channel, recipient, data, run_at, idempotency_key, content_hash)
             VALUES ('log', 'x', '{\"n\":1.8446744073709552e19}', 4070908800000, 'before-upgrade', ?1)
             RETURNING id",
            [hash],
            |r| r.get(0),
        )
        .unwrap();
    let (s, b) = post_text(&d, "/v1/notifications", text).await;
    assert_eq!((s, &b["id"]), (200, &json!(id)), "{b}");
    let batch = format!(r#"{{"notifications": [{text}]}}"#);
    let (s, b) = post_text(&d, "/v1/notifications/batch", &batch).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["results"][0]["status"], 200, "{b}");
    assert_eq!(b["results"][0]["id"], json!(id), "{b}");
}
