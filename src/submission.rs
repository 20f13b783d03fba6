//! What a caller submits (HTTP body or `notifyd send` flags), and its validation into a
//! [`NewNotification`]: the one place that decides whether a notification is acceptable.

use notifyd_channels::Message;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::outbox::{Content, FallbackRoute, FallbackTarget, NewNotification, Priority, now_ms};
use crate::registry::Registry;
use crate::templates::Templates;

/// Longest idempotency key accepted.
const MAX_KEY_LEN: usize = 255;
/// Longest recipient accepted (push subscriptions are long JSON documents).
const MAX_TO_LEN: usize = 8192;

/// A notification as submitted.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Submission {
    pub channel: String,
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
}

/// Why a submission is refused; names the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct Rejection {
    pub field: String,
    pub code: &'static str,
    pub message: String,
}

impl Rejection {
    /// A refusal blamed on `field`.
    pub fn new(field: impl Into<String>, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            code,
            message: message.into(),
        }
    }
}

fn parse_time(field: &str, value: &str) -> Result<i64, Rejection> {
    let t = OffsetDateTime::parse(value, &Rfc3339).map_err(|e| {
        Rejection::new(
            field,
            "invalid_time",
            format!("{value:?} is not an RFC 3339 time ({e})"),
        )
    })?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000)
        .map_err(|_| Rejection::new(field, "invalid_time", "out of range"))
}

/// An idempotency key with the content hash it must be stored with for a submission to count
/// as the same request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replay {
    pub key: String,
    pub content_hash: String,
}

impl Submission {
    /// Validates against the configured channels and turns it into a row to store.
    pub fn validate(
        mut self,
        registry: &Registry,
        templates: &Templates,
    ) -> Result<NewNotification, Rejection> {
        let runtime = registry.get(&self.channel).ok_or_else(|| {
            Rejection::new(
                "channel",
                "unknown_channel",
                format!("no channel named {:?} is configured", self.channel),
            )
        })?;
        if self.to.trim().is_empty() {
            return Err(Rejection::new(
                "to",
                "invalid_recipient",
                "must not be empty",
            ));
        }
        if self.to.len() > MAX_TO_LEN {
            return Err(Rejection::new(
                "to",
                "invalid_recipient",
                format!("longer than {MAX_TO_LEN} bytes"),
            ));
        }
        // Hashed as submitted (template and vars, not their rendering): a replay is the same
        // request, whatever the templates say today.
        let content_hash = self.content_hash();
        if let Some(template) = &self.template {
            if self.subject.is_some()
                || self.body.is_some()
                || self.html.is_some()
                || self.data.is_some()
            {
                return Err(Rejection::new(
                    "template",
                    "invalid_field",
                    "give either a template or inline subject/body/html/data, not both",
                ));
            }
            let vars = self.vars.clone().unwrap_or(serde_json::Value::Null);
            let rendered = templates.render(template, runtime.kind, &vars)?;
            self.subject = rendered.subject;
            self.body = rendered.body;
            self.html = rendered.html;
            self.data = rendered.data;
        } else if self.vars.is_some() {
            return Err(Rejection::new(
                "vars",
                "invalid_field",
                "vars are only used with a template",
            ));
        }
        if self.subject.is_none()
            && self.body.is_none()
            && self.html.is_none()
            && self.data.is_none()
        {
            return Err(Rejection::new(
                if self.template.is_some() {
                    "template"
                } else {
                    "body"
                },
                "missing_content",
                "give at least one of body, subject, html, data or template",
            ));
        }
        if let Some(key) = &self.idempotency_key
            && (key.is_empty() || key.len() > MAX_KEY_LEN)
        {
            return Err(Rejection::new(
                "idempotency_key",
                "invalid_field",
                format!("must be 1 to {MAX_KEY_LEN} bytes"),
            ));
        }
        let now = now_ms();
        let run_at = match &self.send_at {
            Some(t) => parse_time("send_at", t)?.max(now),
            None => now,
        };
        let expires_at = match &self.expires_at {
            Some(t) => {
                let at = parse_time("expires_at", t)?;
                if at <= now {
                    return Err(Rejection::new(
                        "expires_at",
                        "invalid_time",
                        "is already in the past",
                    ));
                }
                if at <= run_at {
                    return Err(Rejection::new(
                        "expires_at",
                        "invalid_time",
                        "is not after send_at",
                    ));
                }
                Some(at)
            }
            None => None,
        };
        let id = uuid::Uuid::now_v7().to_string();
        let created_at = crate::clock::system_time(now);
        let message = Message {
            id: id.clone(),
            channel: self.channel.clone(),
            to: self.to.clone(),
            subject: self.subject.clone(),
            body: self.body.clone(),
            html: self.html.clone(),
            data: self.data.clone(),
            created_at,
        };
        runtime
            .channel
            .validate(&message)
            .map_err(|e| Rejection::new(e.field, e.code, e.message))?;
        let own = Content {
            subject: self.subject.clone(),
            body: self.body.clone(),
            html: self.html.clone(),
            data: self.data.clone(),
        };
        let own_family = crate::templates::family(runtime.kind);
        let mut fallback = Vec::with_capacity(self.fallback.len());
        for (i, route) in self.fallback.into_iter().enumerate() {
            let runtime = registry.get(&route.channel).ok_or_else(|| {
                Rejection::new(
                    format!("fallback[{i}].channel"),
                    "unknown_channel",
                    format!("no channel named {:?} is configured", route.channel),
                )
            })?;
            // A template speaks to each kind in its own part (sms.txt for an SMS fallback).
            let content = match &self.template {
                // A kind of the same family renders the same parts: nothing to do again.
                Some(template) if crate::templates::family(runtime.kind) != own_family => {
                    let vars = self.vars.as_ref().unwrap_or(&serde_json::Value::Null);
                    let r = templates.render(template, runtime.kind, vars)?;
                    Some(Content {
                        subject: r.subject,
                        body: r.body,
                        html: r.html,
                        data: r.data,
                    })
                    .filter(|c| *c != own)
                }
                _ => None,
            };
            let shown = content.as_ref().unwrap_or(&own);
            let as_fallback = Message {
                channel: route.channel.clone(),
                to: route.to.clone(),
                subject: shown.subject.clone(),
                body: shown.body.clone(),
                html: shown.html.clone(),
                data: shown.data.clone(),
                ..message.clone()
            };
            runtime.channel.validate(&as_fallback).map_err(|e| {
                Rejection::new(format!("fallback[{i}].{}", e.field), e.code, e.message)
            })?;
            fallback.push(FallbackRoute {
                target: route,
                content,
            });
        }
        Ok(NewNotification {
            id,
            channel: self.channel,
            to: self.to,
            subject: self.subject,
            body: self.body,
            html: self.html,
            data: self.data,
            priority: self.priority.unwrap_or_default(),
            run_at_ms: run_at,
            expires_at_ms: expires_at,
            created_at_ms: now,
            idempotency_key: self.idempotency_key,
            content_hash,
            fallback,
        })
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
        hex::encode(Sha256::digest(bytes))
    }
}
