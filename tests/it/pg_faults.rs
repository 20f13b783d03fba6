//! PostgreSQL faults: the server restarted under load, and one of three daemons on one queue
//! killed with `kill -9` mid-dispatch. Nothing accepted is lost either way.

use std::collections::{HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use notifyd::daemon::Daemon;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::postgres_server::{OwnServer, TestSchema, free_port, server_url};
use crate::support::*;

/// A daemon in this process on the PostgreSQL queue at `url`, schema `schema`.
async fn daemon_on(url: &str, schema: &str, dispatcher: &str, channels: &str) -> TestDaemon {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[queue]\nurl = \"{url}\"\nschema = \"{schema}\"\n\
         max_connections = 8\n\
         [dispatcher]\npoll_interval = \"50ms\"\nsweep_interval = \"200ms\"\nshutdown_grace = \"2s\"\n\
         {dispatcher}\n[log]\nlevel = \"warn\"\n{channels}"
    );
    let config = load_config(&text, dir.path());
    let daemon = Daemon::start(config).await.unwrap();
    let base = format!("http://{}", daemon.addr());
    TestDaemon {
        daemon: Some(daemon),
        dir,
        base,
        http: reqwest::Client::new(),
    }
}

/// Waits until `/readyz` answers `status`; its body.
async fn readiness_becomes(d: &TestDaemon, status: u16, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let (got, body) = d.get("/readyz").await;
        if got == status {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz still answers {got} {body}, not {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Callers sending notifications one by one, as fast as they are answered, until stopped.
struct Load {
    /// Ids answered 202.
    accepted: Arc<Mutex<Vec<String>>>,
    /// How many answers had each status.
    statuses: Arc<Mutex<HashMap<u16, usize>>>,
    stop: watch::Sender<bool>,
    callers: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(d: &TestDaemon, callers: usize) -> Self {
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let statuses = Arc::new(Mutex::new(HashMap::new()));
        let (stop, stopped) = watch::channel(false);
        let callers = (0..callers)
            .map(|caller| {
                let (http, url) = (d.http.clone(), d.url("/v1/notifications"));
                let (accepted, statuses) = (accepted.clone(), statuses.clone());
                let stopped = stopped.clone();
                tokio::spawn(async move {
                    for n in 0.. {
                        if *stopped.borrow() {
                            return;
                        }
                        let body =
                            json!({"channel": "hooks", "to": "t", "body": format!("{caller}-{n}")});
                        let resp = http.post(&url).json(&body).send().await.unwrap();
                        let status = resp.status().as_u16();
                        let answer: Value = resp.json().await.unwrap_or(Value::Null);
                        *statuses.lock().unwrap().entry(status).or_default() += 1;
                        if status == 202 {
                            let id = answer["id"].as_str().unwrap().to_owned();
                            accepted.lock().unwrap().push(id);
                        } else {
                            assert!(
                                answer["error"]["code"].is_string(),
                                "a {status} without a JSON error body: {answer}"
                            );
                        }
                    }
                })
            })
            .collect();
        Self {
            accepted,
            statuses,
            stop,
            callers,
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.lock().unwrap().len()
    }

    fn answered(&self, status: u16) -> usize {
        self.statuses
            .lock()
            .unwrap()
            .get(&status)
            .copied()
            .unwrap_or(0)
    }

    /// Waits until `n` more notifications than now were accepted.
    async fn accepts_more(&self, n: usize, within: Duration) {
        let target = self.accepted() + n;
        let deadline = Instant::now() + within;
        while self.accepted() < target {
            assert!(
                Instant::now() < deadline,
                "only {} of {target} accepted; answers so far: {:?}",
                self.accepted(),
                self.statuses.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the callers; the accepted ids and the count of answers per status.
    async fn finish(self) -> (Vec<String>, HashMap<u16, usize>) {
        let _ = self.stop.send(true);
        for caller in self.callers {
            caller.await.unwrap();
        }
        let accepted = self.accepted.lock().unwrap().clone();
        let statuses = self.statuses.lock().unwrap().clone();
        (accepted, statuses)
    }
}

/// Each notification's count of requests at one receiver: kept by the receiver as requests
/// arrive, so reading it copies no request.
#[derive(Clone, Default)]
struct Tally(Arc<Mutex<HashMap<String, usize>>>);

impl Tally {
    /// A receiver answering 200 after `delay`, counting each request's notification id.
    async fn sink(&self, delay: Duration) -> Sink {
        let tally = self.clone();
        Sink::start(move |_, body: &Value| {
            let id = body["id"].as_str().unwrap_or_default().to_owned();
            *tally.0.lock().unwrap().entry(id).or_default() += 1;
            (StatusCode::OK, vec![], delay)
        })
        .await
    }

    fn requests(&self) -> usize {
        self.0.lock().unwrap().values().sum()
    }

    fn counts(&self) -> HashMap<String, usize> {
        self.0.lock().unwrap().clone()
    }
}

/// Waits until the receivers together received every id of `ids`.
async fn all_received(tallies: &[&Tally], ids: &[String], within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let missing = ids
            .iter()
            .filter(|id| {
                !tallies
                    .iter()
                    .any(|t| t.0.lock().unwrap().contains_key(*id))
            })
            .count();
        if missing == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} of {} accepted notifications never reached the receiver",
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_under_load_loses_nothing_and_the_api_answers_503_meanwhile() {
    let Some(server) = OwnServer::start() else {
        return;
    };
    let tally = Tally::default();
    let sink = tally.sink(Duration::ZERO).await;
    let d = daemon_on(
        &server.url(),
        "notifyd",
        "lease_margin = \"1s\"",
        &webhook("hooks", &sink.url(), "timeouts = { total = \"2s\" }"),
    )
    .await;
    readiness_becomes(&d, 200, Duration::from_secs(30)).await;
    let load = Load::start(&d, 4);
    load.accepts_more(100, Duration::from_secs(30)).await;

    server.stop();
    let unready = readiness_becomes(&d, 503, Duration::from_secs(30)).await;
    let why = unready["error"]["message"].as_str().unwrap();
    assert!(why.contains("PostgreSQL cannot be reached"), "{why}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while load.answered(503) < 4 {
        assert!(Instant::now() < deadline, "no 503 during the outage");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.start_again();
    readiness_becomes(&d, 200, Duration::from_secs(60)).await;
    load.accepts_more(100, Duration::from_secs(60)).await;
    let (accepted, statuses) = load.finish().await;

    let unexpected: Vec<_> = statuses
        .iter()
        .filter(|(s, _)| **s != 202 && **s != 503)
        .collect();
    assert!(
        unexpected.is_empty(),
        "answers besides 202 and 503: {statuses:?}"
    );
    all_received(&[&tally], &accepted, Duration::from_secs(60)).await;
    eprintln!(
        "postgres restart: answers {statuses:?}, all {} accepted delivered",
        accepted.len()
    );
    d.stop().await;
}

/// Concurrency of each daemon's channel: the most sends one daemon has in flight.
const BULKHEAD: usize = 16;
const TOTAL: usize = 20_000;

/// A daemon as a child process on the machine's PostgreSQL, schema `schema`, sending to `sink`.
fn spawn_daemon(dir: &std::path::Path, n: usize, schema: &str, sink: &Sink) -> (Child, String) {
    let port = free_port();
    let config = dir.join(format!("daemon-{n}.toml"));
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n[queue]\nurl = \"{}\"\nschema = \"{schema}\"\n\
             max_connections = 6\n\
             [dispatcher]\npoll_interval = \"50ms\"\nlease_margin = \"1s\"\n[log]\nlevel = \"warn\"\n{}",
            server_url(),
            webhook(
                "hooks",
                &sink.url(),
                &format!("concurrency = {BULKHEAD}\ntimeouts = {{ total = \"2s\" }}")
            ),
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.join(format!("daemon-{n}.log"))).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_notifyd"))
        .arg("--config")
        .arg(&config)
        .arg("serve")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    (child, format!("http://127.0.0.1:{port}"))
}

/// Child daemons, killed when the test ends however it ends; when it failed, their logs are
/// printed.
struct Children(Vec<(Child, String)>, std::path::PathBuf);

impl Drop for Children {
    fn drop(&mut self) {
        for (n, (child, _)) in self.0.iter_mut().enumerate() {
            let _ = child.kill();
            let _ = child.wait();
            if std::thread::panicking() {
                let log = std::fs::read_to_string(self.1.join(format!("daemon-{n}.log")));
                eprintln!("daemon {n}'s log:\n{}", log.unwrap_or_default());
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_of_three_daemons_killed_mid_dispatch_costs_at_most_its_in_flight_sends_twice() {
    let Some(schema) = TestSchema::create().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // Slow enough that the killed daemon has sends in flight; one sink per daemon, so each
    // request says which daemon made it.
    let tallies = [Tally::default(), Tally::default(), Tally::default()];
    let mut daemons = Children(Vec::new(), dir.path().to_owned());
    for (n, tally) in tallies.iter().enumerate() {
        let sink = tally.sink(Duration::from_millis(5)).await;
        daemons
            .0
            .push(spawn_daemon(dir.path(), n, &schema.name, &sink));
    }
    let http = reqwest::Client::new();
    for (_, base) in &daemons.0 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = http.get(format!("{base}/readyz")).send().await
                && r.status().is_success()
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "daemon at {base} never became ready"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    let mut accepted = Vec::with_capacity(TOTAL);
    for batch in 0..TOTAL / 1000 {
        let items: Vec<Value> = (0..1000)
            .map(|i| json!({"channel": "hooks", "to": "t", "body": format!("{batch}-{i}")}))
            .collect();
        let base = &daemons.0[batch % daemons.0.len()].1;
        let resp: Value = http
            .post(format!("{base}/v1/notifications/batch"))
            .json(&json!({ "notifications": items }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for r in resp["results"].as_array().unwrap() {
            assert_eq!(r["status"], 202, "{r}");
            accepted.push(r["id"].as_str().unwrap().to_owned());
        }
    }

    // Mid-dispatch: the doomed daemon has sent some, and most are not sent yet.
    let deadline = Instant::now() + Duration::from_secs(60);
    while tallies[0].requests() < 500 {
        assert!(Instant::now() < deadline, "daemon 0 sends nothing");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (doomed, _) = &mut daemons.0[0];
    doomed.kill().unwrap(); // SIGKILL
    doomed.wait().unwrap();
    let received_at_kill: usize = tallies.iter().map(Tally::requests).sum();
    assert!(
        received_at_kill < TOTAL / 2,
        "the kill came too late to prove anything"
    );

    let [killed, a, b] = &tallies;
    all_received(&[killed, a, b], &accepted, Duration::from_secs(240)).await;
    // Only rows the killed daemon leased are sent again, once their lease ran out; wait until
    // the queue says every row is delivered, so no re-send is still to come.
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&server_url())
        .await
        .unwrap();
    let undelivered = format!(
        "SELECT count(*) FROM \"{}\".notifications WHERE state <> 'delivered'",
        schema.name
    );
    loop {
        let left: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(undelivered.clone()))
            .fetch_one(&mut conn)
            .await
            .unwrap();
        if left == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline + Duration::from_secs(60),
            "{left} rows never delivered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(daemons);

    let (killed, a, b) = (killed.counts(), a.counts(), b.counts());
    let survivors_twice: Vec<_> = a
        .iter()
        .filter(|(id, n)| **n + b.get(*id).copied().unwrap_or(0) > 1)
        .chain(b.iter().filter(|(_, n)| **n > 1))
        .collect();
    assert!(
        survivors_twice.is_empty(),
        "the surviving daemons sent these twice: {survivors_twice:?}"
    );
    assert!(
        killed.values().all(|n| *n == 1),
        "the killed daemon sent a row twice"
    );
    let resent = killed
        .keys()
        .filter(|id| a.contains_key(*id) || b.contains_key(*id))
        .count();
    assert!(
        resent <= BULKHEAD,
        "{resent} notifications were sent twice, but the killed daemon had at most {BULKHEAD} \
         sends in flight"
    );
    let all: HashSet<&String> = killed.keys().chain(a.keys()).chain(b.keys()).collect();
    assert_eq!(all.len(), TOTAL);
    eprintln!(
        "three daemons: {received_at_kill} received at the kill, {resent} sent again after it"
    );
}
