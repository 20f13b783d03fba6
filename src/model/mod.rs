//! The queue's vocabulary: states, priorities, what goes in, what comes out, and the two names
//! ([`NotificationId`], [`ChannelName`]). Its own module, below the stores (`outbox`), the
//! delivery rules (`rules`) and the gate (`policy`), which all speak it: the rules decide in
//! these types and the stores carry the decisions out, so neither imports the other's home.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

mod names;

pub use names::{ChannelName, NotificationId};

use crate::recipients::Preferences;
use crate::window::{BadWindow, Window, WindowSpec, Zone};

/// Milliseconds since the Unix epoch, the queue's unit of time (read from [`crate::clock`]).
pub use crate::clock::now_ms;

/// Where a notification is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Waiting for its due time or a free slot.
    Queued,
    /// Claimed by a dispatcher holding a lease.
    Sending,
    /// The provider accepted it.
    Delivered,
    /// Rejected for good (invalid recipient, permanent error); its fallback, if any, was queued.
    Failed,
    /// Retries exhausted: the dead-letter list, replayable.
    Dead,
    /// Cancelled by a caller before it was sent.
    Cancelled,
    /// Its `expires_at` passed before it could be sent.
    Expired,
}

impl State {
    /// The name used in the database and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Sending => "sending",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
            Self::Dead => "dead",
            Self::Cancelled => "cancelled",
            Self::Expired => "expired",
        }
    }

    /// Every state, in lifecycle order.
    pub const ALL: [State; 7] = [
        Self::Queued,
        Self::Sending,
        Self::Delivered,
        Self::Failed,
        Self::Dead,
        Self::Cancelled,
        Self::Expired,
    ];
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for State {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("unknown state {s:?}"))
    }
}

/// Claim order within a channel: all due `high` before `normal` before `low`.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    High,
    #[default]
    Normal,
    Low,
}

impl Priority {
    /// The name used in the database and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::High => "high",
            Self::Normal => "normal",
            Self::Low => "low",
        }
    }
}

impl Priority {
    /// The priority of a claim rank (`prio_rank`: 0 high, 1 normal, anything else low).
    pub fn of_rank(rank: i64) -> Self {
        match rank {
            0 => Self::High,
            1 => Self::Normal,
            _ => Self::Low,
        }
    }
}

impl FromStr for Priority {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "high" => Ok(Self::High),
            "normal" => Ok(Self::Normal),
            "low" => Ok(Self::Low),
            _ => Err(format!("unknown priority {s:?}")),
        }
    }
}

/// Another route to try when a notification fails for good.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct FallbackTarget {
    pub channel: ChannelName,
    pub to: String,
}

/// A fallback route as the queue keeps it: the target, and the content rendered for that
/// channel's kind when a template gives it other content than the notification's own (a
/// push that falls back to SMS sends the template's `sms.txt`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FallbackRoute {
    #[serde(flatten)]
    pub target: FallbackTarget,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Content>,
}

impl From<FallbackTarget> for FallbackRoute {
    fn from(target: FallbackTarget) -> Self {
        Self {
            target,
            content: None,
        }
    }
}

/// One escalation step as the queue keeps it: sent `after_ms` after the notification before it
/// was delivered, unless the chain was acknowledged meanwhile; with the content rendered for
/// its channel's kind when a template gives it other content (as a fallback route's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EscalationStep {
    pub after_ms: i64,
    #[serde(flatten)]
    pub target: FallbackTarget,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Content>,
}

/// A notification's place in an escalation chain: the steps still to come after it, and the
/// chain's first notification (`None` for that one itself, or outside any chain).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Escalation {
    pub steps: Vec<EscalationStep>,
    pub root: Option<NotificationId>,
}

/// How an acknowledgement arrived: the timeline says which.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckSource {
    /// `POST /v1/notifications/{id}/ack`.
    Api,
    /// The signed link in the message (`{{ ack_url }}`).
    Link,
    /// A provider's `read` receipt for one of the chain's messages.
    Receipt,
}

impl AckSource {
    /// The name on the timeline.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Api => "api",
            Self::Link => "link",
            Self::Receipt => "receipt",
        }
    }
}

/// What acknowledging a notification did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acknowledged {
    /// Acknowledged now: `root` is the chain's first notification, `cancelled` how many steps
    /// that were waiting will not be sent.
    Done {
        root: NotificationId,
        at_ms: i64,
        cancelled: u64,
    },
    /// The chain was already acknowledged, at `at_ms`: nothing changed.
    Already { root: NotificationId, at_ms: i64 },
    /// The notification carries no escalation: there is nothing to acknowledge.
    NothingToAck,
    /// No notification has that id.
    NotFound,
}

