//! `notifyd bench`: measures this build on this machine, end to end over real HTTP.
//!
//! It starts the real daemon (this binary, `serve`) as a child process — on a temporary SQLite
//! file, or with `--queue postgres://…` on a schema of its own in that database (made by the
//! daemons, dropped at the end), and with `--daemons N` as N daemons sharing that queue — with
//! one `webhook` channel pointed at a local receiver that this command runs and that counts what
//! every daemon delivers, then:
//! 1. single `POST /v1/notifications` at a fixed concurrency, scheduled a few seconds ahead so
//!    the accept path is measured alone (they are delivered, and waited for, afterwards);
//! 2. batches of 1,000, scheduled ahead the same way;
//! 3. the drain of that backlog once it falls due: delivered/s, end to end;
//! 4. accept→delivered latency at a fixed offered load (open loop);
//!
//! and reports each daemon's CPU per notification and peak RSS (VmHWM); on PostgreSQL also the
//! database round trips per delivered notification (`notifyd_queue_round_trips_total`) and the
//! CPU the server's processes spent. Requests go to the daemons in turn.

// Measures child processes in real time: the one module that reads the clock directly.
#![allow(clippy::disallowed_methods)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use serde_json::{Value, json};

/// Bench options.
#[derive(Debug, clap::Args)]
pub(crate) struct BenchArgs {
    /// Phase 1: how many single POSTs.
    #[arg(long, default_value_t = 30_000, value_parser = at_least_one)]
    pub singles: usize,
    /// Phase 1: concurrent clients.
    #[arg(long, default_value_t = 64, value_parser = at_least_one)]
    pub concurrency: usize,
    /// Phases 2 and 3: how many batches of 1,000.
    #[arg(long, default_value_t = 100, value_parser = at_least_one)]
    pub batches: usize,
    /// Phase 4: offered load, notifications per second.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub rate: u64,
    /// Phase 4: how long to offer it, in seconds.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub seconds: u64,
    /// The webhook channel's concurrency (its bulkhead), in each daemon.
    #[arg(long, default_value_t = 128, value_parser = at_least_one)]
    pub channel_concurrency: usize,
    /// The queue to measure: a `postgres://user@host:port/database` URL (the bench's daemons
    /// make a schema of their own there, dropped at the end). Default: a SQLite file in a
    /// temporary directory.
    #[arg(long, value_parser = postgres_url)]
    pub queue: Option<String>,
    /// Daemons sharing the queue (PostgreSQL only: a SQLite file has one).
    #[arg(long, default_value_t = 1, value_parser = at_least_one)]
    pub daemons: usize,
}

/// A count that must be positive (zero would divide by zero or measure nothing).
fn at_least_one(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// A PostgreSQL URL (the SQLite queue is the bench's own file, never one given).
fn postgres_url(text: &str) -> Result<String, String> {
    if text.starts_with("postgres://") || text.starts_with("postgresql://") {
        Ok(text.to_owned())
    } else {
        Err(
            "must be a postgres:// URL (without --queue the bench uses a SQLite file of its own)"
                .into(),
        )
    }
}

/// What the receiver has seen.
#[derive(Default)]
struct Receiver {
    count: AtomicU64,
    /// Arrival time of each latency-phase notification, by sequence number.
    arrivals: Mutex<HashMap<u64, Instant>>,
}

async fn receive(State(rx): State<Arc<Receiver>>, body: Bytes) -> &'static str {
    rx.count.fetch_add(1, Ordering::Relaxed);
    if let Ok(doc) = serde_json::from_slice::<Value>(&body)
        && let Some(seq) = doc["data"]["seq"].as_u64()
        && let Ok(mut a) = rx.arrivals.lock()
    {
        a.insert(seq, Instant::now());
    }
    "ok"
}

/// The queue the daemons share.
enum Queue {
    Sqlite(PathBuf),
    Postgres { url: String, schema: String },
}

impl Queue {
    /// The `[queue]` section of the daemons' configuration.
    fn config(&self) -> String {
        match self {
            Queue::Sqlite(path) => format!("[queue]\nurl = \"sqlite://{}\"\n", path.display()),
            Queue::Postgres { url, schema } => {
                format!("[queue]\nurl = {}\nschema = \"{schema}\"\n", json!(url))
            }
        }
    }

