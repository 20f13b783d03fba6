//! Pulls due notifications from the queue and delivers them.
//!
//! One loop per channel: it may hold twice the channel's bulkhead in leased rows, one bulkhead
//! sending and as many claimed ahead, so a slot freed by a finished send is taken at once
//! instead of waiting for the next claim's round trip through the writer. Whenever it holds
//! fewer, it asks the channel's [`crate::policy::Gate`] how many rows it may claim (or until
//! when to wait), claims them, and starts one task per row once the row has a bulkhead slot.
//! The task ([`send_one`]) goes through four stages: admit (the gate's [`SendPermit`], or the
//! row goes back unsent with its attempt refunded), send, classify ([`decide`], pure) and
//! record. Enqueues in this process of rows due now wake the loop at once; polling finds rows
//! written by other processes, rows scheduled for later and retries coming due. The table is the
//! truth: wake-ups and polls are only hints.

mod commit;
mod decide;
mod digest;
pub(crate) mod retry;
mod rules;

use std::sync::Arc;
use std::time::Duration;

use notifyd_channels::{DeliveryError, Receipt, SendContext};
use tokio::sync::{OwnedSemaphorePermit, mpsc, watch};
use tokio::task::JoinSet;

use crate::clock::{self, Instant};
use crate::config::DispatcherConfig;
use crate::outbox::limits::ClusterLimits;
use crate::outbox::{
    Claimed, Clock, Completion, OpenBreakerMove, Outbox, Outcome, Retention, State, Validation,
};
use crate::policy::{ClaimAnswer, RowLease, SendPermit, Unsent};
use crate::registry::{ChannelRuntime, Registry};
use crate::submission;
use crate::systemd::Notifier;
use crate::templates::Templates;

/// The longest a channel loop waits between claims that fail (the queue is unreachable).
const MAX_CLAIM_BACKOFF: Duration = Duration::from_secs(5);

pub(crate) use decide::{Decision, DecisionKind, Ended, Rules, Sent, decide, released, unsent};

/// Tells the dispatcher to stop: first `stop` (claim no more, let sends finish), then, after the
/// grace period, `abandon` (cancel the rest and release their rows).
#[derive(Clone)]
struct Signals {
    stop: watch::Receiver<bool>,
    abandon: watch::Receiver<bool>,
}

/// Whether a dispatcher should keep going.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Halt {
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
    /// The wall clock the delivery rules read (quiet hours, `deliver_between`).
    wall: Clock,
    signals: Signals,
    /// Finished sends' outcomes, to the committer.
    pending: mpsc::UnboundedSender<commit::Pending>,
    /// What digests are rendered with.
    templates: Arc<Templates>,
}

/// The delivery side of the daemon.
pub(crate) struct Dispatcher {
    outbox: Arc<dyn Outbox>,
    registry: Arc<Registry>,
    config: DispatcherConfig,
    retention: Retention,
    notifier: Notifier,
    templates: Arc<Templates>,
    wall: Clock,
}

impl Dispatcher {
    /// A dispatcher over these channels.
    pub(crate) fn new(
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
            templates: Arc::default(),
            wall: Clock::System,
        }
    }

    /// The templates digests are rendered with (`digest_template`); none by default.
    pub(crate) fn with_templates(mut self, templates: Arc<Templates>) -> Self {
        self.templates = templates;
        self
    }

    /// The delivery rules read the time from `wall` instead of the system clock (tests move a
    /// [`crate::outbox::ManualClock`] across a daylight-saving change).
    #[cfg(test)]
    pub(crate) fn reading_wall_time_from(mut self, wall: Clock) -> Self {
        self.wall = wall;
        self
    }

    /// Runs until `halt` says otherwise. On [`Halt::Shutdown`] in-flight sends get
    /// `shutdown_grace`, the rest are abandoned and their notifications released to the queue.
    /// On [`Halt::Replaced`] (a reload started a new dispatcher) it only stops claiming and lets
    /// its in-flight sends finish, each bounded by its own timeout.
    pub(crate) async fn run(self, mut halt: watch::Receiver<Halt>) {
        let (stop_tx, stop) = watch::channel(false);
        let (abandon_tx, abandon) = watch::channel(false);
        let signals = Signals { stop, abandon };
        let (pending, outcomes) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            registry: self.registry.clone(),
            outbox: self.outbox.clone(),
            config: self.config.clone(),
            retention: self.retention.clone(),
            wall: self.wall.clone(),
            signals: signals.clone(),
            pending,
            templates: self.templates.clone(),
        });
        let mut loops = JoinSet::new();
        loops.spawn(commit::commit_loop(
            self.outbox.clone(),
            self.registry.clone(),
            outcomes,
        ));
        for rt in self.registry.iter() {
            loops.spawn(channel_loop(rt.clone(), shared.clone()));
        }
        loops.spawn(sweep_loop(shared.clone(), self.notifier.clone()));
        if let Some(cluster) = self.outbox.cluster_limits() {
            loops.spawn(shared_holds_loop(shared.clone(), cluster));
        }

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
        let deadline = clock::now() + self.config.shutdown_grace;
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
            rt.gate.leases_returned().await;
        }
    }
}

