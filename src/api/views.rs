//! How the API shows queue rows and channels: one struct per response body, serialized as the
//! answer and the source of its schema in the OpenAPI document (`routes.rs`), so the two cannot
//! drift. RFC 3339 times, stable field names.

use schemars::JsonSchema;
use serde::Serialize;
use serde_json::Value;

pub(crate) use crate::clock::{rfc3339, rfc3339_text};
use crate::config::Criticality;
use crate::http::ErrorBody;
use crate::outbox::{
    ChannelName, DeadLetter, Depth, FallbackTarget, NotificationId, NotificationView, Priority,
    State,
};
use crate::policy::BreakerView;
use crate::registry::ChannelRuntime;

/// `{id, state}`: a notification stored, replayed, cancelled or put back in the queue.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub(super) struct StateAnswer {
    pub id: NotificationId,
    pub state: State,
    /// Merged into this notification, which holds the same dedup key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duplicate_of: Option<NotificationId>,
}

/// `POST /v1/notifications/{id}/ack`: the chain's first notification and when it was
/// acknowledged (`already` when an earlier acknowledgement did it).
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub(super) struct AckAnswer {
    pub id: NotificationId,
    pub escalation_of: NotificationId,
    pub acknowledged_at: Option<String>,
    pub already: bool,
    /// Steps that were waiting and are now cancelled.
    pub cancelled_steps: u64,
}

/// One notification's answer in a batch, or a create's: stored, or refused.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(untagged)]
pub(super) enum ItemAnswer {
    Stored(StateAnswer),
    Refused(ErrorBody),
}

/// `POST /v1/notifications/batch`: one result per item, in order.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub(super) struct BatchAnswer {
    pub results: Vec<BatchResult>,
}

/// One item's result: the HTTP status it would have had alone, and its answer.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub(super) struct BatchResult {
    pub status: u16,
    #[serde(flatten)]
    pub answer: ItemAnswer,
}

/// `GET /v1/notifications/{id}`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub(crate) struct NotificationDetail {
    pub id: NotificationId,
    pub channel: ChannelName,
    pub to: String,
    pub state: State,
    pub priority: Priority,
    pub attempts: u32,
    pub created_at: Option<String>,
    /// While queued: when it is due.
    pub next_attempt_at: Option<String>,
    pub expires_at: Option<String>,
    pub provider_id: Option<String>,
    pub last_error: Option<LastError>,
    /// The notification this one is a fallback of.
    pub fallback_of: Option<NotificationId>,
    /// Routes left to try if this one fails for good.
    pub fallback: Vec<FallbackTarget>,
    /// Where an ingested notification came from (format, route, the sender's ids).
    pub source: Option<Value>,
    /// Notifications merged into this one by its dedup key.
    pub duplicates: u64,
    /// The digest this notification went out in.
    pub digest_id: Option<NotificationId>,
    pub digest_key: Option<String>,
    pub attempt_log: Vec<AttemptEntry>,
    pub receipts: Vec<ReceiptEntry>,
    /// What the delivery rules did to it, oldest first.
    pub events: Vec<EventEntry>,
}

/// The last failed attempt's code and message.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub(crate) struct LastError {
    pub code: Option<String>,
    pub message: Option<String>,
}

/// One attempt of a notification.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub(crate) struct AttemptEntry {
    pub attempt: u32,
    /// The channel it was sent through (several after a failover).
    pub channel: Option<ChannelName>,
    pub at: Option<String>,
    pub latency_ms: i64,
    /// `delivered` or the error class.
    pub outcome: String,
    /// What the dispatcher decided (`retry`, `dead`, `failed`, ...).
    pub decision: String,
    pub code: Option<String>,
    pub error: Option<String>,
    pub provider_id: Option<String>,
}

/// A delivery receipt a provider sent for a notification.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub(crate) struct ReceiptEntry {
    pub status: String,
    pub provider_status: String,
    pub error_code: Option<String>,
    pub at: Option<String>,
}

/// A line of a notification's timeline: a delivery rule's decision.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub(crate) struct EventEntry {
    pub at: Option<String>,
    pub rule: String,
    /// What it did, in words.
    pub detail: String,
}