/// What a notification says, apart from where it goes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Content {
    pub subject: Option<String>,
    pub body: Option<String>,
    pub html: Option<String>,
    pub data: Option<serde_json::Value>,
}

/// A validated, rendered notification ready to be made durable.
#[derive(Debug, Clone, PartialEq)]
pub struct NewNotification {
    pub id: NotificationId,
    pub channel: ChannelName,
    pub to: String,
    pub subject: Option<String>,
    pub body: Option<String>,
    pub html: Option<String>,
    pub data: Option<serde_json::Value>,
    pub priority: Priority,
    /// When it becomes due (`send_at`, or now).
    pub run_at_ms: i64,
    pub expires_at_ms: Option<i64>,
    pub created_at_ms: i64,
    pub idempotency_key: Option<String>,
    /// Hash of the submitted content: a replay with the same key must carry the same hash.
    pub content_hash: String,
    /// Tried in order when this one fails or dies.
    pub fallback: Vec<FallbackRoute>,
    /// What it was made from when it arrived through an ingest endpoint (JSON text: format,
    /// route, the sender's ids); `None` for API, CLI and SQL submissions.
    pub source: Option<String>,
    /// The local hours it may be sent in, if the submitter gave any.
    pub deliver_between: Option<DeliverBetween>,
    /// The dedup key it holds for a window, if it carries one ([`crate::rules::dedup`]).
    pub dedup: Option<DedupClaim>,
    /// The digest it is collected into instead of being sent alone ([`crate::rules::digest`]).
    pub digest: Option<DigestJoin>,
    /// Who is told next if nobody acknowledges it ([`crate::rules::escalation`]).
    pub escalation: Escalation,
}

/// How a notification joins the digest of its (channel, recipient, key): the one open, or a new
/// one due at `until_ms`. Either closes once it holds `max` items.
#[derive(Debug, Clone, PartialEq)]
pub struct DigestJoin {
    pub key: String,
    /// When a digest this notification opens is sent (the end of its window).
    pub until_ms: i64,
    /// Items at which the digest is sent at once.
    pub max: u32,
    /// The item's template variables, for the digest template.
    pub vars: Option<serde_json::Value>,
}

/// One collected notification, as the digest template sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct DigestItem {
    pub id: NotificationId,
    pub subject: Option<String>,
    pub body: Option<String>,
    pub html: Option<String>,
    pub data: Option<serde_json::Value>,
    pub vars: Option<serde_json::Value>,
    pub created_at_ms: i64,
}

/// A dedup key a notification claims until `until_ms`. Keys are scoped to the channel and the
/// recipient: while the first holder's window runs, a notification to the same channel and
/// recipient with the same key is not stored or sent, and counts as a duplicate on the first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DedupClaim {
    pub key: String,
    /// The end of the window (exclusive), fixed by the first holder: duplicates do not extend it.
    pub until_ms: i64,
}

/// What enqueueing one notification did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Enqueued {
    /// Newly stored.
    Created { id: NotificationId },
    /// The idempotency key was already used with the same content: nothing new was stored.
    Duplicate { id: NotificationId, state: State },
    /// The idempotency key was already used with different content.
    Conflict { id: NotificationId },
    /// Its dedup key is held by `id` inside its window: nothing new was stored, and `id`
    /// counted one more duplicate.
    Deduplicated { id: NotificationId, state: State },
}

/// The notification that already holds an idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyHolder {
    pub id: NotificationId,
    pub state: State,
    /// `None` for a row inserted by plain SQL without one: it matches no submission.
    pub content_hash: Option<String>,
}

impl KeyHolder {
    /// What a submission with this key and `content_hash` gets: the original notification when
    /// the content is the same, a conflict naming it when not.
    pub fn answer(self, content_hash: &str) -> Enqueued {
        if self.content_hash.as_deref() == Some(content_hash) {
            Enqueued::Duplicate {
                id: self.id,
                state: self.state,
            }
        } else {
            Enqueued::Conflict { id: self.id }
        }
    }
}

/// The fencing token of a lease: how many times the row has been claimed. Every claim raises
/// it and nothing lowers it (not a replay, a refunded attempt or a failover, which all lower or
/// reset the attempt count), so a sender whose lease was lost can never hold the token of a
/// later lease, and its completion is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LeaseToken(pub i64);

