//! SCIM error responses (RFC 7644 §3.12), and the one place where connector error kinds become
//! HTTP statuses and `scimType`s.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ecma_proto::v1::ErrorKind;
use serde_json::json;

use crate::provision::ProvisionError;

/// The SCIM media type.
pub const SCIM_JSON: &str = "application/scim+json";

/// A SCIM error: status, optional `scimType`, detail, and `Retry-After` for 503s.
#[derive(Debug)]
pub struct ScimError {
    pub status: StatusCode,
    pub scim_type: Option<&'static str>,
    pub detail: String,
    pub retry_after: Option<Duration>,
    /// For a 401: whether a token was sent (and refused), so that `WWW-Authenticate` carries
    /// `error="invalid_token"` (RFC 6750 §3.1); without one, the challenge alone.
    pub token_refused: bool,
}

impl ScimError {
    pub fn new(status: StatusCode, scim_type: Option<&'static str>, detail: impl Into<String>) -> Self {
        Self { status, scim_type, detail: detail.into(), retry_after: None, token_refused: false }
    }
    pub fn bad_request(scim_type: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, Some(scim_type), detail)
    }
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, None, detail)
    }
    pub fn internal(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, None, detail)
    }
    /// A 401: no token was sent (`token_sent` false) or the one sent is not valid here.
    pub fn unauthorized(token_sent: bool) -> Self {
        let detail = if token_sent { "the bearer token is not valid" } else { "a bearer token is required" };
        Self { token_refused: token_sent, ..Self::new(StatusCode::UNAUTHORIZED, None, detail) }
    }
}

/// `Retry-After` while the connector space cannot take writes (a full disk, I/O errors): the
/// store's probe tries every half second, so a client that waits this long meets the store as it
/// is by then.
const STORE_RETRY_AFTER_SECS: u64 = 5;

/// The HTTP status and `scimType` for a connector error kind. Deterministic: the message is
/// never looked at.
pub fn status_for(kind: ErrorKind) -> (StatusCode, Option<&'static str>) {
    match kind {
        ErrorKind::AlreadyExists => (StatusCode::CONFLICT, Some("uniqueness")),
        ErrorKind::NoSuchObject => (StatusCode::NOT_FOUND, None),
        ErrorKind::InvalidAttributeValue | ErrorKind::SchemaViolation | ErrorKind::InvalidDn => {
            (StatusCode::BAD_REQUEST, Some("invalidValue"))
        }
        ErrorKind::ConstraintViolation => (StatusCode::BAD_REQUEST, Some("invalidValue")),
        ErrorKind::PermissionDenied => (StatusCode::FORBIDDEN, None),
        ErrorKind::ConnectionFailed | ErrorKind::Retryable | ErrorKind::Timeout => {
            (StatusCode::SERVICE_UNAVAILABLE, None)
        }
        ErrorKind::Unsupported => (StatusCode::NOT_IMPLEMENTED, None),
        ErrorKind::InvalidConfiguration | ErrorKind::Internal | ErrorKind::None | ErrorKind::Unspecified => {
            (StatusCode::INTERNAL_SERVER_ERROR, None)
        }
    }
}

impl From<ProvisionError> for ScimError {
    fn from(e: ProvisionError) -> Self {
        match e {
            ProvisionError::Unavailable { retry_after, reason } => Self {
                status: StatusCode::SERVICE_UNAVAILABLE,
                scim_type: None,
                detail: format!("the connector is not available ({reason}); retry later"),
                retry_after: Some(retry_after),
                token_refused: false,
            },
            ProvisionError::Conflict => Self::new(
                StatusCode::CONFLICT,
                Some("uniqueness"),
                "another resource has this userName (or, for a group, displayName)",
            ),
            ProvisionError::NotFound => Self::not_found("resource not found"),
            ProvisionError::Aborted(reason) => Self::internal(format!("the write was cut short: {reason}")),
            ProvisionError::Changed => Self::new(
                StatusCode::CONFLICT,
                None,
                "the resource changed while this request was applied; retry it",
            ),
            ProvisionError::PreconditionFailed => Self::new(
                StatusCode::PRECONDITION_FAILED,
                None,
                "the resource has changed since the version in If-Match",
            ),
            ProvisionError::Target { kind, detail } => {
                let (status, scim_type) = status_for(kind);
                let mut error =
                    Self::new(status, scim_type, format!("the target refused the change: {detail}"));
                if status == StatusCode::SERVICE_UNAVAILABLE {
                    error.retry_after = Some(Duration::from_secs(5));
                }
                error
            }
            // A full disk or an I/O error passes: 503 with Retry-After (the store is reported
            // degraded meanwhile). A damaged store does not pass by itself, but it is no fault of
            // the request either: 503, and the store reported failed.
            ProvisionError::Store(crate::store::StoreError::Unavailable(reason)) => {
                tracing::warn!(%reason, "connector space unavailable");
                Self {
                    retry_after: Some(Duration::from_secs(STORE_RETRY_AFTER_SECS)),
                    ..Self::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        None,
                        "the connector space cannot take this request now (see the supervisor's log); retry later",
                    )
                }
            }
            ProvisionError::Store(crate::store::StoreError::Damaged(reason)) => {
                tracing::error!(%reason, "connector space damaged");
                Self {
                    retry_after: Some(Duration::from_secs(60)),
                    ..Self::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        None,
                        "the connector space is damaged and must be restored or rebuilt by an operator",
                    )
                }
            }
            ProvisionError::Store(e) => {
                tracing::error!(error = %e, "connector space failure");
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, None, "internal error in the connector space")
            }
        }
    }
}

impl IntoResponse for ScimError {
    fn into_response(self) -> Response {
        let mut body = json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
            "status": self.status.as_u16().to_string(),
            "detail": self.detail,
        });
        if let Some(t) = self.scim_type {
            body["scimType"] = json!(t);
        }
        let mut response = (self.status, body.to_string()).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(SCIM_JSON));
        if let Some(after) = self.retry_after {
            let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            let challenge = if self.token_refused {
                "Bearer realm=\"scim\", error=\"invalid_token\", error_description=\"the token is not valid\""
            } else {
                "Bearer realm=\"scim\""
            };
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_a_fixed_status() {
        assert_eq!(status_for(ErrorKind::AlreadyExists), (StatusCode::CONFLICT, Some("uniqueness")));
        assert_eq!(status_for(ErrorKind::NoSuchObject).0, StatusCode::NOT_FOUND);
        assert_eq!(status_for(ErrorKind::ConnectionFailed).0, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(status_for(ErrorKind::PermissionDenied).0, StatusCode::FORBIDDEN);
        assert_eq!(status_for(ErrorKind::ConstraintViolation).1, Some("invalidValue"));
    }

    #[test]
    fn unavailable_carries_retry_after() {
        let e: ScimError = ProvisionError::Unavailable {
            retry_after: Duration::from_millis(1500),
            reason: "backoff".into(),
        }
        .into();
        let r = e.into_response();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()[header::RETRY_AFTER], "2");
        assert_eq!(r.headers()[header::CONTENT_TYPE], SCIM_JSON);
    }
}
