//! One channel's gate: everything that decides whether its provider may be called now, owned by
//! one type and changed in one place. It holds the circuit breaker, the rate limits (channel and
//! per recipient), the hold (credentials refused, `Retry-After`), the lease budget (rows this
//! process may hold leased: the bulkhead sending and as many claimed ahead) and the bulkhead.
//!
//! It answers two questions:
//! - **how many rows may be claimed now** ([`Gate::claim`]): a [`Claim`] of so many rows, or
//!   until when to wait (held, rate-limited, breaker open);
//! - **may this claimed row be sent now** ([`Gate::admit`]): a [`SendPermit`], or why not
//!   ([`Unsent`]).
//!
//! What a row holds is owned by the value that carries it and reports itself on drop, the way
//! tower's `ConcurrencyLimit` moves its permit into the response future: a lease and a bulkhead
//! slot are released when the row's [`Held`] is dropped (after its outcome is committed), a
//! rate-limit ticket that took no token stops counting, and a half-open probe that was never
//! sent frees its probe slot. Nothing is handed back by hand.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{Admission, Breaker, Limiter, RateLimiter, SharedLimiter, Ticket, Verdict};
use crate::clock::{self, Instant, WallMs};
use crate::config::ChannelPolicy;
use crate::model::{ChannelName, HoldReason};
use crate::outbox::limits::{ClusterLimits, SharedHold};

/// Rows a channel with this bulkhead may hold leased: the bulkhead sending and as many claimed
/// ahead.
pub(crate) fn max_leased(concurrency: usize) -> usize {
    2 * concurrency
}

/// A hold in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hold {
    pub until: Instant,
    /// `until` as wall time, for operators.
    pub until_ms: WallMs,
    pub because: HoldReason,
}

/// The answer to "how many rows may be claimed now".
#[derive(Debug)]
pub enum ClaimAnswer {
    /// Claim up to [`Claim::want`] rows.
    Claim(Claim),
    /// The channel is held (or rate-limited): look again then.
    Wait { until: Instant },
    /// The breaker is open: due rows wait for the next probe (or fail over) until then.
    Open { until: Instant },
}

/// Why a claimed row goes back to the queue unsent, its attempt refunded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unsent {
    /// The daemon is stopping: it got no bulkhead slot.
    Stopping,
    /// It waited more than half the lease margin for a slot: its lease must still cover the
    /// send's whole timeout.
    WaitedTooLongForASlot,
    /// The channel was held meanwhile.
    ChannelHeld,
    /// The breaker left `closed` meanwhile and the row is not a probe.
    BreakerOpened,
    /// Its `expires_at` passed before it could be sent.
    Expired,
    /// Its recipient is over its own rate limit until then.
    RecipientLimited { next: Instant },
    /// The channel's shared rate limit, spent by other daemons too, has no token for it before
    /// its lease runs short: the bucket has one again then.
    ChannelLimited { next: Instant },
    /// The shared rate limit could not be read (the queue is unavailable): not sent, since the
    /// provider's limit could not be kept.
    LimitUnreadable,
}

impl Unsent {
    /// The `reason` in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stopping => "stopping",
            Self::WaitedTooLongForASlot => "waited_too_long_for_a_slot",
            Self::ChannelHeld => "channel_held",
            Self::BreakerOpened => "breaker_opened",
            Self::Expired => "expired",
            Self::RecipientLimited { .. } => "recipient_rate_limited",
            Self::ChannelLimited { .. } => "channel_rate_limited",
            Self::LimitUnreadable => "rate_limit_unreadable",
        }
    }
}

/// One channel's gate. Shared behind an `Arc`: every permit it hands out points back to it.
#[derive(Debug)]
pub struct Gate {
    /// The channel's name, as shared holds name it.
    channel: ChannelName,
    breaker: Breaker,
    limiter: Limiter,
    hold: Mutex<Option<Hold>>,
    /// Where this channel's holds are shared with the other daemons on the queue, if any.
    cluster: Option<Arc<dyn ClusterLimits>>,
    /// Free send slots: the bulkhead.
    slots: Arc<Semaphore>,
    /// Rows this process may hold leased.
    leases: Arc<Semaphore>,
    concurrency: usize,
}

