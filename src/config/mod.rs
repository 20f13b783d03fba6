//! Configuration: built-in defaults ← a TOML file (`--config`) ← `NOTIFYD_*` environment
//! variables (nested keys joined with `__`, e.g. `NOTIFYD_SERVER__LISTEN`).
//!
//! Loading parses (every unknown key is an error naming it and its file), then [`Config::validate`]
//! checks the values without I/O and reports every problem at once. Building channels happens
//! later, in [`crate::registry`].

mod channel;
pub(crate) mod duration;
mod ingest;
mod links;
pub(crate) mod secret_files;

use std::collections::BTreeMap;

use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::Deserialize;

use crate::model::ChannelName;

#[cfg(test)]
pub(crate) use channel::QuietHoursConfig;
pub(crate) use channel::{
    BreakerConfig, ChannelConfig, ChannelPolicy, Criticality, Rate, RateLimitConfig,
    ReceiptsConfig, RetryPolicy,
};
#[cfg(test)]
pub(crate) use ingest::NtfyConfig;
pub(crate) use ingest::{IngestConfig, RouteConfig, SignatureConfig, Target};
pub(crate) use links::LinksConfig;

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub queue: QueueConfig,
    #[serde(default)]
    pub dispatcher: DispatcherConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub templates: TemplatesConfig,
    #[serde(default)]
    pub retention: RetentionConfig,
    /// Signed links in messages (acknowledge, unsubscribe).
    #[serde(default)]
    pub links: LinksConfig,
    /// What Alertmanager, Grafana, Apprise and ntfy senders post, and where it goes.
    #[serde(default)]
    pub ingest: IngestConfig,
    /// Channels by name; notifications refer to a channel by this name.
    #[serde(default)]
    pub channels: BTreeMap<ChannelName, ChannelConfig>,
}

/// `[server]`: the HTTP API.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "serde_json::Map<String, serde_json::Value>")]
pub struct ServerConfig {
    /// Address the API listens on. Loopback by default.
    pub listen: String,
    /// Bearer tokens the API accepts (several, separated by whitespace or one per line of
    /// `auth_token_file`, so a token can be rotated). Required when `listen` is not loopback.
    pub auth_token: Option<notifyd_channels::Secret>,
    /// Serve `/metrics` without a token even when tokens are configured (for a scraper that
    /// cannot send one; the metrics carry no recipients or ids).
    pub metrics_public: bool,
    /// A client must send its request headers within this (slow-loris protection).
    pub header_timeout: Duration,
    /// A client must send its whole request body within this (else 408).
    pub body_timeout: Duration,
    /// Largest request body accepted on single-notification endpoints, in bytes.
    pub max_body_bytes: usize,
    /// Largest request body accepted by the batch endpoint, in bytes.
    pub max_batch_body_bytes: usize,
    /// Most notifications in one batch request.
    pub max_batch_items: usize,
}

/// The fields of `[server]` as written, before `*_file` secrets are read.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ServerFields {
    listen: String,
    auth_token: Option<notifyd_channels::Secret>,
    metrics_public: bool,
    #[serde(with = "duration")]
    header_timeout: Duration,
    #[serde(with = "duration")]
    body_timeout: Duration,
    max_body_bytes: usize,
    max_batch_body_bytes: usize,
    max_batch_items: usize,
}

impl Default for ServerFields {
    fn default() -> Self {
        let d = ServerConfig::default();
        Self {
            listen: d.listen,
            auth_token: d.auth_token,
            metrics_public: d.metrics_public,
            header_timeout: d.header_timeout,
            body_timeout: d.body_timeout,
            max_body_bytes: d.max_body_bytes,
            max_batch_body_bytes: d.max_batch_body_bytes,
            max_batch_items: d.max_batch_items,
        }
    }
}

