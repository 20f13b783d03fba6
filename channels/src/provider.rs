use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::Channel;

/// Explicit limits for every external call a channel makes. Never infinite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Establishing the connection (TCP + TLS).
    pub connect: Duration,
    /// Waiting for each chunk of the response.
    pub read: Duration,
    /// The whole send, from connect to the last byte.
    pub total: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(5),
            read: Duration::from_secs(10),
            total: Duration::from_secs(30),
        }
    }
}

/// What building a channel may need beyond its own config.
#[derive(Debug, Clone)]
pub struct BuildContext {
    /// The configured channel name (`ops-slack`), for logs and error messages.
    pub channel: String,
    pub timeouts: Timeouts,
}

/// A channel could not be built from a config that parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// A config value is unusable; names the key.
    #[error("`{key}`: {message}")]
    Invalid { key: &'static str, message: String },
    /// The HTTP client could not be set up.
    #[error("HTTP client: {0}")]
    Http(String),
}

impl BuildError {
    /// An unusable value for `key`.
    pub fn invalid(key: &'static str, message: impl Into<String>) -> Self {
        Self::Invalid {
            key,
            message: message.into(),
        }
    }
}

/// The provider part of a `[channels.<name>]` table, selected by `kind`.
///
/// Adding a provider adds one arm here (see `channels/PROVIDERS.md`); nothing in the daemon
/// changes.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ProviderConfig {
    /// Writes each notification to the log; needs no account.
    #[cfg(feature = "log")]
    Log(crate::log::LogConfig),
    /// POSTs a signed JSON document to any URL.
    #[cfg(feature = "webhook")]
    Webhook(crate::webhook::WebhookConfig),
    /// E-mail over SMTP (lettre, pooled).
    #[cfg(feature = "smtp")]
    Smtp(crate::email::smtp::SmtpConfig),
    /// Firebase Cloud Messaging HTTP v1.
    #[cfg(feature = "fcm")]
    Fcm(crate::push::fcm::FcmConfig),
    /// Apple Push Notification service over HTTP/2 with token auth.
    #[cfg(feature = "apns")]
    Apns(crate::push::apns::ApnsConfig),
    /// Web Push (RFC 8030) with aes128gcm encryption and VAPID.
    #[cfg(feature = "webpush")]
    Webpush(crate::push::webpush::WebpushConfig),
    /// Slack incoming webhook.
    #[cfg(feature = "slack")]
    SlackWebhook(crate::slack::webhook::SlackWebhookConfig),
    /// Slack Web API `chat.postMessage` with a bot token.
    #[cfg(feature = "slack")]
    Slack(crate::slack::web::SlackConfig),
    /// SMS through Twilio Programmable Messaging.
    #[cfg(feature = "twilio")]
    Twilio(crate::sms::twilio::TwilioConfig),
    /// SMS through the Vonage SMS API.
    #[cfg(feature = "vonage")]
    Vonage(crate::sms::vonage::VonageConfig),
}

impl ProviderConfig {
    /// The kind name, as written in config.
    pub fn kind(&self) -> &'static str {
        match self {
            #[cfg(feature = "log")]
            Self::Log(_) => "log",
            #[cfg(feature = "webhook")]
            Self::Webhook(_) => "webhook",
            #[cfg(feature = "smtp")]
            Self::Smtp(_) => "smtp",
            #[cfg(feature = "fcm")]
            Self::Fcm(_) => "fcm",
            #[cfg(feature = "apns")]
            Self::Apns(_) => "apns",
            #[cfg(feature = "webpush")]
            Self::Webpush(_) => "webpush",
            #[cfg(feature = "slack")]
            Self::SlackWebhook(_) => "slack_webhook",
            #[cfg(feature = "slack")]
            Self::Slack(_) => "slack",
            #[cfg(feature = "twilio")]
            Self::Twilio(_) => "twilio",
            #[cfg(feature = "vonage")]
            Self::Vonage(_) => "vonage",
        }
    }

    /// Timeouts for this kind when the channel's config sets none.
    pub fn default_timeouts(&self) -> Timeouts {
        match self {
            #[cfg(feature = "webhook")]
            Self::Webhook(_) => Timeouts {
                total: Duration::from_secs(10),
                ..Timeouts::default()
            },
            #[allow(unreachable_patterns)]
            _ => Timeouts::default(),
        }
    }

    /// Builds the channel: parses URLs, reads keys, sets up clients. No network I/O.
    pub fn build(&self, ctx: &BuildContext) -> Result<Arc<dyn Channel>, BuildError> {
        match self {
            #[cfg(feature = "log")]
            Self::Log(cfg) => Ok(Arc::new(crate::log::Log::new(cfg, ctx))),
            #[cfg(feature = "webhook")]
            Self::Webhook(cfg) => Ok(Arc::new(crate::webhook::Webhook::new(cfg, ctx)?)),
            #[cfg(feature = "smtp")]
            Self::Smtp(cfg) => Ok(Arc::new(crate::email::smtp::Smtp::new(cfg, ctx)?)),
            #[cfg(feature = "fcm")]
            Self::Fcm(cfg) => Ok(Arc::new(crate::push::fcm::Fcm::new(cfg, ctx)?)),
            #[cfg(feature = "apns")]
            Self::Apns(cfg) => Ok(Arc::new(crate::push::apns::Apns::new(cfg, ctx)?)),
            #[cfg(feature = "webpush")]
            Self::Webpush(cfg) => Ok(Arc::new(crate::push::webpush::Webpush::new(cfg, ctx)?)),
            #[cfg(feature = "slack")]
            Self::SlackWebhook(cfg) => Ok(Arc::new(crate::slack::webhook::SlackWebhook::new(
                cfg, ctx,
            )?)),
            #[cfg(feature = "slack")]
            Self::Slack(cfg) => Ok(Arc::new(crate::slack::web::Slack::new(cfg, ctx)?)),
            #[cfg(feature = "twilio")]
            Self::Twilio(cfg) => Ok(Arc::new(crate::sms::twilio::Twilio::new(cfg, ctx)?)),
            #[cfg(feature = "vonage")]
            Self::Vonage(cfg) => Ok(Arc::new(crate::sms::vonage::Vonage::new(cfg, ctx)?)),
        }
    }
}
