//! The SCIM 2.0 front door: HTTP routes, bearer-token auth, SCIM JSON. This layer knows HTTP and
//! SCIM and nothing of gRPC: writes go through [`crate::provision`], reads come from the
//! connector space ([`crate::store`]).
//!
//! - [`filter`]: the filter grammar and attribute paths.
//! - [`patch`]: the PATCH engine.
//! - [`resource`]: validating and building resources.
//! - [`error`]: SCIM error bodies and the error-kind to status mapping.
//! - [`resources`]: the `/Users` and `/Groups` handlers.
//! - [`discovery`]: `/ServiceProviderConfig`, `/ResourceTypes`, `/Schemas`.
//! - [`query`]: list queries (sorting, paging, projection, `.search`).

pub mod discovery;
pub mod error;
pub mod patch;
pub mod preview;
pub mod query;
pub mod resource;
pub mod resources;
pub mod schema;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Path, Request};
use axum::http::StatusCode;
use axum::http::header;
use axum::http::request::Parts;
use axum::routing::{get, post};
use subtle::ConstantTimeEq;

use crate::provision::Provisioner;
use error::ScimError;
use resource::{GroupKind, UserKind};
use resources::{create, delete, get as get_one, list, patch, replace, search, search_all};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_and_any_of_them_matches() {
        assert!(Tokens::new(vec!["short".into()]).is_err());
        assert!(Tokens::new(vec![]).is_err());
        let tokens = Tokens::new(vec!["0123456789abcdef".into(), "fedcba9876543210xyz".into()]).unwrap();
        assert!(tokens.matches("0123456789abcdef"));
        assert!(tokens.matches("fedcba9876543210xyz"));
        assert!(!tokens.matches("0123456789abcdeF"));
        assert!(!tokens.matches(""));
        assert_eq!(format!("{tokens:?}"), "Tokens(<2 redacted>)");
    }
}

/// Shortest bearer token accepted in the configuration.
pub const MIN_TOKEN_LEN: usize = 16;

/// An app's bearer tokens (several, so that one can be rotated without downtime). Never printed.
#[derive(Clone)]
pub struct Tokens(Vec<String>);

impl Tokens {
    /// Tokens, each at least [`MIN_TOKEN_LEN`] characters.
    pub fn new(tokens: Vec<String>) -> Result<Self, String> {
        if tokens.is_empty() {
            return Err("no token".into());
        }
        if let Some(i) = tokens.iter().position(|t| t.chars().count() < MIN_TOKEN_LEN) {
            return Err(format!("token #{} is shorter than {MIN_TOKEN_LEN} characters", i + 1));
        }
        Ok(Self(tokens))
    }

    /// The first token (what a client of ours sends).
    pub(crate) fn first(&self) -> &str {
        &self.0[0]
    }

    /// Constant-time comparison with every token (the lengths are not hidden, the contents are).
    pub(crate) fn matches(&self, given: &str) -> bool {
        self.0.iter().fold(false, |found, t| found | bool::from(t.as_bytes().ct_eq(given.as_bytes())))
    }
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokens(<{} redacted>)", self.0.len())
    }
}

/// One SCIM app (tenant URL).
#[derive(Debug, Clone)]
pub struct App {
    pub name: String,
    /// Connector holding this app's Users.
    pub users: String,
    /// Connector holding this app's Groups, if it has Groups.
    pub groups: Option<String>,
    pub tokens: Tokens,
    /// Custom extension schemas.
    pub extensions: Vec<Extension>,
    /// The schemas of its Users (core, enterprise, custom extensions).
    pub user_schemas: Arc<schema::ResourceSchemas>,
    /// The schemas of its Groups (core, custom extensions).
    pub group_schemas: Arc<schema::ResourceSchemas>,
}

impl App {
    /// An app, with its resource types' schemas built from the definitions `/Schemas` serves.
    pub fn new(
        name: String,
        users: String,
        groups: Option<String>,
        tokens: Tokens,
        unknown: schema::UnknownAttributes,
        extensions: Vec<Extension>,
    ) -> Self {
        let user_schemas = Arc::new(schema::ResourceSchemas::of("User", &extensions, unknown));
        let group_schemas = Arc::new(schema::ResourceSchemas::of("Group", &extensions, unknown));
        Self { name, users, groups, tokens, extensions, user_schemas, group_schemas }
    }
}

/// A custom extension schema of an app.
#[derive(Debug, Clone)]
pub struct Extension {
    pub urn: String,
    /// `User` or `Group`.
    pub resource: &'static str,
    pub description: String,
    pub attributes: Vec<(String, crate::config::AttributeKind)>,
}

