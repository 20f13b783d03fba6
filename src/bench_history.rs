//! `notifyd bench-history`: how long a history page takes on a large queue. Builds (or reuses)
//! a queue file of `--rows` notifications shaped like a busy daemon's month (most delivered,
//! some dead, failed, scheduled; many recipients; fallbacks), or the same shape in a schema of
//! its own on PostgreSQL (`--queue postgres://…`, filled by one `generate_series` statement and
//! dropped at the end), then times each kind of search through [`Outbox::history`], the path
//! the API and `notifyd list` take.
// Times real work on the host's clock, like `bench`: no policy time here.
#![allow(clippy::disallowed_methods)]

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Instant;

use anyhow::Context;
use rand::Rng;
use rand::SeedableRng;

use crate::outbox::postgres::{PgOptions, PgOutbox};
use crate::outbox::sqlite::{SqliteOptions, SqliteOutbox};
use crate::outbox::{HistoryFilter, HistoryQuery, Outbox, Priority, State, now_ms};

/// `notifyd bench-history` flags.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Notifications in the queue.
    #[arg(long, default_value_t = 1_000_000)]
    pub rows: usize,
    /// Keep the queue file here (built if missing, reused if present) instead of a temp dir;
    /// or a `postgres://user@host:port/database` URL: the queue is built in a schema of its own
    /// there and dropped at the end.
    #[arg(long)]
    pub queue: Option<String>,
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

/// What the searches are built from: values read from the filled queue.
struct Sample {
    count: i64,
    /// The recipient of the newest notification.
    someone: String,
    /// A notification that has a fallback child.
    parent: Option<String>,
    newest_ms: i64,
}

/// Runs the benchmark and prints one line per search.
pub(crate) async fn run(args: &Args) -> anyhow::Result<()> {
    match args.queue.as_deref() {
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            run_postgres(args, url).await
        }
        Some(path) => run_sqlite(args, PathBuf::from(path)).await,
        None => {
            let dir = tempfile_dir()?;
            let result = run_sqlite(args, dir.join("history.db")).await;
            std::fs::remove_dir_all(dir)?;
            result
        }
    }
}

/// On the SQLite file at `path`, built first if missing.
async fn run_sqlite(args: &Args, path: PathBuf) -> anyhow::Result<()> {
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
    let sample = Sample {
        count: conn.query_row("SELECT count(*) FROM notifications", [], |r| r.get(0))?,
        someone: conn.query_row(
            "SELECT recipient FROM notifications ORDER BY created_at DESC LIMIT 1",
            [],
            |r| r.get(0),
        )?,
        parent: conn
            .query_row(
                "SELECT parent_id FROM notifications WHERE parent_id IS NOT NULL LIMIT 1",
                [],
                |r| r.get(0),
            )
            .ok(),
        newest_ms: conn.query_row("SELECT max(created_at) FROM notifications", [], |r| {
            r.get(0)
        })?,
    };
    println!("SQLite queue file {}", path.display());
    time_searches(&outbox, &sample, args.runs).await
}

/// Fills the `notifications` of a freshly migrated schema with `$1` rows of the SQLite
/// build's shape in one statement (`$2` the first creation time, `$3` the step between two):
/// the dice of each row are thrown once, in a materialized CTE, so one roll decides state,
/// attempts and last code alike. One in fifty rows is a fallback of the row before it.
const FILL: &str = "WITH dice AS MATERIALIZED (
         SELECT i, random() AS roll, random() AS pick, random() AS who, random() AS what,
                random() AS rare, random() AS fb, random() AS jitter, random() AS lag,
                random() AS ch
         FROM generate_series(1, $1::int8) AS i),
     shaped AS (
         SELECT i, who, what, rare, fb, lag, ch,
                CASE WHEN roll < 0.93 THEN 'delivered' WHEN roll < 0.95 THEN 'failed'
                     WHEN roll < 0.96 THEN 'dead' WHEN roll < 0.97 THEN 'expired'
                     WHEN roll < 0.98 THEN 'cancelled' WHEN roll < 0.995 THEN 'queued'
                     ELSE 'sending' END AS state,
                CASE WHEN pick < 0.05 THEN 'high' WHEN pick < 0.20 THEN 'low'
                     ELSE 'normal' END AS priority,
                $2::int8 + (i - 1) * $3::int8 + floor(jitter * $3::int8)::int8 AS created
         FROM dice)
     INSERT INTO notifications (id, channel, recipient, subject, body, priority, state,
         created_at, run_at, updated_at, attempts, parent_id, last_code, checked)
     SELECT md5('bench-history-' || i),
            (ARRAY['mail', 'sms', 'push', 'ios', 'slack', 'hooks', 'sms-backup',
                   'browsers'])[1 + floor(ch * 8)::int],
            'user' || floor(who * 50000)::int8 || '@example.com',
            CASE WHEN rare < 0.001 THEN 'Refund processed'
                 ELSE (ARRAY['Your order has shipped', 'Invoice available', 'Password reset',
                             'Weekly digest', 'Security alert'])[1 + floor(what * 5)::int] END,
            'body', priority, state, created, created,
            created + 5 + floor(lag * 4995)::int8,
            CASE WHEN state = 'queued' THEN 0 ELSE 1 END,
            CASE WHEN i > 1 AND fb < 0.02 THEN md5('bench-history-' || (i - 1)) END,
            CASE WHEN state <> 'delivered' THEN 'http_503' END,
            true
     FROM shaped";

