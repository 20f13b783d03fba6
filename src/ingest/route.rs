//! `[ingest]`: the named routes that say where what arrives goes, and the pure function that
//! picks a route's targets for one incoming message (by label, tag or topic).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::outbox::{FallbackTarget, Priority};

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
    pub channel: String,
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
    #[serde(default = "five_minutes", with = "crate::config::duration")]
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
        crate::config::secret_files::resolve(&mut table)?;
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
            match crate::api::server::Endpoint::parse(listen) {
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

/// What the targets of a route are picked by, for one incoming message.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Facts {
    /// Alertmanager and Grafana: each alert's labels (a group matches when any alert does).
    /// ntfy: one set, `{topic}`.
    pub labels: Vec<BTreeMap<String, String>>,
    pub tags: Tags,
}

/// How a message's tags select targets.
#[derive(Debug, Clone, PartialEq)]
pub enum Tags {
    /// The tags the message carries (ntfy's `X-Tags`; none for alerts): a tagged target takes
    /// messages carrying one of its tags, an untagged one takes all.
    Carried(BTreeSet<String>),
    /// Apprise's `tag`: OR of AND-groups, selecting targets by their tags; empty when the
    /// request gave none (then only untagged targets, as Apprise does).
    Apprise(Vec<Vec<String>>),
}

impl Default for Tags {
    fn default() -> Self {
        Self::Carried(BTreeSet::new())
    }
}

/// Apprise's tag that selects every target.
const MATCH_ALL: &str = "all";
/// A target tag that every tagged request selects.
const MATCH_ALWAYS: &str = "always";

/// The targets of `route` that `facts` select, in configured order.
pub fn pick<'r>(route: &'r RouteConfig, facts: &Facts) -> Vec<&'r Target> {
    route
        .targets
        .iter()
        .filter(|t| {
            let labels_ok = t.when.is_empty()
                || facts
                    .labels
                    .iter()
                    .any(|l| t.when.iter().all(|(k, v)| l.get(k) == Some(v)));
            let tags_ok = match &facts.tags {
                Tags::Apprise(logic) => apprise_match(logic, &t.tags),
                Tags::Carried(carried) => t.tags.is_empty() || !t.tags.is_disjoint(carried),
            };
            labels_ok && tags_ok
        })
        .collect()
}

/// Apprise's `is_exclusive_match`: any OR-group whose tags the target all has (or `all`), or a
/// target tagged `always`.
fn apprise_match(logic: &[Vec<String>], target: &BTreeSet<String>) -> bool {
    if logic.is_empty() {
        return target.is_empty();
    }
    target.contains(MATCH_ALWAYS)
        || logic.iter().any(|group| {
            !group.is_empty()
                && group
                    .iter()
                    .all(|tag| tag == MATCH_ALL || target.contains(tag))
        })
}

/// Apprise API's `tag` string: `,` separates alternatives (OR), spaces join tags that must all
/// be present (AND): `"devops, admin sms"` = devops OR (admin AND sms).
pub fn parse_apprise_tag(text: &str) -> Vec<Vec<String>> {
    text.split([',', ';'])
        .map(|group| group.split_whitespace().map(str::to_owned).collect())
        .filter(|g: &Vec<String>| !g.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(channel: &str, when: &[(&str, &str)], tags: &[&str]) -> Target {
        Target {
            channel: channel.into(),
            to: "x".into(),
            when: when
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            template: None,
            priority: None,
            fallback: vec![],
        }
    }

    fn route(targets: Vec<Target>) -> RouteConfig {
        RouteConfig {
            targets,
            template: None,
            priority: None,
            per_alert: false,
            signature: None,
        }
    }

    fn channels<'a>(picked: &[&'a Target]) -> Vec<&'a str> {
        picked.iter().map(|t| t.channel.as_str()).collect()
    }

    fn alert(labels: &[(&str, &str)]) -> BTreeMap<String, String> {
        labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_critical_alert_goes_to_sms_and_slack_any_other_to_slack_only() {
        let r = route(vec![
            target("sms", &[("severity", "critical")], &[]),
            target("slack", &[], &[]),
        ]);
        let critical = Facts {
            labels: vec![
                alert(&[("severity", "warning")]),
                alert(&[("severity", "critical")]),
            ],
            ..Facts::default()
        };
        assert_eq!(channels(&pick(&r, &critical)), vec!["sms", "slack"]);
        let warning = Facts {
            labels: vec![alert(&[("severity", "warning")])],
            ..Facts::default()
        };
        assert_eq!(channels(&pick(&r, &warning)), vec!["slack"]);
    }

    #[test]
    fn every_condition_of_a_target_must_hold_on_one_alert() {
        let r = route(vec![target(
            "sms",
            &[("severity", "critical"), ("team", "db")],
            &[],
        )]);
        let split = Facts {
            labels: vec![alert(&[("severity", "critical")]), alert(&[("team", "db")])],
            ..Facts::default()
        };
        assert!(pick(&r, &split).is_empty());
    }

    #[test]
    fn apprise_tags_follow_apprises_and_or_rules() {
        let r = route(vec![
            target("plain", &[], &[]),
            target("devops", &[], &["devops"]),
            target("admin-sms", &[], &["admin", "sms"]),
            target("pager", &[], &["always"]),
        ]);
        let with = |tag: &str| Facts {
            tags: Tags::Apprise(parse_apprise_tag(tag)),
            ..Facts::default()
        };
        assert_eq!(
            channels(&pick(&r, &with(""))),
            vec!["plain"],
            "no tag: untagged targets only"
        );
        assert_eq!(
            channels(&pick(&r, &with("devops"))),
            vec!["devops", "pager"]
        );
        assert_eq!(
            channels(&pick(&r, &with("devops, admin sms"))),
            vec!["devops", "admin-sms", "pager"]
        );
        assert_eq!(
            channels(&pick(&r, &with("admin devops"))),
            vec!["pager"],
            "AND: no target has both"
        );
        assert_eq!(
            channels(&pick(&r, &with("all"))),
            vec!["plain", "devops", "admin-sms", "pager"]
        );
    }

    #[test]
    fn ntfy_tags_pick_tagged_targets_and_untagged_ones_take_everything() {
        let r = route(vec![
            target("mail", &[], &[]),
            target("sms", &[], &["urgent"]),
        ]);
        let facts = |tags: &[&str]| Facts {
            labels: vec![alert(&[("topic", "backups")])],
            tags: Tags::Carried(tags.iter().map(|t| t.to_string()).collect()),
        };
        assert_eq!(channels(&pick(&r, &facts(&[]))), vec!["mail"]);
        assert_eq!(
            channels(&pick(&r, &facts(&["warning", "urgent"]))),
            vec!["mail", "sms"]
        );
    }

    #[test]
    fn a_route_naming_an_unknown_channel_is_a_problem_naming_the_key() {
        let config = IngestConfig {
            routes: BTreeMap::from([(
                "alerts".to_owned(),
                route(vec![target("slack", &[], &[]), target("nope", &[], &[])]),
            )]),
            ntfy: NtfyConfig {
                listen: None,
                route: Some("missing".into()),
            },
        };
        assert_eq!(
            config.problems(&["slack"], false),
            vec![
                "ingest.routes.alerts.targets[1].channel: no channel named \"nope\"".to_owned(),
                "ingest.ntfy.route: no route named \"missing\"".to_owned(),
            ]
        );
    }
}
