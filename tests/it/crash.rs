//! `kill -9` in the middle of dispatch loses nothing: every accepted notification reaches the
//! receiver at least once after a restart, and only sends that were in flight are duplicated.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::support::*;

const TOTAL: usize = 2000;
const CONCURRENCY: usize = 16;

fn spawn_daemon(config: &Path, log: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Command::new(env!("CARGO_BIN_EXE_notifyd"))
        .args(["--config"])
        .arg(config)
        .arg("serve")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_dash_nine_mid_dispatch_loses_no_accepted_notification() {
    // A receiver that is slow enough for a backlog to build up.
    let sink = Sink::start(|_, _| (StatusCode::OK, vec![], Duration::from_millis(20))).await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = dir.path().join("notifyd.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n[queue]\nurl = \"sqlite://{}\"\n\
             [dispatcher]\npoll_interval = \"50ms\"\nlease_margin = \"1s\"\n[log]\nlevel = \"warn\"\n{}",
            dir.path().join("queue.db").display(),
            webhook("hooks", &sink.url(), &format!("concurrency = {CONCURRENCY}\ntimeouts = {{ total = \"2s\" }}")),
        ),
    )
    .unwrap();
    let log = dir.path().join("daemon.log");
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();

    let mut daemon = spawn_daemon(&config, &log);
    wait_ready(&http, &base).await;

    let mut accepted = HashSet::new();
    for batch in 0..(TOTAL / 100) {
        let items: Vec<Value> = (0..100)
            .map(|i| json!({"channel": "hooks", "to": "t", "body": format!("{batch}-{i}")}))
            .collect();
        accepted.extend(accept_batch(&http, &base, items).await);
    }
    assert_eq!(accepted.len(), TOTAL);

    // Mid-dispatch: some delivered, most not.
    sink.wait_for(300, Duration::from_secs(30)).await;
    daemon.kill().unwrap(); // SIGKILL
    daemon.wait().unwrap();
    let at_kill = sink.received().len();
    assert!(
        at_kill < TOTAL,
        "everything was delivered before the kill; the test proves nothing"
    );

    let mut daemon = spawn_daemon(&config, &log);
    wait_ready(&http, &base).await;

    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let seen: HashSet<String> = sink
            .received()
            .iter()
            .map(|r| r.body["id"].as_str().unwrap().to_owned())
            .collect();
        if accepted.iter().all(|id| seen.contains(id)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after restart only {} of {TOTAL} accepted ids reached the receiver",
            accepted.iter().filter(|id| seen.contains(*id)).count()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Wait for the queue itself to say everything is delivered: rows the killed process had
    // leased are re-sent only when their lease expires, and those re-sends are the duplicates.
    let conn = rusqlite::Connection::open(dir.path().join("queue.db")).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    loop {
        let delivered: usize = conn
            .query_row(
                "SELECT count(*) FROM notifications WHERE state = 'delivered'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        if delivered == TOTAL {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {delivered} of {TOTAL} rows are delivered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let counts = {
        let mut counts: HashMap<String, usize> = HashMap::new();
        for r in sink.received() {
            *counts
                .entry(r.body["id"].as_str().unwrap().to_owned())
                .or_default() += 1;
        }
        counts
    };
    daemon.kill().unwrap();
    daemon.wait().unwrap();

    let duplicates: usize = counts.values().map(|n| n - 1).sum();
    assert!(
        duplicates <= CONCURRENCY,
        "{duplicates} duplicates, but at most {CONCURRENCY} sends were in flight at the kill"
    );
    assert!(
        counts.keys().all(|id| accepted.contains(id)),
        "the receiver got an id nobody accepted"
    );
    eprintln!(
        "crash test: {at_kill} received before kill -9, {duplicates} duplicate(s) after restart"
    );
}
