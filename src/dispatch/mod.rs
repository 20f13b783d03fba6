//! Pulls due notifications from the queue and delivers them.
//!
//! One loop per channel: it may hold twice the channel's bulkhead in leased rows, one bulkhead
//! sending and as many claimed ahead, so a slot freed by a finished send is taken at once
//! instead of waiting for the next claim's round trip through the writer. Whenever it holds
//! fewer, it claims as many due rows as it may still hold and its rate limit releases within
//! half the lease margin, and starts one task per row. The task waits for a bulkhead slot (a row
//! that waited more than half the lease margin, or meanwhile saw the channel held, its breaker
//! leave `closed` or the daemon stop, goes back unsent with its attempt refunded, so no lease
//! runs out before its send), then takes its rate-limit token right before the provider is
//! called. Each send's outcome is classified ([`decide`]) into the row's
//! next state and written back. Enqueues in this process wake the loop at once; polling finds
//! rows written by other processes and retries coming due. The table is the truth: wake-ups and
//! polls are only hints.

mod decide;
pub mod retry;

use std::sync::Arc;
use std::time::Duration;

use notifyd_channels::{DeliveryError, SendContext};
use tokio::sync::{OwnedSemaphorePermit, mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::config::DispatcherConfig;
use crate::outbox::{
    AttemptRecord, Claimed, Completion, OpenBreakerMove, Outbox, Outcome, Retention, State,
    Validation, now_ms,
};
use crate::policy::{Admission, Ticket, Verdict};
use crate::registry::{ChannelRuntime, Registry, max_leased};
use crate::submission::{self, Rejection};
use crate::systemd::Notifier;

pub use decide::decide;

/// Tells the dispatcher to stop: first `stop` (claim no more, let sends finish), then, after the
/// grace period, `abandon` (cancel the rest and release their rows).
#[derive(Clone)]
struct Signals {
    stop: watch::Receiver<bool>,
    abandon: watch::Receiver<bool>,
}

/// Whether a dispatcher should keep going.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Halt {
    Running,
    /// The daemon is stopping: drain within the grace period, release the rest.
    Shutdown,
    /// A reload started a new dispatcher: stop claiming, finish what is in flight.
    Replaced,
}

/// What every channel loop and send shares.
struct Shared {
    registry: Arc<Registry>,
    outbox: Arc<dyn Outbox>,
    config: DispatcherConfig,
    retention: Retention,
    signals: Signals,
}

/// The delivery side of the daemon.
pub struct Dispatcher {
    outbox: Arc<dyn Outbox>,
    registry: Arc<Registry>,
    config: DispatcherConfig,
    retention: Retention,
    notifier: Notifier,
}

impl Dispatcher {
    /// A dispatcher over these channels.
    pub fn new(
        outbox: Arc<dyn Outbox>,
        registry: Arc<Registry>,
        config: DispatcherConfig,
        retention: Retention,
        notifier: Notifier,
    ) -> Self {
        Self {
            outbox,
            registry,
            config,
            retention,
            notifier,
        }
    }

    /// Runs until `halt` says otherwise. On [`Halt::Shutdown`] in-flight sends get
    /// `shutdown_grace`, the rest are abandoned and their notifications released to the queue.
    /// On [`Halt::Replaced`] (a reload started a new dispatcher) it only stops claiming and lets
    /// its in-flight sends finish, each bounded by its own timeout.
    pub async fn run(self, mut halt: watch::Receiver<Halt>) {
        let (stop_tx, stop) = watch::channel(false);
        let (abandon_tx, abandon) = watch::channel(false);
        let signals = Signals { stop, abandon };
        let shared = Arc::new(Shared {
            registry: self.registry.clone(),
            outbox: self.outbox.clone(),
            config: self.config.clone(),
            retention: self.retention.clone(),
            signals: signals.clone(),
        });
        let mut loops = JoinSet::new();
        for rt in self.registry.iter() {
            loops.spawn(channel_loop(rt.clone(), shared.clone()));
        }
        loops.spawn(sweep_loop(shared.clone(), self.notifier.clone()));

        let why = match halt.wait_for(|h| *h != Halt::Running).await {
            Ok(h) => *h,
            Err(_) => Halt::Shutdown,
        };
        let _ = stop_tx.send(true);
        if why == Halt::Replaced {
            self.all_leases_returned().await;
            loops.shutdown().await;
            tracing::info!("Previous dispatcher retired after a reload; its sends finished.");
            return;
        }
        self.notifier.stopping();
        tracing::info!(grace = ?self.config.shutdown_grace, "Dispatcher stopping; letting in-flight sends finish.");
        let deadline = Instant::now() + self.config.shutdown_grace;
        let drained = tokio::time::timeout_at(deadline, self.all_leases_returned()).await;
        if drained.is_err() {
            tracing::warn!(
                "Shutdown grace period over; abandoning the remaining sends and releasing their notifications."
            );
            let _ = abandon_tx.send(true);
            let _ = tokio::time::timeout(Duration::from_secs(5), self.all_leases_returned()).await;
        }
        loops.shutdown().await;
        tracing::info!("Dispatcher stopped.");
    }

