//! What a caller submits (HTTP body or `notifyd send` flags), and its validation into a
//! [`NewNotification`]: the one place that decides whether a notification is acceptable.

use notifyd_channels::{FieldError, Message};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::json_bounds;
use crate::outbox::{
    ChannelName, Content, DeliverBetween, Escalation, EscalationStep, FallbackRoute,
    FallbackTarget, NewNotification, NotificationId, Priority, now_ms,
};
use crate::registry::{ChannelRuntime, Registry};
use crate::rules::{dedup, escalation};
use crate::templates::Templates;

/// Longest idempotency key accepted.
const MAX_KEY_LEN: usize = 255;
/// Longest recipient accepted (push subscriptions are long JSON documents).
const MAX_TO_LEN: usize = 8192;
/// Most fallback routes one notification may carry. Each hop of a chain stores the routes left,
/// so a chain's storage grows with the square of its length: this keeps it small.
pub(crate) const MAX_FALLBACK_ROUTES: usize = 8;
/// Most bytes of content one notification stores: subject, body, html and data (as JSON text),
/// its own and that of each fallback route that was rendered differently, together.
pub(crate) const MAX_CONTENT_BYTES: usize = 1024 * 1024;

/// A notification as submitted.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(example = serde_json::json!({
    "channel": "log", "to": "alice@example.com", "subject": "Hello", "body": "It works."
}))]
pub struct Submission {
    pub channel: ChannelName,
    pub to: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vars: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<Priority>,
    /// RFC 3339 time before which it is not sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_at: Option<String>,
    /// RFC 3339 time after which it is never sent (state `expired`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// Routes tried in order if this one fails for good or dies.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fallback: Vec<FallbackTarget>,
    /// Local hours it may be sent in (`{"start":"09:00","end":"17:00","time_zone":"Europe/Paris"}`);
    /// outside them it waits, with no attempt spent, until they begin. Without `time_zone`, the
    /// recipient's zone, else the channel's `quiet_hours.time_zone`, else UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deliver_between: Option<DeliverBetween>,
    /// Another notification with this key to the same channel and recipient inside the window
    /// is not sent again: it is answered `200` with this one's id (`duplicate_of`) and counted
    /// in its `duplicates`. Content may differ.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedup_key: Option<String>,
    /// How long the `dedup_key` holds from now (`"10m"`); the channel's `dedup_window` when
    /// absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedup_window: Option<String>,
    /// Collected with the other notifications to the same recipient with this key into one
    /// digest, sent when the channel's `digest_window` ends or `digest_max` are in. Only on a
    /// channel with a `digest_window`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest_key: Option<String>,
    /// Steps sent in order while nobody acknowledges it: each `after` its previous message was
    /// delivered (at once if that one failed), until `POST /v1/notifications/{id}/ack`, the
    /// `{{ ack_url }}` link or a `read` receipt acknowledges the chain.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub escalate: Vec<EscalateRequest>,
}

/// Refuses a `deliver_between` whose times or zone are not valid, naming the part at fault
/// (`deliver_between.end`); also what a plain-SQL row's window must pass.
pub(crate) fn check_deliver_between(window: &DeliverBetween) -> Result<(), FieldError> {
    window.check().map(|_| ()).map_err(|e| {
        let code = if e.part == "time_zone" {
            "unknown_time_zone"
        } else {
            "invalid_window"
        };
        FieldError::new(format!("deliver_between.{}", e.part), code, e.message)
    })
}

/// One escalation step as submitted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(example = serde_json::json!({"after": "5m", "channel": "sms", "to": "+33612345678"}))]
pub struct EscalateRequest {
    /// How long to wait for an acknowledgement after the previous message was delivered, as a
    /// duration (`"90s"`, `"5m"`, `"1h 30m"`): more than zero, at most 30 days.
    pub after: String,
    pub channel: ChannelName,
    pub to: String,
}

pub(crate) fn parse_time(field: &str, value: &str) -> Result<i64, FieldError> {
    let t = OffsetDateTime::parse(value, &Rfc3339).map_err(|e| {
        FieldError::new(
            field,
            "invalid_time",
            format!("{value:?} is not an RFC 3339 time ({e})"),
        )
    })?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000)
        .map_err(|_| FieldError::new(field, "invalid_time", "out of range"))
}

