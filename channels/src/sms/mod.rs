//! SMS channels: two providers, so an outage of one can fail over to the other.

pub mod segments;
#[cfg(feature = "twilio")]
pub mod twilio;
#[cfg(feature = "vonage")]
pub mod vonage;

use crate::{FieldError, Message};

/// Checks what every SMS provider needs: an E.164 number, a body, and no more than
/// `max_segments` segments.
pub fn validate(msg: &Message, max_segments: u32) -> Result<(), FieldError> {
    if !segments::is_e164(&msg.to) {
        return Err(FieldError::new(
            "to",
            "invalid_recipient",
            "must be an E.164 phone number: + and 8 to 15 digits, e.g. +15551234567",
        ));
    }
    let body = msg.body.as_deref().unwrap_or_default();
    if body.is_empty() {
        return Err(FieldError::new(
            "body",
            "missing_content",
            "an SMS needs a body",
        ));
    }
    let count = segments::count(body);
    if count.segments > max_segments {
        return Err(FieldError::new(
            "body",
            "too_long",
            format!(
                "{} segments ({:?}), more than the {max_segments} allowed (max_segments)",
                count.segments, count.encoding
            ),
        ));
    }
    Ok(())
}
