//! Grafana's webhook contact point: Alertmanager's payload plus `version: "1"`, `orgId`,
//! `state`, `title` and `message`, optionally signed with HMAC-SHA256 (hex, over the body or
//! over `"<timestamp>:<body>"`). The signature is checked before anything is read or stored.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

use super::alertmanager::{self, Status};
use super::{Content, Format};
use crate::config::SignatureConfig;
use crate::http::{ApiError, AppState};

/// Why a signature was refused (the 401's message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SignatureError {
    #[error("no {0} header")]
    Missing(String),
    #[error("{0} is not a Unix timestamp")]
    BadTimestamp(String),
    #[error("the timestamp is more than {0} s away from our clock")]
    Stale(u64),
    #[error("the signature does not match")]
    Mismatch,
}

/// Checks Grafana's signature of `body` at `now` (Unix seconds).
pub(crate) fn verify(
    config: &SignatureConfig,
    headers: &HeaderMap,
    body: &[u8],
    now: u64,
) -> Result<(), SignatureError> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .ok_or_else(|| SignatureError::Missing(name.to_owned()))
    };
    let signature = header(&config.header)?;
    let given = hex::decode(signature).map_err(|_| SignatureError::Mismatch)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(config.secret.expose().as_bytes())
        .map_err(|_| SignatureError::Mismatch)?;
    // Grafana sends a timestamp only when its contact point names a timestamp header; then the
    // signature covers it, so dropping it from a captured request breaks the signature.
    if let Ok(ts) = header(&config.timestamp_header) {
        let at: u64 = ts
            .parse()
            .map_err(|_| SignatureError::BadTimestamp(config.timestamp_header.clone()))?;
        let tolerance = config.tolerance.as_secs();
        if at.abs_diff(now) > tolerance {
            return Err(SignatureError::Stale(tolerance));
        }
        mac.update(ts.as_bytes());
        mac.update(b":");
    }
    mac.update(body);
    // Constant time.
    mac.verify_slice(&given)
        .map_err(|_| SignatureError::Mismatch)
}

/// Grafana's own `title` and `message` for a whole group; Alertmanager's default message for
/// one alert or when Grafana sent none.
pub(crate) fn default_message(
    raw: &Value,
    payload: &alertmanager::Payload,
    picked: &[usize],
    status: Status,
) -> Content {
    let text = |k: &str| {
        raw.get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.trim().is_empty())
            .map(str::to_owned)
    };
    let whole_group = picked.len() == payload.alerts.len();
    match (whole_group, text("title"), text("message")) {
        (true, Some(subject), body) if body.is_some() || payload.alerts.is_empty() => {
            Content::Text {
                subject: Some(subject),
                body,
                html: None,
            }
        }
        _ => alertmanager::default_message(raw, payload, picked, status),
    }
}

/// `POST` or `PUT /ingest/grafana/{route}`.
pub(crate) async fn receive(
    State(state): State<AppState>,
    Path(route_name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let result = handle(&state, &route_name, &headers, body).await;
    super::respond(&state, Format::Grafana, result)
}

async fn handle(
    state: &AppState,
    route_name: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<Vec<super::Stored>, ApiError> {
    let live = state.live();
    let route = super::route(&live, route_name)?;
    let bytes = crate::http::read_bytes(
        headers,
        body,
        live.server.max_body_bytes,
        live.server.body_timeout,
    )
    .await?;
    if let Some(config) = &route.signature {
        let now = crate::clock::now_secs();
        verify(config, headers, &bytes, now).map_err(|e| {
            tracing::debug!(route = %route_name, reason = %e, "Refused an unverified Grafana request.");
            ApiError::new(StatusCode::UNAUTHORIZED, "invalid_signature", e.to_string())
        })?;
    }
    let raw: Value = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("the body is not valid JSON: {e}"),
        )
    })?;
    let payload = alertmanager::parse(&raw)?;
    let drafts = alertmanager::drafts(
        Format::Grafana,
        route_name,
        route,
        &payload,
        &raw,
        |picked, status| default_message(&raw, &payload, picked, status),
    );
    super::store(state, &live, Format::Grafana, route_name, drafts).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn config() -> SignatureConfig {
        SignatureConfig {
            secret: notifyd_channels::Secret::new("0123456789abcdef-secret"),
            header: "X-Grafana-Alerting-Signature".into(),
            timestamp_header: "X-Grafana-Alerting-Timestamp".into(),
            tolerance: Duration::from_secs(300),
        }
    }

    fn sign(text: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(b"0123456789abcdef-secret").unwrap();
        mac.update(text.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    fn headers(pairs: &[(&'static str, String)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn a_signature_over_the_body_verifies() {
        let h = headers(&[("X-Grafana-Alerting-Signature", sign("{}"))]);
        assert_eq!(verify(&config(), &h, b"{}", 0), Ok(()));
        assert_eq!(
            verify(&config(), &h, b"{ }", 0),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn the_configured_header_names_are_the_ones_read() {
        let renamed = SignatureConfig {
            header: "X-Sig".into(),
            timestamp_header: "X-Sig-Time".into(),
            ..config()
        };
        let h = headers(&[
            ("X-Sig", sign("1700000000:{}")),
            ("X-Sig-Time", "1700000000".into()),
        ]);
        assert_eq!(verify(&renamed, &h, b"{}", 1_700_000_000), Ok(()));
        let defaults = headers(&[("X-Grafana-Alerting-Signature", sign("{}"))]);
        assert_eq!(
            verify(&renamed, &defaults, b"{}", 1_700_000_000),
            Err(SignatureError::Missing("X-Sig".into()))
        );
    }

    #[test]
    fn a_timestamped_signature_covers_the_timestamp_and_must_be_fresh() {
        let h = headers(&[
            ("X-Grafana-Alerting-Signature", sign("1700000000:{}")),
            ("X-Grafana-Alerting-Timestamp", "1700000000".into()),
        ]);
        assert_eq!(verify(&config(), &h, b"{}", 1_700_000_100), Ok(()));
        let stripped = headers(&[("X-Grafana-Alerting-Signature", sign("1700000000:{}"))]);
        assert_eq!(
            verify(&config(), &stripped, b"{}", 1_700_000_100),
            Err(SignatureError::Mismatch),
            "a timestamped signature without its timestamp does not verify"
        );
        assert_eq!(
            verify(&config(), &h, b"{}", 1_700_000_400),
            Err(SignatureError::Stale(300))
        );
        let unsigned = headers(&[("X-Grafana-Alerting-Timestamp", "1700000000".into())]);
        assert_eq!(
            verify(&config(), &unsigned, b"{}", 1_700_000_000),
            Err(SignatureError::Missing(
                "X-Grafana-Alerting-Signature".into()
            ))
        );
    }
}
