//! The history API (`GET /v1/notifications`), content, replay of a channel's dead letters, the
//! overview's additions to `GET /v1/channels`, and `notifyd list`.

use std::process::Command;

use serde_json::{Value, json};

use crate::postgres_server::TestSchema;
use crate::support::*;

const LOG: &str = "[channels.log]\nkind = \"log\"\n";

fn ids(page: &Value) -> Vec<String> {
    page["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn the_history_finds_a_notification_by_recipient_newest_first_a_page_at_a_time() {
    finds_by_recipient_a_page_at_a_time(TestDaemon::start(LOG).await).await;
}

#[tokio::test]
async fn on_postgres_the_history_finds_a_notification_by_recipient_a_page_at_a_time() {
    let Some(schema) = TestSchema::create().await else {
        return;
    };
    finds_by_recipient_a_page_at_a_time(TestDaemon::start_on_postgres(&schema.name, LOG).await)
        .await;
}

/// Three of carol's among dave's, through the API of `d`: two pages of her own, newest first.
async fn finds_by_recipient_a_page_at_a_time(d: TestDaemon) {
    let mut carol = Vec::new();
    for i in 0..3 {
        carol.push(
            d.accept(json!({"channel": "log", "to": "carol@example.com", "subject": format!("Order {i}")}))
                .await,
        );
        d.accept(json!({"channel": "log", "to": "dave@example.com", "body": "x"}))
            .await;
    }
    let (s, first) = d
        .get("/v1/notifications?to=carol%40example.com&limit=2")
        .await;
    assert_eq!(s, 200, "{first}");
    assert_eq!(ids(&first), vec![carol[2].clone(), carol[1].clone()]);
    assert_eq!(first["notifications"][0]["to"], "carol@example.com");
    assert_eq!(first["notifications"][0]["subject"], "Order 2");
    assert_eq!(first["notifications"][0]["channel"], "log");
    let next = first["next"].as_str().unwrap();
    let (s, second) = d
        .get(&format!(
            "/v1/notifications?to=carol%40example.com&limit=2&cursor={next}"
        ))
        .await;
    assert_eq!(s, 200, "{second}");
    assert_eq!(ids(&second), vec![carol[0].clone()]);
    assert_eq!(second["next"], Value::Null);
    d.stop().await;
}

#[tokio::test]
async fn a_bad_history_filter_is_422_naming_the_parameter() {
    let d = TestDaemon::start(LOG).await;
    for (query, field) in [
        ("state=lost", "state"),
        ("limit=501", "limit"),
        ("created_after=yesterday", "created_after"),
        ("cursor=nonsense", "cursor"),
        ("recipient=a", "recipient"),
    ] {
        let (s, body) = d.get(&format!("/v1/notifications?{query}")).await;
        assert_eq!(s, 422, "{query}: {body}");
        assert_eq!(body["error"]["field"], field, "{body}");
    }
    d.stop().await;
}

#[tokio::test]
async fn content_is_what_was_accepted_and_an_unknown_id_is_404() {
    let d = TestDaemon::start(LOG).await;
    let id = d
        .accept(json!({"channel": "log", "to": "a@example.com", "subject": "S", "body": "B", "data": {"k": 1}}))
        .await;
    let (s, c) = d.get(&format!("/v1/notifications/{id}/content")).await;
    assert_eq!(s, 200);
    assert_eq!(
        c,
        json!({"id": id, "subject": "S", "body": "B", "html": null, "data": {"k": 1}})
    );
    let (s, _) = d.get("/v1/notifications/nope/content").await;
    assert_eq!(s, 404);
    d.stop().await;
}

#[tokio::test]
async fn replaying_a_channel_puts_every_dead_letter_of_it_back_and_they_are_delivered() {
    // The first two requests fail; with one attempt each, both notifications die.
    let sink = Sink::failing_first(2).await;
    let d = TestDaemon::start(&webhook(
        "hooks",
        &sink.url(),
        "retry = { max_attempts = 1 }",
    ))
    .await;
    let a = d
        .accept(json!({"channel": "hooks", "to": "a", "body": "x"}))
        .await;
    d.wait_for_state(&a, "dead").await;
    let b = d
        .accept(json!({"channel": "hooks", "to": "b", "body": "x"}))
        .await;
    d.wait_for_state(&b, "dead").await;
    let (s, dead) = d.get("/v1/notifications?state=dead&channel=hooks").await;
    assert_eq!(s, 200);
    assert_eq!(ids(&dead), vec![b.clone(), a.clone()]);

    let (s, body) = d
        .post("/v1/channels/hooks/dead-letters/replay", &json!({}))
        .await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body, json!({"channel": "hooks", "replayed": 2}));
    d.wait_for_state(&a, "delivered").await;
    d.wait_for_state(&b, "delivered").await;
    d.stop().await;
}

#[tokio::test]
async fn the_channel_list_shows_the_last_hour_per_minute_and_the_oldest_due_age() {
    let d = TestDaemon::start(LOG).await;
    let id = d
        .accept(json!({"channel": "log", "to": "a@example.com", "body": "x"}))
        .await;
    d.wait_for_state(&id, "delivered").await;
    let (s, body) = d.get("/v1/channels").await;
    assert_eq!(s, 200);
    let log = &body["channels"][0];
    let delivered = log["last_hour"]["delivered"].as_array().unwrap();
    assert_eq!(delivered.len(), 60);
    assert_eq!(
        delivered.iter().map(|v| v.as_u64().unwrap()).sum::<u64>(),
        1
    );
    assert_eq!(log["last_hour"]["failed"].as_array().unwrap().len(), 60);
    assert_eq!(log["oldest_due_age_ms"], Value::Null, "nothing is due");
    d.stop().await;
}

#[tokio::test]
async fn the_openapi_document_describes_the_history_page_and_its_parameters() {
    let d = TestDaemon::start(LOG).await;
    let (_, doc) = d.get("/v1/openapi.json").await;
    let op = &doc["paths"]["/v1/notifications"]["get"];
    let names: Vec<&str> = op["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for name in [
        "state",
        "channel",
        "to",
        "fallback_of",
        "subject",
        "limit",
        "cursor",
    ] {
        assert!(names.contains(&name), "{name} missing from {names:?}");
    }
    let schema = &op["responses"]["200"]["content"]["application/json"]["schema"];
    let page = match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => &doc["components"]["schemas"][r.rsplit('/').next().unwrap()],
        None => schema,
    };
    assert!(page["properties"]["notifications"].is_object(), "{page}");
    assert!(page["properties"]["next"].is_object(), "{page}");
    d.stop().await;
}

#[tokio::test]
async fn notifyd_list_prints_the_history_as_a_table_or_json_and_refuses_a_bad_flag() {
    let d = TestDaemon::start(LOG).await;
    let id = d
        .accept(json!({"channel": "log", "to": "erin@example.com", "subject": "Invoice"}))
        .await;
    let config = d.dir.path().join("notifyd.toml");
    let list = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_notifyd"))
            .arg("--config")
            .arg(&config)
            .arg("list")
            .args(args)
            .output()
            .unwrap()
    };
    let out = list(&["--to", "erin@example.com"]);
    assert!(out.status.success(), "{out:?}");
    let table = String::from_utf8(out.stdout).unwrap();
    let row = table.lines().nth(1).unwrap();
    assert!(row.contains(&id) && row.contains("Invoice"), "{table}");

    let out = list(&["--to", "erin@example.com", "--json"]);
    let page: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(ids(&page), vec![id]);

    let out = list(&["--state", "lost"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--state"),
        "{out:?}"
    );
    d.stop().await;
}
