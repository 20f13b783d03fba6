//! Rate limits: GCRA (the generic cell rate algorithm, a token bucket kept as one timestamp)
//! for the channel as a whole and, optionally, for each recipient.
//!
//! Waiting for a token never fails a notification and never blocks another channel: each send
//! takes its channel token right before it calls the provider (so claim, spawn and connect
//! jitter cannot bunch sends), waiting in turn; the channel's loop claims only as many rows as
//! the limiter releases within a fraction of the lease, so a waiting row's lease never runs
//! out. A recipient over its own limit is put back in the queue until its next token, without
//! spending an attempt or a channel token.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::gate::Unsent;
use super::shared_limit::SharedLimiter;
use crate::clock;
use crate::config::{Rate, RateLimitConfig};
use crate::outbox::limits::Pace;

/// Recipients tracked before idle ones are forgotten.
const MAX_TRACKED_RECIPIENTS: usize = 10_000;

/// One GCRA bucket: `burst` calls back to back, then one every `interval`.
#[derive(Debug, Clone)]
pub(crate) struct Gcra {
    interval: Duration,
    /// How far ahead of now the theoretical arrival time may run: `interval · (burst − 1)`.
    tolerance: Duration,
    /// Theoretical arrival time of the next call.
    tat: Instant,
}

impl Gcra {
    /// A full bucket.
    pub(crate) fn new(rate: &Rate, now: Instant) -> Self {
        let interval = Duration::from_secs_f64(1.0 / rate.per_second());
        Self {
            interval,
            tolerance: interval * rate.burst.saturating_sub(1),
            tat: now,
        }
    }

    /// A bucket at the pace of a shared one whose theoretical arrival time is `tat`: this
    /// daemon's picture of it, as of its last reservation.
    pub(crate) fn mirror(pace: Pace, tat: Instant) -> Self {
        Self {
            interval: pace.interval(),
            tolerance: pace.tolerance(),
            tat,
        }
    }

    /// Calls allowed right now.
    pub(crate) fn available(&self, now: Instant) -> u32 {
        self.releasable(now, Duration::ZERO)
    }

    /// Calls allowed from now until `now + within`, if none is taken meanwhile.
    pub(crate) fn releasable(&self, now: Instant, within: Duration) -> u32 {
        let base = self.tat.max(now);
        let limit = now + within + self.tolerance;
        if base > limit {
            return 0;
        }
        let spare = (limit - base).as_nanos() / self.interval.as_nanos().max(1);
        u32::try_from(spare).unwrap_or(u32::MAX).saturating_add(1)
    }

    /// Spends `n` calls.
    pub(crate) fn take(&mut self, n: u32, now: Instant) {
        self.tat = self.tat.max(now) + self.interval * n;
    }

    /// When the next call is allowed.
    pub(crate) fn next_at(&self, now: Instant) -> Instant {
        self.nth_at(now, 1)
    }

    /// When the `n`-th next call (1-based) is allowed, if none is taken meanwhile.
    pub(crate) fn nth_at(&self, now: Instant, n: u32) -> Instant {
        let at = self.tat.max(now) + self.interval * n.saturating_sub(1);
        at.checked_sub(self.tolerance).unwrap_or(now).max(now)
    }
}

/// The pace of `rate` as a shared bucket keeps it.
pub(crate) fn pace_of(rate: &Rate) -> Pace {
    // A rate is validated positive and finite; `as` saturates a wild one.
    let interval_us = ((1_000_000.0 / rate.per_second()).ceil() as i64).max(1);
    Pace {
        interval_us,
        tolerance_us: interval_us.saturating_mul(i64::from(rate.burst.saturating_sub(1))),
    }
}

/// A claimed send that will take a channel token: counted until it does (or is dropped), so the
/// loop never claims more rows than the limiter releases within the lease.
#[derive(Debug)]
pub struct Ticket(Option<Arc<AtomicU32>>);

