//! `notifyd bench`: measures this build on this machine, end to end over real HTTP.
//!
//! It starts the real daemon (this binary, `serve`) as a child process on a temporary SQLite
//! file, with one `webhook` channel pointed at a local receiver that this command runs, then:
//! 1. single `POST /v1/notifications` at a fixed concurrency, scheduled a few seconds ahead so
//!    the accept path is measured alone (they are delivered, and waited for, afterwards);
//! 2. batches of 1,000, scheduled ahead the same way;
//! 3. the drain of that backlog once it falls due: delivered/s, end to end;
//! 4. accept→delivered latency at a fixed offered load (open loop);
//!
//! and reports the daemon's peak RSS (VmHWM).

// Measures a child process in real time: the one module that reads the clock directly.
#![allow(clippy::disallowed_methods)]

use std::collections::HashMap;
use std::path::Path;
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
pub struct BenchArgs {
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
    /// The webhook channel's concurrency (its bulkhead).
    #[arg(long, default_value_t = 128, value_parser = at_least_one)]
    pub channel_concurrency: usize,
}

/// A count that must be positive (zero would divide by zero or measure nothing).
fn at_least_one(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
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

/// Runs the benchmark and prints the figures.
pub async fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let rx = Arc::new(Receiver::default());
    let sink = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let sink_addr = sink.local_addr()?;
    let app = Router::new()
        .route("/hook", post(receive))
        .with_state(rx.clone());
    tokio::spawn(async move { axum::serve(sink, app).await });

    let dir = tempfile_dir()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let config = dir.join("notifyd.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n[queue]\nurl = \"sqlite://{}\"\n\
             [dispatcher]\nclaim_batch = 512\n[log]\nlevel = \"warn\"\n\
             [channels.bench]\nkind = \"webhook\"\nurl = \"http://{sink_addr}/hook\"\nconcurrency = {}\n",
            dir.join("queue.db").display(),
            args.channel_concurrency
        ),
    )?;
    let exe = std::env::current_exe().context("cannot find this binary")?;
    let mut daemon = tokio::process::Command::new(exe)
        .arg("--config")
        .arg(&config)
        .arg("serve")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("cannot start the daemon")?;
    let pid = daemon.id().context("daemon has no pid")?;
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()?;
    wait_ready(&http, &base).await?;
    println!(
        "notifyd bench — {} cores, daemon pid {pid}, queue {}",
        cores(),
        dir.join("queue.db").display()
    );

    // 1. Single POSTs, due once they are all in, so accepting is measured alone.
    let due_text = rfc3339_in(Duration::from_secs(5 + (args.singles as u64) / 4000))?;
    let singles_cpu_before = cpu_ticks(pid, None);
    let start = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for _ in 0..args.concurrency {
        let (http, base, next, due_text) =
            (http.clone(), base.clone(), next.clone(), due_text.clone());
        let total = args.singles as u64;
        workers.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= total {
                    return Ok::<_, anyhow::Error>(());
                }
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
    let singles_cpu_us = per_row_us(
        singles_cpu_before,
        cpu_ticks(pid, None),
        args.singles as u64,
    );
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
        let (http, base, sem, due_text) =
            (http.clone(), base.clone(), sem.clone(), due_text.clone());
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
    let before = rx.count.load(Ordering::Relaxed);
    let cpu_before = (cpu_ticks(pid, None), cpu_ticks(pid, Some(WRITER_THREAD)));
    let start = Instant::now();
    wait_count(&rx, before + batched, Duration::from_secs(600)).await?;
    let drain_secs = start.elapsed().as_secs_f64();
    // CPU per notification varies far less with a noisy machine than throughput does.
    let cpu_after = (cpu_ticks(pid, None), cpu_ticks(pid, Some(WRITER_THREAD)));
    let daemon_cpu_us = per_row_us(cpu_before.0, cpu_after.0, batched);
    let writer_cpu_us = per_row_us(cpu_before.1, cpu_after.1, batched);

    // 4. Latency at a fixed offered load.
    let total = args.rate * args.seconds;
    let interval = Duration::from_secs_f64(1.0 / args.rate as f64);
    let sent: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(total as usize);
    for seq in 0..total {
        tokio::time::sleep_until((start + interval.mul_f64(seq as f64)).into()).await;
        let (http, base, sent) = (http.clone(), base.clone(), sent.clone());
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

    let rss_mb = peak_rss_kib(pid).unwrap_or(0) as f64 / 1024.0;
    let _ = daemon.kill().await;
    let _ = std::fs::remove_dir_all(&dir);

    let singles_rate = args.singles as f64 / singles_secs;
    let batch_rate = batched as f64 / batch_secs;
    let drain_rate = batched as f64 / drain_secs;
    println!();
    println!("{:<58} {:>12} {:>10}", "measure", "result", "target");
    println!(
        "{:<58} {:>10.0}/s {:>10}",
        format!("accepted, single POSTs at concurrency {}", args.concurrency),
        singles_rate,
        "≥ 10000"
    );
    if let Some(us) = singles_cpu_us {
        println!("{:<58} {us:>9.1} µs", "  daemon CPU per accepted POST");
    }
    println!(
        "{:<58} {:>10.1} s",
        format!("  (all {} accepted and delivered after)", args.singles),
        singles_all_delivered
    );
    println!(
        "{:<58} {:>10.0}/s {:>10}",
        "accepted, batches of 1,000", batch_rate, "≥ 40000"
    );
    println!(
        "{:<58} {:>10.0}/s {:>10}",
        format!("delivered end to end (drain of {batched})"),
        drain_rate,
        "≥ 10000"
    );
    for (what, us) in [
        ("  daemon CPU per delivered notification", daemon_cpu_us),
        ("  of which the queue writer thread", writer_cpu_us),
    ] {
        if let Some(us) = us {
            println!("{what:<58} {us:>9.1} µs");
        }
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
    println!(
        "{:<58} {:>9.1} MB {:>10}",
        "daemon peak RSS (VmHWM)", rss_mb, "≤ 60 MB"
    );
    Ok(())
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
