//! Outcomes are written back in batches. A finished send hands its completion over with what its
//! row holds (lease and bulkhead slot) and is done; one committer per dispatcher writes whatever
//! has gathered as one `Outbox::complete`, at most two at a time, and only then releases the
//! rows' leases and slots. Under load that is one queue write for hundreds of outcomes instead
//! of one each (measured in `notifyd bench`: each request costs the SQLite writer a round trip
//! and the statements' setup, and a request that fails is rerun in a savepoint of its own).

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use crate::outbox::{Completion, Outbox, Outcome};
use crate::policy::Held;
use crate::registry::{ChannelRuntime, Registry};

/// Writes in flight at once: one being committed while the next gathers.
const MAX_IN_FLIGHT: usize = 2;

/// Most outcomes in one write.
const MAX_BATCH: usize = 1024;

/// One outcome waiting to be written, with what its row holds until it is.
pub(super) struct Pending {
    pub completion: Completion,
    /// Kept for its drop: the row's lease and slot are released once the write is done.
    #[allow(dead_code)]
    pub held: Held,
    pub rt: Arc<ChannelRuntime>,
}

/// Gathers pending outcomes and writes them, batch after batch, until every sender is gone.
pub(super) async fn commit_loop(
    outbox: Arc<dyn Outbox>,
    registry: Arc<Registry>,
    mut pending: mpsc::UnboundedReceiver<Pending>,
) {
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut batch = Vec::new();
    loop {
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        if pending.recv_many(&mut batch, MAX_BATCH).await == 0 {
            return;
        }
        let batch = std::mem::take(&mut batch);
        tokio::spawn(commit(outbox.clone(), registry.clone(), batch, permit));
    }
}

/// Writes a batch of outcomes, then releases the rows. If the write fails, each outcome is
/// written on its own, so one bad row cannot cost the others their outcome (a row whose outcome
/// is lost is sent again when its lease expires).
async fn commit(
    outbox: Arc<dyn Outbox>,
    registry: Arc<Registry>,
    batch: Vec<Pending>,
    _in_flight: OwnedSemaphorePermit,
) {
    let all = batch.iter().map(|p| p.completion.clone()).collect();
    match outbox.complete(all).await {
        Ok(()) => wake_targets(&registry, batch.iter().map(|p| &p.completion)),
        Err(_) if batch.len() > 1 => {
            for p in &batch {
                write(outbox.as_ref(), &registry, p).await;
            }
        }
        Err(e) => log_lost(&batch[0], &e),
    }
    // Dropping `batch` releases every row's lease and slot.
}

/// Writes one outcome on its own.
pub(super) async fn write(outbox: &dyn Outbox, registry: &Registry, p: &Pending) {
    match outbox.complete(vec![p.completion.clone()]).await {
        Ok(()) => wake_targets(registry, std::iter::once(&p.completion)),
        Err(e) => log_lost(p, &e),
    }
}

fn log_lost(p: &Pending, e: &crate::outbox::StoreError) {
    // The lease will expire and the row will be claimed again: at-least-once holds.
    tracing::error!(notification_id = %p.completion.id, channel = %p.rt.name, error = %e,
        "Could not record the outcome; the notification will be retried when its lease expires.");
}

/// A failed-over notification wakes its new channel.
fn wake_targets<'a>(registry: &Registry, done: impl Iterator<Item = &'a Completion>) {
    for c in done {
        if let Outcome::Reroute { channel, .. } = &c.outcome {
            registry.wake(channel);
        }
    }
}
