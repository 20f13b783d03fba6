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
//! it later could bunch it with the tokens other daemons use on time).
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
use super::rate_limit::{Gcra, Pace, Ticket};
use crate::clock::{self, Instant};
use crate::config::RateLimitConfig;
use crate::outbox::limits::{Bucket, ClusterLimits, Reserved};

/// A channel's limits kept in the store all daemons on the queue share.
#[derive(Debug)]
pub struct SharedLimiter {
    store: Arc<dyn ClusterLimits>,
    channel: String,
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
            channel: channel.to_owned(),
            pace: config.map(|c| Pace::of(&c.channel)),
            per_recipient: config.and_then(|c| c.per_recipient.as_ref()).map(Pace::of),
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
    /// dropped wait takes no pooled token (a reservation in flight still lands in the pool).
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