impl LeaseToken {
    /// The tokens a claimed row may hold: at least one claim, and one the next claim can still
    /// raise. A stored row outside them (another program's SQL) is quarantined when claimed,
    /// and the claim leaves such a token as it is, so no row can fail the claim of its channel.
    pub const CLAIMED: std::ops::RangeInclusive<i64> = 1..=i64::MAX - 1;
}

/// A notification a dispatcher now holds the lease on.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub message: notifyd_channels::Message,
    /// This attempt's number (1-based), as the provider and the attempt history see it.
    pub attempt: u32,
    /// The lease's fencing token, to be carried back in the [`Completion`].
    pub lease: LeaseToken,
    pub expires_at_ms: Option<i64>,
    /// Channels it was already moved away from by failover.
    pub tried: Vec<String>,
    /// Whether it still has to pass the checks an API request passes before it is sent.
    pub validation: Validation,
    /// Its priority (the delivery rules let `high` pass).
    pub priority: Priority,
    /// The local hours it may be sent in, as stored (checked by the rule, since plain SQL may
    /// have written it).
    pub deliver_between: Option<DeliverBetween>,
    /// Set when this row is a digest: its content is rendered from its items when it is sent.
    pub digest_key: Option<String>,
    /// The recipient's preferences, when the claim read them with the row.
    pub preferences: ClaimedPreferences,
}

/// What a claim knows of a claimed row's recipient preferences. A backend that can read them
/// in the claim's own statement does (no round trip more); otherwise the dispatcher reads the
/// whole claim's in one query afterwards.
#[derive(Debug, Clone, PartialEq)]
pub enum ClaimedPreferences {
    /// Not read by the claim.
    NotRead,
    /// Read with the row: the recipient's stored preferences, or `None` when there are none.
    Read(Option<Preferences>),
    /// Stored, but they could not be decoded.
    Unreadable,
}

/// Rows one claim quarantines at most before it answers with what it has: the next claim goes
/// on with the rest, and other writes get their turn in between.
pub(crate) const QUARANTINE_PER_CLAIM: usize = 1000;

/// Latest time a row may carry (9999-12-31T23:59:59.999Z): the daemon's range for times it
/// turns into a `SystemTime`.
pub(crate) const MAX_TIME_MS: i64 = 253_402_300_799_999;

/// A claimed row's columns as a backend decoded them, checked column by column (a row that
/// fails is quarantined instead): what every backend hands the dispatcher as a [`Claimed`].
pub(crate) struct ClaimedColumns {
    pub id: String,
    pub channel: String,
    pub recipient: String,
    pub subject: Option<String>,
    pub body: Option<String>,
    pub html: Option<String>,
    pub data: Option<serde_json::Value>,
    /// Within `0..=MAX_TIME_MS`.
    pub created_at_ms: i64,
    pub attempt: u32,
    pub expires_at_ms: Option<i64>,
    pub tried: Vec<String>,
    pub lease: LeaseToken,
    pub validation: Validation,
    pub priority: Priority,
    pub deliver_between: Option<DeliverBetween>,
    pub digest_key: Option<String>,
}

impl ClaimedColumns {
    pub(crate) fn into_claimed(self) -> Claimed {
        Claimed {
            message: notifyd_channels::Message {
                list_unsubscribe: None,
                id: self.id,
                channel: self.channel,
                to: self.recipient,
                subject: self.subject,
                body: self.body,
                html: self.html,
                data: self.data,
                created_at: crate::clock::system_time(self.created_at_ms),
            },
            attempt: self.attempt,
            lease: self.lease,
            expires_at_ms: self.expires_at_ms,
            tried: self.tried,
            validation: self.validation,
            priority: self.priority,
            deliver_between: self.deliver_between,
            digest_key: self.digest_key,
            preferences: ClaimedPreferences::NotRead,
        }
    }
}

/// Whether a claimed notification was validated when it was written.
#[derive(Debug, Clone, PartialEq)]
pub enum Validation {
    /// Written by notifyd (API, CLI, a fallback route's child): validated as it was accepted.
    Done,
    /// Inserted by another program with plain SQL: checked like an API request before it is
    /// sent. Carries its fallback routes, which are checked too.
    Pending { fallback: Vec<FallbackRoute> },
}

