//! The queue table's own vacuum, between autovacuum's visits.
//!
//! No update of `notifications` is HOT (its state and due time are indexed), so every claim and
//! every completion leaves a dead row version and dead index entries behind until a VACUUM
//! removes them. The claim walks the due index from its oldest entries, where those of rows
//! claimed and finished since the last vacuum lie: after a drain of 100,000 rows each claim read
//! 2,500–3,400 index pages of them, which made the claim the slowest stage of the queue
//! (BENCHMARKS.md). Autovacuum comes at most once per `autovacuum_naptime` (a minute by
//! default), and never when it is off. So the daemon that leads the `upkeep` task vacuums the
//! table itself once enough dead versions gathered, and never for more than a tenth of the time;
//! it also analyzes it now and then, which keeps the server's plans of notifyd's prepared
//! statements fresh when autovacuum is off. `queue.vacuum = false` leaves all of it to the
//! server.
//!
//! The rule ([`next`]) is a pure function of the table's statistics and of the last runs; the
//! loop ([`keep_up`]) only reads, decides and runs.

use std::time::Duration;

use sqlx::Row;
use tokio::sync::watch;

use super::pool::Pool;
use super::round_trips::RoundTrips;
use super::{LEAD_TERM_MS, sql};
use crate::clock::{self, Instant};
use crate::outbox::Clock;

/// How often the leader looks at the table's statistics.
pub(super) const LOOK_EVERY: Duration = Duration::from_secs(1);
/// Dead row versions that make a vacuum worth its cost: fewer, and the claims' walk over their
/// index entries costs less than the vacuum's own pass over every index.
pub(super) const DEAD_ENOUGH: i64 = 10_000;
/// A vacuum waits at least this many times its last one's duration after it ended: the queue's
/// upkeep takes at most a tenth of one server connection's time, however large the table.
pub(super) const PAUSE_FACTOR: u32 = 9;
/// An ANALYZE at most this often: it makes every connection plan its statements again.
pub(super) const ANALYZE_AT_MOST_EVERY: Duration = Duration::from_secs(60);
/// `SKIP_LOCKED`: when autovacuum is at the table already, this run is not needed.
/// `INDEX_CLEANUP ON`: the index entries are what the claims walk over, and by default a vacuum
/// leaves them when the dead rows sit on fewer than 2 % of the table's pages (as a few
/// seconds' churn of a large table does). `TRUNCATE false`: cutting empty pages off the end
/// would take the table's exclusive lock, which every insert, claim and completion waits for.
const VACUUM_OPTIONS: &str = "SKIP_LOCKED, INDEX_CLEANUP ON, TRUNCATE false";

/// What the server's statistics say of `notifications` (`pg_stat_user_tables`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Churn {
    /// Dead row versions since the last vacuum (ours or autovacuum's).
    pub dead: i64,
    /// Live rows.
    pub live: i64,
    /// Rows changed since the last analyze.
    pub changed_since_analyze: i64,
}

/// The last vacuum this daemon ran: how long it took and when it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct LastVacuum {
    pub took: Duration,
    pub ended: Instant,
}

/// What to run now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Upkeep {
    pub vacuum: bool,
    pub analyze: bool,
}

impl Upkeep {
    /// The statement for `table` (a schema-qualified name), if there is anything to run.
    pub(super) fn statement(self, table: &str) -> Option<String> {
        match (self.vacuum, self.analyze) {
            (true, true) => Some(format!("VACUUM ({VACUUM_OPTIONS}, ANALYZE) {table}")),
            (true, false) => Some(format!("VACUUM ({VACUUM_OPTIONS}) {table}")),
            (false, true) => Some(format!("ANALYZE (SKIP_LOCKED) {table}")),
            (false, false) => None,
        }
    }
}

/// Whether to vacuum and whether to analyze now. Vacuum: once [`DEAD_ENOUGH`] dead versions
/// gathered, and [`PAUSE_FACTOR`] times the last vacuum's duration after it ended. Analyze: as
/// autovacuum would (50 rows plus a tenth of the table changed), at most every
/// [`ANALYZE_AT_MOST_EVERY`].
pub(super) fn next(
    churn: Churn,
    now: Instant,
    last_vacuum: Option<LastVacuum>,
    last_analyze: Option<Instant>,
) -> Upkeep {
    let rested = last_vacuum.is_none_or(|last| {
        now.saturating_duration_since(last.ended) >= last.took.saturating_mul(PAUSE_FACTOR)
    });
    let stale = churn.changed_since_analyze >= 50 + churn.live.max(0) / 10;
    let analyzed_long_ago =
        last_analyze.is_none_or(|at| now.saturating_duration_since(at) >= ANALYZE_AT_MOST_EVERY);
    Upkeep {
        vacuum: churn.dead >= DEAD_ENOUGH && rested,
        analyze: stale && analyzed_long_ago,
    }
}