impl TryFrom<serde_json::Map<String, serde_json::Value>> for ServerConfig {
    type Error = String;
    fn try_from(mut table: serde_json::Map<String, serde_json::Value>) -> Result<Self, String> {
        secret_files::resolve(&mut table)?;
        let f: ServerFields = serde_path_to_error::deserialize(serde_json::Value::Object(table))
            .map_err(|e| {
                let (path, inner) = (
                    e.path().to_string(),
                    without_found_value(&e.inner().to_string()),
                );
                if path == "." || inner.contains(&format!("`{path}`")) {
                    inner
                } else {
                    format!("`{path}`: {inner}")
                }
            })?;
        Ok(Self {
            listen: f.listen,
            auth_token: f.auth_token,
            metrics_public: f.metrics_public,
            header_timeout: f.header_timeout,
            body_timeout: f.body_timeout,
            max_body_bytes: f.max_body_bytes,
            max_batch_body_bytes: f.max_batch_body_bytes,
            max_batch_items: f.max_batch_items,
        })
    }
}

impl ServerConfig {
    /// The accepted bearer tokens.
    pub fn tokens(&self) -> Vec<&str> {
        self.auth_token
            .as_ref()
            .map(|t| t.expose().split_whitespace().collect())
            .unwrap_or_default()
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8025".into(),
            auth_token: None,
            metrics_public: false,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            max_body_bytes: 1024 * 1024,
            max_batch_body_bytes: 16 * 1024 * 1024,
            max_batch_items: 1000,
        }
    }
}

/// `[queue]`: where notifications are kept.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// `sqlite://<path>` (relative to the working directory, or absolute as `sqlite:///var/...`),
    /// or `postgres://…` for a queue several daemons share.
    pub url: String,
    /// The PostgreSQL schema that holds notifyd's tables (ignored for SQLite).
    pub schema: String,
    /// Most connections to PostgreSQL this daemon keeps open (ignored for SQLite).
    pub max_connections: u32,
    /// `url` is a PgBouncer in transaction pooling mode: wake-ups by polling only (no LISTEN),
    /// no server-side statement cache, every operation in one transaction.
    pub pgbouncer: bool,
    /// PostgreSQL: one daemon vacuums and analyzes the notifications table between autovacuum's
    /// visits, once enough dead row versions gathered and for at most a tenth of the time;
    /// `false` leaves it to the server's autovacuum.
    pub vacuum: bool,
    /// `/readyz` fails below this much free space on the queue's filesystem, so an alert or a
    /// load balancer acts before the disk is full and accepts start failing with 503 (SQLite).
    pub min_free_bytes: u64,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            url: "sqlite://notifyd.db".into(),
            schema: "notifyd".into(),
            max_connections: 16,
            pgbouncer: false,
            vacuum: true,
            min_free_bytes: 64 * 1024 * 1024,
        }
    }
}

/// Which store `queue.url` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueLocation {
    /// A SQLite file on this host.
    Sqlite(PathBuf),
    /// A PostgreSQL database, by its URL.
    Postgres(String),
}

impl QueueConfig {
    /// The store named by `url`.
    pub fn location(&self) -> Result<QueueLocation, String> {
        if self.url.starts_with("postgres://") || self.url.starts_with("postgresql://") {
            if !crate::outbox::postgres::valid_schema(&self.schema) {
                return Err(format!(
                    "queue.schema {:?} must be a plain lower-case name (letters, digits, _)",
                    self.schema
                ));
            }
            return Ok(QueueLocation::Postgres(self.url.clone()));
        }
        self.sqlite_path().map(QueueLocation::Sqlite)
    }

    /// The SQLite file named by `url`.
    pub fn sqlite_path(&self) -> Result<PathBuf, String> {
        let path = self
            .url
            .strip_prefix("sqlite://")
            .or_else(|| self.url.strip_prefix("sqlite:"))
            .ok_or_else(|| {
                format!(
                    "{:?} is not a queue URL; use sqlite://<path> or postgres://…",
                    self.url
                )
            })?;
        if path.is_empty() {
            return Err("the sqlite:// URL names no file".into());
        }
        Ok(PathBuf::from(path))
    }
}