/// How a leased notification's attempt ended, to be written back.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    pub id: NotificationId,
    /// The attempt number the lease was claimed with, for the attempt history.
    pub attempt: u32,
    /// The claim's fencing token: a completion whose token is no longer the row's changes
    /// nothing but the attempt history.
    pub lease: LeaseToken,
    pub outcome: Outcome,
    pub record: Option<AttemptRecord>,
    /// What the delivery rules decided about it, written with the change (and only if the
    /// change lands), so the timeline never says what did not happen.
    pub events: Vec<RuleEvent>,
}

/// The new state of a leased notification.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The provider accepted it.
    Delivered { provider_id: Option<String> },
    /// Back to the queue until `run_at_ms`; `refund_attempt` when the attempt should not count
    /// (rate limited, breaker open, our own credentials refused).
    Retry {
        run_at_ms: i64,
        refund_attempt: bool,
        code: String,
        error: String,
    },
    /// A final state (`failed`, `dead` or `expired`); `fallback` queues the next route if any.
    Finish {
        state: State,
        code: String,
        error: String,
        fallback: bool,
    },
    /// Shutdown: the send was abandoned; due again now, attempt refunded.
    Release,
    /// Failover: move to another channel (same recipient), due now, with a fresh attempt budget.
    Reroute {
        channel: ChannelName,
        code: String,
        error: String,
    },
}

/// Why the store itself moved a notification: the `last_code` and `last_error` it writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reason {
    pub code: &'static str,
    pub message: &'static str,
}

impl Reason {
    /// Its `expires_at` passed while it was still queued.
    pub const EXPIRED: Reason = Reason {
        code: "expired",
        message: "expires_at passed before it could be sent",
    };
    /// Its channel is not configured (a reload removed it, or plain SQL named a typo).
    pub const UNKNOWN_CHANNEL: Reason = Reason {
        code: "unknown_channel",
        message: "no channel of this name is configured",
    };
    /// A stored column (JSON, priority) could not be read back: the row ends instead of
    /// failing every write that touches it.
    pub const UNREADABLE_ROW: Reason = Reason {
        code: "unreadable_row",
        message: "a stored column of this notification could not be read",
    };
    /// Due while its channel's breaker is open: waits for the next probe.
    pub const BREAKER_DEFERRED: Reason = Reason {
        code: "breaker_open",
        message: "deferred: the channel's circuit breaker is open",
    };
    /// Due while its channel's breaker is open: moved to a failover channel.
    pub const BREAKER_MOVED: Reason = Reason {
        code: "failed_over",
        message: "moved: the channel's circuit breaker is open",
    };
}

/// One row of attempt history.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptRecord {
    pub started_at_ms: i64,
    pub latency_ms: i64,
    /// `delivered` or the error class.
    pub outcome: String,
    pub code: Option<String>,
    pub error: Option<String>,
    pub provider_id: Option<String>,
    /// What the dispatcher decided (`retry`, `dead`, `failed`, ...).
    pub decision: String,
    /// The channel the attempt was made on: the one that claimed the row. Stores write it as
    /// given, so recording an attempt needs no read of the row.
    pub channel: ChannelName,
}

/// A notification as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct NotificationView {
    pub id: NotificationId,
    pub channel: ChannelName,
    pub to: String,
    pub state: State,
    pub priority: Priority,
    pub attempts: u32,
    pub created_at_ms: i64,
    pub run_at_ms: i64,
    pub expires_at_ms: Option<i64>,
    pub provider_id: Option<String>,
    pub last_code: Option<String>,
    pub last_error: Option<String>,
    pub parent_id: Option<NotificationId>,
    pub fallback: Vec<FallbackTarget>,
    /// Where an ingested notification came from (format, route, the sender's ids).
    pub source: Option<serde_json::Value>,
    /// Notifications with its dedup key that were merged into it inside its window.
    pub duplicates: u64,
    /// The digest this notification was collected into.
    pub digest_id: Option<NotificationId>,
    /// Set on a digest: the key its items share.
    pub digest_key: Option<String>,
    pub attempt_log: Vec<AttemptView>,
    pub receipts: Vec<ReceiptView>,
    /// What the delivery rules did to it, oldest first.
    pub events: Vec<EventView>,
}

/// One attempt as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct AttemptView {
    pub attempt: u32,
    /// The channel it was sent through (several after a failover).
    pub channel: Option<ChannelName>,
    pub started_at_ms: i64,
    pub latency_ms: i64,
    pub outcome: String,
    pub code: Option<String>,
    pub error: Option<String>,
    pub provider_id: Option<String>,
    pub decision: String,
}

