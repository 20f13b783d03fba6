//! SMS channels: two providers, so an outage of one can fail over to the other.

#[cfg(feature = "twilio")]
pub mod twilio;
#[cfg(feature = "vonage")]
pub mod vonage;
