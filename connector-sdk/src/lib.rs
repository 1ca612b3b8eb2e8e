//! The SDK for connector authors: serve the `ecma.v1` protocol from a child process of the
//! supervisor.
//!
//! A connector implements [`ecma_proto::v1::connector_server::Connector`] and hands it to
//! [`serve`], which does the process contract (see `docs/connector-protocol.md`):
//!
//! - listens on the Unix socket the supervisor named in `ECMA_SOCKET` (never prints a handshake
//!   line on stdout: readiness is the supervisor's successful `Hello`);
//! - refuses calls that lack the per-spawn token from `ECMA_TOKEN`;
//! - serves `grpc.health.v1` beside the connector service;
//! - stops on SIGTERM or SIGINT, and on its own when the supervisor process is gone.
//!
//! Logs go to stderr, which the supervisor forwards line by line into its own log.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use ecma_proto::v1::connector_server::{Connector, ConnectorServer};
use ecma_proto::v1::{
    ConfigParameterDefinition, ConfigParameterType, ConfigParameters, ErrorKind, HelloRequest,
};
use subtle::ConstantTimeEq;
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::{Request, Status};

pub use ecma_proto;

pub mod connector;
pub mod declared;
pub mod tls;
pub use connector::{
    Capabilities, Connector as ConnectorV2, ConnectorError, ExportScope, ImportRequest, ImportRun, Outcome,
    Page, PasswordChange, Target, run_connector,
};

/// How often the connector checks that the supervisor is still its parent.
const PARENT_POLL: Duration = Duration::from_millis(500);

/// What the supervisor told this child in its environment.
#[derive(Debug, Clone)]
pub struct Environment {
    /// Socket path to listen on.
    pub socket: PathBuf,
    /// Protocol versions the supervisor accepts.
    pub protocol_versions: Vec<u32>,
    /// Connector name from the supervisor's configuration.
    pub connector_name: String,
    /// Incarnation number of this process.
    pub incarnation: u64,
    token: String,
    supervisor_pid: Option<i32>,
}

impl Environment {
    /// Reads the process contract's variables; fails with a message naming the missing one.
    pub fn from_env() -> anyhow::Result<Self> {
        use ecma_proto::env;
        let var = |name: &str| {
            std::env::var(name).with_context(|| {
                format!(
                    "environment variable {name} is not set: connectors are started by the \
                     supervisor, which sets it (see docs/connector-protocol.md)"
                )
            })
        };
        let socket = PathBuf::from(var(env::SOCKET)?);
        let token = var(env::TOKEN)?;
        let protocol_versions = var(env::PROTOCOL_VERSIONS)?
            .split(',')
            .map(|v| v.trim().parse::<u32>())
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| {
                format!("{} is not a comma-separated list of numbers", env::PROTOCOL_VERSIONS)
            })?;
        let connector_name = std::env::var(env::CONNECTOR_NAME).unwrap_or_default();
        let incarnation = std::env::var(env::INCARNATION).ok().and_then(|v| v.parse().ok()).unwrap_or(0);
        let supervisor_pid = std::env::var(env::SUPERVISOR_PID).ok().and_then(|v| v.parse().ok());
        Ok(Self { socket, protocol_versions, connector_name, incarnation, token, supervisor_pid })
    }
}

/// Sets up logging to stderr (filtered by `RUST_LOG`, default `info`, plain lines: the
/// supervisor forwards them into its own log) and, when the `OTEL_*` variables the supervisor
/// hands down ask for it, OTLP export of this process's spans, with the executable's name as
/// `service.name` and the connector's configured name as `ecma.connector.name`. Call it inside
/// the tokio runtime (the trace exporter needs one); keep the guard until the end.
pub fn init_telemetry() -> ecma_telemetry::Telemetry {
    let service_name = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "connector".to_string());
    let mut resource = Vec::new();
    if let Ok(name) = std::env::var(ecma_proto::env::CONNECTOR_NAME) {
        resource.push(("ecma.connector.name".to_string(), name));
    }
    if let Ok(incarnation) = std::env::var(ecma_proto::env::INCARNATION) {
        resource.push(("ecma.connector.incarnation".to_string(), incarnation));
    }
    ecma_telemetry::init(ecma_telemetry::Options {
        service_name,
        resource,
        json: false,
        decorated: false,
        traces: true,
    })
}

