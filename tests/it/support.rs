//! Test fixtures: a daemon on a temp queue, and an HTTP sink that records what it receives.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use figment::providers::Env;
use notifyd::Config;
use notifyd::Daemon;
use serde_json::Value;

/// A daemon running in this process on a temporary queue file.
pub struct TestDaemon {
    pub daemon: Option<Daemon>,
    pub dir: tempfile::TempDir,
    pub base: String,
    pub http: reqwest::Client,
}

/// Config text with the queue in `dir` and an ephemeral port, plus `channels`.
pub fn config_text(dir: &Path, channels: &str) -> String {
    config_text_with(dir, "", channels)
}

/// [`config_text`] with extra `[server]` keys.
pub fn config_text_with(dir: &Path, server: &str, channels: &str) -> String {
    let queue = format!("url = \"sqlite://{}\"", dir.join("queue.db").display());
    config_text_on(&queue, server, channels)
}

/// [`config_text_with`] on the queue the `[queue]` keys `queue` name.
pub fn config_text_on(queue: &str, server: &str, channels: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n{server}\n[queue]\n{queue}\n\
         [dispatcher]\npoll_interval = \"50ms\"\nsweep_interval = \"200ms\"\nshutdown_grace = \"2s\"\n\
         [log]\nlevel = \"warn\"\n{channels}"
    )
}

pub fn load_config(text: &str, dir: &Path) -> Config {
    let path = dir.join("notifyd.toml");
    std::fs::write(&path, text).unwrap();
    Config::load_with_env(Some(&path), Env::prefixed("NOTIFYD_IT_UNUSED_")).unwrap()
}

impl TestDaemon {
    /// Starts a daemon with these `[channels.*]` tables.
    pub async fn start(channels: &str) -> Self {
        Self::start_with("", channels).await
    }

    /// Starts a daemon on the queue the `[queue]` keys `queue` name, with these channels.
    pub async fn start_on(queue: &str, channels: &str) -> Self {
        Self::start_from(
            tempfile::tempdir().unwrap(),
            &config_text_on(queue, "", channels),
        )
        .await
    }

    /// Starts a daemon with extra `[server]` keys and these `[channels.*]` tables.
    pub async fn start_with(server: &str, channels: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let text = config_text_with(dir.path(), server, channels);
        Self::start_from(dir, &text).await
    }

    /// Starts a daemon with the config `text`, written into `dir`.
    pub async fn start_from(dir: tempfile::TempDir, text: &str) -> Self {
        let config = load_config(text, dir.path());
        let daemon = Daemon::start(config).await.unwrap();
        let base = format!("http://{}", daemon.addr());
        Self {
            daemon: Some(daemon),
            dir,
            base,
            http: reqwest::Client::new(),
        }
    }

    pub fn queue_path(&self) -> PathBuf {
        self.dir.path().join("queue.db")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// POSTs JSON; returns status and body.
    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        answer(self.http.post(self.url(path)).json(body)).await
    }

    /// PUTs JSON; returns status and body.
    pub async fn put(&self, path: &str, body: &Value) -> (u16, Value) {
        answer(self.http.put(self.url(path)).json(body)).await
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        answer(self.http.get(self.url(path))).await
    }

    pub async fn delete(&self, path: &str) -> (u16, Value) {
        answer(self.http.delete(self.url(path))).await
    }

    /// Accepts one notification and returns its id.
    pub async fn accept(&self, body: Value) -> String {
        let (status, answer) = self.post("/v1/notifications", &body).await;
        assert_eq!(status, 202, "{answer}");
        answer["id"].as_str().unwrap().to_owned()
    }