/// On a schema of its own in the PostgreSQL database at `url`, dropped at the end.
async fn run_postgres(args: &Args, url: &str) -> anyhow::Result<()> {
    let schema = format!("notifyd_bench_history_{}", std::process::id());
    let connect = sqlx::postgres::PgConnectOptions::from_str(url)
        .context("not a PostgreSQL URL")?
        .options([("search_path", schema.as_str())]);
    let mut conn = sqlx::ConnectOptions::connect(&connect)
        .await
        .context("cannot connect to PostgreSQL")?;
    let drop_schema = format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE");
    let result = measure_postgres(args, url, &schema, &mut conn).await;
    let cleanup = sqlx::raw_sql(sqlx::AssertSqlSafe(drop_schema))
        .execute(&mut conn)
        .await;
    result?;
    cleanup.context("cannot drop the bench's schema")?;
    Ok(())
}

async fn measure_postgres(
    args: &Args,
    url: &str,
    schema: &str,
    conn: &mut sqlx::PgConnection,
) -> anyhow::Result<()> {
    // Connecting creates and migrates the schema, with every index.
    let outbox = PgOutbox::connect(&PgOptions {
        schema: schema.to_owned(),
        ..PgOptions::new(url)
    })
    .await?;
    eprintln!(
        "Building a queue of {} notifications in PostgreSQL schema {schema}…",
        args.rows
    );
    let t = Instant::now();
    let step = MONTH_MS / i64::try_from(args.rows.max(1))?;
    sqlx::query("SELECT setseed(0.14)")
        .execute(&mut *conn)
        .await?;
    sqlx::query(FILL)
        .bind(i64::try_from(args.rows)?)
        .bind(now_ms() - MONTH_MS)
        .bind(step)
        .execute(&mut *conn)
        .await?;
    // What autovacuum would have done to a table this size by now: statistics for the
    // planner, and a visibility map and hint bits, so the first searches do not pay for them.
    sqlx::raw_sql("VACUUM (ANALYZE) notifications")
        .execute(&mut *conn)
        .await?;
    eprintln!("Built in {:.1} s.", t.elapsed().as_secs_f64());
    let sample = Sample {
        count: sqlx::query_scalar("SELECT count(*) FROM notifications")
            .fetch_one(&mut *conn)
            .await?,
        someone: sqlx::query_scalar(
            "SELECT recipient FROM notifications ORDER BY created_at DESC, id DESC LIMIT 1",
        )
        .fetch_one(&mut *conn)
        .await?,
        parent: sqlx::query_scalar(
            "SELECT parent_id FROM notifications WHERE parent_id IS NOT NULL LIMIT 1",
        )
        .fetch_optional(&mut *conn)
        .await?,
        newest_ms: sqlx::query_scalar("SELECT max(created_at) FROM notifications")
            .fetch_one(&mut *conn)
            .await?,
    };
    let server: String = sqlx::query_scalar("SHOW server_version")
        .fetch_one(&mut *conn)
        .await?;
    println!("PostgreSQL {server}, schema {schema}");
    let result = time_searches(&outbox, &sample, args.runs).await;
    outbox.close().await;
    result
}

/// The searches timed: each kind of filter, alone or with another.
fn searches(sample: &Sample) -> Vec<(&'static str, HistoryFilter)> {
    let f = HistoryFilter::default;
    let newest = sample.newest_ms;
    vec![
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
                recipient: Some(sample.someone.clone()),
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
                fallback_of: sample.parent.clone(),
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
    ]
}

/// Times a first and a tenth page of 50 of each search, `runs` times, and prints a line each.
async fn time_searches(outbox: &dyn Outbox, sample: &Sample, runs: usize) -> anyhow::Result<()> {
    println!(
        "history pages on {} notifications ({runs} runs each; ms, median / slowest)",
        sample.count
    );
    println!(
        "{:<36} {:>17} {:>17} {:>6}",
        "search", "first page (50)", "10th page (50)", "rows"
    );
    for (name, filter) in searches(sample) {
        let mut first = Vec::new();
        let mut deep = Vec::new();
        let mut rows = 0;
        for _ in 0..runs.max(1) {
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
