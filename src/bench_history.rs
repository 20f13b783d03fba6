//! `notifyd bench-history`: how long a history page takes on a large queue. Builds (or reuses)
//! a queue file of `--rows` notifications shaped like a busy daemon's month (most delivered,
//! some dead, failed, scheduled; many recipients; fallbacks), then times each kind of search
//! through [`Outbox::history`], the path the API and `notifyd list` take.
// Times real work on the host's clock, like `bench`: no policy time here.
#![allow(clippy::disallowed_methods)]

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use rand::Rng;
use rand::SeedableRng;

use crate::outbox::sqlite::{SqliteOptions, SqliteOutbox};
use crate::outbox::{HistoryFilter, HistoryQuery, Outbox, Priority, State, now_ms};

/// `notifyd bench-history` flags.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Notifications in the queue.
    #[arg(long, default_value_t = 1_000_000)]
    pub rows: usize,
    /// Keep the queue file here (built if missing, reused if present) instead of a temp dir.
    /// SQLite only: a `postgres://` URL is refused.
    #[arg(long)]
    pub queue: Option<PathBuf>,
    /// Times each search is run; the median and the slowest are printed.
    #[arg(long, default_value_t = 21)]
    pub runs: usize,
}

const CHANNELS: [&str; 8] = [
    "mail",
    "sms",
    "push",
    "ios",
    "slack",
    "hooks",
    "sms-backup",
    "browsers",
];
const SUBJECTS: [&str; 5] = [
    "Your order has shipped",
    "Invoice available",
    "Password reset",
    "Weekly digest",
    "Security alert",
];
/// Distinct recipients: a typical one has `rows / RECIPIENTS` notifications.
const RECIPIENTS: u64 = 50_000;
const MONTH_MS: i64 = 30 * 86_400_000;

fn recipient(n: u64) -> String {
    format!("user{n}@example.com")
}

/// Writes `rows` notifications straight into a fresh queue file, in one transaction.
fn build(path: &std::path::Path, rows: usize) -> anyhow::Result<()> {
    // Opening through the outbox creates and migrates the file, with every index.
    drop(SqliteOutbox::open(&SqliteOptions::new(path))?);
    let mut conn = rusqlite::Connection::open(path)?;
    conn.pragma_update(None, "synchronous", "OFF")?;
    let tx = conn.transaction()?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(14);
    let start = now_ms() - MONTH_MS;
    let step = MONTH_MS / i64::try_from(rows.max(1))?;
    {
        let mut insert = tx.prepare(
            "INSERT INTO notifications (id, channel, recipient, subject, body, priority, state,
                 created_at, run_at, updated_at, attempts, parent_id, last_code)
             VALUES (?1, ?2, ?3, ?4, 'body', ?5, ?6, ?7, ?7, ?8, ?9, ?10, ?11)",
        )?;
        let mut last_failed: Option<String> = None;
        for i in 0..rows {
            let created = start + i64::try_from(i)? * step + rng.random_range(0..step.max(1));
            let id = uuid::Uuid::now_v7().to_string();
            let roll: f64 = rng.random();
            let state = match roll {
                r if r < 0.93 => State::Delivered,
                r if r < 0.95 => State::Failed,
                r if r < 0.96 => State::Dead,
                r if r < 0.97 => State::Expired,
                r if r < 0.98 => State::Cancelled,
                r if r < 0.995 => State::Queued,
                _ => State::Sending,
            };
            let priority = match rng.random_range(0..20) {
                0 => Priority::High,
                1..=3 => Priority::Low,
                _ => Priority::Normal,
            };
            // One in a thousand subjects is rare, for the worst text search.
            let subject = if rng.random_range(0..1000) == 0 {
                "Refund processed".to_owned()
            } else {
                SUBJECTS[rng.random_range(0..SUBJECTS.len())].to_owned()
            };
            let parent = match (&last_failed, rng.random_range(0..50)) {
                (Some(p), 0) => Some(p.clone()),
                _ => None,
            };
            let last_code = (state != State::Delivered).then_some("http_503");
            insert.execute(rusqlite::params![
                id,
                CHANNELS[rng.random_range(0..CHANNELS.len())],
                recipient(rng.random_range(0..RECIPIENTS)),
                subject,
                priority.as_str(),
                state.as_str(),
                created,
                created + rng.random_range(5..5_000),
                u32::from(state != State::Queued),
                parent,
                last_code,
            ])?;
            if state == State::Failed {
                last_failed = Some(id);
            }
        }
    }
    tx.commit()?;
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")?;
    Ok(())
}

