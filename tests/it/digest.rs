//! Digests end to end: items through the API, one message at a local receiver, across a
//! restart, and with two daemons on PostgreSQL.

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::postgres_server::TestSchema;
use crate::support::*;

/// A template folder with `alert` (one item: `{{ host }} is down`) and `digest` (every item).
fn templates() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let alert = dir.path().join("alert");
    std::fs::create_dir(&alert).unwrap();
    std::fs::write(alert.join("body.txt"), "{{ host }} is down").unwrap();
    let digest = dir.path().join("digest");
    std::fs::create_dir(&digest).unwrap();
    std::fs::write(
        digest.join("subject.txt"),
        "{{ count }} alerts ({{ digest_key }})",
    )
    .unwrap();
    std::fs::write(
        digest.join("body.txt"),
        "{% for i in items %}{{ i.vars.host }}: {{ i.body }}\n{% endfor %}",
    )
    .unwrap();
    dir
}

/// Channel `hooks` to `sink`, collecting digests with these settings, and the templates.
fn collecting(sink: &Sink, digest: &str, templates: &tempfile::TempDir) -> String {
    format!(
        "{}[templates]\ndir = \"{}\"\n",
        webhook("hooks", &sink.url(), digest),
        templates.path().display()
    )
}

fn alert(host: &str) -> Value {
    json!({"channel": "hooks", "to": "ops", "template": "alert", "vars": {"host": host},
           "digest_key": "disk"})
}

#[tokio::test]
async fn items_are_collected_across_a_restart_and_sent_as_one_digest_when_full() {
    let t = templates();
    let sink = Sink::ok().await;
    let channels = collecting(
        &sink,
        "digest_window = \"1h\"\ndigest_max = 3\ndigest_template = \"digest\"",
        &t,
    );
    let d = TestDaemon::start(&channels).await;
    let a = d.accept(alert("db-1")).await;
    let b = d.accept(alert("db-2")).await;
    let (_, view) = d.get(&format!("/v1/notifications/{a}")).await;
    assert_eq!(view["state"], "queued");
    let digest = view["digest_id"].as_str().unwrap().to_owned();

    // A restart in the middle of the window: the digest and its items are in the queue.
    let d = d.restart(&channels).await;
    let c = d.accept(alert("db-3")).await;

    for id in [&a, &b, &c] {
        let view = d.wait_for_state(id, "delivered").await;
        assert_eq!(view["digest_id"], digest);
        let rules: Vec<&str> = view["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["rule"].as_str().unwrap())
            .collect();
        assert_eq!(rules, ["digest", "digest"], "{view}");
    }
    let (_, sent) = d.get(&format!("/v1/notifications/{digest}")).await;
    assert_eq!(
        (sent["state"].as_str(), sent["attempts"].as_i64()),
        (Some("delivered"), Some(1))
    );
    assert_eq!(sent["digest_key"], "disk");
    // One message, with every item: nothing dropped, nothing sent twice.
    let got = sink.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body["id"], digest);
    assert_eq!(got[0].body["subject"], "3 alerts (disk)");
    assert_eq!(
        got[0].body["body"],
        "db-1: db-1 is down\ndb-2: db-2 is down\ndb-3: db-3 is down\n"
    );
    d.stop().await;
}

#[tokio::test]
async fn a_digest_is_sent_when_its_window_ends_as_a_plain_list_without_a_template() {
    let t = templates();
    let sink = Sink::ok().await;
    let d = TestDaemon::start(&collecting(&sink, "digest_window = \"1s\"", &t)).await;
    // One batch: both items join the window the first opens.
    let (_, answer) = d
        .post(
            "/v1/notifications/batch",
            &json!({"notifications": [alert("db-1"), alert("db-2")]}),
        )
        .await;
    let ids: Vec<&str> = answer["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();

    for id in &ids {
        d.wait_for_state(id, "delivered").await;
    }
    let got = sink.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body["subject"], "2 notifications: disk");
    assert_eq!(got[0].body["body"], "- db-1 is down\n- db-2 is down");
    d.stop().await;
}

#[tokio::test]
async fn a_digest_that_fails_for_good_fails_its_items_with_its_reason() {
    let t = templates();
    let sink = Sink::always(StatusCode::BAD_REQUEST, "x-why", "no").await;
    let d = TestDaemon::start(&collecting(
        &sink,
        "digest_window = \"1h\"\ndigest_max = 2",
        &t,
    ))
    .await;
    let a = d.accept(alert("db-1")).await;
    let b = d.accept(alert("db-2")).await;

    for id in [&a, &b] {
        let view = d.wait_for_state(id, "failed").await;
        let reason = &view["last_error"];
        assert_eq!(reason["code"], "http_400", "{view}");
        assert!(
            reason["message"]
                .as_str()
                .unwrap()
                .starts_with("its digest "),
            "{view}"
        );
    }
    assert_eq!(sink.received().len(), 1);
    d.stop().await;
}

#[tokio::test]
async fn digest_key_on_a_channel_that_does_not_collect_is_refused() {
    let sink = Sink::ok().await;
    let d = TestDaemon::start(&webhook("hooks", &sink.url(), "")).await;
    let (status, err) = d
        .post(
            "/v1/notifications",
            &json!({"channel": "hooks", "to": "ops", "body": "b", "digest_key": "disk"}),
        )
        .await;
    assert_eq!(status, 422, "{err}");
    assert_eq!(err["error"]["field"], "digest_key");
    d.stop().await;
}

#[tokio::test]
async fn two_daemons_on_postgres_collect_into_one_digest_and_send_it_once() {
    let Some(schema) = TestSchema::create().await else {
        return;
    };
    let t = templates();
    let sink = Sink::ok().await;
    let channels = collecting(
        &sink,
        "digest_window = \"1h\"\ndigest_max = 6\ndigest_template = \"digest\"",
        &t,
    );
    let a = TestDaemon::start_on_postgres(&schema.name, &channels).await;
    let b = TestDaemon::start_on_postgres(&schema.name, &channels).await;

    let mut ids = Vec::new();
    for i in 0..6 {
        let d = if i % 2 == 0 { &a } else { &b };
        ids.push(d.accept(alert(&format!("db-{i}"))).await);
    }

    for id in &ids {
        a.wait_for_state(id, "delivered").await;
    }
    let got = sink.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body["subject"], "6 alerts (disk)");
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn an_item_joins_a_digest_whose_stored_count_is_the_largest_and_closes_it() {
    let t = templates();
    let sink = Sink::ok().await;
    let channels = collecting(
        &sink,
        "digest_window = \"1h\"\ndigest_max = 3\ndigest_template = \"digest\"",
        &t,
    );
    let d = TestDaemon::start(&channels).await;
    let a = d.accept(alert("db-1")).await;
    let (_, view) = d.get(&format!("/v1/notifications/{a}")).await;
    let digest = view["digest_id"].as_str().unwrap().to_owned();
    // Another program stored the largest count it can.
    rusqlite::Connection::open(d.queue_path())
        .unwrap()
        .execute(
            "UPDATE notifications SET digest_items = ?1 WHERE id = ?2",
            rusqlite::params![i64::MAX, digest],
        )
        .unwrap();

    let b = d.accept(alert("db-2")).await;
    let view = d.wait_for_state(&b, "delivered").await;
    assert_eq!(view["digest_id"], digest);
    let got = sink.received();
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].body["body"],
        "db-1: db-1 is down\ndb-2: db-2 is down\n"
    );
    d.stop().await;
}