/// The server span of one call: OpenTelemetry's RPC conventions, a child of the supervisor's
/// call span when the call carries a `traceparent`. Health checks get none (they would fill
/// traces with noise).
fn call_span(request: &http::Request<()>) -> tracing::Span {
    let path = request.uri().path();
    if path.starts_with("/grpc.health") {
        return tracing::Span::none();
    }
    let method = path.rsplit('/').next().unwrap_or_default().to_string();
    let span = tracing::info_span!(
        "rpc",
        otel.name = %path.trim_start_matches('/'),
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.service = "ecma.v1.Connector",
        rpc.method = %method,
        trace_id = tracing::field::Empty,
    );
    if ecma_telemetry::set_parent_from(&span, request.headers())
        && let Some(trace_id) = ecma_telemetry::trace_id(&span)
    {
        // Log lines inside the call carry the trace id.
        span.record("trace_id", trace_id);
    }
    span
}

/// Picks the newest protocol version both sides speak, for the connector's `Hello` answer.
pub fn negotiate(request: &HelloRequest) -> Result<u32, Status> {
    ecma_proto::PROTOCOL_VERSIONS
        .iter()
        .copied()
        .find(|v| request.supported_protocol_versions.contains(v))
        .ok_or_else(|| {
            Status::failed_precondition(format!(
                "no common protocol version: supervisor speaks {:?}, this connector speaks {:?}",
                request.supported_protocol_versions,
                ecma_proto::PROTOCOL_VERSIONS
            ))
        })
}

/// The whole `main` of a connector: logging, a runtime, and [`serve`] until SIGTERM/SIGINT or
/// until the supervisor is gone.
///
/// ```no_run
/// # struct MyConnector;
/// # fn main() -> anyhow::Result<()> { Ok(()) }
/// // fn main() -> anyhow::Result<()> { ecma_connector_sdk::run(MyConnector) }
/// ```
pub fn run<C: Connector>(connector: C) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("while starting the runtime")?;
    let _telemetry = {
        let _inside = runtime.enter();
        init_telemetry()
    };
    check_started_by_supervisor()?;
    // A process contract it cannot work with (a variable missing or malformed) is a bad
    // configuration: EX_CONFIG, which the supervisor does not restart in a loop.
    let env = match Environment::from_env() {
        Ok(env) => env,
        Err(e) => exit_bad_config(format!("{e:#}")),
    };
    runtime.block_on(serve_with(env, connector))
}

/// One parameter a connector declares: its name, type and help, and whether it is required or
/// secret and what its default is. A connector declares its table of these once, and reads a
/// configuration against the same table ([`Settings`]), so that a default is written in one
/// place.
#[derive(Debug, Clone, PartialEq)]
pub struct Parameter(ConfigParameterDefinition);

impl Parameter {
    pub fn new(name: impl Into<String>, kind: ConfigParameterType, help: impl Into<String>) -> Self {
        Self(ConfigParameterDefinition {
            name: name.into(),
            r#type: kind as i32,
            description: help.into(),
            ..Default::default()
        })
    }

    /// A configuration without it is refused (naming it).
    pub fn required(self) -> Self {
        self.required_if(true)
    }

    /// Required when `required` holds.
    pub fn required_if(mut self, required: bool) -> Self {
        self.0.required = required;
        self
    }

    /// Never logged or shown.
    pub fn secret(mut self) -> Self {
        self.0.secret = true;
        self
    }

    /// What a configuration that leaves it out gets.
    pub fn default(mut self, value: impl Into<String>) -> Self {
        self.0.default_value = value.into();
        self
    }

    pub fn definition(self) -> ConfigParameterDefinition {
        self.0
    }
}

/// A configuration read against the connector's declared table: each parameter's value, or the
/// default the table declares for it.
pub struct Settings<'a> {
    declared: &'a [ConfigParameterDefinition],
    config: Option<&'a ConfigParameters>,
}

impl<'a> Settings<'a> {
    pub fn new(declared: &'a [ConfigParameterDefinition], config: &'a Option<ConfigParameters>) -> Self {
        Self { declared, config: config.as_ref() }
    }
}

impl ConfigExt for Settings<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        let given =
            self.config.and_then(|c| c.values.get(name)).map(String::as_str).filter(|v| !v.is_empty());
        given.or_else(|| {
            self.declared
                .iter()
                .find(|p| p.name == name)
                .map(|p| p.default_value.as_str())
                .filter(|v| !v.is_empty())
        })
    }
}

/// The problems of a configuration that lacks parameters declared required: one per missing
/// parameter, naming it (for `ValidateConfiguration`, before anything is tried with it).
pub fn missing_required(
    declared: &[ConfigParameterDefinition],
    config: &Option<ConfigParameters>,
) -> Vec<ecma_proto::v1::ConfigProblem> {
    declared
        .iter()
        .filter(|p| p.required && config.get(&p.name).is_none())
        .map(|p| ecma_proto::v1::ConfigProblem {
            parameter: p.name.clone(),
            message: format!("{} is required: {}", p.name, p.description),
            kind: ErrorKind::InvalidConfiguration as i32,
        })
        .collect()
}

