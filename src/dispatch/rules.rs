//! The delivery rules of a recipient and a time, applied to a claimed row before it is sent:
//! a channel the recipient opted out of or muted ends it `failed` unsent (its fallback route,
//! if any, is queued: that one is checked against its own recipient); one due inside quiet
//! hours or outside its `deliver_between` goes back to the queue until the right time, with no
//! attempt spent. Each decision is a [`RuleEvent`] committed with the row's change. The
//! decisions themselves are pure ([`crate::rules`]); this only reads and writes them.

use std::collections::HashMap;
use std::sync::Arc;

use crate::outbox::{
    Claimed, ClaimedPreferences, Completion, Outbox, Outcome, Rule, RuleEvent, State,
};
use crate::recipients::{Preferences, normalize};
use crate::registry::ChannelRuntime;
use crate::rules::consent::{self, Refusal};
use crate::rules::quiet_hours::{self, Hold, RecipientQuiet};

/// How long a row waits when its recipient's preferences could not be read (the store is
/// failing): long enough not to spin, short enough that an outage costs little delay.
const UNREADABLE_WAIT_MS: i64 = 5_000;

/// The preferences of a claim's recipients, read in one query.
#[derive(Debug, Clone)]
pub(super) enum Recipients {
    /// By normalized address; an address without an entry has none.
    Known(Arc<HashMap<String, Preferences>>),
    /// The store could not be read: rows wait rather than risk a send to someone who opted out.
    Unreadable,
}

impl Recipients {
    /// The preferences of every recipient of `rows`: those the claim read with the rows, or,
    /// when it did not read them all, one read of the store.
    pub(super) async fn of(outbox: &dyn Outbox, rows: &[Claimed]) -> Self {
        if let Some(known) = Self::read_by_claim(rows) {
            return known;
        }
        let mut addresses: Vec<String> = rows.iter().map(|r| normalize(&r.message.to)).collect();
        addresses.sort();
        addresses.dedup();
        match outbox.preferences(&addresses).await {
            Ok(found) => Self::Known(Arc::new(found.into_iter().collect())),
            Err(e) => {
                tracing::warn!(error = %e,
                    "Could not read recipient preferences; the claimed notifications wait.");
                Self::Unreadable
            }
        }
    }

    /// The preferences the claim returned, when it returned every row's. One that could not
    /// be decoded makes the whole claim wait, as a failed read of the store does.
    fn read_by_claim(rows: &[Claimed]) -> Option<Self> {
        let mut known = HashMap::new();
        for row in rows {
            match &row.preferences {
                ClaimedPreferences::NotRead => return None,
                ClaimedPreferences::Unreadable => return Some(Self::Unreadable),
                ClaimedPreferences::Read(None) => {}
                ClaimedPreferences::Read(Some(prefs)) => {
                    known.insert(normalize(&row.message.to), prefs.clone());
                }
            }
        }
        Some(Self::Known(Arc::new(known)))
    }

    fn of_row(&self, row: &Claimed) -> Result<Option<&Preferences>, ()> {
        match self {
            // Most claims meet no recipient with stored preferences: no address is normalized
            // (a new string each) and hashed for them.
            Self::Known(map) if map.is_empty() => Ok(None),
            Self::Known(map) => Ok(map.get(&normalize(&row.message.to))),
            Self::Unreadable => Err(()),
        }
    }
}

/// The completion of a row the rules stop or hold, or `None` when it may be sent now.
pub(super) fn apply(
    rt: &ChannelRuntime,
    row: &Claimed,
    recipients: &Recipients,
    now_ms: i64,
) -> Option<Completion> {
    let Ok(prefs) = recipients.of_row(row) else {
        return Some(completion(
            row,
            Outcome::Retry {
                run_at_ms: now_ms + UNREADABLE_WAIT_MS,
                refund_attempt: true,
                code: "preferences_unavailable".into(),
                error: "the recipient's preferences could not be read".into(),
            },
            Vec::new(),
        ));
    };
    if let Some(refusal) = consent::refusal(&rt.name, row.priority, prefs) {
        tracing::info!(notification_id = %row.message.id, channel = %rt.name,
            code = refusal.code(), "Notification not sent: {}.", refusal.message());
        let rule = match refusal {
            Refusal::OptedOut => Rule::OptedOut,
            Refusal::Muted => Rule::Muted,
        };
        return Some(completion(
            row,
            Outcome::Finish {
                state: State::Failed,
                code: refusal.code().into(),
                error: refusal.message().into(),
                fallback: true,
            },
            vec![event(row, now_ms, rule, refusal.message().into())],
        ));
    }
    let recipient = match prefs.map(Preferences::checked) {
        Some(Ok(c)) => prefs.map(|p| RecipientQuiet {
            zone: c.zone,
            window: c.quiet_hours,
            high_priority_passes: p.high_priority_passes,
        }),
        // Stored preferences were validated when written; one that no longer reads (a zone the
        // tz database dropped) counts as none, and says so.
        Some(Err((field, problem))) => {
            tracing::warn!(notification_id = %row.message.id, field = %field, problem = %problem,
                "Stored recipient preferences are not valid; ignoring their time rules.");
            None
        }
        None => None,
    };
    let between = row.deliver_between.as_ref().and_then(|b| b.check().ok());
    let wait = quiet_hours::wait(
        row.priority,
        rt.quiet.as_ref(),
        recipient.as_ref(),
        between.as_ref(),
        now_ms,
    )?;
    tracing::debug!(notification_id = %row.message.id, channel = %rt.name,
        code = wait.hold.code(), until_ms = wait.until_ms, "Notification held: {}.", wait.detail);
    let rule = match wait.hold {
        Hold::QuietHours => Rule::QuietHours,
        Hold::DeliverBetween => Rule::DeliverBetween,
    };
    Some(completion(
        row,
        Outcome::Retry {
            run_at_ms: wait.until_ms,
            refund_attempt: true,
            code: wait.hold.code().into(),
            error: wait.detail.clone(),
        },
        vec![event(row, now_ms, rule, wait.detail)],
    ))
}

fn event(row: &Claimed, at_ms: i64, rule: Rule, detail: String) -> RuleEvent {
    RuleEvent {
        notification: row.message.id.clone().into(),
        at_ms,
        rule,
        detail,
    }
}

/// A completion with no attempt record: the provider was never called.
fn completion(row: &Claimed, outcome: Outcome, events: Vec<RuleEvent>) -> Completion {
    Completion {
        id: row.message.id.clone().into(),
        attempt: row.attempt,
        lease: row.lease,
        outcome,
        record: None,
        events,
    }
}
