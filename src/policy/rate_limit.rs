//! Rate limits: GCRA (the generic cell rate algorithm, a token bucket kept as one timestamp)
//! for the channel as a whole and, optionally, for each recipient.
//!
//! Waiting for a token never fails a notification and never blocks another channel: the
//! channel's loop claims only as many rows as it has tokens, and a recipient over its own limit
//! is put back in the queue until its next token, without spending an attempt.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::config::{Rate, RateLimitConfig};

/// Recipients tracked before idle ones are forgotten.
const MAX_TRACKED_RECIPIENTS: usize = 10_000;

/// One GCRA bucket: `burst` calls back to back, then one every `interval`.
#[derive(Debug, Clone)]
pub struct Gcra {
    interval: Duration,
    /// How far ahead of now the theoretical arrival time may run: `interval · (burst − 1)`.
    tolerance: Duration,
    /// Theoretical arrival time of the next call.
    tat: Instant,
}

impl Gcra {
    /// A full bucket.
    pub fn new(rate: &Rate, now: Instant) -> Self {
        let interval = Duration::from_secs_f64(1.0 / rate.per_second());
        Self {
            interval,
            tolerance: interval * rate.burst.saturating_sub(1),
            tat: now,
        }
    }

    /// Calls allowed right now.
    pub fn available(&self, now: Instant) -> u32 {
        let base = self.tat.max(now);
        let limit = now + self.tolerance;
        if base > limit {
            return 0;
        }
        let spare = (limit - base).as_nanos() / self.interval.as_nanos().max(1);
        u32::try_from(spare).unwrap_or(u32::MAX).saturating_add(1)
    }

    /// Spends `n` calls.
    pub fn take(&mut self, n: u32, now: Instant) {
        self.tat = self.tat.max(now) + self.interval * n;
    }

    /// When the next call is allowed.
    pub fn next_at(&self, now: Instant) -> Instant {
        if self.available(now) > 0 {
            now
        } else {
            self.tat.max(now) - self.tolerance
        }
    }
}

/// A channel's limits.
#[derive(Debug)]
pub struct RateLimiter {
    channel: Option<Mutex<Gcra>>,
    per_recipient: Option<(Rate, Mutex<HashMap<String, Gcra>>)>,
    /// Times a send had to wait for a token (channel or recipient).
    waits: AtomicU64,
}

impl RateLimiter {
    /// Limits from config; `None` is unlimited.
    pub fn new(config: Option<&RateLimitConfig>) -> Self {
        let now = Instant::now();
        Self {
            channel: config.map(|c| Mutex::new(Gcra::new(&c.channel, now))),
            per_recipient: config
                .and_then(|c| c.per_recipient.clone())
                .map(|r| (r, Mutex::new(HashMap::new()))),
            waits: AtomicU64::new(0),
        }
    }

    /// Takes up to `want` channel tokens; returns how many were taken, or when to look again.
    pub fn acquire(&self, want: u32) -> Result<u32, Instant> {
        let Some(bucket) = &self.channel else {
            return Ok(want);
        };
        let now = Instant::now();
        let mut b = bucket.lock().unwrap_or_else(|p| p.into_inner());
        let n = b.available(now).min(want);
        if n == 0 {
            self.waits.fetch_add(1, Ordering::Relaxed);
            return Err(b.next_at(now));
        }
        b.take(n, now);
        Ok(n)
    }

    /// Gives back channel tokens taken by [`RateLimiter::acquire`] but not used.
    pub fn refund(&self, n: u32) {
        if n == 0 {
            return;
        }
        if let Some(bucket) = &self.channel {
            let mut b = bucket.lock().unwrap_or_else(|p| p.into_inner());
            let back = b.interval * n;
            b.tat = b.tat.checked_sub(back).unwrap_or(b.tat);
        }
    }

    /// Takes a token for `recipient`, or says when its next one is due.
    pub fn acquire_recipient(&self, recipient: &str) -> Result<(), Instant> {
        let Some((rate, buckets)) = &self.per_recipient else {
            return Ok(());
        };
        let now = Instant::now();
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
                .available(Instant::now())
        })
    }

    /// How many times a send waited for a token.
    pub fn waits(&self) -> u64 {
        self.waits.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(per_second: f64, burst: u32) -> Rate {
        Rate {
            per_second: Some(per_second),
            per_minute: None,
            burst,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_bucket_allows_the_burst_then_one_per_interval() {
        let mut g = Gcra::new(&rate(10.0, 5), Instant::now());
        assert_eq!(g.available(Instant::now()), 5);
        g.take(5, Instant::now());
        assert_eq!(g.available(Instant::now()), 0);
        tokio::time::advance(Duration::from_millis(100)).await;
        assert_eq!(g.available(Instant::now()), 1);
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(g.available(Instant::now()), 5, "never more than the burst");
    }

    #[tokio::test(start_paused = true)]
    async fn next_at_is_when_a_token_comes_back() {
        let mut g = Gcra::new(&rate(2.0, 1), Instant::now());
        let start = Instant::now();
        g.take(1, start);
        assert_eq!(g.next_at(start), start + Duration::from_millis(500));
    }

    #[tokio::test(start_paused = true)]
    async fn over_any_window_calls_never_exceed_burst_plus_rate_times_length() {
        let limiter = RateLimiter::new(Some(&RateLimitConfig {
            channel: rate(20.0, 5),
            per_recipient: None,
        }));
        let mut times = Vec::new();
        let start = Instant::now();
        while Instant::now() < start + Duration::from_secs(3) {
            match limiter.acquire(3) {
                Ok(n) => times.extend(std::iter::repeat_n(Instant::now(), n as usize)),
                Err(at) => tokio::time::sleep_until(at).await,
            }
        }
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
        assert!(
            times.len() >= 60,
            "the limit was not reached: {}",
            times.len()
        );
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
        assert_eq!(wait - Instant::now(), Duration::from_secs(60));
        assert_eq!(limiter.acquire_recipient("+15550002"), Ok(()));
        assert_eq!(limiter.waits(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn refunded_tokens_can_be_taken_again() {
        let limiter = RateLimiter::new(Some(&RateLimitConfig {
            channel: rate(1.0, 3),
            per_recipient: None,
        }));
        assert_eq!(limiter.acquire(3), Ok(3));
        limiter.refund(2);
        assert_eq!(limiter.acquire(3), Ok(2));
    }

    #[test]
    fn unlimited_gives_what_is_asked() {
        let limiter = RateLimiter::new(None);
        assert_eq!(limiter.acquire(500), Ok(500));
        assert_eq!(limiter.tokens(), None);
    }
}
