//! Chaos: a real daemon, real HTTP servers on loopback misbehaving on purpose, bounded in time.
//! Each test asserts what users rely on: nothing lost, bounded attempts, other channels unharmed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

/// Records which notification got which status, as the receiver answered it.
#[derive(Clone, Default)]
struct Answers(Arc<Mutex<Vec<(String, u16)>>>);

impl Answers {
    fn push(&self, body: &Value, status: StatusCode) -> StatusCode {
        let id = body["id"].as_str().unwrap_or_default().to_owned();
        self.0.lock().unwrap().push((id, status.as_u16()));
        status
    }
    fn ok_per_id(&self) -> HashMap<String, usize> {
        let mut m = HashMap::new();
        for (id, s) in self.0.lock().unwrap().iter() {
            if *s == 200 {
                *m.entry(id.clone()).or_default() += 1;
            }
        }
        m
    }
}

async fn accept_many(d: &TestDaemon, channel: &str, n: usize) -> Vec<String> {
    let items: Vec<Value> = (0..n)
        .map(|i| json!({"channel": channel, "to": "t", "body": format!("n{i}")}))
        .collect();
    let (s, b) = d
        .post(
            "/v1/notifications/batch",
            &json!({ "notifications": items }),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    b["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn all_delivered(d: &TestDaemon, ids: &[String], within: Duration) -> Vec<Value> {
    let deadline = Instant::now() + within;
    let mut views = Vec::new();
    for id in ids {
        loop {
            let (_, v) = d.get(&format!("/v1/notifications/{id}")).await;
            if v["state"] == "delivered" {
                views.push(v);
                break;
            }
            assert_ne!(v["state"], "dead", "{v}");
            assert_ne!(v["state"], "failed", "{v}");
            assert!(
                Instant::now() < deadline,
                "{id} was not delivered in time: {v}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    views
}

async fn channel_view(d: &TestDaemon, name: &str) -> Value {
    let (_, b) = d.get("/v1/channels").await;
    b["channels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap()
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_opens_the_breaker_holds_the_queue_and_recovery_drains_it_exactly_once() {
    let answers = Answers::default();
    let recover_at = Instant::now() + Duration::from_secs(2);
    let a = answers.clone();
    let sink = Sink::start(move |_, body| {
        let status = if Instant::now() < recover_at {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::OK
        };
        (a.push(body, status), vec![], Duration::ZERO)
    })
    .await;
    let d = TestDaemon::start(&webhook(
        "hooks",
        &sink.url(),
        "concurrency = 4\nretry = { max_attempts = 20, base = \"100ms\", max = \"400ms\" }\n\
         breaker = { min_calls = 5, failure_ratio = 0.5, window = \"10s\", open_for = \"400ms\", max_open_for = \"800ms\" }",
    ))
    .await;
    let ids = accept_many(&d, "hooks", 30).await;
    let views = all_delivered(&d, &ids, Duration::from_secs(20)).await;
    let recovered_in = Instant::now() - recover_at;

    let during_outage = sink.received().iter().filter(|r| r.at < recover_at).count();
    // 5 calls trip it, up to 3 more were in flight, then about one probe per open period.
    assert!(
        during_outage <= 16,
        "{during_outage} requests reached the provider during a 2 s outage"
    );
    let ok = answers.ok_per_id();
    assert_eq!(ok.len(), 30);
    assert!(
        ok.values().all(|n| *n == 1),
        "a notification was delivered twice: {ok:?}"
    );
    let max_attempts = views
        .iter()
        .map(|v| v["attempts"].as_u64().unwrap())
        .max()
        .unwrap();
    assert!(
        max_attempts <= 4,
        "breaker-deferred waits must not spend attempts: {max_attempts}"
    );
    assert!(
        channel_view(&d, "hooks").await["breaker"]["opened_total"]
            .as_u64()
            .unwrap()
            >= 1
    );
    eprintln!(
        "outage: {during_outage} requests during the outage, max {max_attempts} attempts, all delivered {recovered_in:?} after recovery"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_provider_holds_only_its_own_slots() {
    let slow = Sink::start(|_, _| (StatusCode::OK, vec![], Duration::from_secs(10))).await;
    let fast = Sink::ok().await;
    let channels = format!(
        "{}{}",
        webhook(
            "slow",
            &slow.url(),
            "concurrency = 2\ntimeouts = { total = \"1s\" }\nretry = { base = \"5s\", max = \"5s\" }"
        ),
        webhook("fast", &fast.url(), "concurrency = 8"),
    );
    let d = TestDaemon::start(&channels).await;
    let slow_ids = accept_many(&d, "slow", 10).await;
    slow.wait_for(2, Duration::from_secs(5)).await;
    let first_slow = slow.received()[0].at;
    let fast_ids = accept_many(&d, "fast", 100).await;
    all_delivered(&d, &fast_ids, Duration::from_secs(10)).await;
    let last_fast = fast.received().iter().map(|r| r.at).max().unwrap();
    assert!(
        last_fast < first_slow + Duration::from_secs(1),
        "the fast channel waited for the slow one: its last send came {:?} after the slow one's first",
        last_fast - first_slow
    );
    // The slow ones timed out, were kept, and will be retried.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (_, v) = d.get(&format!("/v1/notifications/{}", slow_ids[0])).await;
    assert_eq!(v["state"], "queued", "{v}");
    assert_eq!(v["attempt_log"][0]["code"], "timeout", "{v}");
}

#[tokio::test]
async fn a_429_with_retry_after_pauses_the_channel_and_spends_no_attempt() {
    let sink = Sink::start(|n, _| {
        if n == 0 {
            (
                StatusCode::TOO_MANY_REQUESTS,
                vec![("retry-after", "2".into())],
                Duration::ZERO,
            )
        } else {
            (StatusCode::OK, vec![], Duration::ZERO)
        }
    })
    .await;
    let d = TestDaemon::start(&webhook(
        "hooks",
        &sink.url(),
        "concurrency = 1\nretry = { base = \"50ms\", max = \"10s\" }",
    ))
    .await;
    let ids = accept_many(&d, "hooks", 5).await;
    let views = all_delivered(&d, &ids, Duration::from_secs(10)).await;
    let got = sink.received();
    assert_eq!(got.len(), 6);
    let gap = got[1].at - got[0].at;
    assert!(
        gap >= Duration::from_millis(1990),
        "a request reached the provider {gap:?} after its Retry-After: 2"
    );
    assert!(
        views.iter().all(|v| v["attempts"] == 1),
        "a rate-limited answer spent an attempt"
    );
    let limited = views
        .iter()
        .find(|v| v["attempt_log"].as_array().unwrap().len() == 2)
        .unwrap();
    assert_eq!(limited["attempt_log"][0]["decision"], "rate_limited");
}

#[tokio::test]
async fn a_rate_limit_is_never_exceeded_over_any_window() {
    let sink = Sink::ok().await;
    let d = TestDaemon::start(&webhook(
        "hooks",
        &sink.url(),
        "concurrency = 16\nrate_limit = { per_second = 20, burst = 5 }",
    ))
    .await;
    let ids = accept_many(&d, "hooks", 60).await;
    all_delivered(&d, &ids, Duration::from_secs(15)).await;
    let times: Vec<Instant> = sink.received().iter().map(|r| r.at).collect();
    assert_eq!(times.len(), 60);
    for i in 0..times.len() {
        for j in i..times.len() {
            let span = (times[j] - times[i]).as_secs_f64();
            // 15 ms of slack for the hop from the limiter to the receiver's clock.
            let allowed = 5.0 + 20.0 * (span + 0.015);
            assert!(
                ((j - i + 1) as f64) <= allowed,
                "{} requests within {span:.3}s",
                j - i + 1
            );
        }
    }
    assert!(
        channel_view(&d, "hooks").await["rate_limit"]["waits"]
            .as_u64()
            .unwrap()
            > 0
    );
}

/// A server that misbehaves in a new way on each connection, then answers properly.
async fn misbehaving_server() -> (String, Arc<Mutex<usize>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let count = Arc::new(Mutex::new(0usize));
    let c = count.clone();
    tokio::spawn(async move {
        loop {
            let (mut sock, _) = listener.accept().await.unwrap();
            let n = {
                let mut c = c.lock().unwrap();
                *c += 1;
                *c
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let _ = sock.read(&mut buf).await;
                let page = "<html><body>upstream broken</body></html>";
                let bad_gateway = format!(
                    "HTTP/1.1 502 Bad Gateway\r\ncontent-type: text/html\r\ncontent-length: {}\r\n\r\n{page}",
                    page.len()
                );
                let answer: &[u8] = match n {
                    1 => b"", // close at once
                    2 => b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\ncontent-type: application/json\r\n\r\n{\"trunc",
                    3 => b"THIS IS NOT HTTP\r\n\r\n",
                    4 => bad_gateway.as_bytes(),
                    5 => {
                        // Reset mid-response.
                        let _ = sock.write_all(b"HTTP/1.1 200 OK\r\nContent-Le").await;
                        let _ = sock.set_zero_linger();
                        return;
                    }
                    _ => b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
                };
                let _ = sock.write_all(answer).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    (url, count)
}

#[tokio::test]
async fn malformed_answers_are_classified_retried_and_nothing_is_lost() {
    let (url, count) = misbehaving_server().await;
    let d = TestDaemon::start(&webhook(
        "hooks",
        &url,
        "concurrency = 1\nretry = { max_attempts = 10, base = \"20ms\", max = \"50ms\" }\nbreaker = { enabled = false }",
    ))
    .await;
    let id = d
        .accept(json!({"channel": "hooks", "to": "t", "body": "b"}))
        .await;
    let view = d.wait_for_state(&id, "delivered").await;
    let log = view["attempt_log"].as_array().unwrap();
    assert_eq!(log.len(), 6, "{view}");
    for a in &log[..5] {
        assert_eq!(a["outcome"], "transient", "{a}");
        assert_eq!(a["decision"], "retry", "{a}");
    }
    let codes: Vec<&str> = log[..5]
        .iter()
        .map(|a| a["code"].as_str().unwrap())
        .collect();
    // closed at once, truncated body, not HTTP, HTML 502, reset mid-headers:
    assert_eq!(
        codes,
        [
            "transport",
            "bad_response",
            "transport",
            "http_502",
            "transport"
        ]
    );
    assert_eq!(log[5]["outcome"], "delivered");
    assert_eq!(*count.lock().unwrap(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_primary_fails_over_to_the_secondary_but_a_rejection_does_not() {
    let primary = Sink::start(|_, body| {
        let status = if body["body"] == "reject-me" {
            StatusCode::UNPROCESSABLE_ENTITY
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        (status, vec![], Duration::ZERO)
    })
    .await;
    let secondary = Sink::ok().await;
    let channels = format!(
        "{}{}",
        webhook(
            "sms-primary",
            &primary.url(),
            "failover = [\"sms-secondary\"]\nretry = { max_attempts = 2, base = \"20ms\", max = \"50ms\" }\n\
             breaker = { min_calls = 3, open_for = \"5s\" }"
        ),
        webhook("sms-secondary", &secondary.url(), ""),
    );
    let d = TestDaemon::start(&channels).await;
    let rejected = d
        .accept(json!({"channel": "sms-primary", "to": "+15550001111", "body": "reject-me"}))
        .await;
    let rejected = d.wait_for_state(&rejected, "failed").await;
    assert_eq!(rejected["channel"], "sms-primary");
    let ids = accept_many(&d, "sms-primary", 10).await;
    let views = all_delivered(&d, &ids, Duration::from_secs(15)).await;
    for v in &views {
        assert_eq!(v["channel"], "sms-secondary", "{v}");
    }
    assert_eq!(
        secondary.received().len(),
        10,
        "the rejected one must not reach the secondary"
    );
    assert!(
        secondary
            .received()
            .iter()
            .all(|r| r.body["body"] != "reject-me")
    );
    // Those that were tried on the primary show both channels in their history.
    let both = views.iter().filter(|v| {
        let channels: Vec<&str> = v["attempt_log"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|a| a["channel"].as_str())
            .collect();
        channels.contains(&"sms-primary") && channels.contains(&"sms-secondary")
    });
    assert!(both.count() >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flapping_provider_loses_nothing_and_attempts_stay_bounded() {
    let answers = Answers::default();
    let start = Instant::now();
    let a = answers.clone();
    let sink = Sink::start(move |_, body| {
        let up = (start.elapsed().as_millis() / 300) % 2 == 1;
        let status = if up {
            StatusCode::OK
        } else {
            StatusCode::BAD_GATEWAY
        };
        (a.push(body, status), vec![], Duration::ZERO)
    })
    .await;
    let d = TestDaemon::start(&webhook(
        "hooks",
        &sink.url(),
        "concurrency = 4\nretry = { max_attempts = 10, base = \"50ms\", max = \"300ms\" }\n\
         breaker = { min_calls = 5, open_for = \"300ms\", max_open_for = \"600ms\" }",
    ))
    .await;
    let ids = accept_many(&d, "hooks", 40).await;
    let views = all_delivered(&d, &ids, Duration::from_secs(30)).await;
    let ok = answers.ok_per_id();
    assert_eq!(ok.len(), 40);
    assert!(ok.values().all(|n| *n == 1), "delivered twice: {ok:?}");
    let max_attempts = views
        .iter()
        .map(|v| v["attempts"].as_u64().unwrap())
        .max()
        .unwrap();
    assert!(max_attempts <= 10, "{max_attempts}");
    eprintln!("flapping: 40 delivered, at most {max_attempts} attempts each");
}
