//! A channel's rate limits when several daemons share one queue: the limit is the provider
//! account's, so the buckets live in the store ([`ClusterLimits`]) and every daemon reserves
//! from them.
//!
//! A send still takes its channel token in turn right before the provider is called, but the
//! tokens come from a local pool refilled by reservations: when the pool is empty, the send in
//! turn reserves one token for every send waiting then, with one statement, and each token is
//! used at the instant the shared bucket gave it. Tokens are reserved only as far ahead as the
//! send in turn may still wait (its lease must cover the send), so none is taken that cannot be
//! used; a token not used within a fifth of an interval of its instant is spent unused (using
//! it later could bunch it with the tokens other daemons use on time). A send late by less than
//! that can make a window ending right after it hold one request more than
//! `burst + rate × span`, never two.
//!
//! What a daemon may claim is estimated from its pool and its picture of the shared bucket as
//! of its last reservation; other daemons may have taken those tokens meanwhile, so a send
//! whose token would come after its lease allows goes back unsent, its attempt refunded, due
//! when the bucket has a token again. A recipient's limit, when configured, is one reservation
//! of one token per send, made before the channel's token (a held-back send costs the channel
//! none).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::gate::Unsent;
use super::rate_limit::{Gcra, Ticket, pace_of};
use crate::clock::{self, Instant};
use crate::config::RateLimitConfig;
use crate::model::ChannelName;
use crate::outbox::limits::{Bucket, ClusterLimits, Pace, Reserved};

/// A channel's limits kept in the store all daemons on the queue share.
#[derive(Debug)]
pub struct SharedLimiter {
    store: Arc<dyn ClusterLimits>,
    channel: ChannelName,
    pace: Option<Pace>,
    per_recipient: Option<Pace>,
    pool: Mutex<Pool>,
    /// Sends waiting for a channel token take turns, first come first served.
    turn: tokio::sync::Mutex<()>,
    /// Claimed sends that have not taken their channel token yet.
    expected: Arc<AtomicU32>,
    /// Sends inside [`SharedLimiter::until_token`]: how many tokens one reservation asks for.
    waiting: AtomicU32,
    /// Times a send had to wait for a token (channel or recipient).
    waits: AtomicU64,
    /// Reservations made, for views and tests: tokens used per reservation is the batching.
    reservations: AtomicU64,
}

/// Tokens reserved for this daemon and its picture of the shared bucket.
#[derive(Debug)]
struct Pool {
    /// When each reserved, unused token may be used, in order.
    due: VecDeque<Instant>,
    /// The shared bucket as of the last reservation (`None`: never reserved; assumed full).
    bucket: Option<Gcra>,
}

impl SharedLimiter {
    /// The limits of `channel` as configured, kept in `store`.
    pub fn new(
        store: Arc<dyn ClusterLimits>,
        channel: &str,
        config: Option<&RateLimitConfig>,
    ) -> Self {
        Self {
            store,
            channel: ChannelName::from(channel),
            pace: config.map(|c| pace_of(&c.channel)),
            per_recipient: config.and_then(|c| c.per_recipient.as_ref()).map(pace_of),
            pool: Mutex::new(Pool {
                due: VecDeque::new(),
                bucket: None,
            }),
            turn: tokio::sync::Mutex::new(()),
            expected: Arc::new(AtomicU32::new(0)),
            waiting: AtomicU32::new(0),
            waits: AtomicU64::new(0),
            reservations: AtomicU64::new(0),
        }
    }

    fn lock_pool(&self) -> std::sync::MutexGuard<'_, Pool> {
        self.pool.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many of `want` rows may be claimed now so that each can get its channel token within
    /// `within`, by this daemon's picture: the tokens in its pool and those the shared bucket
    /// held at the last reservation, less the claimed sends still waiting for theirs. Or, if
    /// none, when to look again. Takes no token.
    pub fn claimable(&self, want: u32, within: Duration) -> Result<u32, Instant> {
        let Some(pace) = self.pace else {
            return Ok(want);
        };
        let now = clock::now();
        let mut pool = self.lock_pool();
        pool.forget_late(now, pace);
        let horizon = now + within;
        let pooled =
            u32::try_from(pool.due.iter().filter(|at| **at <= horizon).count()).unwrap_or(u32::MAX);
        let bucket = pool
            .bucket
            .clone()
            .unwrap_or_else(|| Gcra::mirror(pace, now));
        let waiting = self.expected.load(Ordering::Relaxed);
        let free = pooled
            .saturating_add(bucket.releasable(now, within))
            .saturating_sub(waiting);
        if free == 0 {
            let beyond_pool = waiting.saturating_sub(pooled);
            let at = bucket.nth_at(now, beyond_pool.saturating_add(1));
            let at = at.checked_sub(within).unwrap_or(now);
            return Err(at.max(now + Duration::from_millis(1)));
        }
        Ok(free.min(want))
    }

