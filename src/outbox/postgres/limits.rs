//! The shared rate limits and holds on PostgreSQL ([`ClusterLimits`]): one row per bucket in
//! `rate_limits`, one per held channel in `channel_holds` (migration 0009). The arithmetic is
//! [`rate_limit`]'s; [`sql::RESERVE_TOKENS`] runs the same rule in one statement.

use std::time::Duration;

use super::pool::Pool;
use async_trait::async_trait;

use super::sql;
use crate::clock::WallMs;
use crate::model::{ChannelName, HoldReason};
use crate::outbox::limits::{self as rate_limit, Granted, Pace};
use crate::outbox::limits::{Bucket, ClusterLimits, Reserved, SharedHold};
use crate::outbox::{Clock, Result, StoreError};

/// Buckets and holds the sweep forgets per run at most.
const PRUNE_BATCH: i64 = 1000;

/// The shared limits of the daemons on one PostgreSQL queue.
#[derive(Debug, Clone)]
pub(super) struct PgLimits {
    pub(super) pool: Pool,
    pub(super) clock: Clock,
    /// The queue's round-trip counter: reservations and holds are database work too.
    pub(super) trips: super::RoundTrips,
}

#[async_trait]
impl ClusterLimits for PgLimits {
    async fn reserve(
        &self,
        bucket: Bucket<'_>,
        pace: Pace,
        want: u32,
        within: Duration,
    ) -> Result<Reserved> {
        let now_us = self.clock.now_ms().saturating_mul(1000);
        let (channel, recipient) = match bucket {
            Bucket::Channel(c) => (c, ""),
            Bucket::Recipient { channel, recipient } => (channel, recipient),
        };
        let within_us = i64::try_from(within.as_micros()).unwrap_or(i64::MAX / 4);
        self.trips.one();
        let (tat_us, granted): (i64, i64) = sqlx::query_as(sql::RESERVE_TOKENS)
            .bind(channel)
            .bind(recipient)
            .bind(now_us)
            .bind(i64::from(want))
            .bind(within_us)
            .bind(pace.interval_us)
            .bind(pace.tolerance_us)
            .fetch_one(&self.pool)
            .await?;
        let granted = Granted {
            granted: u32::try_from(granted)
                .map_err(|_| StoreError::Internal(format!("granted {granted} tokens")))?,
            tat_us,
        };
        Ok(Reserved {
            due_in: rate_limit::schedule(granted, now_us, pace),
            tat_in: rate_limit::ahead_of(tat_us, now_us),
        })
    }

    async fn hold(
        &self,
        channel: &ChannelName,
        until_ms: WallMs,
        because: HoldReason,
    ) -> Result<()> {
        self.trips.one();
        sqlx::query(sql::HOLD_CHANNEL)
            .bind(channel)
            .bind(until_ms)
            .bind(because.code())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn holds(&self) -> Result<Vec<SharedHold>> {
        self.trips.one();
        let rows: Vec<(ChannelName, i64, String)> = sqlx::query_as(sql::HOLDS_IN_FORCE)
            .bind(self.clock.now_ms())
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter()
            .map(|(channel, until_ms, because)| {
                Ok(SharedHold {
                    channel,
                    until_ms,
                    because: HoldReason::from_code(&because).ok_or_else(|| {
                        StoreError::Internal(format!("unknown hold reason {because:?}"))
                    })?,
                })
            })
            .collect()
    }
}

/// Forgets full buckets and ended holds (run by the sweep's leader): the table of recipient
/// buckets stays as small as the recipients sent to within about one interval.
pub(super) async fn prune(pool: &Pool, now_ms: WallMs) -> Result<u64> {
    let buckets = sqlx::query(sql::PRUNE_RATE_LIMITS)
        .bind(now_ms.saturating_mul(1000))
        .bind(PRUNE_BATCH)
        .execute(pool)
        .await?
        .rows_affected();
    sqlx::query(sql::PRUNE_HOLDS)
        .bind(now_ms)
        .execute(pool)
        .await?;
    Ok(buckets)
}