/// `[dispatcher]`: how notifications are pulled from the queue.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DispatcherConfig {
    /// How often each channel looks for due rows it was not woken for (rows written by other
    /// processes, retries coming due).
    #[serde(with = "duration")]
    pub poll_interval: Duration,
    /// Most rows one claim takes.
    pub claim_batch: usize,
    /// Added to a channel's total timeout to make its lease: long enough that a live send is
    /// never reclaimed, short enough that a crash is recovered quickly.
    #[serde(with = "duration")]
    pub lease_margin: Duration,
    /// On shutdown, how long in-flight sends may finish before they are abandoned (and their
    /// notifications released to the queue).
    #[serde(with = "duration")]
    pub shutdown_grace: Duration,
    /// How often overdue rows are expired and rows of unconfigured channels are failed.
    #[serde(with = "duration")]
    pub sweep_interval: Duration,
    /// How long a channel whose credentials were refused waits before trying again.
    #[serde(with = "duration")]
    pub fault_hold: Duration,
}

impl Default for DispatcherConfig {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_millis(100),
            claim_batch: 256,
            lease_margin: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(20),
            sweep_interval: Duration::from_secs(5),
            fault_hold: Duration::from_secs(30),
        }
    }
}

/// `[retention]`: how long finished notifications and unmatched receipts are kept.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Delivered, failed, expired and cancelled notifications, with their attempts and receipts.
    /// Dead letters are kept until replayed or cancelled.
    #[serde(with = "duration")]
    pub notifications: Duration,
    /// Receipts for a provider id that never matched a notification.
    #[serde(with = "duration")]
    pub unmatched_receipts: Duration,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            notifications: Duration::from_secs(30 * 24 * 3600),
            unmatched_receipts: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

impl RetentionConfig {
    /// The queue's view of it.
    pub fn to_retention(&self) -> crate::model::Retention {
        let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 2);
        crate::model::Retention {
            finished_ms: ms(self.notifications),
            unmatched_receipts_ms: ms(self.unmatched_receipts),
        }
    }
}

/// `[templates]`: named templates rendered at accept time.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TemplatesConfig {
    /// A folder with one sub-folder per template; none configured means no templates.
    pub dir: Option<PathBuf>,
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A `tracing` filter (`info`, `notifyd=debug,info`); `RUST_LOG` overrides it.
    pub level: String,
    /// `human` or `json`.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Human,
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Human,
    Json,
}

/// The configuration could not be loaded or is invalid.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("config file {path}: {message}")]
    File { path: PathBuf, message: String },
    /// A key is unknown or has the wrong type; the message names the key and its source.
    #[error("{0}")]
    Parse(String),
    /// Values parsed but make no sense; every problem is listed, with its key.
    #[error("invalid configuration{}:\n  {}", .source_name.as_ref().map(|s| format!(" in {s}")).unwrap_or_default(), .problems.join("\n  "))]
    Invalid {
        source_name: Option<String>,
        problems: Vec<String>,
    },
}

/// The channel set used when the configuration defines none: one `log` channel, so the daemon
/// runs and shows the whole path with no provider account.
fn default_channels() -> BTreeMap<String, serde_json::Value> {
    BTreeMap::from([("log".to_owned(), serde_json::json!({"kind": "log"}))])
}