/// Refuses JSON nested deeper than [`json_bounds::MAX_DEPTH`]: what is stored must parse again.
fn within_depth(field: &str, value: Option<&serde_json::Value>) -> Result<(), FieldError> {
    let Some(value) = value else { return Ok(()) };
    let depth = json_bounds::depth(value);
    if depth > json_bounds::MAX_DEPTH {
        let what = if field == "template" {
            "the template renders data"
        } else {
            "the value"
        };
        return Err(FieldError::new(
            field,
            "too_deep",
            format!(
                "{what} nests arrays and objects {depth} levels deep; at most {} are accepted",
                json_bounds::MAX_DEPTH
            ),
        ));
    }
    Ok(())
}

/// An idempotency key with the content hash it must be stored with for a submission to count
/// as the same request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replay {
    pub key: String,
    pub content_hash: String,
}

impl Submission {
    /// Validates against the configured channels and turns it into a row to store: renders the
    /// template (for the notification and for each fallback route of another kind), checks what
    /// only a request has (key, times), then applies [`check`], the rules every notification
    /// meets whoever wrote it.
    pub fn validate(
        mut self,
        registry: &Registry,
        templates: &Templates,
    ) -> Result<NewNotification, FieldError> {
        let runtime = channel_named(registry, "channel", &self.channel)?;
        // Hashed as submitted (template and vars, not their rendering): a replay is the same
        // request, whatever the templates say today.
        let content_hash = self.content_hash();
        within_depth("vars", self.vars.as_ref())?;
        within_depth("data", self.data.as_ref())?;
        if let Some(key) = &self.idempotency_key
            && (key.is_empty() || key.len() > MAX_KEY_LEN)
        {
            return Err(FieldError::new(
                "idempotency_key",
                "invalid_field",
                format!("must be 1 to {MAX_KEY_LEN} bytes"),
            ));
        }
        let now = now_ms();
        let dedup = self.dedup(runtime, now)?;
        let digest = crate::rules::digest::join(
            self.digest_key.as_deref(),
            &self.channel,
            runtime.policy.digest().as_ref(),
            self.vars.as_ref(),
            now,
        )
        .map_err(|e| FieldError::new("digest_key", "invalid_field", e.to_string()))?;
        let run_at = match &self.send_at {
            Some(t) => parse_time("send_at", t)?.max(now),
            None => now,
        };
        let expires_at = match &self.expires_at {
            Some(t) => {
                let at = parse_time("expires_at", t)?;
                if at <= now {
                    return Err(FieldError::new(
                        "expires_at",
                        "invalid_time",
                        "is already in the past",
                    ));
                }
                if at <= run_at {
                    return Err(FieldError::new(
                        "expires_at",
                        "invalid_time",
                        "is not after send_at",
                    ));
                }
                Some(at)
            }
            None => None,
        };
        if let Some(window) = &self.deliver_between {
            check_deliver_between(window)?;
        }
        check_route_count(self.fallback.len())?;
        let id = NotificationId::generate();
        let waits = escalation_waits(&self.escalate)?;
        if let Some(links) = templates.ack_links()
            && self.template.is_some()
            && !waits.is_empty()
        {
            // The link outlives the last step; its subject is this notification, the chain's
            // first, so a click from any step's message acknowledges the whole chain.
            let expires = escalation::ack_link_expiry(run_at, &waits, expires_at);
            let url = serde_json::Value::String(links.url(&id, expires));
            match &mut self.vars {
                Some(serde_json::Value::Object(vars)) => {
                    vars.insert("ack_url".into(), url);
                }
                vars @ (None | Some(serde_json::Value::Null)) => {
                    *vars = Some(serde_json::json!({ "ack_url": url }));
                }
                // Not an object: the render below refuses it.
                Some(_) => {}
            }
        }
        if let Some(template) = &self.template {
            if self.subject.is_some()
                || self.body.is_some()
                || self.html.is_some()
                || self.data.is_some()
            {
                return Err(FieldError::new(
                    "template",
                    "invalid_field",
                    "give either a template or inline subject/body/html/data, not both",
                ));
            }
            let vars = self.vars.clone().unwrap_or(serde_json::Value::Null);
            let rendered = templates.render(template, runtime.kind, &vars)?;
            within_depth("template", rendered.data.as_ref())?;
            self.subject = rendered.subject;
            self.body = rendered.body;
            self.html = rendered.html;
            self.data = rendered.data;
        } else if self.vars.is_some() {
            return Err(FieldError::new(
                "vars",
                "invalid_field",
                "vars are only used with a template",
            ));
        }
        let own = Content {
            subject: self.subject.clone(),
            body: self.body.clone(),
            html: self.html.clone(),
            data: self.data.clone(),
        };
        let own_family = crate::templates::family(runtime.kind);
        // What a route or step to another channel sends, when it is not the notification's own:
        // a template speaks to each kind in its own part (sms.txt for an SMS fallback).
        let content_for =
            |field: &str, channel: &ChannelName| -> Result<Option<Content>, FieldError> {
                let runtime = channel_named(registry, field, channel)?;
                Ok(match &self.template {
                    // A kind of the same family renders the same parts: nothing to do again.
                    Some(template) if crate::templates::family(runtime.kind) != own_family => {
                        let vars = self.vars.as_ref().unwrap_or(&serde_json::Value::Null);
                        let r = templates.render(template, runtime.kind, vars)?;
                        within_depth("template", r.data.as_ref())?;
                        Some(Content {
                            subject: r.subject,
                            body: r.body,
                            html: r.html,
                            data: r.data,
                        })
                        .filter(|c| *c != own)
                    }
                    _ => None,
                })
            };
        let mut fallback = Vec::with_capacity(self.fallback.len());
        for (i, route) in self.fallback.iter().enumerate() {
            let content = content_for(&format!("fallback[{i}].channel"), &route.channel)?;
            fallback.push(FallbackRoute {
                target: route.clone(),
                content,
            });
        }
        let mut steps = Vec::with_capacity(self.escalate.len());
        for ((i, step), after_ms) in self.escalate.iter().enumerate().zip(waits) {
            let content = content_for(&format!("escalate[{i}].channel"), &step.channel)?;
            steps.push(EscalationStep {
                after_ms,
                target: FallbackTarget {
                    channel: step.channel.clone(),
                    to: step.to.clone(),
                },
                content,
            });
        }
        let created_at = crate::clock::system_time(now);
        let message = Message {
            list_unsubscribe: None,
            id: id.to_string(),
            channel: self.channel.into_string(),
            to: self.to,
            subject: own.subject,
            body: own.body,
            html: own.html,
            data: own.data,
            created_at,
        };
        let content_field = if self.template.is_some() {
            "template"
        } else {
            "body"
        };
        check_all(registry, &message, &fallback, &steps, content_field)?;
        Ok(NewNotification {
            id,
            channel: message.channel.into(),
            to: message.to,
            subject: message.subject,
            body: message.body,
            html: message.html,
            data: message.data,
            priority: self.priority.unwrap_or_default(),
            run_at_ms: run_at,
            expires_at_ms: expires_at,
            created_at_ms: now,
            idempotency_key: self.idempotency_key,
            content_hash,
            fallback,
            source: None,
            deliver_between: self.deliver_between,
            dedup,
            digest,
            escalation: Escalation { steps, root: None },
        })
    }