/// `GET /v1/notifications/{id}` (and `notifyd status --json`).
pub(crate) fn notification(v: &NotificationView) -> NotificationDetail {
    NotificationDetail {
        id: v.id.clone(),
        channel: v.channel.clone(),
        to: v.to.clone(),
        state: v.state,
        priority: v.priority,
        attempts: v.attempts,
        created_at: rfc3339_text(v.created_at_ms),
        next_attempt_at: match v.state {
            State::Queued => rfc3339_text(v.run_at_ms),
            _ => None,
        },
        expires_at: v.expires_at_ms.and_then(rfc3339_text),
        provider_id: v.provider_id.clone(),
        last_error: v.last_code.as_ref().map(|code| LastError {
            code: Some(code.clone()),
            message: v.last_error.clone(),
        }),
        fallback_of: v.parent_id.clone(),
        fallback: v.fallback.clone(),
        source: v.source.clone(),
        duplicates: v.duplicates,
        digest_id: v.digest_id.clone(),
        digest_key: v.digest_key.clone(),
        attempt_log: v
            .attempt_log
            .iter()
            .map(|a| AttemptEntry {
                attempt: a.attempt,
                channel: a.channel.clone(),
                at: rfc3339_text(a.started_at_ms),
                latency_ms: a.latency_ms,
                outcome: a.outcome.clone(),
                decision: a.decision.clone(),
                code: a.code.clone(),
                error: a.error.clone(),
                provider_id: a.provider_id.clone(),
            })
            .collect(),
        receipts: v
            .receipts
            .iter()
            .map(|r| ReceiptEntry {
                status: r.status.clone(),
                provider_status: r.provider_status.clone(),
                error_code: r.error_code.clone(),
                at: rfc3339_text(r.received_at_ms),
            })
            .collect(),
        events: v
            .events
            .iter()
            .map(|e| EventEntry {
                at: rfc3339_text(e.at_ms),
                rule: e.rule.clone(),
                detail: e.detail.clone(),
            })
            .collect(),
    }
}

/// `GET /v1/dead-letters`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub(super) struct DeadLetters {
    /// Newest first.
    pub dead_letters: Vec<DeadLetterEntry>,
}

/// One notification whose retries ran out.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub(crate) struct DeadLetterEntry {
    pub id: NotificationId,
    pub channel: ChannelName,
    pub to: String,
    pub attempts: u32,
    pub last_error: LastError,
    pub died_at: Option<String>,
}

/// One entry of `GET /v1/dead-letters` (and `notifyd dead-letters --json`).
pub(crate) fn dead_letter(d: &DeadLetter) -> DeadLetterEntry {
    DeadLetterEntry {
        id: d.id.clone(),
        channel: d.channel.clone(),
        to: d.to.clone(),
        attempts: d.attempts,
        last_error: LastError {
            code: d.last_code.clone(),
            message: d.last_error.clone(),
        },
        died_at: rfc3339_text(d.died_at_ms),
    }
}

/// `GET /v1/channels`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub(super) struct Channels {
    pub channels: Vec<ChannelEntry>,
}

/// A configured channel now: policy, breaker, rate limit, hold, queue depth, recent health.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub(super) struct ChannelEntry {
    pub name: ChannelName,
    pub kind: &'static str,
    pub criticality: Criticality,
    pub concurrency: usize,
    pub in_flight: usize,
    pub held_until: Option<String>,
    pub held_because: Option<&'static str>,
    pub breaker: BreakerView,
    pub rate_limit: RateLimitEntry,
    pub failover: Vec<ChannelName>,
    pub queue: QueueCounts,
    pub since_start: SinceStart,
    pub last_error: Option<RecentErrorEntry>,
    /// How long the oldest due notification has waited.
    pub oldest_due_age_ms: Option<i64>,
    /// The last hour of attempts, per minute.
    pub last_hour: LastHourEntry,
}

/// The channel's rate limiter: its state, and its configuration when it has one.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub(super) struct RateLimitEntry {
    /// Sends that may start now without waiting.
    pub tokens: Option<u32>,
    /// Sends that waited for a token since the start.
    pub waits: u64,
    /// The limit is the queue's, shared by every daemon on it (PostgreSQL).
    pub shared: bool,
    /// Reservations of shared tokens this daemon made; `null` for a local limit.
    pub reservations: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_second: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_recipient_per_second: Option<f64>,
}

/// Notifications of the channel in the queue's live and dead states.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub(super) struct QueueCounts {
    pub queued: u64,
    pub sending: u64,
    pub dead: u64,
}