async fn channel_loop(rt: Arc<ChannelRuntime>, shared: Arc<Shared>) {
    let (outbox, config) = (&shared.outbox, &shared.config);
    let mut stop = shared.signals.stop.clone();
    let lease = rt.lease(config.lease_margin);
    let (feed, rows) = mpsc::unbounded_channel();
    tokio::spawn(feed_slots(rt.clone(), shared.clone(), rows));
    // Claims failed in a row: the queue is unreachable, and each wait is longer.
    let mut failures: u32 = 0;
    loop {
        if *stop.borrow() {
            return;
        }
        let first = tokio::select! {
            permit = rt.gate.lease() => match permit {
                Some(p) => p,
                None => return,
            },
            _ = stop.changed() => return,
        };
        // Each claimed row must get its rate-limit token within half the lease margin.
        let mut claim = match rt
            .gate
            .claim(first, config.claim_batch, config.lease_margin / 2)
        {
            ClaimAnswer::Claim(claim) => claim,
            ClaimAnswer::Wait { until } => {
                tokio::select! {
                    _ = tokio::time::sleep_until(until) => {}
                    _ = stop.changed() => return,
                }
                continue;
            }
            ClaimAnswer::Open { until } => {
                while_open(&rt, &shared.registry, outbox, until).await;
                tokio::select! {
                    _ = tokio::time::sleep_until(until) => {}
                    _ = rt.wake.notified() => {}
                    _ = stop.changed() => return,
                }
                continue;
            }
        };
        let want = claim.want() as usize;
        let claimed = match outbox.claim(&rt.name, want, lease).await {
            Ok(c) => c,
            Err(e) => {
                drop(claim);
                failures = failures.saturating_add(1);
                let wait = claim_backoff(config.poll_interval, failures);
                if failures == 1 {
                    tracing::warn!(channel = %rt.name, error = %e, "Claim failed; retrying with backoff.");
                } else {
                    tracing::debug!(channel = %rt.name, error = %e, retry_in = ?wait, "Claim failed again.");
                }
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.changed() => {}
                }
                continue;
            }
        };
        if failures > 0 {
            tracing::info!(channel = %rt.name, failed_claims = failures, "Claims work again.");
            failures = 0;
        }
        let got = claimed.len();
        let recipients = if claimed.is_empty() {
            rules::Recipients::Known(Default::default())
        } else {
            rules::Recipients::of(outbox.as_ref(), &claimed).await
        };
        for row in claimed {
            let Some(leased) = claim.row().await else {
                return;
            };
            if feed.send((row, leased, recipients.clone())).is_err() {
                return;
            }
        }
        // Probe slots no row took are given back.
        drop(claim);
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
    let until_ms = clock::wall_at(until);
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

/// How long a channel loop waits after `failures` claims failed in a row: the poll interval,
/// doubled per failure up to [`MAX_CLAIM_BACKOFF`], so an unreachable queue is not hammered.
fn claim_backoff(poll_interval: Duration, failures: u32) -> Duration {
    let doubled = poll_interval.saturating_mul(1 << failures.saturating_sub(1).min(16));
    doubled.min(MAX_CLAIM_BACKOFF.max(poll_interval))
}

/// Waits for a wake-up, the poll interval, or shutdown.
async fn idle(rt: &ChannelRuntime, config: &DispatcherConfig, stop: &mut watch::Receiver<bool>) {
    tokio::select! {
        _ = rt.wake.notified() => {}
        _ = tokio::time::sleep(config.poll_interval) => {}
        _ = stop.changed() => {}
    }
}

/// Hands claimed rows their bulkhead slots in claim order (priority, then due time), and starts
/// each one's send. Once stopping, rows still waiting get no slot: they are released unsent.
async fn feed_slots(
    rt: Arc<ChannelRuntime>,
    shared: Arc<Shared>,
    mut rows: mpsc::UnboundedReceiver<(Claimed, RowLease, rules::Recipients)>,
) {
    let mut stop = shared.signals.stop.clone();
    while let Some((row, leased, recipients)) = rows.recv().await {
        let slot = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => None,
            permit = rt.gate.slot() => permit,
        };
        tokio::spawn(send_one(
            rt.clone(),
            shared.clone(),
            (row, recipients),
            leased,
            slot,
        ));
    }
}

