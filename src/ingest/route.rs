//! The pure function that picks a route's targets (`[ingest]`, `config/ingest.rs`) for one
//! incoming message (by label, tag or topic).

use std::collections::{BTreeMap, BTreeSet};

#[cfg(test)]
use crate::config::{IngestConfig, NtfyConfig};
use crate::config::{RouteConfig, Target};

/// What the targets of a route are picked by, for one incoming message.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Facts {
    /// Alertmanager and Grafana: each alert's labels (a group matches when any alert does).
    /// ntfy: one set, `{topic}`.
    pub labels: Vec<BTreeMap<String, String>>,
    pub tags: Tags,
}

/// How a message's tags select targets.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tags {
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
pub(crate) fn pick<'r>(route: &'r RouteConfig, facts: &Facts) -> Vec<&'r Target> {
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
pub(crate) fn parse_apprise_tag(text: &str) -> Vec<Vec<String>> {
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
