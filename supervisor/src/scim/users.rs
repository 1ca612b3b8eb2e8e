//! `/scim/{app}/Users`: create, read, list with filter, replace, patch, delete.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::Value;

use super::error::{SCIM_JSON, ScimError};
use super::filter::Filter;
use super::resource::{self, list_response, parse_body, user_response, validate_user};
use super::{Authorized, ScimBody, ScimState};
use crate::store::{Record, RecordState};

const RESOURCE_TYPE: &str = "User";
/// Page size when the client gives none, and the most we return in one page.
const DEFAULT_COUNT: usize = 100;
const MAX_COUNT: usize = 1000;

fn scim_json(status: StatusCode, body: &Value) -> Response {
    let mut response = (status, body.to_string()).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(SCIM_JSON));
    response
}

fn user_reply(status: StatusCode, record: &Record, base_url: &str) -> Response {
    let mut response = scim_json(status, &user_response(record, base_url));
    if let Ok(etag) = HeaderValue::from_str(&resource::etag(record)) {
        response.headers_mut().insert(header::ETAG, etag);
    }
    response
}

async fn present(state: &ScimState, app: &str, id: &str) -> Result<Record, ScimError> {
    state
        .provisioner
        .store
        .get(app, RESOURCE_TYPE, id)
        .await
        .map_err(|e| ScimError::from(crate::provision::ProvisionError::Store(e)))?
        .filter(|r| r.state == RecordState::Present)
        .ok_or_else(|| ScimError::not_found(format!("no User with id {id:?}")))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListQuery {
    filter: Option<String>,
    start_index: Option<String>,
    count: Option<String>,
}

fn positive(name: &str, value: Option<&str>, default: usize) -> Result<usize, ScimError> {
    match value {
        None => Ok(default),
        Some(v) => v
            .parse::<i64>()
            .map(|n| n.max(0) as usize)
            .map_err(|_| ScimError::bad_request("invalidValue", format!("{name} must be an integer"))),
    }
}

/// `GET /Users[?filter=...&startIndex=...&count=...]`, answered from the connector space.
pub async fn list(
    State(state): State<Arc<ScimState>>,
    auth: Authorized,
    Query(query): Query<ListQuery>,
) -> Result<Response, ScimError> {
    let filter = query
        .filter
        .as_deref()
        .map(Filter::parse)
        .transpose()
        .map_err(|e| ScimError::bad_request("invalidFilter", e.to_string()))?;
    // startIndex is 1-based; values below 1 mean 1 (RFC 7644 §3.4.2.4).
    let start_index = positive("startIndex", query.start_index.as_deref(), 1)?.max(1);
    let count = positive("count", query.count.as_deref(), DEFAULT_COUNT)?.min(MAX_COUNT);
    let store = &state.provisioner.store;
    let store_error = |e| ScimError::from(crate::provision::ProvisionError::Store(e));
    let records = match filter.as_ref().and_then(Filter::user_name_eq) {
        Some(name) => store
            .by_user_name(&auth.app.name, RESOURCE_TYPE, name)
            .await
            .map_err(store_error)?
            .filter(|r| r.state == RecordState::Present)
            .into_iter()
            .collect(),
        None => store.list(&auth.app.name, RESOURCE_TYPE).await.map_err(store_error)?,
    };
    let matching: Vec<Value> = records
        .iter()
        .map(|r| user_response(r, &auth.base_url))
        .filter(|u| filter.as_ref().is_none_or(|f| f.matches(u)))
        .collect();
    let total = matching.len();
    let page = matching.into_iter().skip(start_index - 1).take(count).collect();
    Ok(scim_json(StatusCode::OK, &list_response(page, total, start_index)))
}

/// `POST /Users`.
pub async fn create(
    State(state): State<Arc<ScimState>>,
    auth: Authorized,
    ScimBody(body): ScimBody,
) -> Result<Response, ScimError> {
    let (user, user_name) = validate_user(parse_body(&body)?)?;
    let record =
        state.provisioner.create(&auth.app.name, RESOURCE_TYPE, &auth.app.users, &user_name, user).await?;
    let mut response = user_reply(StatusCode::CREATED, &record, &auth.base_url);
    if let Ok(location) = HeaderValue::from_str(&resource::location(&auth.base_url, &record.app, &record.id))
    {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// `GET /Users/{id}`.
pub async fn get(
    State(state): State<Arc<ScimState>>,
    auth: Authorized,
    Path((_, id)): Path<(String, String)>,
) -> Result<Response, ScimError> {
    let record = present(&state, &auth.app.name, &id).await?;
    Ok(user_reply(StatusCode::OK, &record, &auth.base_url))
}

/// `PUT /Users/{id}`.
pub async fn replace(
    State(state): State<Arc<ScimState>>,
    auth: Authorized,
    Path((_, id)): Path<(String, String)>,
    ScimBody(body): ScimBody,
) -> Result<Response, ScimError> {
    let existing = present(&state, &auth.app.name, &id).await?;
    let (user, user_name) = validate_user(parse_body(&body)?)?;
    let record = state.provisioner.replace(existing, &user_name, user).await?;
    Ok(user_reply(StatusCode::OK, &record, &auth.base_url))
}

/// `PATCH /Users/{id}`: the patch is applied to a copy; nothing changes unless all of it applies.
pub async fn patch(
    State(state): State<Arc<ScimState>>,
    auth: Authorized,
    Path((_, id)): Path<(String, String)>,
    ScimBody(body): ScimBody,
) -> Result<Response, ScimError> {
    let existing = present(&state, &auth.app.name, &id).await?;
    let request = parse_body(&body)?;
    let mut patched = existing.resource.clone();
    super::patch::apply(&mut patched, &request)?;
    let (user, user_name) = validate_user(patched)?;
    let record = state.provisioner.replace(existing, &user_name, user).await?;
    Ok(user_reply(StatusCode::OK, &record, &auth.base_url))
}

/// `DELETE /Users/{id}`.
pub async fn delete(
    State(state): State<Arc<ScimState>>,
    auth: Authorized,
    Path((_, id)): Path<(String, String)>,
) -> Result<StatusCode, ScimError> {
    let existing = present(&state, &auth.app.name, &id).await?;
    state.provisioner.delete(existing).await?;
    Ok(StatusCode::NO_CONTENT)
}