impl Gate {
    /// A gate for a channel with this policy: breaker closed, rate limits full, not held.
    pub fn new(channel: &str, policy: &ChannelPolicy) -> Arc<Self> {
        Self::with_limits(channel, policy, None)
    }

    /// A gate whose rate limits and holds are shared through `cluster` with the other daemons
    /// on the queue (`None`: kept in this process). The breaker stays this daemon's own.
    pub fn with_limits(
        channel: &str,
        policy: &ChannelPolicy,
        cluster: Option<Arc<dyn ClusterLimits>>,
    ) -> Arc<Self> {
        let critical = policy.criticality == crate::config::Criticality::Critical;
        let limiter = match &cluster {
            Some(store) => Limiter::Shared(SharedLimiter::new(
                store.clone(),
                channel,
                policy.rate_limit.as_ref(),
            )),
            None => Limiter::Local(RateLimiter::new(policy.rate_limit.as_ref())),
        };
        Arc::new(Self {
            channel: ChannelName::from(channel),
            breaker: Breaker::new(channel, critical, policy.breaker.clone()),
            limiter,
            cluster,
            hold: Mutex::new(None),
            slots: Arc::new(Semaphore::new(policy.concurrency)),
            leases: Arc::new(Semaphore::new(max_leased(policy.concurrency))),
            concurrency: policy.concurrency,
        })
    }

    /// The breaker, for views and metrics.
    pub fn breaker(&self) -> &Breaker {
        &self.breaker
    }

    /// The rate limiter, for views and metrics.
    pub fn limiter(&self) -> &Limiter {
        &self.limiter
    }

    /// Sends in flight now.
    pub fn in_flight(&self) -> usize {
        self.concurrency
            .saturating_sub(self.slots.available_permits())
    }

    /// Stops the channel from sending for `hold`; a longer hold already in force is kept. With
    /// shared limits the hold is also written for every other daemon on the queue (in the
    /// background: they read it on their poll interval).
    pub fn hold(&self, hold: Duration, because: HoldReason) {
        let until_ms = clock::now_ms() + clock::millis(hold);
        if !self.hold_here(hold, until_ms, because) {
            return;
        }
        if let Some(cluster) = self.cluster.clone() {
            let channel = self.channel.clone();
            tokio::spawn(async move {
                if let Err(e) = cluster.hold(&channel, until_ms, because).await {
                    tracing::warn!(channel = %channel, error = %e,
                        "Could not share the channel's hold; the other daemons keep sending until they meet the provider's answer themselves.");
                }
            });
        }
    }

    /// Applies a hold another daemon shared (not written back).
    pub fn hold_shared(&self, hold: &SharedHold) {
        let left = u64::try_from(hold.until_ms.saturating_sub(clock::now_ms())).unwrap_or(0);
        if left > 0 {
            self.hold_here(Duration::from_millis(left), hold.until_ms, hold.because);
        }
    }

    /// Holds the channel in this process unless a longer hold is in force; whether it did.
    fn hold_here(&self, hold: Duration, until_ms: WallMs, because: HoldReason) -> bool {
        let until = clock::now() + hold;
        let mut h = self.lock_hold();
        if h.is_some_and(|h| h.until >= until) {
            return false;
        }
        *h = Some(Hold {
            until,
            until_ms,
            because,
        });
        true
    }

    /// The hold in force now, if any.
    pub fn held(&self) -> Option<Hold> {
        let mut h = self.lock_hold();
        match *h {
            Some(hold) if hold.until > clock::now() => Some(hold),
            Some(_) => {
                *h = None;
                None
            }
            None => None,
        }
    }