    /// Counts one claimed send that will call [`SharedLimiter::until_token`].
    pub fn ticket(&self) -> Ticket {
        if self.pace.is_none() {
            return Ticket::unlimited();
        }
        Ticket::counted(&self.expected)
    }

    /// Takes a token of `recipient`'s shared bucket (when a per-recipient limit is configured),
    /// then waits, in turn, for a channel token and takes it: call it right before the provider
    /// is. A send whose channel token would come after `deadline` goes back unsent
    /// ([`Unsent::ChannelLimited`]), leaving the token to the next send in turn. Cancel safe: a
    /// dropped wait takes no pooled token (the tokens of a reservation it was making are spent).
    pub async fn until_token(
        &self,
        ticket: Ticket,
        recipient: &str,
        deadline: Instant,
    ) -> Result<(), Unsent> {
        if let Some(pace) = self.per_recipient {
            let bucket = Bucket::Recipient {
                channel: &self.channel,
                recipient,
            };
            let now = clock::now();
            match self.store.reserve(bucket, pace, 1, Duration::ZERO).await {
                Ok(r) if !r.due_in.is_empty() => {}
                Ok(r) => {
                    self.waits.fetch_add(1, Ordering::Relaxed);
                    let next = Gcra::mirror(pace, now + r.tat_in).next_at(now);
                    return Err(Unsent::RecipientLimited { next });
                }
                Err(e) => return Err(self.unreadable(&e)),
            }
        }
        let Some(pace) = self.pace else {
            return Ok(());
        };
        let _waiting = Waiting::enter(&self.waiting);
        let _turn = self.turn.lock().await;
        let mut waited = false;
        loop {
            let now = clock::now();
            let front = {
                let mut pool = self.lock_pool();
                pool.forget_late(now, pace);
                match pool.due.front().copied() {
                    Some(at) if at <= now => {
                        pool.due.pop_front();
                        drop(ticket);
                        return Ok(());
                    }
                    other => other,
                }
            };
            let at = match front {
                Some(at) => at,
                None => self.refill(pace, now, deadline).await?,
            };
            if at > deadline {
                return Err(Unsent::ChannelLimited { next: at });
            }
            if at > now {
                if !waited {
                    waited = true;
                    self.waits.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep_until(at).await;
            }
        }
    }

    /// Reserves a token for every send waiting now, due by `deadline`; returns when the first
    /// pooled token is due, or when the bucket has one again if none was granted.
    async fn refill(&self, pace: Pace, now: Instant, deadline: Instant) -> Result<Instant, Unsent> {
        let want = self.waiting.load(Ordering::Relaxed).max(1);
        let within = deadline.saturating_duration_since(now);
        let reserved = self
            .store
            .reserve(Bucket::Channel(&self.channel), pace, want, within)
            .await;
        self.reservations.fetch_add(1, Ordering::Relaxed);
        let Reserved { due_in, tat_in } = reserved.map_err(|e| self.unreadable(&e))?;
        let bucket = Gcra::mirror(pace, now + tat_in);
        let next = bucket.next_at(now);
        let mut pool = self.lock_pool();
        pool.due.extend(due_in.into_iter().map(|d| now + d));
        pool.bucket = Some(bucket);
        Ok(pool.due.front().copied().unwrap_or(next))
    }

    fn unreadable(&self, e: &crate::outbox::StoreError) -> Unsent {
        tracing::warn!(channel = %self.channel, error = %e,
            "The shared rate limit cannot be read; the send waits for the queue.");
        Unsent::LimitUnreadable
    }

    /// Channel tokens the shared bucket had free as of the last reservation, plus this daemon's
    /// pooled tokens due now (`None`: unlimited).
    pub fn tokens(&self) -> Option<u32> {
        let pace = self.pace?;
        let now = clock::now();
        let pool = self.lock_pool();
        let pooled = pool.due.iter().filter(|at| **at <= now).count();
        let free = pool.bucket.as_ref().map_or_else(
            || Gcra::mirror(pace, now).available(now),
            |b| b.available(now),
        );
        Some(free.saturating_add(u32::try_from(pooled).unwrap_or(u32::MAX)))
    }

    /// How many times a send waited for a token.
    pub fn waits(&self) -> u64 {
        self.waits.load(Ordering::Relaxed)
    }

    /// How many channel reservations this daemon made.
    pub fn reservations(&self) -> u64 {
        self.reservations.load(Ordering::Relaxed)
    }
}

impl Pool {
    /// Spends the tokens whose instant is over a fifth of an interval past: used now, they could
    /// bunch with tokens other daemons use on time.
    fn forget_late(&mut self, now: Instant, pace: Pace) {
        let late = pace.interval() / 5;
        while self.due.front().is_some_and(|at| *at + late < now) {
            self.due.pop_front();
        }
    }
}

/// Counts a send inside [`SharedLimiter::until_token`] until it leaves.
struct Waiting<'a>(&'a AtomicU32);