/// Serves `connector` until SIGTERM/SIGINT or until the supervisor is gone.
pub async fn serve<C: Connector>(connector: C) -> anyhow::Result<()> {
    let env = Environment::from_env()?;
    serve_with(env, connector).await
}

/// Like [`serve`], with an explicit [`Environment`].
pub async fn serve_with<C: Connector>(env: Environment, connector: C) -> anyhow::Result<()> {
    if env.socket.exists() {
        // The supervisor removes stale sockets before it spawns us; a file here now is a leftover
        // of our own earlier incarnation with the same path, never another live listener's.
        std::fs::remove_file(&env.socket)
            .with_context(|| format!("while removing stale socket {}", env.socket.display()))?;
    }
    let listener =
        UnixListener::bind(&env.socket).with_context(|| format!("while binding {}", env.socket.display()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&env.socket, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("while restricting {}", env.socket.display()))?;
    }

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<ConnectorServer<C>>().await;

    let token = env.token.clone();
    let check_token = move |request: Request<()>| -> Result<Request<()>, Status> {
        let given =
            request.metadata().get(ecma_proto::TOKEN_METADATA).map(|v| v.as_bytes()).unwrap_or_default();
        if bool::from(given.ct_eq(token.as_bytes())) {
            Ok(request)
        } else {
            Err(Status::unauthenticated("missing or wrong per-spawn token"))
        }
    };

    tracing::debug!(socket = %env.socket.display(), incarnation = env.incarnation, "serving");
    let socket = env.socket.clone();
    let result = tonic::transport::Server::builder()
        .trace_fn(call_span)
        .add_service(health_service)
        .add_service(ConnectorServer::with_interceptor(connector, check_token))
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown_signal(env.supervisor_pid))
        .await;
    let _ = std::fs::remove_file(&socket);
    result.context("while serving the connector protocol")
}

/// Resolves on SIGTERM, SIGINT, or when the process that started us is gone.
async fn shutdown_signal(supervisor_pid: Option<i32>) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("installing a SIGINT handler");
    let orphaned = async move {
        let Some(expected) = supervisor_pid else {
            return std::future::pending::<()>().await;
        };
        loop {
            // PR_SET_PDEATHSIG already covers most cases; this covers the rest (for example a
            // connector started by a wrapper script) by noticing re-parenting.
            if nix::unistd::getppid().as_raw() != expected {
                tracing::warn!("the supervisor is gone; exiting");
                return;
            }
            tokio::time::sleep(PARENT_POLL).await;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::debug!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::debug!("SIGINT: shutting down"),
        _ = orphaned => {}
    }
}

/// A typed error for a failed call: a gRPC status carrying the protocol's [`ErrorKind`] in the
/// `ecma-error-kind` metadata, which the supervisor maps without parsing the message.
pub fn error_status(kind: ErrorKind, message: impl Into<String>) -> Status {
    let code = match kind {
        ErrorKind::NoSuchObject => tonic::Code::NotFound,
        ErrorKind::AlreadyExists => tonic::Code::AlreadyExists,
        ErrorKind::PermissionDenied => tonic::Code::PermissionDenied,
        ErrorKind::InvalidConfiguration
        | ErrorKind::InvalidAttributeValue
        | ErrorKind::SchemaViolation
        | ErrorKind::InvalidDn => tonic::Code::InvalidArgument,
        ErrorKind::ConstraintViolation => tonic::Code::FailedPrecondition,
        ErrorKind::ConnectionFailed | ErrorKind::Retryable => tonic::Code::Unavailable,
        ErrorKind::Timeout => tonic::Code::DeadlineExceeded,
        ErrorKind::Unsupported => tonic::Code::Unimplemented,
        _ => tonic::Code::Internal,
    };
    let mut status = Status::new(code, message);
    if let Ok(value) = kind.as_str_name().parse() {
        status.metadata_mut().insert(ecma_proto::ERROR_KIND_METADATA, value);
    }
    status
}