    fn lock_hold(&self) -> std::sync::MutexGuard<'_, Option<Hold>> {
        self.hold.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for room to hold one more leased row; `None` once the budget is closed.
    pub async fn lease(&self) -> Option<OwnedSemaphorePermit> {
        self.leases.clone().acquire_owned().await.ok()
    }

    /// Waits for a free bulkhead slot; `None` once the bulkhead is closed.
    pub async fn slot(&self) -> Option<OwnedSemaphorePermit> {
        self.slots.clone().acquire_owned().await.ok()
    }

    /// Resolves when no row of this channel is leased any more (each row holds its lease until
    /// its outcome is committed).
    pub async fn leases_returned(&self) {
        let all = u32::try_from(max_leased(self.concurrency)).unwrap_or(u32::MAX);
        drop(self.leases.acquire_many(all).await);
    }

    /// How many rows may be claimed now, given one lease already taken (`first`), at most
    /// `batch` at a time, each to get its rate-limit token within `within`. The breaker decides
    /// whether the provider is called at all (half-open: only as many as it has probes); the rate
    /// limit how many may be claimed, so a row waiting for its token never outlives its lease.
    /// Tokens themselves are taken right before each send.
    pub fn claim(
        self: &Arc<Self>,
        first: OwnedSemaphorePermit,
        batch: usize,
        within: Duration,
    ) -> ClaimAnswer {
        // Checked after the lease is ours: the send that freed it may have just set a hold.
        if let Some(hold) = self.held() {
            return ClaimAnswer::Wait { until: hold.until };
        }
        let mut want =
            u32::try_from((1 + self.leases.available_permits()).min(batch)).unwrap_or(u32::MAX);
        let probes = match self.breaker.admit(want) {
            Admission::Closed => None,
            Admission::Probe(n) => {
                want = want.min(n);
                Some(Probes {
                    gate: self.clone(),
                    left: n,
                })
            }
            Admission::Open { until } => return ClaimAnswer::Open { until },
        };
        match self.limiter.claimable(want, within) {
            Ok(n) => want = n,
            // Dropping `probes` gives its reservation back.
            Err(next) => return ClaimAnswer::Wait { until: next },
        }
        ClaimAnswer::Claim(Claim {
            gate: self.clone(),
            want,
            first: Some(first),
            probes,
        })
    }

    /// May this claimed row be sent now? It has waited since its claim for a bulkhead slot
    /// (`None`: stopping, it gets none); `patience` is how long it may have waited, and twice
    /// that after its claim (the lease margin) is the latest its send may start.
    /// `expires_at_ms` and `recipient` are the row's. On `Err` the row must go back unsent; its
    /// [`Held`] still holds the lease and slot until that is committed.
    pub fn admit(
        &self,
        row: RowLease,
        slot: Option<OwnedSemaphorePermit>,
        patience: Duration,
        expires_at_ms: Option<WallMs>,
        recipient: &str,
    ) -> Result<SendPermit, (Unsent, Held)> {
        let RowLease {
            gate,
            lease,
            ticket,
            probe,
            claimed_at,
        } = row;
        let held = Held {
            _lease: lease,
            slot,
        };
        let why = if held.slot.is_none() {
            Some(Unsent::Stopping)
        } else if clock::now().saturating_duration_since(claimed_at) > patience {
            Some(Unsent::WaitedTooLongForASlot)
        } else if self.held().is_some() {
            Some(Unsent::ChannelHeld)
        } else if probe.is_none() && !self.breaker.is_closed() {
            Some(Unsent::BreakerOpened)
        } else if expires_at_ms.is_some_and(|t| t <= clock::now_ms()) {
            Some(Unsent::Expired)
        } else if let Err(next) = self.limiter.acquire_recipient(recipient) {
            // Checked before the channel's token is taken: a held-back send costs the channel none.
            Some(Unsent::RecipientLimited { next })
        } else {
            None
        };
        match why {
            // `ticket` and `probe` are dropped here: no token taken, the probe slot is free.
            Some(why) => Err((why, held)),
            None => Ok(SendPermit {
                gate,
                held,
                ticket: Some(ticket),
                probe,
                deadline: claimed_at + patience * 2,
            }),
        }
    }
}

