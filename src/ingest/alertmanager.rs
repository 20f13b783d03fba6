//! Alertmanager's `webhook_config` receiver (payload version 4): one notification per group
//! (or per alert), keyed so that a retry or another HA replica's copy of the same group is the
//! same notification.
//!
//! Alertmanager retries only on 5xx and treats every other status as final, so the answer is
//! 2xx only after the commit, 503 when the queue cannot take it, and 4xx only for a body that
//! is not Alertmanager's (or a route that does not exist).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::LazyLock;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};

use super::route::{Facts, pick};
use super::{Content, Draft, Format, content_for, key_digest, priority_for};
use crate::config::RouteConfig;
use crate::http::{ApiError, AppState};

/// The payload, as far as notifyd reads it; unknown fields are accepted (and reach a route's
/// template through the raw payload).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub(crate) struct Payload {
    #[serde(rename = "groupKey", default)]
    pub group_key: String,
    pub status: Status,
    #[serde(default)]
    pub receiver: String,
    #[serde(rename = "groupLabels", default)]
    pub group_labels: BTreeMap<String, String>,
    #[serde(rename = "commonLabels", default)]
    pub common_labels: BTreeMap<String, String>,
    pub alerts: Vec<Alert>,
    #[serde(rename = "truncatedAlerts", default)]
    pub truncated_alerts: u64,
}

/// One alert of a group.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub(crate) struct Alert {
    pub status: Status,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(rename = "startsAt", default)]
    pub starts_at: String,
    #[serde(default)]
    pub fingerprint: Option<String>,
}

/// A group's or an alert's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Status {
    Firing,
    Resolved,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Self::Firing => "firing",
            Self::Resolved => "resolved",
        }
    }
}

impl Alert {
    /// Alertmanager's fingerprint, or one made from the labels when a sender left it out.
    fn fingerprint(&self) -> String {
        self.fingerprint.clone().unwrap_or_else(|| {
            let pairs: Vec<String> = self
                .labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            let refs: Vec<&str> = pairs.iter().map(String::as_str).collect();
            key_digest(&refs)
        })
    }
}

/// The default message: `[FIRING:2] HighDiskUsage — db-1, db-2`, then each alert with its
/// summary, description and links. Variables: the payload, plus `name`, `instances` and
/// `firing` computed from it.
const SUBJECT: &str = "[{{ status | upper }}{% if status == 'firing' %}:{{ firing }}{% endif %}] \
{{ name }}{% if instances %} — {{ instances | join(', ') }}{% if more_instances %} +{{ more_instances }}{% endif %}{% endif %}";
const BODY: &str = "{% for a in alerts %}\
{{ a.status | upper }}: {{ a.labels.alertname }}{% if a.labels.instance %} on {{ a.labels.instance }}{% endif %}\
{% if a.labels.severity %} ({{ a.labels.severity }}){% endif %}\n\
{% if a.annotations.summary %}  {{ a.annotations.summary }}\n{% endif %}\
{% if a.annotations.description %}  {{ a.annotations.description }}\n{% endif %}\
{% if a.generatorURL %}  Source: {{ a.generatorURL }}\n{% endif %}\
{% if a.annotations.runbook_url %}  Runbook: {{ a.annotations.runbook_url }}\n{% endif %}\
{% if a.dashboardURL %}  Dashboard: {{ a.dashboardURL }}\n{% endif %}\
{% endfor %}\
{% if more %}… and {{ more }} more alerts not shown.\n{% endif %}";

/// Alerts the default message lists one by one; the rest are counted.
const MAX_LISTED: usize = 50;
/// Instances the default subject names; the rest are counted.
const MAX_INSTANCES: usize = 5;

static MESSAGES: LazyLock<minijinja::Environment<'static>> = LazyLock::new(|| {
    let mut env = minijinja::Environment::new();
    env.set_fuel(Some(200_000));
    for (name, source) in [("subject", SUBJECT), ("body", BODY)] {
        if let Err(e) = env.add_template(name, source) {
            tracing::error!(error = %e, "The built-in Alertmanager message does not compile.");
        }
    }
    env
});

