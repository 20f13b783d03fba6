//! Dedup end to end: through the API to a local receiver, across a restart, on both backends.

use serde_json::{Value, json};
use sqlx::Connection;

use crate::postgres_server::TestSchema;
use crate::support::*;

/// A webhook channel `hooks` to `sink` whose notifications hold their dedup key for 10 minutes
/// unless they say otherwise.
fn hooks(sink: &Sink) -> String {
    webhook("hooks", &sink.url(), "dedup_window = \"10m\"")
}

fn alert(to: &str, body: &str) -> Value {
    json!({"channel": "hooks", "to": to, "body": body, "dedup_key": "disk-full"})
}

#[tokio::test]
async fn a_duplicate_inside_the_window_is_answered_with_the_first_and_not_sent_again() {
    let sink = Sink::ok().await;
    let d = TestDaemon::start(&hooks(&sink)).await;
    let first = d.accept(alert("ops", "disk 91% full")).await;
    d.wait_for_state(&first, "delivered").await;

    let (status, again) = d
        .post("/v1/notifications", &alert("ops", "disk 95% full"))
        .await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["duplicate_of"], first);
    assert_eq!(again["id"], first);
    assert_eq!(again["state"], "delivered");

    // Across a restart the key still holds: it is in the queue, not in memory.
    let d = d.restart(&hooks(&sink)).await;
    let (status, after) = d
        .post("/v1/notifications", &alert("ops", "disk 99% full"))
        .await;
    assert_eq!((status, &after["duplicate_of"]), (200, &json!(first)));

    // Another recipient is another notification.
    let other = d.accept(alert("dev", "disk 99% full")).await;
    d.wait_for_state(&other, "delivered").await;

    let (_, view) = d.get(&format!("/v1/notifications/{first}")).await;
    assert_eq!(view["duplicates"], 2);
    let rules: Vec<&str> = view["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["rule"].as_str().unwrap())
        .collect();
    assert_eq!(rules, ["dedup", "dedup"]);
    // Nothing was dropped: two accepted, two merged, and the receiver got the two accepted.
    let got: Vec<Value> = sink.received().into_iter().map(|r| r.body).collect();
    let ids: Vec<&str> = got.iter().map(|b| b["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [first.as_str(), other.as_str()]);
    assert_eq!(got[0]["body"], "disk 91% full");
    d.stop().await;
}

#[tokio::test]
async fn each_item_of_a_batch_is_deduplicated_on_its_own() {
    let sink = Sink::ok().await;
    let d = TestDaemon::start(&hooks(&sink)).await;
    let batch = json!({"notifications": [
        alert("ops", "first"),
        alert("ops", "second"),
        {"channel": "hooks", "to": "ops", "body": "own window", "dedup_key": "cpu",
         "dedup_window": "1m"},
    ]});

    let (status, answer) = d.post("/v1/notifications/batch", &batch).await;

    assert_eq!(status, 200, "{answer}");
    let results = answer["results"].as_array().unwrap();
    assert_eq!(results[0]["status"], 202);
    assert_eq!(results[1]["status"], 200);
    assert_eq!(results[1]["duplicate_of"], results[0]["id"]);
    assert_eq!(results[2]["status"], 202);
    assert_ne!(results[2]["id"], results[0]["id"]);
    d.stop().await;
}

#[tokio::test]
async fn a_dedup_key_without_a_window_anywhere_is_refused_naming_dedup_window() {
    let sink = Sink::ok().await;
    let d = TestDaemon::start(&webhook("hooks", &sink.url(), "")).await;

    let (status, err) = d.post("/v1/notifications", &alert("ops", "b")).await;
    assert_eq!(status, 422, "{err}");
    assert_eq!(err["error"]["field"], "dedup_window");

    let bad = json!({"channel": "hooks", "to": "ops", "body": "b", "dedup_key": "k",
                     "dedup_window": "soon"});
    let (status, err) = d.post("/v1/notifications", &bad).await;
    assert_eq!(status, 422, "{err}");
    assert_eq!(err["error"]["field"], "dedup_window");
    d.stop().await;
}

#[tokio::test]
async fn two_daemons_on_postgres_agree_on_one_holder_of_a_key_sent_to_both_at_once() {
    let Some(schema) = TestSchema::create().await else {
        return;
    };
    let sink = Sink::ok().await;
    let a = TestDaemon::start_on_postgres(&schema.name, &hooks(&sink)).await;
    let b = TestDaemon::start_on_postgres(&schema.name, &hooks(&sink)).await;
    const EACH: usize = 10;

    let mut sent = Vec::new();
    for i in 0..EACH {
        for d in [&a, &b] {
            let request = d
                .http
                .post(d.url("/v1/notifications"))
                .json(&alert("ops", &format!("alert {i}")));
            sent.push(tokio::spawn(async move {
                let resp = request.send().await.unwrap();
                let status = resp.status().as_u16();
                (status, resp.json::<Value>().await.unwrap())
            }));
        }
    }
    let mut answers = Vec::new();
    for s in sent {
        answers.push(s.await.unwrap());
    }

    let created: Vec<&Value> = answers
        .iter()
        .filter(|(s, _)| *s == 202)
        .map(|(_, a)| a)
        .collect();
    assert_eq!(created.len(), 1, "{answers:?}");
    let holder = created[0]["id"].as_str().unwrap();
    for (status, answer) in answers.iter().filter(|(s, _)| *s != 202) {
        assert_eq!(
            (*status, answer["duplicate_of"].as_str()),
            (200, Some(holder))
        );
    }
    a.wait_for_state(holder, "delivered").await;
    let (_, view) = b.get(&format!("/v1/notifications/{holder}")).await;
    assert_eq!(view["duplicates"], 2 * EACH - 1);
    // The queue holds the one notification, and the receiver got it once.
    let (_, page) = a.get("/v1/notifications?channel=hooks").await;
    assert_eq!(page["notifications"].as_array().unwrap().len(), 1, "{page}");
    assert_eq!(sink.received().len(), 1);
    a.stop().await;
    b.stop().await;
}

/// The largest count a plain-SQL program can store in `duplicates`.
const MOST_DUPLICATES: i64 = i64::MAX;

/// With `first`'s count at [`MOST_DUPLICATES`]: one more duplicate is answered with `first`,
/// and the count stays where it is.
async fn assert_a_duplicate_is_still_answered(d: TestDaemon, first: &str) {
    let (status, again) = d
        .post("/v1/notifications", &alert("ops", "disk 95% full"))
        .await;
    assert_eq!(
        (status, &again["duplicate_of"]),
        (200, &json!(first)),
        "{again}"
    );
    let (_, view) = d.get(&format!("/v1/notifications/{first}")).await;
    assert_eq!(view["duplicates"], MOST_DUPLICATES);
    d.stop().await;
}

#[tokio::test]
async fn a_holder_whose_stored_duplicate_count_is_the_largest_still_answers_duplicates_on_sqlite() {
    let sink = Sink::ok().await;
    let d = TestDaemon::start(&hooks(&sink)).await;
    let first = d.accept(alert("ops", "disk 91% full")).await;
    d.wait_for_state(&first, "delivered").await;
    rusqlite::Connection::open(d.queue_path())
        .unwrap()
        .execute(
            "UPDATE notifications SET duplicates = ?1 WHERE id = ?2",
            rusqlite::params![MOST_DUPLICATES, first],
        )
        .unwrap();

    assert_a_duplicate_is_still_answered(d, &first).await;
}

#[tokio::test]
async fn a_holder_whose_stored_duplicate_count_is_the_largest_still_answers_duplicates_on_postgres()
{
    let Some(schema) = TestSchema::create().await else {
        return;
    };
    let sink = Sink::ok().await;
    let d = TestDaemon::start_on_postgres(&schema.name, &hooks(&sink)).await;
    let first = d.accept(alert("ops", "disk 91% full")).await;
    d.wait_for_state(&first, "delivered").await;
    let mut conn = sqlx::PgConnection::connect(&crate::postgres_server::server_url())
        .await
        .unwrap();
    // The schema's name is this test's own (`t_` and a UUID).
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE \"{}\".notifications SET duplicates = $1 WHERE id = $2",
        schema.name
    )))
    .bind(MOST_DUPLICATES)
    .bind(&first)
    .execute(&mut conn)
    .await
    .unwrap();

    assert_a_duplicate_is_still_answered(d, &first).await;
}
