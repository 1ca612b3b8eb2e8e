//! The `ecma.v1` connector protocol: a protobuf version of the ECMA 2.0 connector operations.
//!
//! The generated types live in [`v1`]. Both sides of the process boundary depend on this crate
//! and nothing else of each other: the supervisor uses the client, connectors the server.

/// Generated messages, the `Connector` client and the `Connector` server trait.
#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("ecma.v1");
}

/// Protocol versions this build speaks, newest first. Version 1 is the initial `ecma.v1`.
pub const PROTOCOL_VERSIONS: &[u32] = &[1];

/// Environment variables of the process contract (see `docs/connector-protocol.md`).
pub mod env {
    /// Path of the Unix socket the connector must listen on; chosen by the supervisor.
    pub const SOCKET: &str = "ECMA_SOCKET";
    /// Comma-separated protocol versions the supervisor accepts, newest first.
    pub const PROTOCOL_VERSIONS: &str = "ECMA_PROTOCOL_VERSIONS";
    /// Per-spawn token; the supervisor sends it on every call in the [`super::TOKEN_METADATA`]
    /// metadata key and the connector refuses calls without it.
    pub const TOKEN: &str = "ECMA_TOKEN";
    /// The connector's name in the supervisor's configuration.
    pub const CONNECTOR_NAME: &str = "ECMA_CONNECTOR_NAME";
    /// The incarnation number of this child process.
    pub const INCARNATION: &str = "ECMA_INCARNATION";
    /// Process id of the supervisor; the connector exits when its parent is gone.
    pub const SUPERVISOR_PID: &str = "ECMA_SUPERVISOR_PID";
}

/// gRPC metadata key that carries the per-spawn token.
pub const TOKEN_METADATA: &str = "x-ecma-token";

/// Exit code of a connector that refuses its configuration (`EX_CONFIG` from sysexits.h). The
/// supervisor does not restart such a connector until its configuration changes.
pub const EXIT_CONFIG: i32 = 78;

/// Helpers for building values.
impl v1::Value {
    /// A string value.
    pub fn string(s: impl Into<String>) -> Self {
        Self { kind: Some(v1::value::Kind::StringValue(s.into())) }
    }
    /// A boolean value.
    pub fn boolean(b: bool) -> Self {
        Self { kind: Some(v1::value::Kind::BooleanValue(b)) }
    }
    /// An integer value.
    pub fn integer(i: i64) -> Self {
        Self { kind: Some(v1::value::Kind::IntegerValue(i)) }
    }
    /// The value as text, for string-like kinds (string and reference) and integers.
    pub fn as_text(&self) -> Option<String> {
        match &self.kind {
            Some(v1::value::Kind::StringValue(s)) | Some(v1::value::Kind::ReferenceValue(s)) => {
                Some(s.clone())
            }
            Some(v1::value::Kind::IntegerValue(i)) => Some(i.to_string()),
            Some(v1::value::Kind::BooleanValue(b)) => Some(b.to_string()),
            _ => None,
        }
    }
}

/// gRPC metadata key on a failed call that carries the [`v1::ErrorKind`] name (for example
/// `ERROR_KIND_NO_SUCH_OBJECT`), so that errors are typed on the wire.
pub const ERROR_KIND_METADATA: &str = "ecma-error-kind";

/// The [`v1::ErrorKind`] a failed call carried, if any.
pub fn error_kind_of(status: &tonic::Status) -> Option<v1::ErrorKind> {
    let name = status.metadata().get(ERROR_KIND_METADATA)?.to_str().ok()?;
    v1::ErrorKind::from_str_name(name)
}
