//! What the API's handlers and the drop-in senders' (`ingest`) share: the state a handler reads
//! ([`AppState`], the reloadable [`Live`]), the one error answer ([`ApiError`]), bounded body
//! readers, and the constant-time token check. Its own module so that the API (which routes to
//! the ingest handlers) and ingest (which answers like the API) do not import each other.

mod body;
mod error;

use std::sync::{Arc, RwLock};

use notifyd_channels::same_secret;

use crate::config::ServerConfig;
use crate::metrics::Counters;
use crate::outbox::Outbox;
use crate::registry::Registry;
use crate::templates::Templates;

pub(crate) use body::{JsonBody, inexact_under, read_bytes, read_json, read_json_as, shape};
pub(crate) use error::{ApiError, ErrorBody};

/// What every handler needs.
#[derive(Clone)]
pub struct AppState {
    pub outbox: Arc<dyn Outbox>,
    /// What a reload replaces: read once per request.
    pub live: Arc<RwLock<Live>>,
    pub counters: Arc<Counters>,
}

/// The reloadable part of the API's world.
#[derive(Clone)]
pub struct Live {
    pub registry: Arc<Registry>,
    pub templates: Arc<Templates>,
    pub server: Arc<ServerConfig>,
    /// The ingest routes (`[ingest]`).
    pub ingest: Arc<crate::config::IngestConfig>,
}

impl AppState {
    /// The current channels, templates and server settings.
    pub fn live(&self) -> Live {
        self.live.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Whether `presented` is one of `tokens`. Every token is compared, so the time taken does not
/// say which one matched.
pub(crate) fn is_one_of(presented: &str, tokens: &[&str]) -> bool {
    tokens
        .iter()
        .fold(false, |found, t| same_secret(presented, t) | found)
}
