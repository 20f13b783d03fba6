//! Twilio Programmable Messaging: `POST {base_url}/2010-04-01/Accounts/{account_sid}/Messages.json`,
//! form-encoded, HTTP Basic (account SID + auth token, or an API key SID + secret).

mod client;
mod config;

pub use client::Twilio;
pub use config::TwilioConfig;

#[cfg(test)]
mod tests;