impl<'a> Waiting<'a> {
    fn enter(n: &'a AtomicU32) -> Self {
        n.fetch_add(1, Ordering::Relaxed);
        Self(n)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::HashMap;

    use async_trait::async_trait;

    use super::*;
    use crate::clock::WallMs;
    use crate::config::Rate;
    use crate::model::HoldReason;
    use crate::outbox::limits::SharedHold;
    use crate::outbox::limits::{self as rate_limit, Granted};

    /// The store's side in memory, running the same rule as the PostgreSQL statement, on tokio's
    /// (paused) clock.
    #[derive(Debug)]
    struct MemoryLimits {
        start: Instant,
        buckets: Mutex<HashMap<(String, String), i64>>,
        calls: AtomicU64,
    }

    impl MemoryLimits {
        fn new() -> Arc<Self> {
            Arc::new(Self {
                start: clock::now(),
                buckets: Mutex::new(HashMap::new()),
                calls: AtomicU64::new(0),
            })
        }
    }

    #[async_trait]
    impl ClusterLimits for MemoryLimits {
        async fn reserve(
            &self,
            bucket: Bucket<'_>,
            pace: Pace,
            want: u32,
            within: Duration,
        ) -> crate::outbox::Result<Reserved> {
            self.calls.fetch_add(1, Ordering::Relaxed);
            let now_us = i64::try_from((clock::now() - self.start).as_micros()).unwrap();
            let key = match bucket {
                Bucket::Channel(c) => (c.to_string(), String::new()),
                Bucket::Recipient { channel, recipient } => (channel.to_string(), recipient.into()),
            };
            let mut buckets = self.buckets.lock().unwrap();
            let within_us = i64::try_from(within.as_micros()).unwrap();
            let g: Granted =
                rate_limit::reserve(buckets.get(&key).copied(), now_us, want, within_us, pace);
            buckets.insert(key, g.tat_us);
            Ok(Reserved {
                due_in: rate_limit::schedule(g, now_us, pace),
                tat_in: rate_limit::ahead_of(g.tat_us, now_us),
            })
        }

        async fn hold(
            &self,
            _: &ChannelName,
            _: WallMs,
            _: HoldReason,
        ) -> crate::outbox::Result<()> {
            Ok(())
        }

        async fn holds(&self) -> crate::outbox::Result<Vec<SharedHold>> {
            Ok(Vec::new())
        }
    }

    fn rate(per_second: f64, burst: u32) -> Rate {
        Rate {
            per_second: Some(per_second),
            per_minute: None,
            burst,
        }
    }

    fn daemon(
        store: &Arc<MemoryLimits>,
        channel: Rate,
        per_recipient: Option<Rate>,
    ) -> Arc<SharedLimiter> {
        Arc::new(SharedLimiter::new(
            store.clone(),
            "sms",
            Some(&RateLimitConfig {
                channel,
                per_recipient,
            }),
        ))
    }

    /// `n` sends through `limiter`, each starting when the last one ended: when each took its
    /// token.
    fn sends(
        limiter: &Arc<SharedLimiter>,
        n: usize,
        concurrency: usize,
        times: &Arc<Mutex<Vec<Instant>>>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let left = Arc::new(AtomicU32::new(u32::try_from(n).unwrap()));
        (0..concurrency)
            .map(|_| {
                let (limiter, times, left) = (limiter.clone(), times.clone(), left.clone());
                tokio::spawn(async move {
                    while left
                        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |l| l.checked_sub(1))
                        .is_ok()
                    {
                        let ticket = limiter.ticket();
                        let deadline = clock::now() + Duration::from_secs(60);
                        limiter
                            .until_token(ticket, "+15550001", deadline)
                            .await
                            .unwrap();
                        times.lock().unwrap().push(clock::now());
                        tokio::time::sleep(Duration::from_millis(3)).await;
                    }
                })
            })
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn three_daemons_sharing_a_bucket_never_exceed_burst_plus_rate_over_any_window() {
        let store = MemoryLimits::new();
        let times = Arc::new(Mutex::new(Vec::new()));
        let mut all = Vec::new();
        for _ in 0..3 {
            let limiter = daemon(&store, rate(20.0, 5), None);
            all.extend(sends(&limiter, 40, 4, &times));
        }
        for t in all {
            t.await.unwrap();
        }
        let mut times = times.lock().unwrap().clone();
        times.sort_unstable();
        assert_eq!(times.len(), 120);
        for i in 0..times.len() {
            for j in i..times.len() {
                let span = (times[j] - times[i]).as_secs_f64();
                assert!(
                    ((j - i + 1) as f64) <= 5.0 + 20.0 * span + 1e-6,
                    "{} tokens within {span}s",
                    j - i + 1
                );
            }
        }
        // 120 at 20/s after a burst of 5: the shared limit was reached, not three of them.
        assert!(times[119] - times[0] >= Duration::from_millis(115 * 50));
        let calls = store.calls.load(Ordering::Relaxed);
        assert!(
            calls < 120,
            "{calls} reservations for 120 tokens: not batched"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_send_whose_token_comes_after_its_deadline_goes_back_and_leaves_the_token() {
        let store = MemoryLimits::new();
        let limiter = daemon(&store, rate(1.0, 1), None);
        let soon = clock::now() + Duration::from_millis(500);
        limiter
            .until_token(limiter.ticket(), "a", soon)
            .await
            .unwrap();
        // The next token is a second away: past this send's deadline.
        let err = limiter.until_token(limiter.ticket(), "a", soon).await;
        assert_eq!(
            err,
            Err(Unsent::ChannelLimited {
                next: clock::now() + Duration::from_secs(1)
            })
        );
        // A send that may wait two seconds gets it, one second on.
        let later = clock::now() + Duration::from_secs(2);
        limiter
            .until_token(limiter.ticket(), "a", later)
            .await
            .unwrap();
        assert_eq!(
            clock::now() - (later - Duration::from_secs(2)),
            Duration::from_secs(1)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_recipient_limit_is_shared_and_costs_the_channel_no_token() {
        let store = MemoryLimits::new();
        let a = daemon(&store, rate(10.0, 5), Some(rate(0.1, 1)));
        let b = daemon(&store, rate(10.0, 5), Some(rate(0.1, 1)));
        let deadline = clock::now() + Duration::from_secs(30);
        a.until_token(a.ticket(), "+15550001", deadline)
            .await
            .unwrap();
        match b.until_token(b.ticket(), "+15550001", deadline).await {
            Err(Unsent::RecipientLimited { next }) => {
                assert_eq!(next - clock::now(), Duration::from_secs(10));
            }
            other => panic!("{other:?}"),
        }
        b.until_token(b.ticket(), "+15550002", deadline)
            .await
            .unwrap();
        // Channel tokens: one each (100 ms at 10/s) for the two sends that went.
        assert_eq!(
            store.buckets.lock().unwrap()[&("sms".to_owned(), String::new())],
            200_000
        );
    }

    #[tokio::test(start_paused = true)]
    async fn claims_count_what_the_shared_bucket_had_at_the_last_reservation() {
        let store = MemoryLimits::new();
        let a = daemon(&store, rate(10.0, 5), None);
        let b = daemon(&store, rate(10.0, 5), None);
        // Never reserved: a full bucket is assumed, 5 now and 10 more within a second.
        assert_eq!(b.claimable(100, Duration::from_secs(1)), Ok(15));
        // `a` takes the burst; `b` learns of it at its own next reservation.
        let deadline = clock::now() + Duration::from_secs(30);
        for _ in 0..5 {
            a.until_token(a.ticket(), "x", deadline).await.unwrap();
        }
        // The sixth token is due 100 ms on: the bucket runs 500 ms ahead then.
        b.until_token(b.ticket(), "x", deadline).await.unwrap();
        assert_eq!(
            clock::now() - (deadline - Duration::from_secs(30)),
            Duration::from_millis(100)
        );
        // None now; within the second, one every 100 ms from 200 ms on.
        assert_eq!(b.claimable(100, Duration::from_secs(1)), Ok(10));
        assert_eq!(
            b.claimable(100, Duration::ZERO).unwrap_err() - clock::now(),
            Duration::from_millis(100)
        );
    }
}
