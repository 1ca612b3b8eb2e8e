//! The SCIM 2.0 front door: HTTP routes, bearer-token auth, SCIM JSON. This layer knows HTTP and
//! SCIM and nothing of gRPC: writes go through [`crate::provision`], reads come from the
//! connector space ([`crate::store`]).
//!
//! - [`filter`]: the filter grammar and attribute paths.
//! - [`patch`]: the PATCH engine.
//! - [`resource`]: validating and building resources.
//! - [`error`]: SCIM error bodies and the error-kind to status mapping.
//! - [`users`]: the `/Users` handlers.

pub mod error;
pub mod filter;
pub mod patch;
pub mod resource;
pub mod users;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{FromRequestParts, Path};
use axum::http::header;
use axum::http::request::Parts;
use axum::routing::get;
use subtle::ConstantTimeEq;

use crate::provision::Provisioner;
use error::ScimError;

/// A bearer token. Never printed.
#[derive(Clone)]
pub struct Token(String);

impl Token {
    pub fn new(token: String) -> Self {
        Self(token)
    }

    /// Constant-time comparison (the length is not hidden, the content is).
    fn matches(&self, given: &str) -> bool {
        bool::from(self.0.as_bytes().ct_eq(given.as_bytes()))
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// One SCIM app (tenant URL).
#[derive(Debug, Clone)]
pub struct App {
    pub name: String,
    /// Connector holding this app's Users.
    pub users: String,
    pub token: Token,
}

/// What the SCIM handlers share.
pub struct ScimState {
    pub apps: HashMap<String, App>,
    pub provisioner: Arc<Provisioner>,
}

/// The SCIM router.
pub fn router(state: Arc<ScimState>) -> Router {
    Router::new()
        .route("/scim/{app}/Users", get(users::list).post(users::create))
        .route(
            "/scim/{app}/Users/{id}",
            get(users::get).put(users::replace).patch(users::patch).delete(users::delete),
        )
        .fallback(|| async { ScimError::not_found("no such endpoint") })
        .with_state(state)
}

/// An authenticated request for an app; also gives the base URL for `Location`.
pub struct Authorized {
    pub app: App,
    pub base_url: String,
}

impl FromRequestParts<Arc<ScimState>> for Authorized {
    type Rejection = ScimError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<ScimState>) -> Result<Self, Self::Rejection> {
        let Path(params) = Path::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(|_| ScimError::not_found("no such endpoint"))?;
        let name = params.get("app").map(String::as_str).unwrap_or_default();
        let app =
            state.apps.get(name).ok_or_else(|| ScimError::not_found(format!("no app named {name:?}")))?;
        let given = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim());
        match given {
            Some(token) if app.token.matches(token) => {}
            _ => return Err(ScimError::unauthorized()),
        }
        let host = parts.headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("localhost");
        Ok(Self { app: app.clone(), base_url: format!("http://{host}") })
    }
}