    /// Waits until the notification is in `state`; returns its view.
    pub async fn wait_for_state(&self, id: &str, state: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let (_, view) = self.get(&format!("/v1/notifications/{id}")).await;
            if view["state"] == state {
                return view;
            }
            assert!(
                Instant::now() < deadline,
                "{id} never reached {state}: {view}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The id of the fallback notification queued for `parent`, read from the queue file.
    pub fn fallback_child(&self, parent: &str) -> String {
        rusqlite::Connection::open(self.queue_path())
            .unwrap()
            .query_row(
                "SELECT id FROM notifications WHERE parent_id = ?1",
                [parent],
                |r| r.get(0),
            )
            .unwrap()
    }

    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(d) = self.daemon.take() {
            d.stop();
            d.wait().await;
        }
        self.dir
    }
}

/// Sends a request; its status and JSON body (`null` when not JSON).
async fn answer(request: reqwest::RequestBuilder) -> (u16, Value) {
    let resp = request.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// One request the sink received.
#[derive(Debug, Clone)]
pub struct Received {
    pub at: Instant,
    pub headers: HeaderMap,
    pub body: Value,
}

/// What the sink keeps: the requests so far, and how to answer the next.
type SinkState = (Arc<Mutex<Vec<Received>>>, Arc<Responder>);

type Responder =
    dyn Fn(usize, &Value) -> (StatusCode, Vec<(&'static str, String)>, Duration) + Send + Sync;

/// An HTTP receiver on loopback that records every request and answers as told.
#[derive(Clone)]
pub struct Sink {
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
}

impl Sink {
    /// Answers 200 to everything.
    pub async fn ok() -> Self {
        Self::start(|_, _| (StatusCode::OK, vec![], Duration::ZERO)).await
    }

    /// Answers every request with `status` and one header.
    pub async fn always(status: StatusCode, header: &'static str, value: &str) -> Self {
        let value = value.to_owned();
        Self::start(move |_, _| (status, vec![(header, value.clone())], Duration::ZERO)).await
    }

    /// Answers the first `n` requests with 502, then 200.
    pub async fn failing_first(n: usize) -> Self {
        Self::start(move |i, _| {
            let status = if i < n {
                StatusCode::BAD_GATEWAY
            } else {
                StatusCode::OK
            };
            (status, vec![], Duration::ZERO)
        })
        .await
    }

    /// `respond(n, body)` decides the answer to the n-th request (0-based): status, headers, delay.
    pub async fn start(
        respond: impl Fn(usize, &Value) -> (StatusCode, Vec<(&'static str, String)>, Duration)
        + Send
        + Sync
        + 'static,
    ) -> Self {
        let received = Arc::new(Mutex::new(Vec::new()));
        let state = (received.clone(), Arc::new(respond) as Arc<Responder>);
        let app = Router::new()
            .route("/{*path}", post(record))
            .route("/", post(record))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { addr, received }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Waits until at least `n` requests arrived.
    pub async fn wait_for(&self, n: usize, within: Duration) -> Vec<Received> {
        let deadline = Instant::now() + within;
        loop {
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "sink got {} of {n} requests",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn record(
    State((received, respond)): State<SinkState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let n = {
        let mut r = received.lock().unwrap();
        r.push(Received {
            at: Instant::now(),
            headers,
            body: body.clone(),
        });
        r.len() - 1
    };
    let (status, headers, delay) = respond(n, &body);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let mut resp = status.into_response();
    for (k, v) in headers {
        resp.headers_mut().insert(k, v.parse().unwrap());
    }
    resp
}

/// A `[channels.hooks]` webhook table pointing at `url`, with extra keys.
pub fn webhook(name: &str, url: &str, extra: &str) -> String {
    format!("[channels.{name}]\nkind = \"webhook\"\nurl = \"{url}\"\n{extra}\n")
}

/// Asserts that no window between two of these arrival times held more than `burst + rate ×
/// span` requests, less the slack of the hop from the limiter to the receiver (whose clocks
/// differ by it): 10 ms per window and one request held up on its way. Returns the worst window:
/// its requests and how far they went over `burst + rate × span`.
pub fn assert_rate_kept(times: &[Instant], rate: f64, burst: f64) -> (usize, f64) {
    let mut times = times.to_vec();
    times.sort_unstable();
    let mut worst = (0usize, 0.0f64);
    for i in 0..times.len() {
        for j in i..times.len() {
            let span = (times[j] - times[i]).as_secs_f64();
            let n = j - i + 1;
            let allowed = burst + rate * (span + 0.010) + 1.0;
            assert!((n as f64) <= allowed, "{n} requests within {span:.3}s");
            let excess = n as f64 - (burst + rate * span);
            if excess > worst.1 {
                worst = (n, excess);
            }
        }
    }
    worst
}

impl TestDaemon {
    /// The same daemon again on the same queue file, with these channels: a restart.
    pub async fn restart(self, channels: &str) -> Self {
        let dir = self.stop().await;
        let config = load_config(&config_text(dir.path(), channels), dir.path());
        Self::around(Daemon::start(config).await.unwrap(), dir)
    }

    /// A daemon on the PostgreSQL queue in `schema` (the test server), with these channels.
    pub async fn start_on_postgres(schema: &str, channels: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[queue]\nurl = \"{}\"\nschema = \"{schema}\"\n\
             max_connections = 4\n\
             [dispatcher]\npoll_interval = \"50ms\"\nsweep_interval = \"200ms\"\nshutdown_grace = \"2s\"\n\
             [log]\nlevel = \"warn\"\n{channels}",
            crate::postgres_server::server_url(),
        );
        let config = load_config(&text, dir.path());
        Self::around(Daemon::start(config).await.unwrap(), dir)
    }

    fn around(daemon: Daemon, dir: tempfile::TempDir) -> Self {
        Self {
            base: format!("http://{}", daemon.addr()),
            daemon: Some(daemon),
            dir,
            http: reqwest::Client::new(),
        }
    }
}

/// Waits until the daemon at `base` answers `/readyz` with success.
pub async fn wait_ready(http: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await
            && r.status().is_success()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("daemon at {base} never became ready");
}

/// A TCP port nobody listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Posts `items` as one batch to the daemon at `base`; their ids, each asserted accepted (202).
pub async fn accept_batch(http: &reqwest::Client, base: &str, items: Vec<Value>) -> Vec<String> {
    let resp: Value = http
        .post(format!("{base}/v1/notifications/batch"))
        .json(&serde_json::json!({ "notifications": items }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    resp["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert_eq!(r["status"], 202, "{r}");
            r["id"].as_str().unwrap().to_owned()
        })
        .collect()
}