    /// Resolves when no channel holds a leased row (each row holds its lease permit until its
    /// outcome is committed; rows waiting for a slot release themselves once stopping). The
    /// loops are stopped by then, so a drained channel stays drained.
    async fn all_leases_returned(&self) {
        for rt in self.registry.iter() {
            let all = u32::try_from(max_leased(rt.policy.concurrency)).unwrap_or(u32::MAX);
            drop(rt.leases.acquire_many(all).await);
        }
    }
}

async fn channel_loop(rt: Arc<ChannelRuntime>, shared: Arc<Shared>) {
    let (outbox, config) = (&shared.outbox, &shared.config);
    let mut stop = shared.signals.stop.clone();
    let lease = rt.lease(config.lease_margin);
    let (feed, rows) = mpsc::unbounded_channel();
    tokio::spawn(feed_slots(rt.clone(), shared.clone(), rows));
    loop {
        if *stop.borrow() {
            return;
        }
        let first = tokio::select! {
            permit = rt.leases.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => return,
            },
            _ = stop.changed() => return,
        };
        // Checked after the slot is ours: the send that freed it may have just set a hold.
        if let Some(until) = rt.held_until() {
            drop(first);
            tokio::select! {
                _ = tokio::time::sleep_until(until) => {}
                _ = stop.changed() => return,
            }
            continue;
        }
        let mut want = u32::try_from((1 + rt.leases.available_permits()).min(config.claim_batch))
            .unwrap_or(u32::MAX);
        // The breaker decides whether the provider is called at all.
        let probes = match rt.breaker.admit(want) {
            Admission::Closed => None,
            Admission::Probe(n) => {
                want = want.min(n);
                Some(n)
            }
            Admission::Open { until } => {
                drop(first);
                while_open(&rt, &shared.registry, outbox, until).await;
                tokio::select! {
                    _ = tokio::time::sleep_until(until) => {}
                    _ = rt.wake.notified() => {}
                    _ = stop.changed() => return,
                }
                continue;
            }
        };
        // The rate limit decides how many may be claimed: no more than it releases within half
        // the lease margin, so a row waiting for its token never outlives its lease. The tokens
        // themselves are taken right before each send.
        match rt.limiter.claimable(want, config.lease_margin / 2) {
            Ok(n) => want = n,
            Err(next) => {
                drop(first);
                if let Some(n) = probes {
                    rt.breaker.unused_probes(n);
                }
                tokio::select! {
                    _ = tokio::time::sleep_until(next) => {}
                    _ = stop.changed() => return,
                }
                continue;
            }
        }
        let claimed = match outbox.claim(&rt.name, want as usize, lease).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(channel = %rt.name, error = %e, "Claim failed; will retry.");
                if let Some(n) = probes {
                    rt.breaker.unused_probes(n);
                }
                drop(first);
                idle(&rt, config, &mut stop).await;
                continue;
            }
        };
        let got = u32::try_from(claimed.len()).unwrap_or(u32::MAX);
        if let Some(n) = probes {
            rt.breaker.unused_probes(n.saturating_sub(got));
        }
        let mut first = Some(first);
        for row in claimed {
            let lease = match first.take() {
                Some(p) => p,
                // Only this loop takes leases, and it counted them: this cannot wait long.
                None => match rt.leases.clone().acquire_owned().await {
                    Ok(p) => p,
                    Err(_) => return,
                },
            };
            let leased = Leased {
                lease,
                ticket: rt.limiter.ticket(),
                probe: probes.is_some(),
                claimed: Instant::now(),
            };
            if feed.send((row, leased)).is_err() {
                return;
            }
        }
        drop(first);
        if got < want {
            idle(&rt, config, &mut stop).await;
        }
    }
}