fn millis(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Runs the benchmark and prints one line per search.
pub(crate) async fn run(args: &Args) -> anyhow::Result<()> {
    if let Some(queue) = &args.queue
        && let Some(text) = queue.to_str()
        && (text.starts_with("postgres://") || text.starts_with("postgresql://"))
    {
        anyhow::bail!(
            "bench-history times the SQLite queue file only; on PostgreSQL the history's plans \
             are checked with EXPLAIN on a filled queue by the tests of src/outbox/postgres/history.rs"
        );
    }
    let tmp = match &args.queue {
        Some(_) => None,
        None => Some(tempfile_dir()?),
    };
    let path = match (&args.queue, &tmp) {
        (Some(p), _) => p.clone(),
        (None, Some(dir)) => dir.join("history.db"),
        (None, None) => anyhow::bail!("no place for the queue"),
    };
    if !path.exists() {
        eprintln!(
            "Building a queue of {} notifications at {}…",
            args.rows,
            path.display()
        );
        let t = Instant::now();
        let (p, rows) = (path.clone(), args.rows);
        tokio::task::spawn_blocking(move || build(&p, rows))
            .await
            .context("build task")??;
        eprintln!("Built in {:.1} s.", t.elapsed().as_secs_f64());
    }
    let outbox = SqliteOutbox::open(&SqliteOptions::new(&path))?;
    let conn = rusqlite::Connection::open(&path)?;
    let count: i64 = conn.query_row("SELECT count(*) FROM notifications", [], |r| r.get(0))?;
    let someone: String = conn.query_row(
        "SELECT recipient FROM notifications ORDER BY created_at DESC LIMIT 1",
        [],
        |r| r.get(0),
    )?;
    let parent: Option<String> = conn
        .query_row(
            "SELECT parent_id FROM notifications WHERE parent_id IS NOT NULL LIMIT 1",
            [],
            |r| r.get(0),
        )
        .ok();
    let newest: i64 = conn.query_row("SELECT max(created_at) FROM notifications", [], |r| {
        r.get(0)
    })?;
    let f = HistoryFilter::default;
    let searches: Vec<(&str, HistoryFilter)> = vec![
        ("no filter", f()),
        (
            "channel=sms",
            HistoryFilter {
                channel: Some("sms".into()),
                ..f()
            },
        ),
        (
            "to=<recipient>",
            HistoryFilter {
                recipient: Some(someone),
                ..f()
            },
        ),
        (
            "state=dead",
            HistoryFilter {
                state: Some(State::Dead),
                ..f()
            },
        ),
        (
            "state=queued&channel=push",
            HistoryFilter {
                state: Some(State::Queued),
                channel: Some("push".into()),
                ..f()
            },
        ),
        (
            "state=delivered&channel=mail",
            HistoryFilter {
                state: Some(State::Delivered),
                channel: Some("mail".into()),
                ..f()
            },
        ),
        (
            "priority=high",
            HistoryFilter {
                priority: Some(Priority::High),
                ..f()
            },
        ),
        (
            "subject=Invoice",
            HistoryFilter {
                subject_contains: Some("Invoice".into()),
                ..f()
            },
        ),
        (
            "subject=Refund (1 in 1000)",
            HistoryFilter {
                subject_contains: Some("Refund".into()),
                ..f()
            },
        ),
        (
            "created in one hour, 10 days ago",
            HistoryFilter {
                created_after_ms: Some(newest - 10 * 86_400_000),
                created_before_ms: Some(newest - 10 * 86_400_000 + 3_600_000),
                ..f()
            },
        ),
        (
            "updated_after=1 day ago",
            HistoryFilter {
                updated_after_ms: Some(newest - 86_400_000),
                ..f()
            },
        ),
        (
            "fallback_of=<id>",
            HistoryFilter {
                fallback_of: parent,
                ..f()
            },
        ),
        (
            "subject=<matches nothing>",
            HistoryFilter {
                subject_contains: Some("zzz-nothing".into()),
                ..f()
            },
        ),
        (
            "subject=<nothing>&created in a day",
            HistoryFilter {
                subject_contains: Some("zzz-nothing".into()),
                created_after_ms: Some(newest - 86_400_000),
                ..f()
            },
        ),
    ];
    println!(
        "history pages on {count} notifications ({} runs each; ms, median / slowest)",
        args.runs
    );
    println!(
        "{:<36} {:>17} {:>17} {:>6}",
        "search", "first page (50)", "10th page (50)", "rows"
    );
    for (name, filter) in searches {
        let mut first = Vec::new();
        let mut deep = Vec::new();
        let mut rows = 0;
        for _ in 0..args.runs.max(1) {
            let mut query = HistoryQuery {
                filter: filter.clone(),
                after: None,
                limit: 50,
                max_walk: crate::outbox::MAX_WALK,
            };
            let t = Instant::now();
            let page = outbox.history(&query).await?;
            first.push(millis(t.elapsed()));
            rows = page.items.len();
            // Walk to the 10th page; time only that one.
            let mut next = page.next;
            for _ in 0..8 {
                query.after = next.clone();
                if query.after.is_none() {
                    break;
                }
                next = outbox.history(&query).await?.next;
            }
            query.after = next;
            if query.after.is_some() {
                let t = Instant::now();
                outbox.history(&query).await?;
                deep.push(millis(t.elapsed()));
            }
        }
        println!(
            "{:<36} {:>17} {:>17} {:>6}",
            name,
            summary(&mut first),
            summary(&mut deep),
            rows
        );
    }
    drop(outbox);
    if let Some(dir) = tmp {
        std::fs::remove_dir_all(dir)?;
    }
    Ok(())
}

fn summary(xs: &mut [f64]) -> String {
    if xs.is_empty() {
        return "-".into();
    }
    xs.sort_by(f64::total_cmp);
    format!("{:.2} / {:.2}", xs[xs.len() / 2], xs[xs.len() - 1])
}

/// A directory for the queue, removed when the run ends.
fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("notifyd-bench-history-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
