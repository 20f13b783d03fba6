//! Pulls due notifications from the queue and delivers them.
//!
//! One loop per channel: it waits for a free slot of the channel's bulkhead, claims as many due
//! rows as it has free slots (so a claimed row never waits for a slot while its lease runs),
//! and starts one send per row. Each send's outcome is classified ([`decide`]) into the row's
//! next state and written back. Enqueues in this process wake the loop at once; polling finds
//! rows written by other processes and retries coming due. The table is the truth: wake-ups and
//! polls are only hints.

mod decide;
pub mod retry;

use std::sync::Arc;
use std::time::{Duration, Instant};

use notifyd_channels::{DeliveryError, SendContext};
use tokio::sync::{OwnedSemaphorePermit, watch};
use tokio::task::JoinSet;

use crate::config::DispatcherConfig;
use crate::outbox::{Claimed, Completion, Outbox, Outcome, State, now_ms};
use crate::registry::{ChannelRuntime, Registry};

pub use decide::decide;

/// Tells the dispatcher to stop: first `stop` (claim no more, let sends finish), then, after the
/// grace period, `abandon` (cancel the rest and release their rows).
#[derive(Clone)]
struct Signals {
    stop: watch::Receiver<bool>,
    abandon: watch::Receiver<bool>,
}

/// The delivery side of the daemon.
pub struct Dispatcher {
    outbox: Arc<dyn Outbox>,
    registry: Arc<Registry>,
    config: DispatcherConfig,
}

impl Dispatcher {
    /// A dispatcher over these channels.
    pub fn new(outbox: Arc<dyn Outbox>, registry: Arc<Registry>, config: DispatcherConfig) -> Self {
        Self {
            outbox,
            registry,
            config,
        }
    }

    /// Runs until `shutdown` turns true, then drains: in-flight sends get `shutdown_grace`, the
    /// rest are abandoned and their notifications released to the queue.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let (stop_tx, stop) = watch::channel(false);
        let (abandon_tx, abandon) = watch::channel(false);
        let signals = Signals { stop, abandon };
        let mut loops = JoinSet::new();
        for rt in self.registry.iter() {
            loops.spawn(channel_loop(
                rt.clone(),
                self.outbox.clone(),
                self.config.clone(),
                signals.clone(),
            ));
        }
        loops.spawn(sweep_loop(
            self.outbox.clone(),
            self.registry.clone(),
            self.config.sweep_interval,
            signals.stop.clone(),
        ));

        let _ = shutdown.wait_for(|s| *s).await;
        let _ = stop_tx.send(true);
        tracing::info!(grace = ?self.config.shutdown_grace, "Dispatcher stopping; letting in-flight sends finish.");
        let deadline = Instant::now() + self.config.shutdown_grace;
        let drained = tokio::time::timeout_at(deadline.into(), self.all_slots_free()).await;
        if drained.is_err() {
            tracing::warn!(
                "Shutdown grace period over; abandoning the remaining sends and releasing their notifications."
            );
            let _ = abandon_tx.send(true);
            let _ = tokio::time::timeout(Duration::from_secs(5), self.all_slots_free()).await;
        }
        loops.shutdown().await;
        tracing::info!("Dispatcher stopped.");
    }

    /// Resolves when no channel has a send in flight (each send holds its slot until its outcome
    /// is committed). The loops are stopped by then, so a drained channel stays drained.
    async fn all_slots_free(&self) {
        for rt in self.registry.iter() {
            let all = u32::try_from(rt.policy.concurrency).unwrap_or(u32::MAX);
            drop(rt.slots.acquire_many(all).await);
        }
    }
}

async fn channel_loop(
    rt: Arc<ChannelRuntime>,
    outbox: Arc<dyn Outbox>,
    config: DispatcherConfig,
    signals: Signals,
) {
    let mut stop = signals.stop.clone();
    let lease = rt.lease(config.lease_margin);
    loop {
        if *stop.borrow() {
            return;
        }
        if let Some(until) = rt.held_until() {
            tokio::select! {
                _ = tokio::time::sleep_until(until.into()) => {}
                _ = stop.changed() => return,
            }
            continue;
        }
        let first = tokio::select! {
            permit = rt.slots.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => return,
            },
            _ = stop.changed() => return,
        };
        let want = (1 + rt.slots.available_permits()).min(config.claim_batch);
        let claimed = match outbox.claim(&rt.name, want, lease).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(channel = %rt.name, error = %e, "Claim failed; will retry.");
                drop(first);
                idle(&rt, &config, &mut stop).await;
                continue;
            }
        };
        let got_all = claimed.len() == want;
        let mut first = Some(first);
        for row in claimed {
            let permit = match first.take() {
                Some(p) => p,
                // Only this loop takes slots, and it counted them: this cannot wait long.
                None => match rt.slots.clone().acquire_owned().await {
                    Ok(p) => p,
                    Err(_) => return,
                },
            };
            tokio::spawn(send_one(
                rt.clone(),
                outbox.clone(),
                config.clone(),
                row,
                permit,
                signals.abandon.clone(),
            ));
        }
        drop(first);
        if !got_all {
            idle(&rt, &config, &mut stop).await;
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

/// Delivers one claimed notification and writes the outcome back; holds its slot until then.
async fn send_one(
    rt: Arc<ChannelRuntime>,
    outbox: Arc<dyn Outbox>,
    config: DispatcherConfig,
    row: Claimed,
    permit: OwnedSemaphorePermit,
    mut abandon: watch::Receiver<bool>,
) {
    let id = row.message.id.clone();
    let attempt = row.attempt;
    let started_at = now_ms();
    let completion = if row.expires_at_ms.is_some_and(|t| t <= started_at) {
        Completion {
            id: id.clone(),
            attempt,
            outcome: Outcome::Finish {
                state: State::Expired,
                code: "expired".into(),
                error: "expires_at passed before it could be sent".into(),
                fallback: false,
            },
            record: None,
        }
    } else {
        let ctx = SendContext {
            attempt,
            idempotency_key: id.clone(),
        };
        let clock = Instant::now();
        let sent = tokio::select! {
            r = tokio::time::timeout(rt.timeouts.total, rt.channel.send(&row.message, &ctx)) => Some(r),
            _ = abandon.wait_for(|a| *a) => None,
        };
        match sent {
            None => Completion {
                id: id.clone(),
                attempt,
                outcome: Outcome::Release,
                record: None,
            },
            Some(result) => {
                let result = result.unwrap_or_else(|_| {
                    Err(DeliveryError::transient(
                        "timeout",
                        format!(
                            "no answer within the total timeout of {:?}",
                            rt.timeouts.total
                        ),
                    ))
                });
                decide(&rt, &config, &row, result, started_at, clock.elapsed())
            }
        }
    };
    if let Err(e) = outbox.complete(vec![completion]).await {
        // The lease will expire and the row will be claimed again: at-least-once holds.
        tracing::error!(notification_id = %id, channel = %rt.name, error = %e,
            "Could not record the outcome; the notification will be retried when its lease expires.");
    }
    drop(permit);
}

async fn sweep_loop(
    outbox: Arc<dyn Outbox>,
    registry: Arc<Registry>,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let names = registry.names();
    loop {
        match outbox.sweep(&names).await {
            Ok(r) if r.expired > 0 || r.orphaned > 0 => {
                tracing::info!(
                    expired = r.expired,
                    unknown_channel = r.orphaned,
                    "Swept the queue."
                );
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "Queue sweep failed."),
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
    }
}