/// Outcomes since the daemon started.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub(super) struct SinceStart {
    pub delivered: u64,
    pub failed: u64,
    pub retried: u64,
    pub dead_critical: u64,
    pub expired_critical: u64,
}

/// The channel's most recent failed attempt.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub(super) struct RecentErrorEntry {
    pub class: &'static str,
    pub code: String,
    pub message: String,
    pub at: Option<String>,
}

/// Attempts per minute over the last hour, oldest minute first.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub(super) struct LastHourEntry {
    pub start: Option<String>,
    pub delivered: Vec<u64>,
    pub failed: Vec<u64>,
    pub retried: Vec<u64>,
}

/// One entry of `GET /v1/channels`; `oldest_due_ms` is when its oldest due notification became
/// due.
pub(super) fn channel(
    rt: &ChannelRuntime,
    depth: &[Depth],
    oldest_due_ms: Option<i64>,
    now_ms: i64,
) -> ChannelEntry {
    let count = |state: State| {
        depth
            .iter()
            .find(|d| d.channel == rt.name && d.state == state)
            .map(|d| d.count)
            .unwrap_or(0)
    };
    let health = rt.health();
    let rate = rt.policy.rate_limit.as_ref();
    let hour = rt.per_minute.last_hour(now_ms);
    ChannelEntry {
        name: rt.name.clone(),
        kind: rt.kind,
        criticality: rt.policy.criticality,
        concurrency: rt.policy.concurrency,
        in_flight: rt.in_flight(),
        held_until: health.held_until_ms.and_then(rfc3339_text),
        held_because: health.held_because,
        breaker: rt.gate.breaker().view(),
        rate_limit: RateLimitEntry {
            tokens: rt.gate.limiter().tokens(),
            waits: rt.gate.limiter().waits(),
            shared: rt.gate.limiter().is_shared(),
            reservations: rt.gate.limiter().reservations(),
            per_second: rate.map(|r| r.channel.per_second()),
            burst: rate.map(|r| r.channel.burst),
            per_recipient_per_second: rate
                .and_then(|r| r.per_recipient.as_ref())
                .map(|r| r.per_second()),
        },
        failover: rt.policy.failover.clone(),
        queue: QueueCounts {
            queued: count(State::Queued),
            sending: count(State::Sending),
            dead: count(State::Dead),
        },
        since_start: SinceStart {
            delivered: health.delivered,
            failed: health.failed,
            retried: health.retried,
            dead_critical: health.dead_critical,
            expired_critical: health.expired_critical,
        },
        last_error: health.last_error.as_ref().map(|e| RecentErrorEntry {
            class: e.class.as_str(),
            code: e.code.clone(),
            message: e.message.clone(),
            at: rfc3339_text(e.at_ms),
        }),
        oldest_due_age_ms: oldest_due_ms.map(|at| crate::clock::elapsed_ms(now_ms, at)),
        last_hour: LastHourEntry {
            start: rfc3339_text(hour.start_ms),
            delivered: hour.delivered,
            failed: hour.failed,
            retried: hour.retried,
        },
    }
}

/// `GET /v1/notifications/{id}/content`: what a notification says.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub(super) struct ContentAnswer {
    pub id: NotificationId,
    pub subject: Option<String>,
    pub body: Option<String>,
    pub html: Option<String>,
    pub data: Option<Value>,
}

/// `POST /v1/channels/{channel}/dead-letters/replay`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub(super) struct ChannelReplayed {
    pub channel: ChannelName,
    /// Dead letters put back in the queue.
    pub replayed: u64,
}

/// `POST /v1/inbound/{channel}`: what a receipt matched.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub(super) struct ReceiptAnswer {
    pub matched: bool,
    pub notification_id: Option<NotificationId>,
    /// This receipt was already stored: nothing changed again.
    pub duplicate: bool,
}

/// `PUT` and `GET /v1/recipients/{address}`: the preferences with the normalized address.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub(super) struct RecipientAnswer {
    pub address: String,
    #[serde(flatten)]
    pub preferences: crate::recipients::Preferences,
}

/// `DELETE /v1/recipients/{address}`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub(super) struct RecipientDeleted {
    pub address: String,
    pub deleted: bool,
}

/// `GET /healthz` and `/readyz`: `ok` or `ready`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub(super) struct Status {
    pub status: &'static str,
}