/// Rows that fall due while the breaker is open are moved: to the failover channels if there
/// are any, else their `run_at` becomes the next probe time. No attempt is spent either way.
async fn while_open(
    rt: &ChannelRuntime,
    registry: &Registry,
    outbox: &Arc<dyn Outbox>,
    until: Instant,
) {
    const CHUNK: usize = 5000;
    for target in &rt.policy.failover {
        loop {
            let how = OpenBreakerMove::Reroute { to: target.clone() };
            match outbox.move_due(&rt.name, how, CHUNK).await {
                Ok(0) => break,
                Ok(n) => {
                    tracing::warn!(channel = %rt.name, to_channel = %target, moved = n,
                        "Breaker open: failed over due notifications.");
                    registry.wake(target);
                    if n < CHUNK as u64 {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(channel = %rt.name, error = %e, "Could not fail over due notifications.");
                    break;
                }
            }
        }
    }
    let until_ms = now_ms() + decide::millis(until.saturating_duration_since(Instant::now()));
    loop {
        match outbox
            .move_due(&rt.name, OpenBreakerMove::Defer { until_ms }, CHUNK)
            .await
        {
            Ok(n) if n == CHUNK as u64 => continue,
            Ok(_) => break,
            Err(e) => {
                tracing::warn!(channel = %rt.name, error = %e, "Could not defer due notifications.");
                break;
            }
        }
    }
}

/// Waits for a wake-up, the poll interval, or shutdown.
async fn idle(rt: &ChannelRuntime, config: &DispatcherConfig, stop: &mut watch::Receiver<bool>) {
    tokio::select! {
        _ = rt.wake.notified() => {}
        _ = tokio::time::sleep(config.poll_interval) => {}
        _ = stop.changed() => {}
    }
}

/// Why a claimed row goes back to the queue unsent (its attempt refunded), if it must.
fn unsent_because(
    rt: &ChannelRuntime,
    config: &DispatcherConfig,
    waited: Duration,
    slot: bool,
    probe: bool,
) -> Option<&'static str> {
    if !slot {
        Some("stopping")
    } else if waited > config.lease_margin / 2 {
        // Its lease must still cover the send's whole timeout.
        Some("waited_too_long_for_a_slot")
    } else if rt.held_until().is_some() {
        Some("channel_held")
    } else if !probe && !rt.breaker.is_closed() {
        Some("breaker_opened")
    } else {
        None
    }
}

/// What a claimed row carries from its claim to its send.
struct Leased {
    /// Held until the row's outcome is committed.
    lease: OwnedSemaphorePermit,
    ticket: Ticket,
    /// Claimed as a half-open breaker's probe.
    probe: bool,
    claimed: Instant,
}

/// Hands claimed rows their bulkhead slots in claim order (priority, then due time), and starts
/// each one's send. Once stopping, rows still waiting get no slot: they are released unsent.
async fn feed_slots(
    rt: Arc<ChannelRuntime>,
    shared: Arc<Shared>,
    mut rows: mpsc::UnboundedReceiver<(Claimed, Leased)>,
) {
    let mut stop = shared.signals.stop.clone();
    while let Some((row, leased)) = rows.recv().await {
        let slot = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => None,
            permit = rt.slots.clone().acquire_owned() => permit.ok(),
        };
        tokio::spawn(send_one(rt.clone(), shared.clone(), row, leased, slot));
    }
}

