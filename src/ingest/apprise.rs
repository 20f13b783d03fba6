//! The Apprise API's stateful notify: `POST /notify/{key}`, or `POST /notify` with the key in
//! `X-Apprise-Config-ID` (Apprise's v2 form), as form, JSON or multipart bodies with `title`,
//! `body`, `type`, `format` and `tag`. The key names a route. Apprise clients treat anything
//! but 200 as a failure, so a stored notification answers 200.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use serde_json::{Value, json};

use super::route::{Facts, Tags, parse_apprise_tag, pick};
use super::{Content, Draft, Format, content_for, priority_for};
use crate::http::{ApiError, AppState};
use crate::outbox::Priority;

/// Where the v2 client puts the key.
const CONFIG_ID_HEADER: &str = "x-apprise-config-id";

/// Apprise's notification types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Info,
    Success,
    Warning,
    Failure,
}

impl Kind {
    fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "" | "info" => Some(Self::Info),
            "success" => Some(Self::Success),
            "warning" => Some(Self::Warning),
            "failure" => Some(Self::Failure),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Success => "success",
            Self::Warning => "warning",
            Self::Failure => "failure",
        }
    }
}

/// One Apprise notify request, read from any of its body forms.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Request {
    pub title: Option<String>,
    pub body: String,
    pub kind: Kind,
    /// `text`, `markdown` or `html`.
    pub format: Option<String>,
    pub tag: Vec<Vec<String>>,
    /// Everything the request said, for a route's template.
    pub raw: Value,
}

fn invalid(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_field", message).field(field)
}

/// Reads the request from its fields (as the form, multipart or JSON body gave them).
pub(crate) fn from_fields(raw: Value) -> Result<Request, ApiError> {
    let text = |k: &str| -> Result<Option<String>, ApiError> {
        match raw.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(invalid(k, format!("{k} must be a string"))),
        }
    };
    let body = text("body")?
        .filter(|b| !b.trim().is_empty())
        .ok_or_else(|| invalid("body", "give a body (Apprise's message text)"))?;
    let kind_text = text("type")?.unwrap_or_default();
    let kind = Kind::parse(&kind_text).ok_or_else(|| {
        invalid(
            "type",
            format!("{kind_text:?} is not one of info, success, warning, failure"),
        )
    })?;
    let format = text("format")?.map(|f| f.trim().to_ascii_lowercase());
    if let Some(f) = &format
        && !matches!(f.as_str(), "text" | "markdown" | "html")
    {
        return Err(invalid(
            "format",
            format!("{f:?} is not one of text, markdown, html"),
        ));
    }
    // A string uses Apprise API's syntax; a list is Apprise's: entries OR-ed, an inner list
    // (or a space-separated string) AND-ed.
    let tag = match raw.get("tag").or_else(|| raw.get("tags")) {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => parse_apprise_tag(s),
        Some(Value::Array(entries)) => entries
            .iter()
            .map(|e| match e {
                Value::String(s) => Ok(s.split_whitespace().map(str::to_owned).collect()),
                Value::Array(all) => all
                    .iter()
                    .map(|t| t.as_str().map(str::to_owned))
                    .collect::<Option<Vec<String>>>()
                    .ok_or_else(|| invalid("tag", "tags must be strings")),
                _ => Err(invalid("tag", "tags must be strings")),
            })
            .collect::<Result<Vec<Vec<String>>, ApiError>>()?
            .into_iter()
            .filter(|g| !g.is_empty())
            .collect(),
        Some(_) => return Err(invalid("tag", "tag must be a string or a list")),
    };
    Ok(Request {
        title: text("title")?.filter(|t| !t.trim().is_empty()),
        body,
        kind,
        format,
        tag,
        raw,
    })
}

/// The fields of a form-urlencoded body. A repeated field becomes a list: Apprise sends several
/// tags as `tag=a&tag=b` (either of them).
fn form_fields(bytes: &[u8]) -> Value {
    let mut map = serde_json::Map::new();
    for (k, v) in form_urlencoded::parse(bytes) {
        let v = Value::String(v.into_owned());
        match map.get_mut(k.as_ref()) {
            Some(Value::Array(all)) => all.push(v),
            Some(first) => *first = Value::Array(vec![first.take(), v]),
            None => {
                map.insert(k.into_owned(), v);
            }
        }
    }
    Value::Object(map)
}