/// Probe slots a half-open breaker reserved for one claim; those not handed to a row are given
/// back when it is dropped.
#[derive(Debug)]
struct Probes {
    gate: Arc<Gate>,
    left: u32,
}

impl Probes {
    fn take(&mut self) -> Option<Probe> {
        self.left = self.left.checked_sub(1)?;
        Some(Probe(Some(self.gate.clone())))
    }
}

impl Drop for Probes {
    fn drop(&mut self) {
        if self.left > 0 {
            self.gate.breaker.unused_probes(self.left);
        }
    }
}

/// One half-open probe slot, carried by its row: reported once, as the send's verdict, or, if
/// the row was never sent, given back when dropped.
#[derive(Debug)]
struct Probe(Option<Arc<Gate>>);

impl Probe {
    fn report(mut self, verdict: Verdict) -> Option<Instant> {
        self.0.take().and_then(|g| g.breaker.record(verdict, true))
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        if let Some(gate) = self.0.take() {
            // Not sent: says nothing about the provider.
            gate.breaker.record(Verdict::Neutral, true);
        }
    }
}

/// Leave to claim up to [`Claim::want`] rows; hands each claimed row its [`RowLease`].
#[derive(Debug)]
pub struct Claim {
    gate: Arc<Gate>,
    want: u32,
    first: Option<OwnedSemaphorePermit>,
    probes: Option<Probes>,
}

impl Claim {
    /// How many rows to claim.
    pub fn want(&self) -> u32 {
        self.want
    }

    /// What the next claimed row carries to its send: its lease, its rate-limit ticket and,
    /// when probing, one probe slot. `None` once the lease budget is closed.
    pub async fn row(&mut self) -> Option<RowLease> {
        let lease = match self.first.take() {
            Some(p) => p,
            // Only the channel's loop takes leases, and it counted them: this cannot wait long.
            None => self.gate.lease().await?,
        };
        Some(RowLease {
            ticket: self.gate.limiter.ticket(),
            probe: self.probes.as_mut().and_then(Probes::take),
            gate: self.gate.clone(),
            lease,
            claimed_at: clock::now(),
        })
    }
}

/// What a claimed row carries from its claim to its send.
#[derive(Debug)]
pub struct RowLease {
    gate: Arc<Gate>,
    lease: OwnedSemaphorePermit,
    ticket: Ticket,
    probe: Option<Probe>,
    claimed_at: Instant,
}

/// A row's lease and bulkhead slot, held until its outcome is committed (a crash while sending
/// duplicates at most the bulkhead; the stop waits for every lease).
#[derive(Debug)]
#[must_use = "dropping it releases the row's lease and slot: keep it until the outcome is committed"]
pub struct Held {
    /// Released on drop.
    _lease: OwnedSemaphorePermit,
    slot: Option<OwnedSemaphorePermit>,
}

/// Leave to call the provider for one row: its slot and lease, its rate-limit ticket and, for a
/// probe, the probe slot. Dropped unsent, it takes no token and frees its probe slot.
#[derive(Debug)]
pub struct SendPermit {
    gate: Arc<Gate>,
    held: Held,
    ticket: Option<Ticket>,
    probe: Option<Probe>,
    /// The latest the send may start for its lease to cover it.
    deadline: Instant,
}

impl SendPermit {
    /// Waits, in turn, for the channel's rate-limit token and takes it: right before the provider
    /// is called, so the pace the provider sees is the limiter's whatever the claim or spawn
    /// took. Cancel safe. With shared limits the recipient's token is taken here too, and the
    /// row may have to go back unsent; so must it when the channel was held while it waited.
    pub async fn token(&mut self, recipient: &str) -> Result<(), Unsent> {
        if let Some(ticket) = self.ticket.take() {
            self.gate
                .limiter
                .until_token(ticket, recipient, self.deadline)
                .await?;
        }
        if self.gate.held().is_some() {
            return Err(Unsent::ChannelHeld);
        }
        Ok(())
    }

