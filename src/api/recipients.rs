//! `PUT/GET/DELETE /v1/recipients/{address}`: a recipient's preferences (see
//! [`crate::recipients`] for what each field does and how addresses are matched).

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::views::{RecipientAnswer, RecipientDeleted};
use crate::http as body;
use crate::http::ApiError;
use crate::recipients::{self, Preferences};

/// The answer for stored preferences: the normalized address beside every field.
fn shown(address: String, preferences: Preferences) -> Response {
    (
        StatusCode::OK,
        Json(RecipientAnswer {
            address,
            preferences,
        }),
    )
        .into_response()
}

fn none_for(address: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no preferences stored for {address:?}"),
    )
    .field("address")
}

/// `PUT`: validates and stores the whole set, replacing any; answers with what was stored.
pub(super) async fn put(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    headers: HeaderMap,
    req: Body,
) -> Result<Response, ApiError> {
    let address = recipients::address(&raw)?;
    let live = state.live();
    let json = body::read_json(
        &headers,
        req,
        live.server.max_body_bytes,
        live.server.body_timeout,
    )
    .await?;
    // serde would also read a struct from an array (`[null, null]`): only an object is one.
    if !json.value.is_object() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            "the body must be a JSON object of preferences",
        ));
    }
    let prefs: Preferences = body::shape(json.value)?;
    let prefs = prefs.validate(|c| {
        live.registry
            .get(&crate::outbox::ChannelName::from(c))
            .is_some()
    })?;
    state.outbox.put_preferences(&address, &prefs).await?;
    Ok(shown(address, prefs))
}

/// `GET`: the stored preferences, 404 when there are none.
pub(super) async fn get(
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let address = recipients::address(&raw)?;
    let found = state
        .outbox
        .preferences(std::slice::from_ref(&address))
        .await?;
    match found.into_iter().next() {
        Some((_, prefs)) => Ok(shown(address, prefs)),
        None => Err(none_for(&address)),
    }
}

/// `DELETE`: forgets them; 404 when there were none.
pub(super) async fn delete(
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let address = recipients::address(&raw)?;
    if state.outbox.delete_preferences(&address).await? {
        Ok((
            StatusCode::OK,
            Json(RecipientDeleted {
                address,
                deleted: true,
            }),
        )
            .into_response())
    } else {
        Err(none_for(&address))
    }
}