/// Delivers one claimed notification and writes the outcome back, in four stages: **admit**
/// (the gate's word: a row claimed ahead that waited too long for its slot, or meanwhile saw
/// the channel held, its breaker leave `closed` or the daemon stop, goes back unsent with its
/// attempt refunded), **send** (its rate-limit token, then the provider under the channel's
/// total timeout), **classify** (the breaker's verdict, then [`decide`]) and **record** (health,
/// counters, logs, then the outcome goes to the committer, which writes it with others). The
/// row's lease and slot are held until the outcome is committed.
async fn send_one(
    rt: Arc<ChannelRuntime>,
    shared: Arc<Shared>,
    (mut row, recipients): (Claimed, rules::Recipients),
    leased: RowLease,
    slot: Option<OwnedSemaphorePermit>,
) {
    let started_at_ms = clock::now_ms();
    let patience = shared.config.lease_margin / 2;
    let admitted = rt
        .gate
        .admit(leased, slot, patience, row.expires_at_ms, &row.message.to);
    let rules = Rules {
        channel: &rt.name,
        policy: &rt.policy,
        fault_hold: shared.config.fault_hold,
    };
    let (completion, held) = match admitted {
        Err((why, held)) => {
            note_unsent(&rt, &row, why);
            (unsent(&row, why, started_at_ms, clock::now()), held)
        }
        Ok(permit)
            if let Some(settled) = settle(&rules, &shared.registry, &row)
                .or_else(|| rules::apply(&rt, &row, &recipients, shared.wall.now_ms())) =>
        {
            // Never reaches the provider: no token is taken, a probe slot is free again.
            (settled, permit.unsent())
        }
        Ok(permit)
            if let Err(ended) =
                digest::compose(shared.outbox.as_ref(), &shared.templates, &rt, &mut row).await =>
        {
            let completion = Completion {
                id: row.message.id.clone().into(),
                attempt: row.attempt,
                lease: row.lease,
                outcome: ended,
                record: None,
                events: Vec::new(),
            };
            (completion, permit.unsent())
        }
        Ok(mut permit) => {
            let mut abandon = shared.signals.abandon.clone();
            let answer = tokio::select! {
                answer = send(&rt, &row, &mut permit) => Some(answer),
                _ = abandon.wait_for(|a| *a) => None,
            };
            match answer {
                // Abandoned at shutdown: given back unsent.
                None => (released(&row), permit.unsent()),
                // No token in time, or the channel was held while it waited.
                Some(Err(why)) => {
                    note_unsent(&rt, &row, why);
                    (
                        unsent(&row, why, started_at_ms, clock::now()),
                        permit.unsent(),
                    )
                }
                Some(Ok((result, latency))) => {
                    let (next_probe, held) = permit.record(decide::verdict(&result));
                    let sent = Sent {
                        result,
                        started_at_ms,
                        latency,
                        next_probe_in: next_probe
                            .map(|t| t.saturating_duration_since(clock::now())),
                    };
                    let decision = decide(&rules, &row, sent, clock::now_ms(), &mut rand::rng());
                    (record(&rt, &row, decision, latency), held)
                }
            }
        }
    };
    // The committer writes it with others and then releases the row's lease and slot.
    let done = commit::Pending {
        completion,
        held,
        rt,
    };
    if let Err(mpsc::error::SendError(done)) = shared.pending.send(done) {
        // The committer is gone (it stops only once every lease came back): write it here.
        commit::write(shared.outbox.as_ref(), &shared.registry, &done).await;
    }
}