/// A dead letter in the list.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    pub id: NotificationId,
    pub channel: ChannelName,
    pub to: String,
    pub attempts: u32,
    pub last_code: Option<String>,
    pub last_error: Option<String>,
    pub died_at_ms: i64,
}

/// How many notifications of a channel are in a live or dead state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Depth {
    pub channel: ChannelName,
    pub state: State,
    pub count: u64,
}

/// The result of a caller-requested state change (cancel, replay).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// Done; the notification is now in this state.
    Done(State),
    /// No notification has that id.
    NotFound,
    /// The notification is in a state that does not allow it.
    Refused(State),
}

/// Moves due notifications of a channel whose breaker is open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenBreakerMove {
    /// Wait: `run_at` becomes the breaker's next probe time; no attempt is spent.
    Defer { until_ms: i64 },
    /// Fail over to this channel (rows that already tried it are left alone).
    Reroute { to: ChannelName },
}

/// A provider's word on a message, normalized.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReceiptStatus {
    /// Reached the recipient (Twilio `delivered`, `read`).
    Delivered,
    /// Did not (Twilio `undelivered`, `failed`): the notification becomes `failed`.
    Failed,
    /// On its way (`queued`, `sent`, ...).
    InProgress,
}

impl ReceiptStatus {
    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Failed => "failed",
            Self::InProgress => "in_progress",
        }
    }
}

impl FromStr for ReceiptStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [Self::Delivered, Self::Failed, Self::InProgress]
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("unknown receipt status {s:?}"))
    }
}

/// A verified delivery receipt, as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundReceipt {
    pub channel: ChannelName,
    /// The provider's message id, as our `Receipt` recorded it.
    pub provider_id: String,
    pub status: ReceiptStatus,
    pub provider_status: String,
    pub error_code: Option<String>,
}

/// What storing a verified receipt did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedReceipt {
    /// The notification it belongs to, when known yet: one of the receipt's channel whose
    /// provider id it names.
    pub notification_id: Option<NotificationId>,
    /// The same (channel, provider id, provider status) was already stored: a provider's retry
    /// or a replay. Nothing was stored or changed again.
    pub duplicate: bool,
}

/// A receipt as `GET /v1/notifications/{id}` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ReceiptView {
    pub status: String,
    pub provider_status: String,
    pub error_code: Option<String>,
    pub received_at_ms: i64,
}

/// A delivery rule; the name a timeline event carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// Someone acknowledged the notification, which stops its escalation.
    Ack,
    /// A notification with the same dedup key was counted on this one instead of being sent.
    Dedup,
    /// Held back until the notification's own `deliver_between` window opens.
    DeliverBetween,
    /// Collected into, or sent as, a digest.
    Digest,
    /// Not acknowledged in time: the next escalation step was sent.
    Escalation,
    /// The recipient muted the channel.
    Muted,
    /// The recipient opted out of the channel.
    OptedOut,
    /// Held back until the recipient's (or the channel's) quiet hours end.
    QuietHours,
    /// The recipient unsubscribed through a message's link.
    Unsubscribe,
}

impl Rule {
    /// Every rule, in name order.
    pub const ALL: [Rule; 9] = [
        Rule::Ack,
        Rule::Dedup,
        Rule::DeliverBetween,
        Rule::Digest,
        Rule::Escalation,
        Rule::Muted,
        Rule::OptedOut,
        Rule::QuietHours,
        Rule::Unsubscribe,
    ];

    /// The name stored in `events.rule` and shown by the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::Ack => "ack",
            Rule::Dedup => "dedup",
            Rule::DeliverBetween => "deliver_between",
            Rule::Digest => "digest",
            Rule::Escalation => "escalation",
            Rule::Muted => "muted",
            Rule::OptedOut => "opted_out",
            Rule::QuietHours => "quiet_hours",
            Rule::Unsubscribe => "unsubscribe",
        }
    }
}

impl std::str::FromStr for Rule {
    type Err = UnknownRule;

    fn from_str(s: &str) -> std::result::Result<Self, UnknownRule> {
        Rule::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownRule(s.to_owned()))
    }
}

/// A stored rule name this daemon does not know (written by a newer one).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown rule {0:?}")]
pub struct UnknownRule(pub String);

/// What a rule did to one notification at one time: a line of its timeline, written in the
/// same transaction as the change it explains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleEvent {
    pub notification: NotificationId,
    pub at_ms: i64,
    pub rule: Rule,
    /// What it did, in words ("held until 07:00 Europe/Paris").
    pub detail: String,
}