/// The default message for the alerts at `picked` (the whole group, or one alert of it).
pub(crate) fn default_message(
    raw: &Value,
    payload: &Payload,
    picked: &[usize],
    status: Status,
) -> Content {
    let alerts: Vec<&Alert> = picked
        .iter()
        .filter_map(|&i| payload.alerts.get(i))
        .collect();
    let name = alerts
        .iter()
        .find_map(|a| a.labels.get("alertname"))
        .or_else(|| payload.group_labels.get("alertname"))
        .cloned()
        .unwrap_or_else(|| "alert".into());
    let instances: BTreeSet<&str> = alerts
        .iter()
        .filter_map(|a| a.labels.get("instance").map(String::as_str))
        .collect();
    let firing = alerts.iter().filter(|a| a.status == Status::Firing).count();
    let raw_alerts: Vec<&Value> = picked
        .iter()
        .take(MAX_LISTED)
        .filter_map(|&i| raw.get("alerts").and_then(|a| a.get(i)))
        .collect();
    let unlisted = u64::try_from(alerts.len() - raw_alerts.len().min(alerts.len())).unwrap_or(0);
    let vars = json!({
        "status": status.as_str(),
        "firing": firing,
        "name": name,
        "instances": instances.iter().take(MAX_INSTANCES).collect::<Vec<_>>(),
        "more_instances": instances.len().saturating_sub(MAX_INSTANCES),
        "alerts": raw_alerts,
        "more": unlisted + payload.truncated_alerts,
    });
    let render = |name: &str| {
        MESSAGES
            .get_template(name)
            .and_then(|t| t.render(minijinja::value::Serde(&vars)))
            .map_err(|e| tracing::warn!(error = %e, "The Alertmanager message did not render."))
            .ok()
    };
    let subject = render("subject").map(|s| s.trim().to_owned());
    Content::Text {
        // Never nothing: a render that fails still leaves the subject to send.
        body: render("body")
            .map(|b| b.trim_end().to_owned())
            .or_else(|| subject.clone()),
        subject,
        html: None,
    }
}

/// Reads an Alertmanager-shaped JSON body (Alertmanager's own, or Grafana's): 422 naming the
/// field when it is not the shape.
pub(crate) fn parse(value: &Value) -> Result<Payload, ApiError> {
    crate::http::shape(value.clone()).map_err(|mut e| {
        e.message = format!("not an Alertmanager webhook payload: {}", e.message);
        e
    })
}

/// The drafts one payload makes for `route`: per target, one for the group or one per alert.
pub(crate) fn drafts(
    format: Format,
    route_name: &str,
    route: &RouteConfig,
    payload: &Payload,
    raw: &Value,
    default: impl Fn(&[usize], Status) -> Content,
) -> Vec<Draft> {
    let groups: Vec<(Vec<usize>, Status)> = if route.per_alert {
        payload
            .alerts
            .iter()
            .enumerate()
            .map(|(i, a)| (vec![i], a.status))
            .collect()
    } else {
        vec![((0..payload.alerts.len()).collect(), payload.status)]
    };
    let mut out = Vec::new();
    for (picked, status) in groups {
        let alerts: Vec<&Alert> = picked
            .iter()
            .filter_map(|&i| payload.alerts.get(i))
            .collect();
        if alerts.is_empty() {
            continue;
        }
        let facts = Facts {
            labels: alerts.iter().map(|a| a.labels.clone()).collect(),
            ..Facts::default()
        };
        let mut identity: Vec<String> = alerts
            .iter()
            .map(|a| format!("{}@{}", a.fingerprint(), a.starts_at))
            .collect();
        identity.sort();
        let ids = json!({
            "group_key": payload.group_key,
            "receiver": payload.receiver,
            "status": status.as_str(),
            "alerts": alerts.iter().map(|a| json!({
                "fingerprint": a.fingerprint(),
                "startsAt": a.starts_at,
            })).collect::<Vec<_>>(),
        });
        for target in pick(route, &facts) {
            let mut parts = vec![
                format.as_str(),
                route_name,
                &payload.group_key,
                status.as_str(),
                &target.channel,
                &target.to,
            ];
            parts.extend(identity.iter().map(String::as_str));
            out.push(Draft {
                target: target.clone(),
                content: content_for(route, target, raw, || default(&picked, status)),
                priority: priority_for(route, target, None),
                send_at: None,
                idempotency_key: Some(format!("{}:{}", format.as_str(), key_digest(&parts))),
                ids: ids.clone(),
            });
        }
    }
    out
}