/// The text fields of a multipart/form-data body; file parts (attachments) are skipped.
pub(crate) fn multipart_fields(bytes: &[u8], boundary: &str) -> Result<Value, ApiError> {
    let bad = || invalid("body", "malformed multipart/form-data body");
    let delimiter = format!("--{boundary}");
    let text = String::from_utf8_lossy(bytes);
    let mut fields = serde_json::Map::new();
    let mut parts = text.split(delimiter.as_str());
    parts.next(); // the preamble
    for part in parts {
        if part.starts_with("--") {
            break;
        }
        let part = part.strip_prefix("\r\n").ok_or_else(bad)?;
        let (head, content) = part.split_once("\r\n\r\n").ok_or_else(bad)?;
        let content = content.strip_suffix("\r\n").unwrap_or(content);
        let disposition = head
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("content-disposition:"))
            .ok_or_else(bad)?;
        let param = |name: &str| {
            disposition.split(';').find_map(|p| {
                p.trim()
                    .strip_prefix(name)
                    .and_then(|v| v.strip_prefix('='))
                    .map(|v| v.trim_matches('"').to_owned())
            })
        };
        if param("filename").is_some() {
            continue;
        }
        let name = param("name").ok_or_else(bad)?;
        fields.insert(name, Value::String(content.to_owned()));
    }
    Ok(Value::Object(fields))
}

/// Reads the body in whichever form it came: JSON, form-urlencoded or multipart.
pub(crate) fn parse_body(headers: &HeaderMap, bytes: &[u8]) -> Result<Request, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/x-www-form-urlencoded")
        .to_owned();
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let fields = match essence.as_str() {
        "application/json" => serde_json::from_slice::<Value>(bytes).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_json",
                format!("the body is not valid JSON: {e}"),
            )
        })?,
        "application/x-www-form-urlencoded" => form_fields(bytes),
        "multipart/form-data" => {
            let boundary = content_type
                .split(';')
                .find_map(|p| p.trim().strip_prefix("boundary="))
                .map(|b| b.trim_matches('"').to_owned())
                .ok_or_else(|| invalid("body", "multipart/form-data without a boundary"))?;
            multipart_fields(bytes, &boundary)?
        }
        other => {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                format!("send JSON, a form or multipart/form-data, not {other:?}"),
            ));
        }
    };
    if !fields.is_object() {
        return Err(invalid("body", "the JSON body must be an object"));
    }
    from_fields(fields)
}

/// Text from HTML, for the channels that show text: tags dropped, line breaks kept.
fn html_to_text(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut in_tag = false;
    let mut tag = String::new();
    for c in html.chars() {
        match (in_tag, c) {
            (false, '<') => {
                in_tag = true;
                tag.clear();
            }
            (true, '>') => {
                in_tag = false;
                let name = tag.trim_start_matches('/').to_ascii_lowercase();
                if name.starts_with("br") || name.starts_with('p') || name.starts_with("div") {
                    out.push('\n');
                }
            }
            (true, c) => tag.push(c),
            (false, c) => out.push(c),
        }
    }
    out.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
        .trim()
        .to_owned()
}

/// The drafts a request makes for the route named by `key`.
pub(crate) fn drafts(
    key: &str,
    route: &super::RouteConfig,
    req: &Request,
    apprise_id: Option<&str>,
) -> Vec<Draft> {
    let facts = Facts {
        labels: Vec::new(),
        tags: Tags::Apprise(req.tag.clone()),
    };
    // Apprise's own word: a failure is urgent; everything else takes the route's priority.
    let from_sender = (req.kind == Kind::Failure).then_some(Priority::High);
    let ids = json!({
        "key": key,
        "type": req.kind.as_str(),
        "tag": req.tag,
        "apprise_id": apprise_id,
    });
    let (body, html) = match req.format.as_deref() {
        Some("html") => (html_to_text(&req.body), Some(req.body.clone())),
        _ => (req.body.clone(), None),
    };
    pick(route, &facts)
        .into_iter()
        .map(|target| Draft {
            target: target.clone(),
            content: content_for(route, target, &req.raw, || Content::Text {
                subject: req.title.clone(),
                body: Some(body.clone()),
                html: html.clone(),
            }),
            priority: priority_for(route, target, from_sender),
            send_at: None,
            idempotency_key: None,
            ids: ids.clone(),
        })
        .collect()
}

/// `POST /notify/{key}` (Apprise's v1 form).
pub(crate) async fn notify_key(
    State(state): State<AppState>,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    answer(&state, Some(key), headers, body).await
}