/// A timeline event as `GET /v1/notifications/{id}` shows it. The rule stays text, so a name
/// written by a newer daemon is still shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventView {
    pub at_ms: i64,
    pub rule: String,
    pub detail: String,
}

/// How long finished rows and unmatched receipts are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retention {
    /// Delivered, failed, expired and cancelled notifications (with their attempts and
    /// receipts) older than this are deleted. Dead letters are kept until replayed.
    pub finished_ms: i64,
    /// Receipts that never matched a notification.
    pub unmatched_receipts_ms: i64,
}

/// What a maintenance sweep changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Queued rows past their `expires_at`, now `expired` (critical channels alert on them).
    pub expired: Vec<ExpiredRow>,
    /// Rows naming a channel that is not configured (queued, or leased by a dispatcher that is
    /// gone), now `dead` with `unknown_channel`: listed and replayable once the channel exists.
    pub orphaned: u64,
    /// Finished notifications deleted by retention.
    pub purged: u64,
    /// Unmatched receipts deleted by retention.
    pub receipts_purged: u64,
}

/// A notification the sweep expired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiredRow {
    pub id: NotificationId,
    pub channel: ChannelName,
}

/// A leased row's next state. Every change also drops the lease (`lease_owner`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum RowChange {
    /// `delivered`, with the provider's id; the last error is cleared.
    Deliver { provider_id: Option<String> },
    /// Back to `queued`, due at `run_at_ms`. `refund` gives the claim's attempt back. `last`,
    /// when given, replaces the last code and error (a release keeps the previous ones).
    Requeue {
        run_at_ms: i64,
        refund: bool,
        last: Option<(String, String)>,
    },
    /// A final state: `failed`, `dead` or `expired`.
    End {
        state: State,
        code: String,
        error: String,
    },
    /// Failover in place: onto `channel`, the current channel added to `tried`, `queued` and due
    /// at `run_at_ms`, its attempt count back to zero.
    Move {
        channel: String,
        run_at_ms: i64,
        code: String,
        error: String,
    },
}

/// Why a channel sends nothing for a while.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldReason {
    /// The provider answered a rate limit with `Retry-After`: the limit is the account's.
    RetryAfter,
    /// The provider refused our credentials or configuration.
    ChannelFault,
}

impl HoldReason {
    /// What `GET /v1/channels` shows as `held_because`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RetryAfter => "the provider asked to wait (Retry-After)",
            Self::ChannelFault => "the provider refused our credentials or configuration",
        }
    }

    /// How a shared store writes it.
    pub fn code(self) -> &'static str {
        match self {
            Self::RetryAfter => "retry_after",
            Self::ChannelFault => "channel_fault",
        }
    }

    /// The reason a shared store wrote as [`HoldReason::code`].
    pub fn from_code(code: &str) -> Option<Self> {
        [Self::RetryAfter, Self::ChannelFault]
            .into_iter()
            .find(|r| r.code() == code)
    }
}

/// A notification's own delivery window as submitted and stored:
/// `{"start":"09:00","end":"17:00","time_zone":"Europe/Paris"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(example = serde_json::json!({"start": "09:00", "end": "17:00", "time_zone": "Europe/Paris"}))]
pub struct DeliverBetween {
    /// Local time the window opens, `HH:MM` or `HH:MM:SS`.
    pub start: String,
    /// Local time it closes (exclusive); earlier than `start` means the next day.
    pub end: String,
    /// IANA zone the times are in; the recipient's, else the channel's, when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
}

/// A checked `deliver_between`.
#[derive(Debug, Clone, PartialEq)]
pub struct Between {
    pub window: Window,
    pub zone: Option<Zone>,
}

impl DeliverBetween {
    /// Checks the window and the zone; the error names the part at fault (`start`, `end`,
    /// `time_zone`).
    pub fn check(&self) -> Result<Between, BadWindow> {
        let window = Window::from_spec(&WindowSpec {
            start: self.start.clone(),
            end: self.end.clone(),
        })?;
        let zone = match &self.time_zone {
            Some(name) => Some(Zone::named(name).ok_or_else(|| BadWindow {
                part: "time_zone",
                message: format!("{name:?} is not an IANA time zone (such as Europe/Paris)"),
            })?),
            None => None,
        };
        Ok(Between { window, zone })
    }
}