/// `POST /ingest/alertmanager/{route}`.
pub(crate) async fn receive(
    State(state): State<AppState>,
    Path(route_name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let result = handle(&state, &route_name, &headers, body).await;
    super::respond(&state, Format::Alertmanager, result)
}

async fn handle(
    state: &AppState,
    route_name: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<Vec<super::Stored>, ApiError> {
    let live = state.live();
    let route = super::route(&live, route_name)?;
    let raw = crate::http::read_json(
        headers,
        body,
        live.server.max_body_bytes,
        live.server.body_timeout,
    )
    .await?
    .value;
    let payload = parse(&raw)?;
    let drafts = drafts(
        Format::Alertmanager,
        route_name,
        route,
        &payload,
        &raw,
        |picked, status| default_message(&raw, &payload, picked, status),
    );
    super::store(state, &live, Format::Alertmanager, route_name, drafts).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Target;

    pub(crate) fn example() -> Value {
        json!({
            "version": "4",
            "groupKey": "{}:{alertname=\"HighDiskUsage\"}",
            "truncatedAlerts": 0,
            "status": "firing",
            "receiver": "notifyd",
            "groupLabels": {"alertname": "HighDiskUsage"},
            "commonLabels": {"alertname": "HighDiskUsage", "severity": "critical"},
            "commonAnnotations": {},
            "externalURL": "http://am-1:9093",
            "alerts": [
                {"status": "firing",
                 "labels": {"alertname": "HighDiskUsage", "instance": "db-1", "severity": "critical"},
                 "annotations": {"summary": "Disk 97% full on db-1", "runbook_url": "https://runbooks/disk"},
                 "startsAt": "2026-12-01T10:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
                 "generatorURL": "http://prometheus/graph?g0.expr=disk", "fingerprint": "aaaa1111"},
                {"status": "firing",
                 "labels": {"alertname": "HighDiskUsage", "instance": "db-2", "severity": "critical"},
                 "annotations": {"summary": "Disk 95% full on db-2"},
                 "startsAt": "2026-12-01T10:01:00Z", "endsAt": "0001-01-01T00:00:00Z",
                 "generatorURL": "http://prometheus/graph?g0.expr=disk", "fingerprint": "bbbb2222",
                 "someFutureField": true}
            ],
            "someFutureField": {"x": 1}
        })
    }

    fn route(per_alert: bool) -> RouteConfig {
        RouteConfig {
            targets: vec![Target {
                channel: "slack".into(),
                to: "#ops".into(),
                when: BTreeMap::new(),
                tags: BTreeSet::new(),
                template: None,
                priority: None,
                fallback: vec![],
            }],
            template: None,
            priority: None,
            per_alert,
            signature: None,
        }
    }

    fn make(raw: &Value, per_alert: bool) -> Vec<Draft> {
        let payload = parse(raw).unwrap();
        drafts(
            Format::Alertmanager,
            "alerts",
            &route(per_alert),
            &payload,
            raw,
            |picked, status| default_message(raw, &payload, picked, status),
        )
    }

    #[test]
    fn a_group_becomes_one_readable_notification() {
        let d = make(&example(), false);
        assert_eq!(d.len(), 1);
        let Content::Text { subject, body, .. } = &d[0].content else {
            panic!("{:?}", d[0].content)
        };
        assert_eq!(
            subject.as_deref(),
            Some("[FIRING:2] HighDiskUsage — db-1, db-2")
        );
        let body = body.as_deref().unwrap();
        assert!(body.contains("Disk 97% full on db-1"), "{body}");
        assert!(body.contains("Disk 95% full on db-2"), "{body}");
        assert!(body.contains("Runbook: https://runbooks/disk"), "{body}");
        assert!(
            body.contains("Source: http://prometheus/graph?g0.expr=disk"),
            "{body}"
        );
    }

    #[test]
    fn replicas_that_differ_only_in_their_own_url_derive_the_same_key() {
        let mut other = example();
        other["externalURL"] = json!("http://am-2:9093");
        assert_eq!(
            make(&example(), false)[0].idempotency_key,
            make(&other, false)[0].idempotency_key
        );
    }

    #[test]
    fn resolving_or_a_new_start_time_is_a_new_notification() {
        let first = make(&example(), false)[0].idempotency_key.clone();
        let mut resolved = example();
        resolved["status"] = json!("resolved");
        assert_ne!(make(&resolved, false)[0].idempotency_key, first);
        let mut restarted = example();
        restarted["alerts"][0]["startsAt"] = json!("2026-12-01T11:00:00Z");
        assert_ne!(make(&restarted, false)[0].idempotency_key, first);
    }

    #[test]
    fn per_alert_routes_make_one_notification_per_alert() {
        let d = make(&example(), true);
        assert_eq!(d.len(), 2);
        let Content::Text { subject, .. } = &d[1].content else {
            panic!()
        };
        assert_eq!(subject.as_deref(), Some("[FIRING:1] HighDiskUsage — db-2"));
        assert_ne!(d[0].idempotency_key, d[1].idempotency_key);
    }

    #[test]
    fn a_large_group_names_a_few_instances_and_counts_the_rest() {
        let mut raw = example();
        let alerts: Vec<Value> = (0..60)
            .map(|i| {
                json!({"status": "firing", "labels": {"alertname": "Down", "instance": format!("web-{i:02}")},
                       "annotations": {"summary": format!("web-{i:02} is down")},
                       "startsAt": "2026-12-01T10:00:00Z", "fingerprint": format!("f{i}")})
            })
            .collect();
        raw["alerts"] = json!(alerts);
        raw["truncatedAlerts"] = json!(7);
        let d = make(&raw, false);
        let Content::Text { subject, body, .. } = &d[0].content else {
            panic!()
        };
        assert_eq!(
            subject.as_deref(),
            Some("[FIRING:60] Down — web-00, web-01, web-02, web-03, web-04 +55")
        );
        let body = body.as_deref().unwrap();
        assert!(body.contains("web-49 is down") && !body.contains("web-50 is down"));
        assert!(body.ends_with("… and 17 more alerts not shown."), "{body}");
    }

    #[test]
    fn a_body_without_alerts_is_refused_naming_the_field() {
        let err = parse(&json!({"status": "firing", "groupKey": "x"})).unwrap_err();
        assert_eq!(err.status, axum::http::StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(err.field.as_deref(), Some("alerts"));
        let err = parse(&json!({"status": "burning", "alerts": []})).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("status"));
    }
}