/// Typed access to configuration values sent by the supervisor.
pub trait ConfigExt {
    /// The value of `name`, if set and not empty.
    fn get(&self, name: &str) -> Option<&str>;
    /// The value of `name`, or an `INVALID_CONFIGURATION` status naming it.
    fn require(&self, name: &str) -> Result<&str, Status> {
        self.get(name).ok_or_else(|| {
            error_status(ErrorKind::InvalidConfiguration, format!("parameter {name} is required"))
        })
    }
    /// The value of `name`, or empty.
    fn text(&self, name: &str) -> &str {
        self.get(name).unwrap_or("")
    }
    /// A boolean parameter whose default the declared table gives ([`Settings`]).
    fn flag(&self, name: &str) -> Result<bool, Status> {
        self.boolean(name, false)
    }
    /// A boolean parameter (`true`/`false`, `yes`/`no`, `1`/`0`), `default` when unset.
    fn boolean(&self, name: &str, default: bool) -> Result<bool, Status> {
        match self.get(name).map(|v| v.to_ascii_lowercase()) {
            None => Ok(default),
            Some(v) if matches!(v.as_str(), "true" | "yes" | "1") => Ok(true),
            Some(v) if matches!(v.as_str(), "false" | "no" | "0") => Ok(false),
            Some(_) => Err(error_status(
                ErrorKind::InvalidConfiguration,
                format!("parameter {name} must be true or false"),
            )),
        }
    }
}

impl ConfigExt for Option<ConfigParameters> {
    fn get(&self, name: &str) -> Option<&str> {
        self.as_ref()?.values.get(name).map(String::as_str).filter(|v| !v.is_empty())
    }
}

/// Exits with `EX_CONFIG` (78) after logging `error`: the supervisor will not restart a connector
/// that exits this way until its configuration changes.
pub fn exit_bad_config(error: impl std::fmt::Display) -> ! {
    tracing::error!(%error, "bad configuration");
    std::process::exit(ecma_proto::EXIT_CONFIG)
}

/// Checks the environment early so that a connector started by hand says what is wrong.
pub fn check_started_by_supervisor() -> anyhow::Result<()> {
    if std::env::var_os(ecma_proto::env::SOCKET).is_none() {
        bail!(
            "this is a connector for the ECMA supervisor; it is started by `supervisor run`, \
             which sets {} and the other variables of the process contract",
            ecma_proto::env::SOCKET
        );
    }
    Ok(())
}

/// A connector's open import or export sessions, by the session id handed to the supervisor.
pub struct Sessions<T> {
    open: std::sync::Mutex<std::collections::HashMap<String, T>>,
}

impl<T> Default for Sessions<T> {
    fn default() -> Self {
        Self { open: std::sync::Mutex::new(std::collections::HashMap::new()) }
    }
}

impl<T: Clone> Sessions<T> {
    fn map(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, T>> {
        // The map is never left half-changed by a panic: a poisoned lock is still consistent.
        self.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Opens a session holding `value`; returns its id.
    pub fn open(&self, value: T) -> String {
        let id = uuid::Uuid::new_v4().to_string();
        self.map().insert(id.clone(), value);
        id
    }

    /// The session `id`, or NOT_FOUND (the supervisor opens another).
    pub fn get(&self, id: &str) -> Result<T, Status> {
        self.map().get(id).cloned().ok_or_else(|| Status::not_found(format!("no such session {id:?}")))
    }

    /// Changes the session `id`, if it is open.
    pub fn update(&self, id: &str, change: impl FnOnce(&mut T)) {
        if let Some(value) = self.map().get_mut(id) {
            change(value);
        }
    }

    /// Closes the session `id`; returns what it held.
    pub fn close(&self, id: &str) -> Option<T> {
        self.map().remove(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_give_the_declared_default_of_what_is_not_set() {
        let declared = [
            Parameter::new("table", ConfigParameterType::String, "the table").required().definition(),
            Parameter::new("anchor", ConfigParameterType::String, "its key").default("id").definition(),
            Parameter::new("create", ConfigParameterType::Boolean, "create it").default("true").definition(),
            Parameter::new("password", ConfigParameterType::EncryptedString, "a secret")
                .secret()
                .definition(),
        ];
        assert!(declared[0].required && !declared[1].required && declared[3].secret);
        let config = Some(ConfigParameters {
            values: [("table", "users"), ("anchor", ""), ("create", "no")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        });
        let settings = Settings::new(&declared, &config);
        assert_eq!(settings.text("table"), "users");
        assert_eq!(settings.text("anchor"), "id", "empty is not set: the declared default");
        assert!(!settings.boolean("create", true).unwrap(), "a value given wins over the default");
        assert_eq!(settings.get("password"), None);
        let missing = missing_required(&declared, &None);
        assert_eq!(missing.iter().map(|p| p.parameter.as_str()).collect::<Vec<_>>(), ["table"]);
    }
}