/// Delivers one claimed notification and writes the outcome back. It holds its lease permit
/// until then, and a bulkhead slot from the moment it may call the provider: a row claimed
/// ahead waits here for the slot, and is released unsent (no attempt spent) if stopping, if it
/// waited more than half the lease margin, or if the channel was held or its breaker left
/// `closed` meanwhile.
async fn send_one(
    rt: Arc<ChannelRuntime>,
    shared: Arc<Shared>,
    row: Claimed,
    Leased {
        lease,
        ticket,
        probe,
        claimed,
    }: Leased,
    slot: Option<OwnedSemaphorePermit>,
) {
    let waited = claimed.elapsed();
    let mut abandon = shared.signals.abandon.clone();
    let id = row.message.id.clone();
    let attempt = row.attempt;
    let token = row.lease;
    let started_at = now_ms();
    let refund = |run_at_ms: i64, code: &str, error: String, decision: &str| Completion {
        id: id.clone(),
        attempt,
        lease: token,
        outcome: Outcome::Retry {
            run_at_ms,
            refund_attempt: true,
            code: code.to_owned(),
            error: error.clone(),
        },
        record: Some(AttemptRecord {
            started_at_ms: started_at,
            latency_ms: 0,
            outcome: "not_sent".into(),
            code: Some(code.to_owned()),
            error: Some(error),
            provider_id: None,
            decision: decision.to_owned(),
        }),
    };
    // Given back unsent, its attempt refunded: after an abandoned send, or before any send.
    let release = || Completion {
        id: id.clone(),
        attempt,
        lease: token,
        outcome: Outcome::Release,
        record: None,
    };
    let mut recorded = false;
    let completion = if let Some(why) =
        unsent_because(&rt, &shared.config, waited, slot.is_some(), probe)
    {
        drop(ticket);
        tracing::debug!(notification_id = %id, channel = %rt.name, reason = why,
            "Claimed notification released unsent.");
        release()
    } else if row.expires_at_ms.is_some_and(|t| t <= started_at) {
        drop(ticket);
        note_expired(&rt, &id);
        Completion {
            id: id.clone(),
            attempt,
            lease: token,
            outcome: Outcome::Finish {
                state: State::Expired,
                code: "expired".into(),
                error: "expires_at passed before it could be sent".into(),
                fallback: false,
            },
            record: None,
        }
    } else if let Some(dead) = decide::past_budget(&rt, &row) {
        drop(ticket);
        dead
    } else if let Err(refused) = check_pending(&shared.registry, &row) {
        // Inserted by another program and refused by the checks the API would have made: it
        // ends as the API would have answered, never reaching the provider.
        drop(ticket);
        tracing::warn!(notification_id = %id, channel = %rt.name, code = refused.code, field = %refused.field,
            "A notification inserted with plain SQL failed validation.");
        Completion {
            id: id.clone(),
            attempt,
            lease: token,
            outcome: Outcome::Finish {
                state: State::Failed,
                code: refused.code.into(),
                error: refused.to_string(),
                fallback: false,
            },
            record: None,
        }
    } else if let Err(next) = rt.limiter.acquire_recipient(&row.message.to) {
        // Checked before the channel's token is taken: a held-back send costs the channel none.
        drop(ticket);
        let wait = next.saturating_duration_since(Instant::now());
        refund(
            started_at + decide::millis(wait),
            "recipient_rate_limited",
            format!("this recipient's rate limit allows the next send in {wait:?}"),
            "waited_for_rate_limit",
        )
    } else {
        let ctx = SendContext {
            attempt,
            idempotency_key: id.clone(),
        };
        // The channel's token is taken right before the provider is called, so the pace the
        // provider sees is the limiter's, whatever the claim or spawn took.
        let sent = tokio::select! {
            r = async {
                rt.limiter.until_token(ticket).await;
                let clock = Instant::now();
                let r = tokio::time::timeout(rt.timeouts.total, rt.channel.send(&row.message, &ctx)).await;
                (r, clock.elapsed())
            } => Some(r),
            _ = abandon.wait_for(|a| *a) => None,
        };
        match sent {
            None => release(),
            Some((result, latency)) => {
                let result = result.unwrap_or_else(|_| {
                    Err(DeliveryError::transient(
                        "timeout",
                        format!(
                            "no answer within the total timeout of {:?}",
                            rt.timeouts.total
                        ),
                    ))
                });
                let verdict = decide::verdict(&result);
                let next_probe = rt.breaker.record(verdict, probe);
                recorded = true;
                decide(
                    &rt,
                    &shared.config,
                    &row,
                    result,
                    started_at,
                    latency,
                    next_probe,
                )
            }
        }
    };
    if !recorded {
        // Not sent: says nothing about the provider, and a probe slot it held is free again.
        rt.breaker.record(Verdict::Neutral, probe);
    }
    let rerouted_to = match &completion.outcome {
        Outcome::Reroute { channel, .. } => Some(channel.clone()),
        _ => None,
    };
    match shared.outbox.complete(vec![completion]).await {
        Ok(()) => {
            if let Some(target) = rerouted_to {
                shared.registry.wake(&target);
            }
        }
        // The lease will expire and the row will be claimed again: at-least-once holds.
        Err(e) => tracing::error!(notification_id = %id, channel = %rt.name, error = %e,
            "Could not record the outcome; the notification will be retried when its lease expires."),
    }
    drop(slot);
    drop(lease);
}