    fn describe(&self) -> String {
        match self {
            Queue::Sqlite(path) => format!("SQLite {}", path.display()),
            Queue::Postgres { schema, .. } => format!("PostgreSQL schema {schema}"),
        }
    }

    fn is_postgres(&self) -> bool {
        matches!(self, Queue::Postgres { .. })
    }

    /// Drops the bench's schema (a SQLite file goes with its directory).
    async fn drop_schema(&self) -> anyhow::Result<()> {
        if let Queue::Postgres { url, schema } = self {
            let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(url).await?;
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
            )))
            .execute(&mut conn)
            .await?;
            sqlx::Connection::close(conn).await?;
        }
        Ok(())
    }
}

/// One daemon under test.
struct Daemon {
    child: tokio::process::Child,
    pid: u32,
    base: String,
}

/// Starts daemon number `n` on `queue`, and waits until it is ready.
async fn start_daemon(
    n: usize,
    dir: &Path,
    queue: &Queue,
    sink: std::net::SocketAddr,
    args: &BenchArgs,
    http: &reqwest::Client,
) -> anyhow::Result<Daemon> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let config = dir.join(format!("notifyd-{n}.toml"));
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n{}\
             [dispatcher]\nclaim_batch = 512\n[log]\nlevel = \"warn\"\n\
             [channels.bench]\nkind = \"webhook\"\nurl = \"http://{sink}/hook\"\nconcurrency = {}\n",
            queue.config(),
            args.channel_concurrency
        ),
    )?;
    let exe = std::env::current_exe().context("cannot find this binary")?;
    let child = tokio::process::Command::new(exe)
        .arg("--config")
        .arg(&config)
        .arg("serve")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("cannot start the daemon")?;
    let pid = child.id().context("daemon has no pid")?;
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(http, &base).await?;
    Ok(Daemon { child, pid, base })
}

/// Runs the benchmark and prints the figures.
pub(crate) async fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let dir = tempfile_dir()?;
    let queue = match &args.queue {
        Some(url) => Queue::Postgres {
            url: url.clone(),
            schema: format!("notifyd_bench_{}", std::process::id()),
        },
        None if args.daemons > 1 => {
            bail!("--daemons above 1 needs a shared queue: --queue postgres://…")
        }
        None => Queue::Sqlite(dir.join("queue.db")),
    };
    // A schema left by an earlier run killed half-way would start the queue full.
    queue.drop_schema().await?;
    let result = measure(args, &dir, &queue).await;
    let cleanup = queue.drop_schema().await;
    let _ = std::fs::remove_dir_all(&dir);
    result?;
    cleanup.context("cannot drop the bench's schema")
}