    /// The dedup key this submission holds, as [`crate::rules::dedup::claim`] decides.
    fn dedup(
        &self,
        runtime: &ChannelRuntime,
        now: i64,
    ) -> Result<Option<crate::outbox::DedupClaim>, FieldError> {
        let refuse =
            |e: dedup::DedupError| FieldError::new(e.field(), "invalid_field", e.to_string());
        let requested = self
            .dedup_window
            .as_deref()
            .map(dedup::parse_window)
            .transpose()
            .map_err(refuse)?;
        dedup::claim(
            self.dedup_key.as_deref(),
            requested,
            runtime.policy.dedup_window,
            now,
        )
        .map_err(refuse)
    }

    /// Whether JSON text parsed straight into this read every value in it: a fallback route
    /// ignores unknown fields (every other part refuses them), skipping their values unchecked.
    pub(crate) fn read_whole(&self) -> bool {
        self.fallback.is_empty()
    }

    /// What a replay of this submission is recognised by: its idempotency key and content
    /// hash. `None` without a key.
    pub fn replay(&self) -> Option<Replay> {
        let key = self.idempotency_key.clone()?;
        Some(Replay {
            key,
            content_hash: self.content_hash(),
        })
    }

    /// SHA-256 of everything submitted but the idempotency key: two submissions with one key
    /// are "the same" exactly when this matches. (serde_json maps are sorted, so it is stable.)
    fn content_hash(&self) -> String {
        let canonical = Submission {
            idempotency_key: None,
            ..self.clone()
        };
        let bytes = serde_json::to_vec(&canonical).unwrap_or_default();
        // Into a buffer of its own size: `hex::encode` collects the digits char by char.
        let mut digits = [0u8; 64];
        match hex::encode_to_slice(Sha256::digest(bytes), &mut digits) {
            Ok(()) => String::from_utf8_lossy(&digits).into_owned(),
            Err(_) => unreachable!("a SHA-256 digest has 32 bytes, 64 hex digits"),
        }
    }
}

