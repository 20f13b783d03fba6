//! Reading a JSON request body: size limit (413), syntax (400), shape (422 naming the field).

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// A JSON request body, parsed.
pub(crate) struct JsonBody {
    pub value: serde_json::Value,
    /// Paths of integer literals outside `i64`, which serde_json would have turned into floats
    /// (see [`crate::json_bounds`]); the caller refuses the items they are in.
    pub inexact_integers: Vec<String>,
}

/// A 422 for the first of `inexact` (paths of integers that would not be kept exactly) under
/// `prefix` (`""` for the whole body, `notifications[3]` for a batch item).
pub(crate) fn inexact_under(inexact: &[String], prefix: &str) -> Option<ApiError> {
    let path = inexact.iter().find(|p| {
        prefix.is_empty()
            || p.strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
    })?;
    Some(
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "inexact_integer",
            "an integer outside the signed 64-bit range would not be kept exactly; \
             send it as a string",
        )
        .field(path.clone()),
    )
}

/// Reads at most `limit` bytes of JSON.
pub(crate) async fn read_json(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    within: std::time::Duration,
) -> Result<JsonBody, ApiError> {
    json_content_type(headers)?;
    let bytes = read_bytes(headers, body, limit, within).await?;
    Ok(JsonBody {
        value: parse(&bytes)?,
        inexact_integers: crate::json_bounds::inexact_integers(&bytes),
    })
}

/// A JSON request body read for one shape `T`.
pub(crate) struct ShapedBody<T> {
    /// The body as a `T`, or the 422 [`shape`] names the field of.
    pub shaped: Result<T, ApiError>,
    /// As [`JsonBody::inexact_integers`].
    pub inexact_integers: Vec<String>,
}

/// [`read_json`] then [`shape`], with the same answers, but a body that is a `T` is parsed once,
/// straight into it, without building (and dropping) a `Value` tree first: a single `POST`'s
/// common case.
///
/// `read_whole` says whether a `T` parsed straight from the text read every value in it. A part
/// that ignores unknown fields skips their values without the checks a `Value` parse makes
/// (nesting depth, numbers in range), so a `T` that skipped some takes the two steps.
pub(crate) async fn read_json_as<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    within: std::time::Duration,
    read_whole: fn(&T) -> bool,
) -> Result<ShapedBody<T>, ApiError> {
    json_content_type(headers)?;
    let bytes = read_bytes(headers, body, limit, within).await?;
    let shaped = match serde_json::from_slice::<T>(&bytes) {
        Ok(shaped) if read_whole(&shaped) => Ok(shaped),
        // Whatever the direct parse refused (bad JSON, a wrong or unknown field, a field given
        // twice, which a `Value` keeps the last of) is decided by the two steps, as before.
        _ => shape(parse(&bytes)?),
    };
    Ok(ShapedBody {
        shaped,
        inexact_integers: crate::json_bounds::inexact_integers(&bytes),
    })
}

/// Refuses a declared content type other than JSON (none declared is taken as JSON).
fn json_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or_default().to_ascii_lowercase();
        let essence = ct.split(';').next().unwrap_or_default().trim();
        if essence != "application/json" && !essence.ends_with("+json") {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                format!("send application/json, not {essence:?}"),
            ));
        }
    }
    Ok(())
}

/// Parses JSON text; a syntax error is a 400.
fn parse(bytes: &[u8]) -> Result<serde_json::Value, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("the body is not valid JSON: {e}"),
        )
    })
}

/// Deserializes a JSON value into `T`; a mismatch is a 422 naming the field.
pub(crate) fn shape<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let message = e.inner().to_string();
        let path = e.path().to_string();
        let field = match (named_field(&message), path.as_str()) {
            (Some(name), ".") => Some(name.to_owned()),
            // Unknown fields already end their path; missing ones stop at the parent.
            (Some(name), p) if p == name || p.ends_with(&format!(".{name}")) => Some(p.to_owned()),
            (Some(name), parent) => Some(format!("{parent}.{name}")),
            (None, ".") => None,
            (None, path) => Some(path.to_owned()),
        };
        let err = ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", message);
        match field {
            Some(f) => err.field(f),
            None => err,
        }
    })
}

/// serde names the field of "missing field `x`" and "unknown field `x`" only in the message.
fn named_field(message: &str) -> Option<&str> {
    let rest = message
        .strip_prefix("missing field `")
        .or_else(|| message.strip_prefix("unknown field `"))?;
    rest.split('`').next()
}

/// Reads at most `limit` bytes within `within`: 413 past the limit, 408 past the time.
pub(crate) async fn read_bytes(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    within: std::time::Duration,
) -> Result<axum::body::Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the request body is larger than {limit} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let bytes = tokio::time::timeout(within, axum::body::to_bytes(body, limit))
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                format!("the request body did not arrive within {within:?}"),
            )
        })?
        .map_err(|_| too_large())?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::submission::Submission;
    use serde_json::json;

    #[test]
    fn a_missing_field_is_named() {
        let err = shape::<Submission>(json!({"channel": "log"})).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("to"));
        assert_eq!(err.status, StatusCode::UNPROCESSABLE_ENTITY);
    }

    #[test]
    fn an_unknown_field_is_named() {
        let err =
            shape::<Submission>(json!({"channel": "log", "to": "x", "bodyy": "hi"})).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("bodyy"));
    }

    #[test]
    fn a_wrong_type_names_its_path() {
        let err = shape::<Submission>(json!({"channel": "log", "to": "x", "priority": "urgent"}))
            .unwrap_err();
        assert_eq!(err.field.as_deref(), Some("priority"));
        let err = shape::<Submission>(
            json!({"channel": "log", "to": "x", "fallback": [{"channel": 1, "to": "y"}]}),
        )
        .unwrap_err();
        assert_eq!(err.field.as_deref(), Some("fallback[0].channel"));
    }
}