async fn measure(args: &BenchArgs, dir: &Path, queue: &Queue) -> anyhow::Result<()> {
    let rx = Arc::new(Receiver::default());
    let sink = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let sink_addr = sink.local_addr()?;
    let app = Router::new()
        .route("/hook", post(receive))
        .with_state(rx.clone());
    tokio::spawn(async move { axum::serve(sink, app).await });

    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()?;
    // One after the other: the first creates and migrates the schema.
    let mut daemons = Vec::new();
    for n in 0..args.daemons {
        daemons.push(start_daemon(n, dir, queue, sink_addr, args, &http).await?);
    }
    let pids: Vec<u32> = daemons.iter().map(|d| d.pid).collect();
    let bases: Arc<Vec<String>> = Arc::new(daemons.iter().map(|d| d.base.clone()).collect());
    println!(
        "notifyd bench — {} cores, {} daemon(s) (pids {pids:?}), queue {}",
        cores(),
        daemons.len(),
        queue.describe()
    );

    // 1. Single POSTs, due once they are all in, so accepting is measured alone.
    let due_text = rfc3339_in(Duration::from_secs(5 + (args.singles as u64) / 4000))?;
    let singles_cpu_before = cpu_of(&pids, None);
    let start = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for _ in 0..args.concurrency {
        let (http, bases, next, due_text) =
            (http.clone(), bases.clone(), next.clone(), due_text.clone());
        let total = args.singles as u64;
        workers.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= total {
                    return Ok::<_, anyhow::Error>(());
                }
                let base = &bases[n as usize % bases.len()];
                let body = json!({"channel": "bench", "to": "receiver", "subject": "bench", "body": format!("single {n}"), "send_at": due_text});
                let resp = http.post(format!("{base}/v1/notifications")).json(&body).send().await?;
                if resp.status().as_u16() != 202 {
                    bail!("single POST answered {}", resp.status());
                }
            }
        }));
    }
    for w in workers {
        w.await??;
    }
    let singles_secs = start.elapsed().as_secs_f64();
    let singles_cpu = per_row_us_each(&singles_cpu_before, &cpu_of(&pids, None), args.singles);
    wait_count(&rx, args.singles as u64, Duration::from_secs(120)).await?;
    let singles_all_delivered = start.elapsed().as_secs_f64();

    // 2. Batches of 1,000, due a little later so nothing is dispatched while accepting.
    let batched = (args.batches * 1000) as u64;
    let due_in = Duration::from_secs(5 + (args.batches as u64) / 25);
    let due_text = rfc3339_in(due_in)?;
    let due_instant = Instant::now() + due_in;
    let start = Instant::now();
    let mut tasks = Vec::new();
    let sem = Arc::new(tokio::sync::Semaphore::new(4));
    for b in 0..args.batches {
        let (http, base, sem, due_text) = (
            http.clone(),
            bases[b % bases.len()].clone(),
            sem.clone(),
            due_text.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire_owned().await?;
            let items: Vec<Value> = (0..1000)
                .map(|i| json!({"channel": "bench", "to": "receiver", "body": format!("batch {b} item {i}"), "send_at": due_text}))
                .collect();
            let resp: Value = http
                .post(format!("{base}/v1/notifications/batch"))
                .json(&json!({ "notifications": items }))
                .send()
                .await?
                .json()
                .await?;
            let ok = resp["results"].as_array().map(|r| r.iter().filter(|x| x["status"] == 202).count());
            if ok != Some(1000) {
                bail!("a batch was not fully accepted: {ok:?}");
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let batch_secs = start.elapsed().as_secs_f64();
    if Instant::now() > due_instant {
        println!(
            "warning: accepting the batches took longer than their send_at lead; the drain figure mixes phases"
        );
    }

    // 3. The drain once due.
    tokio::time::sleep_until(due_instant.into()).await;
    let trips_before = round_trips(&http, &bases).await;
    let cpu_before = (
        cpu_of(&pids, None),
        cpu_of(&pids, Some(WRITER_THREAD)),
        postgres_ticks(queue),
    );
    let start = Instant::now();
    // Every single was delivered before the batches went in: the drain ends at all of both
    // (`before + batched` waited forever when accepting ran past the lead and some batched
    // rows were delivered before `before` was read).
    wait_count(&rx, args.singles as u64 + batched, Duration::from_secs(600)).await?;
    let drain_secs = start.elapsed().as_secs_f64();
    // CPU per notification varies far less with a noisy machine than throughput does.
    let cpu_after = (
        cpu_of(&pids, None),
        cpu_of(&pids, Some(WRITER_THREAD)),
        postgres_ticks(queue),
    );
    let trips_after = round_trips(&http, &bases).await;
    let drain_cpu = per_row_us_each(&cpu_before.0, &cpu_after.0, args.batches * 1000);
    let writer_cpu_us = per_row_us_each(&cpu_before.1, &cpu_after.1, args.batches * 1000);
    let server_cpu_us = per_row_us(cpu_before.2, cpu_after.2, batched);
    let drain_trips = per_row(trips_before, trips_after, batched);

    // 4. Latency at a fixed offered load.
    let total = args.rate * args.seconds;
    let interval = Duration::from_secs_f64(1.0 / args.rate as f64);
    let sent: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
    let trips_before = round_trips(&http, &bases).await;
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(total as usize);
    for seq in 0..total {
        tokio::time::sleep_until((start + interval.mul_f64(seq as f64)).into()).await;
        let (http, base, sent) = (
            http.clone(),
            bases[seq as usize % bases.len()].clone(),
            sent.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let at = Instant::now();
            if let Ok(mut s) = sent.lock() {
                s.insert(seq, at);
            }
            let body = json!({"channel": "bench", "to": "receiver", "body": "latency", "data": {"seq": seq}});
            let resp = http.post(format!("{base}/v1/notifications")).json(&body).send().await?;
            if resp.status().as_u16() != 202 {
                bail!("latency POST answered {}", resp.status());
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while rx.arrivals.lock().map(|a| a.len() as u64).unwrap_or(0) < total {
        if Instant::now() > deadline {
            bail!("latency phase: not everything was delivered within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let latency_trips = per_row(trips_before, round_trips(&http, &bases).await, total);
    let mut latencies: Vec<f64> = {
        let sent = sent.lock().map_err(|_| anyhow::anyhow!("lock"))?;
        let arrivals = rx.arrivals.lock().map_err(|_| anyhow::anyhow!("lock"))?;
        sent.iter()
            .filter_map(|(seq, at)| {
                arrivals
                    .get(seq)
                    .map(|r| r.duration_since(*at).as_secs_f64() * 1000.0)
            })
            .collect()
    };
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| latencies[((latencies.len() as f64 - 1.0) * p).round() as usize];

    let rss_mb: Vec<f64> = pids
        .iter()
        .map(|pid| peak_rss_kib(*pid).unwrap_or(0) as f64 / 1024.0)
        .collect();
    for mut d in daemons {
        let _ = d.child.kill().await;
    }

    let targets = Targets::of(queue);
    let singles_rate = args.singles as f64 / singles_secs;
    let batch_rate = batched as f64 / batch_secs;
    let drain_rate = batched as f64 / drain_secs;
    println!();
    println!("{:<58} {:>12} {:>10}", "measure", "result", "target");
    println!(
        "{:<58} {:>10.0}/s {:>10}",
        format!("accepted, single POSTs at concurrency {}", args.concurrency),
        singles_rate,
        targets.singles
    );
    print_cpu("  daemon CPU per accepted POST", &singles_cpu);
    println!(
        "{:<58} {:>10.1} s",
        format!("  (all {} accepted and delivered after)", args.singles),
        singles_all_delivered
    );
    println!(
        "{:<58} {:>10.0}/s {:>10}",
        "accepted, batches of 1,000", batch_rate, targets.batches
    );
    println!(
        "{:<58} {:>10.0}/s {:>10}",
        format!("delivered end to end (drain of {batched})"),
        drain_rate,
        targets.drain
    );
    print_cpu("  daemon CPU per delivered notification", &drain_cpu);
    print_cpu("  of which the queue writer thread", &writer_cpu_us);
    if let Some(us) = server_cpu_us {
        println!(
            "{:<58} {us:>9.1} µs",
            "  PostgreSQL server CPU per delivered notification"
        );
    }
    if let Some(trips) = drain_trips {
        println!(
            "{:<58} {trips:>12.3} {:>10}",
            "  database round trips per delivered notification", "≤ 0.2"
        );
    }
    println!(
        "{:<58} {:>9.1} ms {:>10}",
        format!("accept→delivered p50 at {}/s", args.rate),
        pct(0.50),
        ""
    );
    println!(
        "{:<58} {:>9.1} ms {:>10}",
        format!("accept→delivered p99 at {}/s", args.rate),
        pct(0.99),
        "≤ 25 ms"
    );
    if let Some(trips) = latency_trips {
        println!(
            "{:<58} {trips:>12.3}",
            format!("  database round trips per notification at {}/s", args.rate)
        );
    }
    for (n, mb) in rss_mb.iter().enumerate() {
        let what = if rss_mb.len() == 1 {
            "daemon peak RSS (VmHWM)".to_owned()
        } else {
            format!("daemon {} peak RSS (VmHWM)", n + 1)
        };
        println!("{what:<58} {mb:>9.1} MB {:>10}", "≤ 60 MB");
    }
    Ok(())
}

/// The targets the issues set, per queue.
struct Targets {
    singles: &'static str,
    batches: &'static str,
    drain: &'static str,
}

impl Targets {
    fn of(queue: &Queue) -> Self {
        if queue.is_postgres() {
            Self {
                singles: "",
                batches: "≥ 10000",
                drain: "≥ 8000",
            }
        } else {
            Self {
                singles: "≥ 10000",
                batches: "≥ 40000",
                drain: "≥ 10000",
            }
        }
    }
}

/// Prints a CPU figure per item: the sum, and each daemon's when there are several.
fn print_cpu(what: &str, each: &[Option<f64>]) {
    let known: Vec<f64> = each.iter().flatten().copied().collect();
    if known.len() != each.len() || known.is_empty() {
        return;
    }
    let sum: f64 = known.iter().sum();
    println!("{what:<58} {sum:>9.1} µs");
    if known.len() > 1 {
        for (n, us) in known.iter().enumerate() {
            println!("{:<58} {us:>9.1} µs", format!("    daemon {}", n + 1));
        }
    }
}

/// Every daemon's `notifyd_queue_round_trips_total`, summed; `None` when a daemon has none
/// (SQLite) or cannot be read.
async fn round_trips(http: &reqwest::Client, bases: &[String]) -> Option<u64> {
    let mut sum = 0;
    for base in bases {
        let text = http
            .get(format!("{base}/metrics"))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        sum += text
            .lines()
            .find_map(|l| l.strip_prefix("notifyd_queue_round_trips_total "))?
            .trim()
            .parse::<u64>()
            .ok()?;
    }
    Some(sum)
}

/// `(after - before) / items`, when both were read.
fn per_row(before: Option<u64>, after: Option<u64>, items: u64) -> Option<f64> {
    Some(after?.saturating_sub(before?) as f64 / items.max(1) as f64)
}

/// The RFC 3339 time `after` from now.
fn rfc3339_in(after: Duration) -> anyhow::Result<String> {
    let at = time::OffsetDateTime::now_utc() + after;
    Ok(at.format(&time::format_description::well_known::Rfc3339)?)
}

fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("notifyd-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

async fn wait_ready(http: &reqwest::Client, base: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("the daemon did not become ready")
}

async fn wait_count(rx: &Receiver, n: u64, within: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    while rx.count.load(Ordering::Relaxed) < n {
        if Instant::now() > deadline {
            bail!(
                "only {} of {n} delivered within {within:?}",
                rx.count.load(Ordering::Relaxed)
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// The queue writer's thread name (outbox/sqlite/writer.rs).
const WRITER_THREAD: &str = "notifyd-writer";
/// Linux reports CPU time in USER_HZ ticks, 100 a second on every architecture it runs on.
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU microseconds per item between two [`cpu_ticks`] readings.
fn per_row_us(before: Option<u64>, after: Option<u64>, items: u64) -> Option<f64> {
    Some(after?.saturating_sub(before?) as f64 * 1e6 / TICKS_PER_SECOND / items.max(1) as f64)
}

/// [`per_row_us`] for each daemon.
fn per_row_us_each(
    before: &[Option<u64>],
    after: &[Option<u64>],
    items: usize,
) -> Vec<Option<f64>> {
    before
        .iter()
        .zip(after)
        .map(|(b, a)| per_row_us(*b, *a, items as u64))
        .collect()
}

/// [`cpu_ticks`] of each daemon.
fn cpu_of(pids: &[u32], thread: Option<&str>) -> Vec<Option<u64>> {
    pids.iter().map(|pid| cpu_ticks(*pid, thread)).collect()
}

/// CPU ticks of every PostgreSQL server process on this machine (a PostgreSQL queue on
/// another host shows none): other clients of the same server count too.
fn postgres_ticks(queue: &Queue) -> Option<u64> {
    if !queue.is_postgres() {
        return None;
    }
    let mut sum = 0;
    let mut found = false;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(comm) = std::fs::read_to_string(entry.path().join("comm")) else {
            continue;
        };
        if comm.trim() == "postgres"
            && let Some(ticks) = cpu_ticks(pid, None)
        {
            sum += ticks;
            found = true;
        }
    }
    found.then_some(sum)
}

/// User plus system CPU time of process `pid`, or of its thread named `thread`, in ticks.
fn cpu_ticks(pid: u32, thread: Option<&str>) -> Option<u64> {
    let proc = Path::new("/proc").join(pid.to_string());
    let stat = match thread {
        None => std::fs::read_to_string(proc.join("stat")).ok()?,
        Some(name) => std::fs::read_dir(proc.join("task"))
            .ok()?
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("stat")).ok())
            .find(|s| s.contains(&format!("({name})")))?,
    };
    // After the name in parentheses: state is field 3, utime 14 and stime 15.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status =
        std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}