impl Ticket {
    /// A ticket of a channel without a limit: nothing to count.
    pub(super) fn unlimited() -> Self {
        Self(None)
    }

    /// A ticket counted in `expected` until it is dropped.
    pub(super) fn counted(expected: &Arc<AtomicU32>) -> Self {
        expected.fetch_add(1, Ordering::Relaxed);
        Self(Some(expected.clone()))
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Some(n) = &self.0 {
            n.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// A channel's limits.
#[derive(Debug)]
pub struct RateLimiter {
    channel: Option<Mutex<Gcra>>,
    /// Sends waiting for a channel token take turns, first come first served.
    turn: tokio::sync::Mutex<()>,
    /// Claimed sends that have not taken their channel token yet.
    expected: Arc<AtomicU32>,
    per_recipient: Option<(Rate, Mutex<HashMap<String, Gcra>>)>,
    /// Times a send had to wait for a token (channel or recipient).
    waits: AtomicU64,
}

impl RateLimiter {
    /// Limits from config; `None` is unlimited.
    pub fn new(config: Option<&RateLimitConfig>) -> Self {
        let now = clock::now();
        Self {
            channel: config.map(|c| Mutex::new(Gcra::new(&c.channel, now))),
            turn: tokio::sync::Mutex::new(()),
            expected: Arc::new(AtomicU32::new(0)),
            per_recipient: config
                .and_then(|c| c.per_recipient.clone())
                .map(|r| (r, Mutex::new(HashMap::new()))),
            waits: AtomicU64::new(0),
        }
    }

    /// How many of `want` rows may be claimed now so that each gets its channel token within
    /// `within`, counting the claimed sends still waiting for theirs; or, if none, when to look
    /// again. Takes no token.
    pub fn claimable(&self, want: u32, within: Duration) -> Result<u32, Instant> {
        let Some(bucket) = &self.channel else {
            return Ok(want);
        };
        let now = clock::now();
        let b = bucket.lock().unwrap_or_else(|p| p.into_inner());
        let waiting = self.expected.load(Ordering::Relaxed);
        let free = b.releasable(now, within).saturating_sub(waiting);
        if free == 0 {
            let at = b.nth_at(now, waiting.saturating_add(1));
            let at = at.checked_sub(within).unwrap_or(now);
            return Err(at.max(now + Duration::from_millis(1)));
        }
        Ok(free.min(want))
    }

    /// Counts one claimed send that will call [`RateLimiter::until_token`].
    pub fn ticket(&self) -> Ticket {
        if self.channel.is_none() {
            return Ticket(None);
        }
        Ticket::counted(&self.expected)
    }

    /// Waits, in turn, until a channel token is free and takes it: call it right before the
    /// provider is. Cancel safe: a dropped wait takes no token.
    pub async fn until_token(&self, ticket: Ticket) {
        let Some(bucket) = &self.channel else {
            return;
        };
        let _turn = self.turn.lock().await;
        let mut waited = false;
        loop {
            let next = {
                let now = clock::now();
                let mut b = bucket.lock().unwrap_or_else(|p| p.into_inner());
                if b.available(now) > 0 {
                    b.take(1, now);
                    drop(ticket);
                    return;
                }
                b.next_at(now)
            };
            if !waited {
                waited = true;
                self.waits.fetch_add(1, Ordering::Relaxed);
            }
            tokio::time::sleep_until(next).await;
        }
    }

    /// Takes a token for `recipient`, or says when its next one is due.
    pub fn acquire_recipient(&self, recipient: &str) -> Result<(), Instant> {
        let Some((rate, buckets)) = &self.per_recipient else {
            return Ok(());
        };
        let now = clock::now();
        let mut map = buckets.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_TRACKED_RECIPIENTS {
            // A bucket whose arrival time has passed is full again: forgetting it changes nothing.
            map.retain(|_, b| b.tat > now);
        }
        let bucket = map
            .entry(recipient.to_owned())
            .or_insert_with(|| Gcra::new(rate, now));
        if bucket.available(now) == 0 {
            self.waits.fetch_add(1, Ordering::Relaxed);
            return Err(bucket.next_at(now));
        }
        bucket.take(1, now);
        Ok(())
    }

    /// Channel tokens available now (`None`: unlimited).
    pub fn tokens(&self) -> Option<u32> {
        self.channel.as_ref().map(|b| {
            b.lock()
                .unwrap_or_else(|p| p.into_inner())
                .available(clock::now())
        })
    }

    /// How many times a send waited for a token.
    pub fn waits(&self) -> u64 {
        self.waits.load(Ordering::Relaxed)
    }
}

/// A channel's limits: in this process ([`RateLimiter`], a queue only this daemon uses), or in
/// the store the daemons of one queue share ([`SharedLimiter`]). The [`super::Gate`] asks the
/// same questions of either.
#[derive(Debug)]
pub enum Limiter {
    Local(RateLimiter),
    Shared(SharedLimiter),
}

impl Limiter {
    /// How many of `want` rows may be claimed now so that each gets its channel token within
    /// `within`; or, if none, when to look again. Takes no token.
    pub fn claimable(&self, want: u32, within: Duration) -> Result<u32, Instant> {
        match self {
            Self::Local(l) => l.claimable(want, within),
            Self::Shared(l) => l.claimable(want, within),
        }
    }

    /// Counts one claimed send that will take a channel token.
    pub fn ticket(&self) -> Ticket {
        match self {
            Self::Local(l) => l.ticket(),
            Self::Shared(l) => l.ticket(),
        }
    }

    /// Takes a token for `recipient` now, or says when its next one is due. A shared limiter
    /// answers yes here and asks the store in [`Limiter::until_token`], which may wait.
    pub fn acquire_recipient(&self, recipient: &str) -> Result<(), Instant> {
        match self {
            Self::Local(l) => l.acquire_recipient(recipient),
            Self::Shared(_) => Ok(()),
        }
    }

    /// Waits, in turn, for the channel's token and takes it (a shared limiter first takes the
    /// recipient's): right before the provider is called. The local limiter always gives one;
    /// a shared one may send the row back ([`Unsent`]) when no token comes by `deadline`.
    pub async fn until_token(
        &self,
        ticket: Ticket,
        recipient: &str,
        deadline: Instant,
    ) -> Result<(), Unsent> {
        match self {
            Self::Local(l) => {
                l.until_token(ticket).await;
                Ok(())
            }
            Self::Shared(l) => l.until_token(ticket, recipient, deadline).await,
        }
    }

    /// Channel tokens available now (`None`: unlimited).
    pub fn tokens(&self) -> Option<u32> {
        match self {
            Self::Local(l) => l.tokens(),
            Self::Shared(l) => l.tokens(),
        }
    }

    /// How many times a send waited for a token.
    pub fn waits(&self) -> u64 {
        match self {
            Self::Local(l) => l.waits(),
            Self::Shared(l) => l.waits(),
        }
    }

    /// How many reservations of the shared channel bucket this daemon made (`None`: local).
    pub fn reservations(&self) -> Option<u64> {
        match self {
            Self::Local(_) => None,
            Self::Shared(l) => Some(l.reservations()),
        }
    }

    /// Whether the limits are the ones the daemons of one queue share.
    pub fn is_shared(&self) -> bool {
        matches!(self, Self::Shared(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::limits::{Granted, ahead_of, reserve, schedule};

    fn rate(per_second: f64, burst: u32) -> Rate {
        Rate {
            per_second: Some(per_second),
            per_minute: None,
            burst,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_bucket_allows_the_burst_then_one_per_interval() {
        let mut g = Gcra::new(&rate(10.0, 5), clock::now());
        assert_eq!(g.available(clock::now()), 5);
        g.take(5, clock::now());
        assert_eq!(g.available(clock::now()), 0);
        tokio::time::advance(Duration::from_millis(100)).await;
        assert_eq!(g.available(clock::now()), 1);
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(g.available(clock::now()), 5, "never more than the burst");
    }

    #[tokio::test(start_paused = true)]
    async fn next_at_is_when_a_token_comes_back() {
        let mut g = Gcra::new(&rate(2.0, 1), clock::now());
        let start = clock::now();
        g.take(1, start);
        assert_eq!(g.next_at(start), start + Duration::from_millis(500));
    }

    fn limiter(per_second: f64, burst: u32) -> Arc<RateLimiter> {
        Arc::new(RateLimiter::new(Some(&RateLimitConfig {
            channel: rate(per_second, burst),
            per_recipient: None,
        })))
    }

    #[tokio::test(start_paused = true)]
    async fn over_any_window_calls_never_exceed_burst_plus_rate_times_length() {
        let limiter = limiter(20.0, 5);
        let times = Arc::new(Mutex::new(Vec::new()));
        let mut sends = Vec::new();
        for _ in 0..60 {
            let (limiter, times) = (limiter.clone(), times.clone());
            let ticket = limiter.ticket();
            sends.push(tokio::spawn(async move {
                limiter.until_token(ticket).await;
                times.lock().unwrap().push(clock::now());
            }));
        }
        for s in sends {
            s.await.unwrap();
        }
        let times = times.lock().unwrap().clone();
        assert_eq!(times.len(), 60);
        for i in 0..times.len() {
            for j in i..times.len() {
                let span = (times[j] - times[i]).as_secs_f64();
                let allowed = 5.0 + 20.0 * span + 1e-9;
                assert!(
                    (j - i + 1) as f64 <= allowed,
                    "{} calls in {span}s",
                    j - i + 1
                );
            }
        }
        let took = *times.last().unwrap() - times[0];
        assert_eq!(
            took,
            Duration::from_millis(55 * 50),
            "the limit was reached"
        );
        assert_eq!(limiter.waits(), 55);
    }

    #[tokio::test(start_paused = true)]
    async fn claims_are_limited_to_what_the_bucket_releases_within_the_horizon() {
        let limiter = limiter(10.0, 5);
        // Full bucket: 5 now, then one every 100 ms: 5 + 10 within one second.
        assert_eq!(limiter.claimable(100, Duration::from_secs(1)), Ok(15));
        let tickets: Vec<Ticket> = (0..15).map(|_| limiter.ticket()).collect();
        let next = limiter.claimable(100, Duration::from_secs(1)).unwrap_err();
        assert_eq!(next - clock::now(), Duration::from_millis(100));
        // A claimed send that will not be sent gives its place back.
        drop(tickets);
        assert_eq!(limiter.claimable(3, Duration::from_secs(1)), Ok(3));
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_wait_takes_no_token() {
        let limiter = limiter(1.0, 1);
        limiter.until_token(limiter.ticket()).await;
        let waiting = tokio::time::timeout(
            Duration::from_millis(10),
            limiter.until_token(limiter.ticket()),
        )
        .await;
        assert!(waiting.is_err(), "the second token is a second away");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(limiter.tokens(), Some(1));
        assert_eq!(limiter.claimable(5, Duration::ZERO), Ok(1));
    }

    #[tokio::test(start_paused = true)]
    async fn each_recipient_has_its_own_bucket() {
        let limiter = RateLimiter::new(Some(&RateLimitConfig {
            channel: rate(1000.0, 100),
            per_recipient: Some(Rate {
                per_second: None,
                per_minute: Some(1.0),
                burst: 1,
            }),
        }));
        assert_eq!(limiter.acquire_recipient("+15550001"), Ok(()));
        let wait = limiter.acquire_recipient("+15550001").unwrap_err();
        assert_eq!(wait - clock::now(), Duration::from_secs(60));
        assert_eq!(limiter.acquire_recipient("+15550002"), Ok(()));
        assert_eq!(limiter.waits(), 1);
    }

    const PACE_20_BURST_5: Pace = Pace {
        interval_us: 50_000,
        tolerance_us: 200_000,
    };

    #[test]
    fn a_pace_is_the_interval_rounded_up_and_the_burst_as_tolerance() {
        assert_eq!(pace_of(&rate(20.0, 5)), PACE_20_BURST_5);
        let third = pace_of(&rate(3.0, 1));
        assert_eq!((third.interval_us, third.tolerance_us), (333_334, 0));
    }

    #[test]
    fn a_new_shared_bucket_grants_the_burst_due_at_once() {
        let g = reserve(None, 1_000_000, 10, 0, PACE_20_BURST_5);
        assert_eq!(
            g,
            Granted {
                granted: 5,
                tat_us: 1_250_000
            }
        );
        assert_eq!(
            schedule(g, 1_000_000, PACE_20_BURST_5),
            vec![Duration::ZERO; 5]
        );
    }

    #[test]
    fn a_reservation_grants_only_tokens_due_within_its_horizon_one_interval_apart() {
        // The burst is spent: the bucket's arrival time is 250 ms ahead.
        let g = reserve(Some(1_250_000), 1_000_000, 10, 100_000, PACE_20_BURST_5);
        assert_eq!(
            g,
            Granted {
                granted: 2,
                tat_us: 1_350_000
            }
        );
        assert_eq!(
            schedule(g, 1_000_000, PACE_20_BURST_5),
            vec![Duration::from_millis(50), Duration::from_millis(100)]
        );
    }

    #[test]
    fn a_spent_bucket_grants_nothing_and_keeps_its_arrival_time() {
        let g = reserve(Some(1_350_000), 1_100_000, 3, 0, PACE_20_BURST_5);
        assert_eq!(
            g,
            Granted {
                granted: 0,
                tat_us: 1_350_000
            }
        );
        assert!(schedule(g, 1_100_000, PACE_20_BURST_5).is_empty());
        // The next token: when the arrival time is within the tolerance of now.
        let now = clock::now();
        let next = Gcra::mirror(PACE_20_BURST_5, now + ahead_of(1_350_000, 1_100_000)).next_at(now);
        assert_eq!(next - now, Duration::from_millis(50));
    }

    #[test]
    fn a_bucket_idle_for_long_is_full_again_not_fuller() {
        let g = reserve(Some(1_000_000), 60_000_000, 100, 0, PACE_20_BURST_5);
        assert_eq!(g.granted, 5);
        assert_eq!(g.tat_us, 60_250_000);
    }

    #[test]
    fn reservations_in_small_batches_keep_the_rate_over_any_window() {
        // Three daemons taking turns, each asking for 4 tokens due within 300 ms, every 70 ms.
        let pace = PACE_20_BURST_5;
        let mut tat = None;
        let mut uses = Vec::new();
        for step in 0..60i64 {
            let now = step * 70_000;
            let g = reserve(tat, now, 4, 300_000, pace);
            tat = Some(g.tat_us);
            uses.extend(
                schedule(g, now, pace)
                    .into_iter()
                    .map(|d| now + i64::try_from(d.as_micros()).unwrap()),
            );
        }
        uses.sort_unstable();
        for i in 0..uses.len() {
            for j in i..uses.len() {
                let span = (uses[j] - uses[i]) as f64 / 1e6;
                assert!(
                    ((j - i + 1) as f64) <= 5.0 + 20.0 * span + 1e-9,
                    "{} tokens within {span}s",
                    j - i + 1
                );
            }
        }
        assert!(uses.len() > 60, "the rate was used: {}", uses.len());
    }

    #[test]
    fn unlimited_gives_what_is_asked() {
        let limiter = RateLimiter::new(None);
        assert_eq!(limiter.claimable(500, Duration::ZERO), Ok(500));
        assert_eq!(limiter.tokens(), None);
    }
}