impl Config {
    /// Loads defaults ← `file` ← environment, then validates.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_with_env(
            file,
            Env::prefixed("NOTIFYD_").split("__").ignore(&["config"]),
        )
    }

    /// [`Config::load`] with an explicit environment provider (tests use a fake one).
    pub fn load_with_env(file: Option<&Path>, env: Env) -> Result<Self, ConfigError> {
        let mut figment = Figment::new();
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError::File {
                    path: path.to_owned(),
                    message: "not found (or not a file)".into(),
                });
            }
            if let Err(e) = std::fs::read_to_string(path) {
                return Err(ConfigError::File {
                    path: path.to_owned(),
                    message: e.to_string(),
                });
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        figment = figment.merge(env);
        if figment.find_value("channels").is_err() {
            figment = figment.join(Serialized::default("channels", default_channels()));
        }
        let config: Config = figment
            .extract()
            .map_err(|e| ConfigError::Parse(describe(e)))?;
        config.validate().map_err(|problems| ConfigError::Invalid {
            source_name: file.map(|p| p.display().to_string()),
            problems,
        })?;
        Ok(config)
    }

    /// Checks values without I/O; returns every problem, each naming its key.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        match crate::listener::Endpoint::parse(&self.server.listen) {
            Err(e) => problems.push(format!("server.listen: {e}")),
            Ok(addr) if !addr.is_local() && self.server.tokens().is_empty() => {
                problems.push(format!(
                    "server.listen: {addr} is reachable from other hosts; set server.auth_token \
                     (or auth_token_file) so the API is not open to them"
                ))
            }
            Ok(_) => {}
        }
        if self.server.tokens().iter().any(|t| t.len() < 16) {
            problems.push("server.auth_token: each token must be at least 16 characters".into());
        }
        problems.extend(self.links.problems());
        if self.server.max_body_bytes < 1024 {
            problems.push("server.max_body_bytes: must be at least 1024".into());
        }
        if self.server.max_batch_items == 0 {
            problems.push("server.max_batch_items: must be at least 1".into());
        }
        if let Err(e) = self.queue.location() {
            problems.push(format!("queue.url: {e}"));
        }
        if self.queue.max_connections < 2 {
            problems.push("queue.max_connections: must be at least 2".into());
        }
        if self.dispatcher.poll_interval.is_zero() {
            problems.push("dispatcher.poll_interval: must be more than 0".into());
        }
        if self.dispatcher.claim_batch == 0 {
            problems.push("dispatcher.claim_batch: must be at least 1".into());
        }
        if self.channels.is_empty() {
            problems.push("channels: at least one channel must be configured".into());
        }
        for (name, channel) in &self.channels {
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
            {
                problems.push(format!(
                    "channels.{name}: a channel name may use only letters, digits, '-', '_' and '.'"
                ));
            }
            for p in channel.policy.problems() {
                problems.push(format!("channels.{name}.{p}"));
            }
            if channel.policy.unsubscribe == Some(true) {
                if channel.provider.kind() != "smtp" {
                    problems.push(format!(
                        "channels.{name}.unsubscribe: only e-mail (kind = \"smtp\") carries \
                         List-Unsubscribe"
                    ));
                } else if self.links.base_url.is_none() || self.links.key().is_none() {
                    problems.push(format!(
                        "channels.{name}.unsubscribe: needs links.base_url and links.secret \
                         (or set unsubscribe = false)"
                    ));
                }
            }
            for target in &channel.policy.failover {
                if target == name {
                    problems.push(format!(
                        "channels.{name}.failover: a channel cannot fail over to itself"
                    ));
                } else if !self.channels.contains_key(target) {
                    problems.push(format!(
                        "channels.{name}.failover: no channel named {target:?}"
                    ));
                }
            }
        }
        let channels: Vec<&str> = self.channels.keys().map(ChannelName::as_str).collect();
        problems.extend(
            self.ingest
                .problems(&channels, !self.server.tokens().is_empty()),
        );
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}

/// figment's message names the key and the file; drop its profile prefix, which users never
/// wrote.
fn describe(e: figment::Error) -> String {
    e.into_iter()
        .map(|e| without_found_value(&e.to_string().replace("key \"default.", "key \"")))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A type error's message without the value it found ("invalid type: found integer, expected a
/// string"): the value may be a secret, e.g. an all-digit token from the environment, which
/// figment reads as a number.
pub(crate) fn without_found_value(message: &str) -> String {
    for marker in ["invalid type: ", "invalid value: "] {
        let Some(at) = message.find(marker) else {
            continue;
        };
        let start = at + marker.len();
        let Some(len) = message[start..].find(", expected") else {
            continue;
        };
        let found = &message[start..start + len];
        if found.starts_with("found ") {
            break;
        }
        let kind = found.split(['`', '"']).next().unwrap_or(found).trim_end();
        return format!(
            "{}found {kind}{}",
            &message[..start],
            &message[start + len..]
        );
    }
    message.to_owned()
}

#[cfg(test)]
mod tests;