    /// Whether this send is a half-open probe.
    pub fn is_probe(&self) -> bool {
        self.probe.is_some()
    }

    /// Reports the send's verdict to the breaker. For a failed probe, returns when the breaker
    /// probes next (it is open again). Gives back what stays held until the outcome commits.
    pub fn record(mut self, verdict: Verdict) -> (Option<Instant>, Held) {
        let next_probe = match self.probe.take() {
            Some(probe) => probe.report(verdict),
            None => self.gate.breaker.record(verdict, false),
        };
        (next_probe, self.held)
    }

    /// Not sent after all (the send was abandoned): no verdict, the probe slot is free again.
    pub fn unsent(self) -> Held {
        self.held
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BreakerConfig, Rate, RateLimitConfig};

    fn policy(concurrency: usize) -> ChannelPolicy {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notifyd.toml");
        std::fs::write(&path, "[channels.c]\nkind = \"log\"\n").unwrap();
        let config = crate::config::Config::load_with_env(
            Some(&path),
            figment::providers::Env::prefixed("NOTIFYD_UNIT_UNUSED_"),
        )
        .unwrap();
        let mut p = config.channels["c"].policy.clone();
        p.concurrency = concurrency;
        p
    }

    fn rate(per_second: f64, burst: u32) -> Rate {
        Rate {
            per_second: Some(per_second),
            per_minute: None,
            burst,
        }
    }

    fn breaker(probes: u32) -> BreakerConfig {
        BreakerConfig {
            enabled: true,
            consecutive_failures: 2,
            probes,
            open_for: Duration::from_secs(10),
            ..BreakerConfig::default()
        }
    }

    async fn claim(gate: &Arc<Gate>) -> ClaimAnswer {
        let first = gate.lease().await.unwrap();
        gate.claim(first, 100, Duration::from_secs(5))
    }

    async fn one_row(gate: &Arc<Gate>) -> RowLease {
        match claim(gate).await {
            ClaimAnswer::Claim(mut c) => c.row().await.unwrap(),
            other => panic!("{other:?}"),
        }
    }

    fn admit(gate: &Gate, row: RowLease, slot: bool) -> Result<SendPermit, (Unsent, Held)> {
        let slot = slot.then(|| gate.slots.clone().try_acquire_owned().unwrap());
        gate.admit(row, slot, Duration::from_secs(5), None, "alice")
    }