/// `POST /notify` with `X-Apprise-Config-ID` (Apprise's v2 form).
pub(crate) async fn notify(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    answer(&state, None, headers, body).await
}

async fn answer(
    state: &AppState,
    key: Option<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let result = handle(state, key, &headers, body).await;
    super::respond(state, Format::Apprise, result)
}

async fn handle(
    state: &AppState,
    key: Option<String>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Vec<super::Stored>, ApiError> {
    let key = match key {
        Some(k) => k,
        None => headers
            .get(CONFIG_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| {
                invalid(
                    "X-Apprise-Config-ID",
                    "give the key in the path (/notify/{key}) or in X-Apprise-Config-ID",
                )
            })?,
    };
    let live = state.live();
    let route = super::route(&live, &key)?;
    let bytes = crate::http::read_bytes(
        headers,
        body,
        live.server.max_body_bytes,
        live.server.body_timeout,
    )
    .await?;
    let req = parse_body(headers, &bytes)?;
    let apprise_id = headers.get("x-apprise-id").and_then(|v| v.to_str().ok());
    let drafts = drafts(&key, route, &req, apprise_id);
    if drafts.is_empty() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "no_target",
            format!("no target of route {key:?} matches the tag given"),
        )
        .field("tag"));
    }
    super::store(state, &live, Format::Apprise, &key, drafts).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn field_names(req: &Request) -> BTreeMap<String, String> {
        req.raw
            .as_object()
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_owned())))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn with_type(ct: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, ct.parse().unwrap());
        h
    }

    #[test]
    fn a_form_body_is_read_like_apprises_default_client_sends_it() {
        let req = parse_body(
            &with_type("application/x-www-form-urlencoded"),
            b"title=Backup&body=Nightly+backup+failed&type=failure&tag=devops%2C+admin+sms",
        )
        .unwrap();
        assert_eq!(req.title.as_deref(), Some("Backup"));
        assert_eq!(req.body, "Nightly backup failed");
        assert_eq!(req.kind, Kind::Failure);
        assert_eq!(
            req.tag,
            vec![
                vec!["devops".to_owned()],
                vec!["admin".into(), "sms".into()]
            ]
        );
    }

    #[test]
    fn repeated_form_tags_are_alternatives() {
        let req = parse_body(
            &with_type("application/x-www-form-urlencoded"),
            b"body=b&tag=devops&tag=admin+sms",
        )
        .unwrap();
        assert_eq!(
            req.tag,
            vec![
                vec!["devops".to_owned()],
                vec!["admin".into(), "sms".into()]
            ]
        );
    }

    #[test]
    fn a_json_body_with_a_tag_list_is_or_of_ands() {
        let req = parse_body(
            &with_type("application/json"),
            br#"{"body": "b", "tag": [["a", "b"], "c"], "format": "html"}"#,
        )
        .unwrap();
        assert_eq!(
            req.tag,
            vec![vec!["a".to_owned(), "b".into()], vec!["c".into()]]
        );
        assert_eq!(req.format.as_deref(), Some("html"));
    }

    #[test]
    fn a_multipart_body_gives_its_text_fields_and_skips_files() {
        let body = "--XyZ\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nT\r\n\
                    --XyZ\r\nContent-Disposition: form-data; name=\"body\"\r\n\r\nline 1\r\nline 2\r\n\
                    --XyZ\r\nContent-Disposition: form-data; name=\"file01\"; filename=\"a.txt\"\r\n\
                    Content-Type: text/plain\r\n\r\nattached\r\n--XyZ--\r\n";
        let req = parse_body(
            &with_type("multipart/form-data; boundary=XyZ"),
            body.as_bytes(),
        )
        .unwrap();
        assert_eq!(req.title.as_deref(), Some("T"));
        assert_eq!(req.body, "line 1\r\nline 2");
        assert!(!field_names(&req).contains_key("file01"));
    }

    #[test]
    fn a_missing_body_or_an_unknown_type_is_named() {
        let err = parse_body(&with_type("application/json"), br#"{"title": "x"}"#).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("body"));
        let err = parse_body(
            &with_type("application/json"),
            br#"{"body": "x", "type": "fatal"}"#,
        )
        .unwrap_err();
        assert_eq!(err.field.as_deref(), Some("type"));
    }

    #[test]
    fn html_becomes_text_for_text_channels() {
        assert_eq!(
            html_to_text("<p>Disk <b>full</b></p>on db&amp;1<br/>now"),
            "Disk full\non db&1\nnow"
        );
    }
}