impl Extension {
    /// Checks the types of the values a resource carries for this extension.
    pub fn check(&self, resource: &serde_json::Value) -> Result<(), ScimError> {
        use crate::config::AttributeKind as K;
        use serde_json::Value;
        let Some(values) = crate::paths::get_ci(resource, &self.urn) else { return Ok(()) };
        let Value::Object(values) = values else {
            return Err(ScimError::bad_request("invalidSyntax", format!("{} must be an object", self.urn)));
        };
        for (name, value) in values {
            let Some((_, kind)) = self.attributes.iter().find(|(a, _)| a.eq_ignore_ascii_case(name)) else {
                return Err(ScimError::bad_request(
                    "invalidPath",
                    format!("{}:{name} is not an attribute of this extension", self.urn),
                ));
            };
            let fits = match (kind, value) {
                (K::String | K::Reference | K::Binary | K::DateTime, Value::String(_)) => true,
                (K::Integer, Value::Number(n)) => n.is_i64() || n.is_u64(),
                (K::Decimal, Value::Number(_)) => true,
                (K::Boolean, Value::Bool(_)) => true,
                _ => false,
            };
            let date_ok = *kind != K::DateTime
                || value.as_str().is_some_and(|s| {
                    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).is_ok()
                });
            if !fits || !date_ok {
                return Err(ScimError::bad_request(
                    "invalidValue",
                    format!("{}:{name} must be of type {}", self.urn, kind.scim_name()),
                ));
            }
        }
        Ok(())
    }
}

/// What the SCIM handlers share.
pub struct ScimState {
    pub apps: HashMap<String, App>,
    pub provisioner: Arc<Provisioner>,
    /// `https` or `http`, for `Location` and `meta.location`.
    pub scheme: &'static str,
    /// Public base URL (behind a reverse proxy); overrides scheme and Host.
    pub public_url: Option<String>,
    /// Requests and errors per minute, for the console.
    pub activity: Arc<crate::activity::Activity>,
}

impl ScimState {
    /// The base URL of this service as the client reached it (or as configured).
    pub fn base_url(&self, headers: &axum::http::HeaderMap, uri: &axum::http::Uri) -> String {
        if let Some(url) = &self.public_url {
            return url.trim_end_matches('/').to_string();
        }
        // HTTP/2 carries the host in the URI's authority, HTTP/1.1 in the Host header.
        let host = uri
            .authority()
            .map(|a| a.as_str())
            .or_else(|| headers.get(header::HOST).and_then(|h| h.to_str().ok()))
            .unwrap_or("localhost");
        format!("{}://{host}", self.scheme)
    }
}

/// A SCIM JSON response.
pub(crate) fn scim_json(status: StatusCode, body: &serde_json::Value) -> axum::response::Response {
    use axum::response::IntoResponse;
    let mut response = (status, body.to_string()).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, axum::http::HeaderValue::from_static(error::SCIM_JSON));
    response
}