    async fn fail_twice(gate: &Arc<Gate>) {
        for _ in 0..2 {
            let permit = admit(gate, one_row(gate).await, true).unwrap();
            drop(permit.record(Verdict::Failure));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_claim_may_fill_the_lease_budget_up_to_the_batch() {
        let gate = Gate::new("c", &policy(4));
        match claim(&gate).await {
            ClaimAnswer::Claim(c) => assert_eq!(c.want(), 8),
            other => panic!("{other:?}"),
        }
        let first = gate.lease().await.unwrap();
        match gate.claim(first, 3, Duration::from_secs(5)) {
            ClaimAnswer::Claim(c) => assert_eq!(c.want(), 3),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_held_channel_claims_nothing_until_the_hold_ends() {
        let gate = Gate::new("c", &policy(4));
        gate.hold(Duration::from_secs(30), HoldReason::RetryAfter);
        match claim(&gate).await {
            ClaimAnswer::Wait { until } => {
                assert_eq!(until - clock::now(), Duration::from_secs(30))
            }
            other => panic!("{other:?}"),
        }
        tokio::time::advance(Duration::from_secs(30)).await;
        assert!(gate.held().is_none());
        assert!(matches!(claim(&gate).await, ClaimAnswer::Claim(_)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_shorter_hold_does_not_shorten_one_in_force() {
        let gate = Gate::new("c", &policy(1));
        gate.hold(Duration::from_secs(60), HoldReason::ChannelFault);
        gate.hold(Duration::from_secs(5), HoldReason::RetryAfter);
        let hold = gate.held().unwrap();
        assert_eq!(hold.until - clock::now(), Duration::from_secs(60));
        assert_eq!(hold.because, HoldReason::ChannelFault);
    }

    #[tokio::test(start_paused = true)]
    async fn an_open_breaker_claims_nothing_until_its_probe_time() {
        let mut p = policy(4);
        p.breaker = breaker(1);
        let gate = Gate::new("c", &p);
        fail_twice(&gate).await;
        match claim(&gate).await {
            ClaimAnswer::Open { until } => {
                assert_eq!(until - clock::now(), Duration::from_secs(10))
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_half_open_breaker_claims_only_its_probes_and_an_unsent_probe_frees_its_slot() {
        let mut p = policy(4);
        p.breaker = breaker(1);
        let gate = Gate::new("c", &p);
        fail_twice(&gate).await;
        tokio::time::advance(Duration::from_secs(10)).await;
        let row = match claim(&gate).await {
            ClaimAnswer::Claim(mut c) => {
                assert_eq!(c.want(), 1, "one probe");
                c.row().await.unwrap()
            }
            other => panic!("{other:?}"),
        };
        // The probe is out: nothing else may be claimed.
        assert!(matches!(claim(&gate).await, ClaimAnswer::Open { .. }));
        // Released unsent (stopping): its probe slot is free for the next claim.
        let (why, held) = admit(&gate, row, false).unwrap_err();
        assert_eq!(why, Unsent::Stopping);
        drop(held);
        match claim(&gate).await {
            ClaimAnswer::Claim(c) => assert_eq!(c.want(), 1),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn probe_slots_a_claim_did_not_use_are_given_back() {
        let mut p = policy(4);
        p.breaker = breaker(3);
        let gate = Gate::new("c", &p);
        fail_twice(&gate).await;
        tokio::time::advance(Duration::from_secs(10)).await;
        let mut c = match claim(&gate).await {
            ClaimAnswer::Claim(c) => c,
            other => panic!("{other:?}"),
        };
        assert_eq!(c.want(), 3);
        // The queue had one row.
        let row = c.row().await.unwrap();
        drop(c);
        match claim(&gate).await {
            ClaimAnswer::Claim(c) => assert_eq!(c.want(), 2, "two probes left"),
            other => panic!("{other:?}"),
        }
        drop(row);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_reopens_the_breaker_and_says_when_it_probes_next() {
        let mut p = policy(4);
        p.breaker = breaker(1);
        let gate = Gate::new("c", &p);
        fail_twice(&gate).await;
        tokio::time::advance(Duration::from_secs(10)).await;
        let permit = admit(&gate, one_row(&gate).await, true).unwrap();
        assert!(permit.is_probe());
        let (next, _held) = permit.record(Verdict::Failure);
        // Re-opened for twice as long.
        assert_eq!(next.unwrap() - clock::now(), Duration::from_secs(20));
        assert!(matches!(claim(&gate).await, ClaimAnswer::Open { .. }));
    }

    #[tokio::test(start_paused = true)]
    async fn a_row_claimed_while_closed_is_not_sent_once_the_breaker_opened() {
        let mut p = policy(4);
        p.breaker = breaker(1);
        let gate = Gate::new("c", &p);
        let row = one_row(&gate).await;
        fail_twice(&gate).await;
        assert_eq!(
            admit(&gate, row, true).unwrap_err().0,
            Unsent::BreakerOpened
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_row_that_waited_past_its_patience_goes_back() {
        let gate = Gate::new("c", &policy(1));
        let row = one_row(&gate).await;
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(
            admit(&gate, row, true).unwrap_err().0,
            Unsent::WaitedTooLongForASlot
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_expired_row_is_not_sent() {
        let gate = Gate::new("c", &policy(1));
        let row = one_row(&gate).await;
        let slot = gate.slots.clone().try_acquire_owned().unwrap();
        let past = clock::now_ms() - 1;
        let err = gate
            .admit(row, Some(slot), Duration::from_secs(5), Some(past), "alice")
            .unwrap_err();
        assert_eq!(err.0, Unsent::Expired);
    }

    #[tokio::test(start_paused = true)]
    async fn a_recipient_over_its_limit_waits_and_costs_the_channel_no_token() {
        let mut p = policy(4);
        p.rate_limit = Some(RateLimitConfig {
            channel: rate(1.0, 1),
            per_recipient: Some(rate(0.1, 1)),
        });
        let gate = Gate::new("c", &p);
        let mut first = admit(&gate, one_row(&gate).await, true).unwrap();
        first.token("alice").await.unwrap();
        drop(first.record(Verdict::Success));
        tokio::time::advance(Duration::from_secs(1)).await;
        match admit(&gate, one_row(&gate).await, true) {
            Err((Unsent::RecipientLimited { next }, _)) => {
                assert_eq!(next - clock::now(), Duration::from_secs(9));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            gate.limiter.tokens(),
            Some(1),
            "the channel's token is untouched"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_row_waiting_for_its_token_is_not_sent_once_the_channel_is_held() {
        let mut p = policy(4);
        p.rate_limit = Some(RateLimitConfig {
            channel: rate(1.0, 1),
            per_recipient: None,
        });
        let gate = Gate::new("c", &p);
        let mut first = admit(&gate, one_row(&gate).await, true).unwrap();
        first.token("alice").await.unwrap();
        let mut second = admit(&gate, one_row(&gate).await, true).unwrap();
        let waiting = tokio::spawn(async move { second.token("bob").await });
        tokio::time::advance(Duration::from_millis(10)).await;
        gate.hold(Duration::from_secs(30), HoldReason::RetryAfter);
        assert_eq!(waiting.await.unwrap(), Err(Unsent::ChannelHeld));
    }

    #[tokio::test(start_paused = true)]
    async fn a_rate_limited_channel_claims_only_what_it_releases_in_time() {
        let mut p = policy(64);
        p.rate_limit = Some(RateLimitConfig {
            channel: rate(10.0, 1),
            per_recipient: None,
        });
        let gate = Gate::new("c", &p);
        let first = gate.lease().await.unwrap();
        let mut c = match gate.claim(first, 512, Duration::from_secs(1)) {
            ClaimAnswer::Claim(c) => c,
            other => panic!("{other:?}"),
        };
        // One now and one every 100 ms within the second.
        assert_eq!(c.want(), 11);
        let mut rows = Vec::new();
        for _ in 0..11 {
            rows.push(c.row().await.unwrap());
        }
        drop(c);
        // Every token in the window is spoken for: wait for the next.
        let first = gate.lease().await.unwrap();
        match gate.claim(first, 512, Duration::from_secs(1)) {
            ClaimAnswer::Wait { until } => assert!(until > clock::now()),
            other => panic!("{other:?}"),
        }
        // Rows given back unsent stop counting.
        rows.clear();
        assert!(matches!(claim(&gate).await, ClaimAnswer::Claim(_)));
    }

    #[tokio::test(start_paused = true)]
    async fn the_lease_and_slot_stay_taken_until_the_outcome_is_committed() {
        let gate = Gate::new("c", &policy(1));
        let permit = admit(&gate, one_row(&gate).await, true).unwrap();
        assert_eq!(gate.in_flight(), 1);
        let (_, held) = permit.record(Verdict::Success);
        assert_eq!(gate.in_flight(), 1);
        assert!(
            tokio::time::timeout(Duration::from_millis(1), gate.leases_returned())
                .await
                .is_err()
        );
        drop(held);
        assert_eq!(gate.in_flight(), 0);
        gate.leases_returned().await;
    }
}
