//! `[ingest]`: the named routes that say where what arrives goes (the drop-in senders' targets,
//! picked by `ingest/route.rs`) and ntfy's own listener.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::model::{ChannelName, FallbackTarget, Priority};

/// `[ingest]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(try_from = "Map<String, Value>")]
pub struct IngestConfig {
    /// Routes by name: the `{route}` of `/ingest/alertmanager/{route}` and
    /// `/ingest/grafana/{route}`, the Apprise key, the ntfy topic.
    pub routes: BTreeMap<String, RouteConfig>,
    pub ntfy: NtfyConfig,
}

/// `[ingest.ntfy]`: ntfy's publish API on a listener of its own (its `/` and `/{topic}` would
/// collide with notifyd's paths).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NtfyConfig {
    /// `host:port` to serve ntfy's API on; off when unset.
    pub listen: Option<String>,
    /// The route for a topic that names no route of its own; such topics are refused (404)
    /// when unset.
    pub route: Option<String>,
}

/// One `[ingest.routes.<name>]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Where it goes; each target that matches gets its own notification.
    pub targets: Vec<Target>,
    /// A template (from `templates.dir`) given the whole incoming payload as its variables,
    /// instead of the format's default message. A target's own `template` wins.
    #[serde(default)]
    pub template: Option<String>,
    /// Priority of what this route creates (ntfy's own priority wins for ntfy).
    #[serde(default)]
    pub priority: Option<Priority>,
    /// Alertmanager and Grafana: one notification per alert instead of one per group.
    #[serde(default)]
    pub per_alert: bool,
    /// Grafana: the contact point's HMAC-SHA256 signature, checked before anything is stored.
    #[serde(default)]
    pub signature: Option<SignatureConfig>,
}

/// A route's target: one channel and recipient, possibly only for some messages.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    pub channel: ChannelName,
    pub to: String,
    /// Only messages whose labels hold every one of these values (Alertmanager and Grafana:
    /// an alert's labels, for a group any of its alerts; ntfy: `topic`).
    #[serde(default)]
    pub when: BTreeMap<String, String>,
    /// Apprise: this target's tags, which the request's `tag` selects by Apprise's rules.
    /// ntfy: only messages carrying one of these tags.
    #[serde(default)]
    pub tags: BTreeSet<String>,
    #[serde(default)]
    pub template: Option<String>,
    #[serde(default)]
    pub priority: Option<Priority>,
    #[serde(default)]
    pub fallback: Vec<FallbackTarget>,
}

/// `signature = { secret, header?, timestamp_header?, tolerance? }`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureConfig {
    pub secret: notifyd_channels::Secret,
    #[serde(default = "signature_header")]
    pub header: String,
    /// When a request carries this header, the signature covers `"<timestamp>:<body>"` and the
    /// timestamp must be within `tolerance` of our clock; without it, the body alone.
    #[serde(default = "timestamp_header")]
    pub timestamp_header: String,
    #[serde(default = "five_minutes", with = "super::duration")]
    pub tolerance: Duration,
}

fn signature_header() -> String {
    "X-Grafana-Alerting-Signature".into()
}

fn timestamp_header() -> String {
    "X-Grafana-Alerting-Timestamp".into()
}

fn five_minutes() -> Duration {
    Duration::from_secs(300)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct IngestFields {
    routes: BTreeMap<String, RouteConfig>,
    ntfy: NtfyConfig,
}

impl Default for IngestFields {
    fn default() -> Self {
        let d = IngestConfig::default();
        Self {
            routes: d.routes,
            ntfy: d.ntfy,
        }
    }
}

impl TryFrom<Map<String, Value>> for IngestConfig {
    type Error = String;
    fn try_from(mut table: Map<String, Value>) -> Result<Self, String> {
        super::secret_files::resolve(&mut table)?;
        let f: IngestFields = serde_path_to_error::deserialize(Value::Object(table))
            .map_err(|e| format!("ingest.{}: {}", e.path(), e.inner()))?;
        Ok(Self {
            routes: f.routes,
            ntfy: f.ntfy,
        })
    }
}

impl IngestConfig {
    /// Problems with the routes, each naming its key: unknown channels, bad names, an ntfy
    /// listener open to other hosts without a token.
    pub fn problems(&self, channels: &[&str], has_tokens: bool) -> Vec<String> {
        let mut out = Vec::new();
        for (name, route) in &self.routes {
            let key = format!("ingest.routes.{name}");
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                out.push(format!(
                    "{key}: a route name may use only letters, digits, '-' and '_' (it is a URL \
                     path segment and an ntfy topic)"
                ));
            }
            if route.targets.is_empty() {
                out.push(format!("{key}.targets: give at least one target"));
            }
            for (i, t) in route.targets.iter().enumerate() {
                if !channels.contains(&t.channel.as_str()) {
                    out.push(format!(
                        "{key}.targets[{i}].channel: no channel named {:?}",
                        t.channel
                    ));
                }
                if t.to.trim().is_empty() {
                    out.push(format!("{key}.targets[{i}].to: must not be empty"));
                }
                for (j, f) in t.fallback.iter().enumerate() {
                    if !channels.contains(&f.channel.as_str()) {
                        out.push(format!(
                            "{key}.targets[{i}].fallback[{j}].channel: no channel named {:?}",
                            f.channel
                        ));
                    }
                }
            }
            if let Some(s) = &route.signature {
                if s.secret.expose().len() < 16 {
                    out.push(format!(
                        "{key}.signature.secret: must be at least 16 characters"
                    ));
                }
                for (name, value) in [
                    ("header", &s.header),
                    ("timestamp_header", &s.timestamp_header),
                ] {
                    if axum::http::HeaderName::from_bytes(value.as_bytes()).is_err() {
                        out.push(format!(
                            "{key}.signature.{name}: {value:?} is not a header name"
                        ));
                    }
                }
            }
        }
        if let Some(route) = &self.ntfy.route
            && !self.routes.contains_key(route)
        {
            out.push(format!("ingest.ntfy.route: no route named {route:?}"));
        }
        if let Some(listen) = &self.ntfy.listen {
            match crate::listener::Endpoint::parse(listen) {
                Err(e) => out.push(format!("ingest.ntfy.listen: {e}")),
                Ok(addr) if !addr.is_local() && !has_tokens => out.push(format!(
                    "ingest.ntfy.listen: {addr} is reachable from other hosts; set \
                     server.auth_token so the ntfy API is not open to them"
                )),
                Ok(_) => {}
            }
        }
        out
    }
}
