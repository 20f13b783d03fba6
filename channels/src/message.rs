use std::fmt;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::redact::mask_recipient;

/// A notification as every channel sees it: rendered content, one recipient.
#[derive(Clone, Serialize, Deserialize)]
pub struct Message {
    /// The notification id (also the base of the idempotency key).
    pub id: String,
    /// The configured channel name this message goes through.
    pub channel: String,
    /// The recipient, in the channel's own terms: address, number, token, channel id, URL.
    pub to: String,
    pub subject: Option<String>,
    pub body: Option<String>,
    pub html: Option<String>,
    /// Structured extras (Slack blocks, push data, webhook payload fields).
    pub data: Option<serde_json::Value>,
    pub created_at: SystemTime,
    /// E-mail: the one-click unsubscribe URL (RFC 8058) the daemon signed for this message; the
    /// `smtp` kind sends it as `List-Unsubscribe` with `List-Unsubscribe-Post`. Other kinds
    /// ignore it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub list_unsubscribe: Option<String>,
}

/// Debug masks the recipient and omits content: messages carry personal data, and Debug output
/// ends up in logs.
impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("id", &self.id)
            .field("channel", &self.channel)
            .field("to", &mask_recipient(&self.to))
            .field("subject_len", &self.subject.as_ref().map(String::len))
            .field("body_len", &self.body.as_ref().map(String::len))
            .field("html_len", &self.html.as_ref().map(String::len))
            .field("has_data", &self.data.is_some())
            .finish()
    }
}

/// What a provider gave back for a delivered message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Receipt {
    /// The provider's own id for the message (Twilio `SM…`, FCM `projects/…/messages/…`),
    /// used to match later delivery receipts.
    pub provider_id: Option<String>,
}