/// The SCIM router.
pub fn router(state: Arc<ScimState>, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/scim/{app}/.search", post(search_all))
        .route("/scim/{app}/Users", get(list::<UserKind>).post(create::<UserKind>))
        .route("/scim/{app}/Users/.search", post(search::<UserKind>))
        .route(
            "/scim/{app}/Users/{id}",
            get(get_one::<UserKind>)
                .put(replace::<UserKind>)
                .patch(patch::<UserKind>)
                .delete(delete::<UserKind>),
        )
        .route("/scim/{app}/Groups", get(list::<GroupKind>).post(create::<GroupKind>))
        .route("/scim/{app}/Groups/.search", post(search::<GroupKind>))
        .route(
            "/scim/{app}/Groups/{id}",
            get(get_one::<GroupKind>)
                .put(replace::<GroupKind>)
                .patch(patch::<GroupKind>)
                .delete(delete::<GroupKind>),
        )
        .route(
            "/scim/{app}/ServiceProviderConfig",
            get(discovery::service_provider_config).fallback(discovery::method_not_allowed),
        )
        .route(
            "/scim/{app}/ResourceTypes",
            get(discovery::list_resource_types).fallback(discovery::method_not_allowed),
        )
        .route(
            "/scim/{app}/ResourceTypes/{id}",
            get(discovery::get_resource_type).fallback(discovery::method_not_allowed),
        )
        .route("/scim/{app}/Schemas", get(discovery::list_schemas).fallback(discovery::method_not_allowed))
        .route("/scim/{app}/Schemas/{id}", get(discovery::get_schema).fallback(discovery::method_not_allowed))
        .fallback(|| async { ScimError::not_found("no such endpoint") })
        .method_not_allowed_fallback(|| async {
            ScimError::new(StatusCode::METHOD_NOT_ALLOWED, None, "this method is not supported here")
        })
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// The server span and the metrics of one SCIM request. The span follows OpenTelemetry's HTTP
/// server conventions, continues a W3C `traceparent` the client sent, and carries the app, the
/// resource type and a hash of the SCIM id (never a body, a header value or a name); log lines
/// inside the request carry its trace id. Metric labels are bounded: an app or resource that is
/// not configured or not SCIM is `other`.
async fn observe(
    axum::extract::State(state): axum::extract::State<Arc<ScimState>>,
    request: Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use tracing::Instrument;
    let started = std::time::Instant::now();
    let method: &'static str = match request.method().as_str() {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    };
    let mut parts = request.uri().path().trim_start_matches('/').split('/').skip(1);
    let app = parts.next().filter(|a| state.apps.contains_key(*a)).unwrap_or("other").to_string();
    let resource: &'static str = match parts.next() {
        Some("Users") => "Users",
        Some("Groups") => "Groups",
        Some("ServiceProviderConfig") => "ServiceProviderConfig",
        Some("ResourceTypes") => "ResourceTypes",
        Some("Schemas") => "Schemas",
        _ => "other",
    };
    let id = parts.next().filter(|id| !id.starts_with('.')).map(crate::telemetry::id_hash);
    let route = match (resource, &id) {
        ("other", _) => "/scim/{app}".to_string(),
        (r, Some(_)) => format!("/scim/{{app}}/{r}/{{id}}"),
        (r, None) => format!("/scim/{{app}}/{r}"),
    };
    // The SCIM operation, from the method and the route.
    let operation = match (method, resource, id.is_some(), request.uri().path().ends_with("/.search")) {
        (_, "Users" | "Groups", _, true) => "search",
        ("POST", "Users" | "Groups", false, _) => "create",
        ("GET", "Users" | "Groups", false, _) => "list",
        ("GET", "Users" | "Groups", true, _) => "get",
        ("PUT", _, true, _) => "replace",
        ("PATCH", _, true, _) => "patch",
        ("DELETE", _, true, _) => "delete",
        ("GET", _, _, _) => "discovery",
        _ => "other",
    };
    let span = tracing::info_span!(
        "http",
        otel.name = %format!("{method} {route}"),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = method,
        http.route = %route,
        url.scheme = state.scheme,
        http.response.status_code = tracing::field::Empty,
        scim.app = %app,
        scim.resource = resource,
        scim.operation = operation,
        scim.id_hash = id.as_deref().unwrap_or(""),
        trace_id = tracing::field::Empty,
    );
    ecma_telemetry::set_parent_from(&span, request.headers());
    if let Some(trace_id) = ecma_telemetry::trace_id(&span) {
        span.record("trace_id", trace_id);
    }
    let response = next.run(request).instrument(span.clone()).await;
    let status = response.status().as_u16();
    state.activity.request(status);
    span.record("http.response.status_code", status);
    if status >= 500 {
        span.record("otel.status_code", "ERROR");
    }
    // The access log line, inside the request's span (so it carries the trace id).
    span.in_scope(|| {
        tracing::info!(status, duration_ms = started.elapsed().as_millis() as u64, "scim request")
    });
    let labels = [("app", app), ("resource", resource.to_string()), ("method", method.to_string())];
    metrics::counter!("scim_requests_total", &[&labels[..], &[("status", status.to_string())]].concat())
        .increment(1);
    metrics::histogram!("scim_request_duration_seconds", &labels).record(started.elapsed().as_secs_f64());
    response
}

/// A request body, with SCIM errors for bodies that cannot be read: 413 beyond the configured
/// limit (`server.max_body_bytes`).
pub struct ScimBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for ScimBody {
    type Rejection = ScimError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        check_content_type(request.headers())?;
        match Bytes::from_request(request, state).await {
            Ok(bytes) => Ok(Self(bytes)),
            Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(ScimError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                None,
                "the request body is larger than this service accepts (server.max_body_bytes)",
            )),
            Err(rejection) => Err(ScimError::bad_request("invalidSyntax", rejection.body_text())),
        }
    }
}

/// Accepts `application/scim+json` and `application/json` (with or without parameters), and
/// no type at all (Entra ID sends some requests without one); anything else is a 415.
fn check_content_type(headers: &axum::http::HeaderMap) -> Result<(), ScimError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else { return Ok(()) };
    let essence = value.to_str().unwrap_or_default().split(';').next().unwrap_or_default().trim();
    if essence.eq_ignore_ascii_case(error::SCIM_JSON) || essence.eq_ignore_ascii_case("application/json") {
        return Ok(());
    }
    Err(ScimError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        None,
        "the body must be application/scim+json (or application/json)",
    ))
}

/// Marks a request the supervisor itself makes to its SCIM router (the console's "apply" of a
/// dry run): authorised for its app. Only code in this process can attach it.
#[derive(Debug, Clone, Copy)]
pub struct Internal;

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
        let header = parts.headers.get(header::AUTHORIZATION);
        let given = header
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim());
        // Authentication first: a client without a valid token learns nothing, not even which
        // app names exist; the name it sent is never echoed.
        if parts.extensions.get::<Internal>().is_some()
            && let Some(app) = state.apps.get(name)
        {
            return Ok(Self { app: app.clone(), base_url: state.base_url(&parts.headers, &parts.uri) });
        }
        let Some(app) = state.apps.get(name) else {
            return Err(match given {
                Some(token) if state.apps.values().any(|a| a.tokens.matches(token)) => {
                    ScimError::not_found("no such app")
                }
                _ => ScimError::unauthorized(header.is_some()),
            });
        };
        match given {
            Some(token) if app.tokens.matches(token) => {}
            _ => return Err(ScimError::unauthorized(header.is_some())),
        }
        Ok(Self { app: app.clone(), base_url: state.base_url(&parts.headers, &parts.uri) })
    }
}