/// Applies the API's checks to a row another program inserted ([`Validation::Pending`]); rows
/// notifyd wrote were checked when they were accepted and pass at no cost.
fn check_pending(registry: &Registry, row: &Claimed) -> Result<(), Rejection> {
    match &row.validation {
        Validation::Done => Ok(()),
        Validation::Pending { fallback } => {
            submission::check(registry, &row.message, fallback, "body")
        }
    }
}

/// A notification whose `expires_at` passed unsent. An optional channel's is dropped quietly;
/// a critical channel's is an error and counted (`notifyd_expired_critical_total`) like a
/// critical one that ended dead, so an alert can fire.
fn note_expired(rt: &ChannelRuntime, id: &str) {
    if rt.is_critical() {
        rt.record_expired_critical();
        tracing::error!(notification_id = %id, channel = %rt.name, critical = true,
            "Critical notification expired before it could be sent.");
    } else {
        tracing::debug!(notification_id = %id, channel = %rt.name, "Notification expired before it could be sent.");
    }
}

/// Expires overdue rows, dead-letters rows of unknown channels, and tells systemd the dispatcher
/// is alive: the watchdog ping comes only after a sweep went through the queue writer, so a
/// wedged writer or dispatcher gets the service restarted.
async fn sweep_loop(shared: Arc<Shared>, notifier: Notifier) {
    let names = shared.registry.names();
    let mut stop = shared.signals.stop.clone();
    let every = match notifier.watchdog() {
        Some(w) => shared.config.sweep_interval.min(w / 3),
        None => shared.config.sweep_interval,
    };
    loop {
        match shared.outbox.sweep(&names, &shared.retention).await {
            Ok(r) => {
                if r.purged > 0 || r.receipts_purged > 0 {
                    tracing::debug!(
                        notifications = r.purged,
                        receipts = r.receipts_purged,
                        "Retention purged old rows."
                    );
                }
                for row in &r.expired {
                    if let Some(rt) = shared.registry.get(&row.channel) {
                        note_expired(rt, &row.id);
                    }
                }
                if r.orphaned > 0 {
                    tracing::warn!(
                        unknown_channel = r.orphaned,
                        "Notifications for channels that are not configured went to the dead letters; replay them once the channel exists."
                    );
                }
                if !r.expired.is_empty() {
                    tracing::info!(expired = r.expired.len(), "Swept the queue.");
                }
                notifier.alive(&status_line(shared.outbox.as_ref()).await);
            }
            Err(e) => tracing::warn!(error = %e, "Queue sweep failed."),
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
    }
}

/// `Delivering: 12 queued, 3 sending, 0 dead` for `systemctl status`.
async fn status_line(outbox: &dyn Outbox) -> String {
    match outbox.depth().await {
        Ok(depth) => {
            let count = |s: State| {
                depth
                    .iter()
                    .filter(|d| d.state == s)
                    .map(|d| d.count)
                    .sum::<u64>()
            };
            format!(
                "Delivering: {} queued, {} sending, {} dead",
                count(State::Queued),
                count(State::Sending),
                count(State::Dead)
            )
        }
        Err(e) => format!("Queue unreadable: {e}"),
    }
}