/// The outcome of an admitted row that must not be sent after all: one claimed past its attempt
/// budget without a recorded outcome ([`decide::past_budget`]), or one another program inserted
/// that fails the checks the API would have made ([`Validation::Pending`]): it ends as the API
/// would have answered. Rows notifyd wrote were checked when accepted and pass at no cost.
fn settle(rules: &Rules<'_>, registry: &Registry, row: &Claimed) -> Option<Completion> {
    if let Some(dead) = decide::past_budget(rules, row) {
        return Some(dead);
    }
    let Validation::Pending { fallback } = &row.validation else {
        return None;
    };
    let refused = submission::check(registry, &row.message, fallback, "body")
        .and_then(|()| match &row.deliver_between {
            Some(window) => submission::check_deliver_between(window),
            None => Ok(()),
        })
        .err()?;
    tracing::warn!(notification_id = %row.message.id, channel = %rules.channel, code = refused.code,
        field = %refused.field, "A notification inserted with plain SQL failed validation.");
    Some(Completion {
        events: Vec::new(),
        id: row.message.id.clone().into(),
        attempt: row.attempt,
        lease: row.lease,
        outcome: Outcome::Finish {
            state: State::Failed,
            code: refused.code.into(),
            error: refused.to_string(),
            fallback: false,
        },
        record: None,
    })
}

/// Takes the row's rate-limit token, then calls the provider under the channel's total timeout;
/// or says why the row goes back unsent after all.
async fn send(
    rt: &ChannelRuntime,
    row: &Claimed,
    permit: &mut SendPermit,
) -> Result<(Result<Receipt, DeliveryError>, Duration), Unsent> {
    let ctx = SendContext {
        attempt: row.attempt,
        idempotency_key: row.message.id.clone(),
    };
    // An e-mail channel's messages carry their signed one-click unsubscribe link (RFC 8058).
    let linked;
    let message = match &rt.unsubscribe {
        Some(links) => {
            linked = notifyd_channels::Message {
                list_unsubscribe: Some(links.url_for(&row.message.id, clock::now_ms())),
                ..row.message.clone()
            };
            &linked
        }
        None => &row.message,
    };
    permit.token(&row.message.to).await?;
    let start = clock::now();
    let result = tokio::time::timeout(rt.timeouts.total, rt.channel.send(message, &ctx))
        .await
        .unwrap_or_else(|_| {
            Err(DeliveryError::transient(
                "timeout",
                format!(
                    "no answer within the total timeout of {:?}",
                    rt.timeouts.total
                ),
            ))
        });
    Ok((result, clock::now().saturating_duration_since(start)))
}

/// Applies a decision to the channel (counters, hold, health) and logs it; returns the
/// completion to commit.
fn record(rt: &ChannelRuntime, row: &Claimed, d: Decision, latency: Duration) -> Completion {
    rt.stats.attempt(d.class, latency);
    if let Some((hold, because)) = d.hold {
        rt.gate.hold(hold, because);
    }
    log_decision(rt, row, &d, latency);
    if d.health.dead_critical {
        rt.record_dead_critical();
    }
    rt.record(d.health.counted, d.health.error);
    d.completion
}