/// Looks every [`LOOK_EVERY`] while this daemon leads the upkeep (one round trip), and runs
/// what [`next`] says, until `stop` is dropped. Failures are logged and tried again at the next
/// look: upkeep never stops the daemon.
pub(super) async fn keep_up(
    pool: Pool,
    schema: String,
    owner: String,
    clock: Clock,
    trips: RoundTrips,
    mut stop: watch::Receiver<()>,
) {
    let table = format!("\"{schema}\".notifications");
    let mut last_vacuum = None;
    let mut last_analyze = None;
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            () = tokio::time::sleep(LOOK_EVERY) => {}
        }
        let churn = match look(&pool, &owner, clock.now_ms(), &trips).await {
            Ok(Some(churn)) => churn,
            Ok(None) => continue,
            Err(e) => {
                tracing::debug!(error = %e, "Could not read the queue table's statistics.");
                continue;
            }
        };
        let upkeep = next(churn, clock::now(), last_vacuum, last_analyze);
        let Some(statement) = upkeep.statement(&table) else {
            continue;
        };
        let started = clock::now();
        trips.one();
        // Simple protocol, outside any transaction (VACUUM refuses to run in one), through
        // PgBouncer too: one statement is one transaction there.
        match sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
            .execute(pool.sqlx())
            .await
        {
            Ok(_) => {
                let ended = clock::now();
                let took = ended.saturating_duration_since(started);
                if upkeep.vacuum {
                    last_vacuum = Some(LastVacuum { took, ended });
                }
                if upkeep.analyze {
                    last_analyze = Some(ended);
                }
                tracing::debug!(
                    dead = churn.dead,
                    live = churn.live,
                    vacuum = upkeep.vacuum,
                    analyze = upkeep.analyze,
                    took_ms = clock::millis(took),
                    "Queue table upkept."
                );
            }
            Err(e) => {
                // Not retried before its pause either: a failing VACUUM is not hammered.
                let ended = clock::now();
                last_vacuum = Some(LastVacuum {
                    took: ended.saturating_duration_since(started).max(LOOK_EVERY),
                    ended,
                });
                tracing::warn!(error = %e, "Could not vacuum the queue table; autovacuum is left to do it.");
            }
        }
    }
}

/// Takes or extends the lead of the upkeep and, when this daemon has it, reads the table's
/// statistics; `None` while another daemon leads.
async fn look(
    pool: &Pool,
    owner: &str,
    now: i64,
    trips: &RoundTrips,
) -> Result<Option<Churn>, sqlx::Error> {
    trips.one();
    let row = sqlx::query(sql::LEAD_UPKEEP)
        .bind("upkeep")
        .bind(owner)
        .bind(now.saturating_add(LEAD_TERM_MS))
        .bind(now)
        .fetch_optional(pool)
        .await?;
    row.map(|row| {
        Ok(Churn {
            dead: row.try_get(0)?,
            live: row.try_get(1)?,
            changed_since_analyze: row.try_get(2)?,
        })
    })
    .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn churn(dead: i64, live: i64, changed: i64) -> Churn {
        Churn {
            dead,
            live,
            changed_since_analyze: changed,
        }
    }

    #[test]
    fn few_dead_versions_are_left_alone() {
        let now = clock::now();
        assert_eq!(
            next(churn(DEAD_ENOUGH - 1, 1_000_000, 0), now, None, Some(now)),
            Upkeep {
                vacuum: false,
                analyze: false
            }
        );
    }

    #[test]
    fn enough_dead_versions_are_vacuumed() {
        let now = clock::now();
        assert!(next(churn(DEAD_ENOUGH, 1_000_000, 0), now, None, Some(now)).vacuum);
    }

    #[tokio::test(start_paused = true)]
    async fn a_vacuum_waits_nine_times_the_last_ones_duration() {
        let ended = clock::now();
        let last = Some(LastVacuum {
            took: Duration::from_millis(200),
            ended,
        });
        let dead = churn(1_000_000, 1_000_000, 0);
        tokio::time::advance(Duration::from_millis(1799)).await;
        assert!(!next(dead, clock::now(), last, Some(ended)).vacuum);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(next(dead, clock::now(), last, Some(ended)).vacuum);
    }

    #[test]
    fn a_table_changed_by_a_tenth_is_analyzed_when_never_analyzed_before() {
        let now = clock::now();
        assert!(next(churn(0, 100_000, 10_050), now, None, None).analyze);
        assert!(!next(churn(0, 100_000, 10_049), now, None, None).analyze);
    }

    #[tokio::test(start_paused = true)]
    async fn analyze_runs_at_most_once_a_minute() {
        let analyzed = clock::now();
        let stale = churn(0, 100, 1_000_000);
        tokio::time::advance(ANALYZE_AT_MOST_EVERY - Duration::from_millis(1)).await;
        assert!(!next(stale, clock::now(), None, Some(analyzed)).analyze);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(next(stale, clock::now(), None, Some(analyzed)).analyze);
    }

    #[test]
    fn the_statement_says_what_to_run_and_skips_a_table_in_use() {
        let table = "\"notifyd\".notifications";
        let both = Upkeep {
            vacuum: true,
            analyze: true,
        };
        assert_eq!(
            both.statement(table).as_deref(),
            Some(
                "VACUUM (SKIP_LOCKED, INDEX_CLEANUP ON, TRUNCATE false, ANALYZE) \"notifyd\".notifications"
            )
        );
        let analyze = Upkeep {
            vacuum: false,
            analyze: true,
        };
        assert_eq!(
            analyze.statement(table).as_deref(),
            Some("ANALYZE (SKIP_LOCKED) \"notifyd\".notifications")
        );
        let none = Upkeep {
            vacuum: false,
            analyze: false,
        };
        assert_eq!(none.statement(table), None);
    }
}