/// The configured channel `name`, or a refusal blamed on `field`.
fn channel_named<'r>(
    registry: &'r Registry,
    field: &str,
    name: &ChannelName,
) -> Result<&'r std::sync::Arc<ChannelRuntime>, FieldError> {
    registry.get(name).ok_or_else(|| {
        FieldError::new(
            field,
            "unknown_channel",
            format!("no channel named {name:?} is configured"),
        )
    })
}

/// Each step's wait in milliseconds, or a refusal naming the step: at most
/// [`escalation::MAX_STEPS`] steps, each `after` a duration more than zero and at most
/// [`escalation::MAX_AFTER_MS`].
fn escalation_waits(steps: &[EscalateRequest]) -> Result<Vec<i64>, FieldError> {
    if steps.len() > escalation::MAX_STEPS {
        return Err(FieldError::new(
            "escalate",
            "too_many_items",
            format!(
                "{} steps, more than the {} allowed",
                steps.len(),
                escalation::MAX_STEPS
            ),
        ));
    }
    steps
        .iter()
        .enumerate()
        .map(|(i, step)| {
            let field = format!("escalate[{i}].after");
            let wait = humantime::parse_duration(&step.after).map_err(|e| {
                FieldError::new(
                    &field,
                    "invalid_duration",
                    format!(
                        "{:?} is not a duration ({e}); write e.g. \"90s\", \"5m\", \"1h\"",
                        step.after
                    ),
                )
            })?;
            let ms = i64::try_from(wait.as_millis()).unwrap_or(i64::MAX);
            if ms <= 0 || ms > escalation::MAX_AFTER_MS {
                return Err(FieldError::new(
                    field,
                    "invalid_duration",
                    "must be more than zero and at most 30 days",
                ));
            }
            Ok(ms)
        })
        .collect()
}

/// Refuses more than [`MAX_FALLBACK_ROUTES`] fallback routes.
fn check_route_count(routes: usize) -> Result<(), FieldError> {
    if routes > MAX_FALLBACK_ROUTES {
        return Err(FieldError::new(
            "fallback",
            "too_many_items",
            format!("{routes} routes, more than the {MAX_FALLBACK_ROUTES} allowed"),
        ));
    }
    Ok(())
}

/// The rules every notification meets before it is sent, whoever wrote it: the API and
/// `notifyd send` apply them as they accept one (through [`Submission::validate`]), the
/// dispatcher to a row another program inserted with plain SQL. A refusal names the request
/// field at fault; `content_field` is the one blamed for missing content (`body`, or
/// `template`).
///
/// Checks the id (a printable ASCII token), the recipient (not empty, at most 8 KiB), that there
/// is some content, the channel's
/// own rules ([`Channel::validate`](notifyd_channels::Channel::validate): recipient format, SMS
/// segments, payload sizes), the fallback routes (at most [`MAX_FALLBACK_ROUTES`], each to a
/// configured channel whose rules its content meets) and the size of the stored content (at
/// most [`MAX_CONTENT_BYTES`]).
pub(crate) fn check(
    registry: &Registry,
    message: &Message,
    fallback: &[FallbackRoute],
    content_field: &str,
) -> Result<(), FieldError> {
    check_all(registry, message, fallback, &[], content_field)
}