/// One line per decision: DEBUG for a delivery, WARN for what will recover, ERROR for what an
/// operator must act on. The provider's message is logged with the recipient masked.
fn log_decision(rt: &ChannelRuntime, row: &Claimed, d: &Decision, latency: Duration) {
    let (id, channel, attempt) = (&row.message.id, &rt.name, row.attempt);
    let (code, error) = match &d.health.error {
        Some(e) => (e.code.as_str(), e.message.as_str()),
        None => ("", ""),
    };
    let retry_in_ms = d.retry_in.map(clock::millis).unwrap_or(0);
    match &d.kind {
        DecisionKind::Delivered => {
            tracing::debug!(notification_id = %id, channel = %channel, attempt,
            latency_ms = clock::millis(latency), "Delivered notification.")
        }
        DecisionKind::FailedOver {
            to,
            why: Ended::BreakerOpen,
        } => tracing::warn!(notification_id = %id,
            channel = %channel, to_channel = %to, attempt, code, error,
            "Breaker probe failed; failing over to the next channel."),
        DecisionKind::ProbeFailed => {
            tracing::warn!(notification_id = %id, channel = %channel, attempt,
            code, retry_in_ms, error,
            "Breaker probe failed; waiting for the next probe without spending an attempt.")
        }
        DecisionKind::Retry => {
            tracing::warn!(notification_id = %id, channel = %channel, attempt, code,
            retry_in_ms, error, "Delivery failed; will retry.")
        }
        DecisionKind::FailedOver { to, why } => {
            tracing::warn!(notification_id = %id, channel = %channel,
            to_channel = %to, attempt, code, "Failing over to the next channel: {}.", why.as_str())
        }
        DecisionKind::Dead { why } if rt.is_critical() => tracing::error!(notification_id = %id,
            channel = %channel, attempt, code, error, critical = true,
            "Critical notification is dead: {}.", why.as_str()),
        DecisionKind::Dead { why } => {
            tracing::warn!(notification_id = %id, channel = %channel, attempt,
            code, error, "Notification is dead: {}.", why.as_str())
        }
        DecisionKind::RateLimited => {
            tracing::warn!(notification_id = %id, channel = %channel, retry_in_ms,
            "Provider rate-limited the send; waiting without spending an attempt.")
        }
        DecisionKind::Failed => tracing::warn!(notification_id = %id, channel = %channel, attempt,
            class = d.class.as_str(), code, error, "Notification rejected."),
        DecisionKind::Held => {
            tracing::error!(notification_id = %id, channel = %channel, code, error,
            hold = ?d.hold.map(|h| h.0),
            "The provider refused our credentials or configuration; holding the channel. Its notifications stay queued.")
        }
        DecisionKind::WaitedForRateLimit => {}
    }
}

/// Logs why a claimed row goes back unsent.
fn note_unsent(rt: &ChannelRuntime, row: &Claimed, why: Unsent) {
    match why {
        Unsent::Expired => note_expired(rt, &row.message.id),
        Unsent::RecipientLimited { .. } => {}
        Unsent::Stopping
        | Unsent::WaitedTooLongForASlot
        | Unsent::ChannelHeld
        | Unsent::BreakerOpened
        | Unsent::ChannelLimited { .. }
        | Unsent::LimitUnreadable => tracing::debug!(notification_id = %row.message.id,
            channel = %rt.name, reason = why.as_str(), "Claimed notification released unsent."),
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
                // The status line counts the queue (a read of every live row): only for systemd.
                if notifier.listening() {
                    notifier.alive(&status_line(shared.outbox.as_ref()).await);
                }
            }
            Err(e) => tracing::warn!(error = %e, "Queue sweep failed."),
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Applies the holds other daemons on the queue shared (a provider's `Retry-After`, credentials
/// refused) to this daemon's gates, once per poll interval: one small read for every channel,
/// and the claim statement stays as it is. A hold another daemon set is in force here within
/// one poll interval; a row already waiting for its token sees it before it is sent.
async fn shared_holds_loop(shared: Arc<Shared>, cluster: Arc<dyn ClusterLimits>) {
    let mut stop = shared.signals.stop.clone();
    loop {
        match cluster.holds().await {
            Ok(holds) => {
                for hold in &holds {
                    if let Some(rt) = shared.registry.get(&hold.channel) {
                        rt.gate.hold_shared(hold);
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "Could not read the shared holds; will retry."),
        }
        tokio::select! {
            _ = tokio::time::sleep(shared.config.poll_interval) => {}
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

#[cfg(test)]
mod tests;
