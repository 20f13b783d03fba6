//! How the API shows queue rows and channels: RFC 3339 times, stable field names.

use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::outbox::{DeadLetter, Depth, NotificationView, State};
use crate::registry::ChannelRuntime;

/// Unix milliseconds as RFC 3339 (UTC).
pub fn rfc3339(ms: i64) -> Value {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .map(Value::String)
        .unwrap_or(Value::Null)
}

/// `GET /v1/notifications/{id}`.
pub fn notification(v: &NotificationView) -> Value {
    let attempts: Vec<Value> = v
        .attempt_log
        .iter()
        .map(|a| {
            json!({
                "attempt": a.attempt,
                "channel": a.channel,
                "at": rfc3339(a.started_at_ms),
                "latency_ms": a.latency_ms,
                "outcome": a.outcome,
                "decision": a.decision,
                "code": a.code,
                "error": a.error,
                "provider_id": a.provider_id,
            })
        })
        .collect();
    let next_attempt_at = match v.state {
        State::Queued => rfc3339(v.run_at_ms),
        _ => Value::Null,
    };
    json!({
        "id": v.id,
        "channel": v.channel,
        "to": v.to,
        "state": v.state,
        "priority": v.priority,
        "attempts": v.attempts,
        "created_at": rfc3339(v.created_at_ms),
        "next_attempt_at": next_attempt_at,
        "expires_at": v.expires_at_ms.map(rfc3339),
        "provider_id": v.provider_id,
        "last_error": v.last_code.as_ref().map(|code| json!({"code": code, "message": v.last_error})),
        "fallback_of": v.parent_id,
        "fallback": v.fallback,
        "source": v.source,
                "attempt_log": attempts,
        "receipts": v.receipts.iter().map(|r| json!({
            "status": r.status,
            "provider_status": r.provider_status,
            "error_code": r.error_code,
            "at": rfc3339(r.received_at_ms),
        })).collect::<Vec<_>>(),
        "events": v.events.iter().map(|e| json!({
            "at": rfc3339(e.at_ms),
            "rule": e.rule,
            "detail": e.detail,
        })).collect::<Vec<_>>(),
    })
}

/// One entry of `GET /v1/dead-letters`.
pub fn dead_letter(d: &DeadLetter) -> Value {
    json!({
        "id": d.id,
        "channel": d.channel,
        "to": d.to,
        "attempts": d.attempts,
        "last_error": {"code": d.last_code, "message": d.last_error},
        "died_at": rfc3339(d.died_at_ms),
    })
}

/// One entry of `GET /v1/channels`.
pub fn channel(rt: &ChannelRuntime, depth: &[Depth]) -> Value {
    let count = |state: State| {
        depth
            .iter()
            .find(|d| d.channel == rt.name && d.state == state)
            .map(|d| d.count)
            .unwrap_or(0)
    };
    let health = rt.health();
    json!({
        "name": rt.name,
        "kind": rt.kind,
        "criticality": rt.policy.criticality,
        "concurrency": rt.policy.concurrency,
        "in_flight": rt.in_flight(),
        "held_until": health.held_until_ms.map(rfc3339),
        "held_because": health.held_because,
        "breaker": rt.gate.breaker().view(),
        "rate_limit": {
            "tokens": rt.gate.limiter().tokens(),
            "waits": rt.gate.limiter().waits(),
            "shared": rt.gate.limiter().is_shared(),
            "reservations": rt.gate.limiter().reservations(),
        },
        "failover": rt.policy.failover,
        "queue": {"queued": count(State::Queued), "sending": count(State::Sending), "dead": count(State::Dead)},
        "since_start": {
            "delivered": health.delivered,
            "failed": health.failed,
            "retried": health.retried,
            "dead_critical": health.dead_critical,
            "expired_critical": health.expired_critical,
        },
        "last_error": health.last_error.as_ref().map(|e| json!({
            "class": e.class, "code": e.code, "message": e.message, "at": rfc3339(e.at_ms)
        })),
    })
}

/// What the console's overview adds to a `GET /v1/channels` entry: the configured rate limit,
/// the oldest due notification's age, and the last hour of attempts per minute.
pub fn channel_extras(
    entry: &mut Value,
    rt: &ChannelRuntime,
    oldest_due_ms: Option<i64>,
    now_ms: i64,
) {
    if let Some(rate) = &rt.policy.rate_limit {
        entry["rate_limit"]["per_second"] = json!(rate.channel.per_second());
        entry["rate_limit"]["burst"] = json!(rate.channel.burst);
        entry["rate_limit"]["per_recipient_per_second"] =
            json!(rate.per_recipient.as_ref().map(|r| r.per_second()));
    }
    entry["oldest_due_age_ms"] = json!(oldest_due_ms.map(|at| (now_ms - at).max(0)));
    let hour = rt.per_minute.last_hour(now_ms);
    entry["last_hour"] = json!({
        "start": rfc3339(hour.start_ms),
        "delivered": hour.delivered,
        "failed": hour.failed,
        "retried": hour.retried,
    });
}