/// [`check`], and the escalation steps like the fallback routes: each to a configured channel
/// whose rules its recipient and content meet, their content counted in the same bound.
fn check_all(
    registry: &Registry,
    message: &Message,
    fallback: &[FallbackRoute],
    steps: &[EscalationStep],
    content_field: &str,
) -> Result<(), FieldError> {
    let runtime = channel_named(
        registry,
        "channel",
        &ChannelName::from(message.channel.as_str()),
    )?;
    // Sent as the idempotency key (an HTTP header for webhooks) and used in URLs: an id a
    // program chose must be a plain token. The ones notifyd assigns are UUIDs.
    if message.id.is_empty()
        || message.id.len() > MAX_KEY_LEN
        || !message.id.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(FieldError::new(
            "id",
            "invalid_field",
            format!("must be 1 to {MAX_KEY_LEN} printable ASCII characters, no spaces"),
        ));
    }
    if message.to.trim().is_empty() {
        return Err(FieldError::new(
            "to",
            "invalid_recipient",
            "must not be empty",
        ));
    }
    if message.to.len() > MAX_TO_LEN {
        return Err(FieldError::new(
            "to",
            "invalid_recipient",
            format!("longer than {MAX_TO_LEN} bytes"),
        ));
    }
    if message.subject.is_none()
        && message.body.is_none()
        && message.html.is_none()
        && message.data.is_none()
    {
        return Err(FieldError::new(
            content_field,
            "missing_content",
            "give at least one of body, subject, html, data or template",
        ));
    }
    let mut stored = ContentSize::default();
    stored.add_message(message)?;
    runtime.channel.validate(message)?;
    check_route_count(fallback.len())?;
    let routes = fallback
        .iter()
        .map(|r| (&r.target, &r.content))
        .enumerate()
        .map(|(i, route)| (format!("fallback[{i}]"), route));
    let steps = steps
        .iter()
        .map(|s| (&s.target, &s.content))
        .enumerate()
        .map(|(i, step)| (format!("escalate[{i}]"), step));
    for (field, (target, content)) in routes.chain(steps) {
        let runtime = channel_named(registry, &format!("{field}.channel"), &target.channel)?;
        if target.to.trim().is_empty() || target.to.len() > MAX_TO_LEN {
            return Err(FieldError::new(
                format!("{field}.to"),
                "invalid_recipient",
                format!("must be 1 to {MAX_TO_LEN} bytes, not blank"),
            ));
        }
        let mut elsewhere = Message {
            channel: target.channel.clone().into(),
            to: target.to.clone(),
            ..message.clone()
        };
        if let Some(content) = content {
            stored.add_route(&field, content)?;
            elsewhere.subject = content.subject.clone();
            elsewhere.body = content.body.clone();
            elsewhere.html = content.html.clone();
            elsewhere.data = content.data.clone();
        }
        runtime
            .channel
            .validate(&elsewhere)
            .map_err(|e| e.under(&field))?;
    }
    Ok(())
}

/// Bytes of content a notification stores, counted as it is checked against
/// [`MAX_CONTENT_BYTES`].
#[derive(Default)]
struct ContentSize(usize);

impl ContentSize {
    /// Adds `bytes` of `field`, refusing it if the total goes over the limit.
    fn add(&mut self, field: &str, bytes: usize) -> Result<(), FieldError> {
        self.0 = self.0.saturating_add(bytes);
        if self.0 > MAX_CONTENT_BYTES {
            return Err(FieldError::new(
                field,
                "too_long",
                format!(
                    "the notification's content would store more than {MAX_CONTENT_BYTES} bytes"
                ),
            ));
        }
        Ok(())
    }

    fn add_fields(
        &mut self,
        field: impl Fn(&str) -> String,
        subject: &Option<String>,
        body: &Option<String>,
        html: &Option<String>,
        data: &Option<serde_json::Value>,
    ) -> Result<(), FieldError> {
        for (name, text) in [("subject", subject), ("body", body), ("html", html)] {
            self.add(&field(name), text.as_ref().map_or(0, String::len))?;
        }
        let data_len = data.as_ref().map_or(0, crate::json_bounds::encoded_len);
        self.add(&field("data"), data_len)
    }

    fn add_message(&mut self, m: &Message) -> Result<(), FieldError> {
        self.add_fields(str::to_owned, &m.subject, &m.body, &m.html, &m.data)
    }

    fn add_route(&mut self, field: &str, c: &Content) -> Result<(), FieldError> {
        self.add_fields(|_| field.to_owned(), &c.subject, &c.body, &c.html, &c.data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_content_hash_is_the_hex_sha256_of_the_submission_without_its_key() {
        let submission = Submission {
            channel: "log".into(),
            to: "a@example.com".into(),
            body: Some("hi".into()),
            idempotency_key: Some("k1".into()),
            ..Default::default()
        };
        // What the queue already stores for such a submission: a replay must match it.
        assert_eq!(
            submission.content_hash(),
            "4d6906f4f9a92e65c2d14d9e6255d77217aa55e3c11d82904eda9f4bf5437e50"
        );
        assert_eq!(
            serde_json::to_string(&Submission {
                idempotency_key: None,
                ..submission
            })
            .unwrap(),
            r#"{"channel":"log","to":"a@example.com","body":"hi"}"#
        );
    }
}
