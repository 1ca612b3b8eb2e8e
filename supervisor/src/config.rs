//! The configuration file: typed, strict (an unknown key is an error naming it), with `${VAR}`
//! and `${VAR:-default}` taken from the environment in any string value.
//!
//! Loading is separate from running: [`Config::load`] reports every problem it finds before
//! anything is bound or spawned.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Built-in variable for `${data_dir}`: the supervisor's data directory.
pub const DATA_DIR_VARIABLE: &str = "data_dir";

/// Built-in variable for `${config_dir}`: the directory of the configuration file (for scripts
/// and certificates kept beside it).
pub const CONFIG_DIR_VARIABLE: &str = "config_dir";

/// A configuration problem: the key path, what is wrong, and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.key, self.message)
        }
    }
}

/// Every problem found in a configuration file.
#[derive(Debug)]
pub struct ConfigError {
    pub file: PathBuf,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "invalid configuration {}:", self.file.display())?;
        for p in &self.problems {
            writeln!(f, "  - {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Listeners and the data directory.
    #[serde(default)]
    pub server: ServerConfig,
    /// SCIM applications, by the name used in the URL (`/scim/<app>`).
    #[serde(default)]
    pub apps: BTreeMap<String, AppConfig>,
    /// Connectors, by name.
    #[serde(default)]
    pub connectors: BTreeMap<String, ConnectorConfig>,
    /// Trace export, when not set by the standard `OTEL_*` variables.
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    /// Where the connector space is: the SQLite file in the data directory by default, or a
    /// PostgreSQL database that several supervisors share.
    #[serde(default)]
    pub store: StoreConfig,
    /// The admin listener's authentication and TLS.
    #[serde(default)]
    pub admin: AdminConfig,
    /// The provisioning log's retention.
    #[serde(default)]
    pub log: LogConfig,
}

/// `[admin]`: who may use the admin API and the console, and over what.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Environment variable holding the admin token (several, separated by whitespace or
    /// commas, for rotation).
    #[serde(default = "default_admin_token_env")]
    pub token_env: String,
    /// File holding admin tokens (one per line), read with `token_env`'s.
    pub token_file: Option<PathBuf>,
    /// TLS for the admin listener (same files and reloading as `[server.tls]`).
    pub tls: Option<TlsConfig>,
    /// Endpoints that answer without a token: any of `healthz`, `readyz`, `metrics`.
    #[serde(default = "default_open_endpoints")]
    pub open_endpoints: Vec<String>,
    /// How long a console login lasts.
    #[serde(default = "default_session_ttl", with = "duration")]
    pub session_ttl: Duration,
    /// Failed logins (or bad admin tokens) allowed per client address and minute; beyond, 429.
    #[serde(default = "default_login_attempts")]
    pub failed_logins_per_minute: u32,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            token_env: default_admin_token_env(),
            token_file: None,
            tls: None,
            open_endpoints: default_open_endpoints(),
            session_ttl: default_session_ttl(),
            failed_logins_per_minute: default_login_attempts(),
        }
    }
}

fn default_admin_token_env() -> String {
    "ADMIN_TOKEN".into()
}
fn default_open_endpoints() -> Vec<String> {
    vec!["healthz".into(), "readyz".into(), "metrics".into()]
}
fn default_session_ttl() -> Duration {
    Duration::from_secs(8 * 3600)
}
fn default_login_attempts() -> u32 {
    5
}

/// `[log]`: how long the provisioning log keeps its rows.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// Rows older than this many days go (0: no age limit).
    #[serde(default = "default_log_days")]
    pub retention_days: u32,
    /// At most this many rows are kept, the newest (0: no limit).
    #[serde(default = "default_log_rows")]
    pub max_rows: u64,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { retention_days: default_log_days(), max_rows: default_log_rows() }
    }
}

fn default_log_days() -> u32 {
    30
}
fn default_log_rows() -> u64 {
    1_000_000
}

impl LogConfig {
    /// The retention the journal applies.
    pub fn retention(&self) -> crate::journal::Retention {
        crate::journal::Retention {
            max_age: (self.retention_days > 0)
                .then(|| Duration::from_secs(u64::from(self.retention_days) * 86_400)),
            max_rows: (self.max_rows > 0).then_some(self.max_rows),
        }
    }
}

/// `[store]`: the connector space.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `postgres://user@host:5432/database` (TLS: `?sslmode=verify-full&sslrootcert=/path`), as a
    /// string or `{ env = "STORE_URL" }` / `{ file = "/path" }`. Absent: the SQLite file
    /// `connector-space.db` in the data directory.
    pub url: Option<toml::Value>,
    /// The password, when not in the URL: `{ env = "STORE_PASSWORD" }` or `{ file = "/path" }`.
    pub password: Option<toml::Value>,
    /// PostgreSQL connections for queries, per supervisor.
    #[serde(default = "default_store_connections")]
    pub max_connections: u32,
    /// PostgreSQL sessions that hold the locks taken across writes, per supervisor (each key
    /// always on the same one; a lock or unlock is one short statement).
    #[serde(default = "default_lock_connections")]
    pub lock_connections: u32,
    /// How long opening a connection (or waiting for a free one) may take.
    #[serde(default = "default_store_connect_timeout", with = "duration")]
    pub connect_timeout: Duration,
    /// What an acknowledged write survives in the SQLite connector space: `"process-crash"`
    /// (the default: a crash or kill of the supervisor loses nothing; a power loss or kernel
    /// crash may lose the last writes) or `"power-loss"` (every commit is synced to disk before
    /// the client is answered). PostgreSQL's durability is the server's (`synchronous_commit`).
    #[serde(default)]
    pub durability: crate::store::Durability,
    /// `url` and `password` with `env` and `file` values read (filled at load).
    #[serde(skip)]
    resolved: Option<(String, Option<String>)>,
}

fn default_store_connections() -> u32 {
    16
}

fn default_lock_connections() -> u32 {
    4
}

fn default_store_connect_timeout() -> Duration {
    Duration::from_secs(5)
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            url: None,
            password: None,
            max_connections: default_store_connections(),
            lock_connections: default_lock_connections(),
            connect_timeout: default_store_connect_timeout(),
            durability: Default::default(),
            resolved: None,
        }
    }
}

impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreConfig")
            .field("url", &self.resolved.as_ref().map(|(url, _)| crate::store::postgres::redacted(url)))
            .field("max_connections", &self.max_connections)
            .field("lock_connections", &self.lock_connections)
            .finish_non_exhaustive()
    }
}

impl StoreConfig {
    /// Where the connector space is, for a supervisor with this data directory.
    pub fn location(&self, data_dir: &Path) -> crate::store::Location {
        match &self.resolved {
            Some((url, password)) => crate::store::Location::Postgres(crate::store::postgres::Settings {
                url: url.clone(),
                password: password.clone(),
                max_connections: self.max_connections,
                lock_connections: self.lock_connections,
                connect_timeout: self.connect_timeout,
            }),
            None => crate::store::Location::Sqlite(data_dir.join(crate::server::STORE_FILE)),
        }
    }

    fn resolve(&mut self, env: &dyn Fn(&str) -> Option<String>, problems: &mut Vec<Problem>) {
        let Some(url) = &self.url else {
            if self.password.is_some() {
                problems.push(Problem {
                    key: "store.password".into(),
                    message: "a password without a url; set store.url = { env = \"STORE_URL\" } or remove it"
                        .into(),
                });
            }
            return;
        };
        let Some(url) = secret_value(url, "store.url", env, problems) else { return };
        if !crate::store::postgres::is_url(&url) {
            problems.push(Problem {
                key: "store.url".into(),
                message: format!(
                    "{} is not a PostgreSQL URL: write postgres://user@host:5432/database, or remove [store] \
                     for the SQLite file in the data directory",
                    crate::store::postgres::redacted(&url)
                ),
            });
            return;
        }
        let password = match &self.password {
            Some(value) => match secret_value(value, "store.password", env, problems) {
                Some(password) => Some(password),
                None => return,
            },
            None => None,
        };
        if self.max_connections == 0 || self.lock_connections == 0 {
            problems.push(Problem {
                key: "store.max_connections".into(),
                message: "max_connections and lock_connections must be at least 1".into(),
            });
        }
        self.resolved = Some((url, password));
    }
}

/// A secret's text: a string as it is, `{ env = "VAR" }` from the environment, `{ file = "/path" }`
/// from a file (without the trailing newline). `None` (with the problem noted) when it cannot be
/// read.
fn secret_value(
    value: &toml::Value,
    key: &str,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<Problem>,
) -> Option<String> {
    let problem = |problems: &mut Vec<Problem>, message: String| {
        problems.push(Problem { key: key.to_string(), message });
        None
    };
    match value {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Table(t) => {
            match (t.get("env").and_then(|v| v.as_str()), t.get("file").and_then(|v| v.as_str())) {
                (Some(var), _) => match env(var) {
                    Some(v) => Some(v),
                    None => problem(problems, format!("environment variable {var} is not set")),
                },
                // A trailing newline is an editor's, not the secret's.
                (_, Some(path)) => match std::fs::read_to_string(path) {
                    Ok(v) => Some(v.trim_end_matches(['\n', '\r']).to_string()),
                    Err(e) => problem(problems, format!("cannot read {path}: {e}")),
                },
                _ => {
                    problem(problems, "must be a string, or { env = \"VAR\" } or { file = \"/path\" }".into())
                }
            }
        }
        other => Some(other.to_string()),
    }
}

/// `[telemetry]`: OTLP trace export for the supervisor and its connectors. The standard
/// `OTEL_*` variables, where set, take precedence; these fill them in.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`, e.g. `http://127.0.0.1:4317`.
    pub otlp_endpoint: Option<String>,
    /// `OTEL_EXPORTER_OTLP_PROTOCOL`: `grpc` or `http/protobuf`.
    pub otlp_protocol: Option<String>,
    /// `OTEL_SERVICE_NAME` of the supervisor (connectors are named after their executable).
    pub service_name: Option<String>,
}

impl TelemetryConfig {
    /// The `OTEL_*` variables this section stands for (the caller sets those not set already).
    pub fn variables(&self) -> Vec<(&'static str, String)> {
        [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &self.otlp_endpoint),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", &self.otlp_protocol),
            ("OTEL_SERVICE_NAME", &self.service_name),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.clone().map(|v| (k, v)))
        .collect()
    }
}

/// `[server]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// SCIM listener.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// TLS for the SCIM listener (required unless `plain_http = true`).
    pub tls: Option<TlsConfig>,
    /// Serve SCIM over plain HTTP: only for loopback trials and tests; bearer tokens then cross
    /// the network in clear.
    #[serde(default)]
    pub plain_http: bool,
    /// The public base URL (e.g. `https://scim.example.com`) when behind a reverse proxy; used in
    /// `Location` and `meta.location`. Default: the scheme and Host of each request.
    pub public_url: Option<String>,
    /// Largest request body accepted (413 beyond).
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Admin listener: health, readiness, metrics, the admin API and the console. Loopback by
    /// default; `[admin]` sets its token and TLS.
    #[serde(default = "default_admin_listen")]
    pub admin_listen: SocketAddr,
    /// Where the connector space and connector sockets live (overridden by `--data-dir`).
    pub data_dir: Option<PathBuf>,
    /// How long shutdown waits for in-flight requests and for children to stop.
    #[serde(default = "default_shutdown_timeout", with = "duration")]
    pub shutdown_timeout: Duration,
    /// The connector space's read cache, in records (about 4.5 KiB of memory each); reads it
    /// misses are answered from the store file.
    #[serde(default = "default_store_cache_records")]
    pub store_cache_records: usize,
    /// This supervisor's name in the store's bookkeeping (import runs) and in the logs, when
    /// several share a store. Default: `<hostname>:<SCIM port>`.
    pub node_name: Option<String>,
}

impl ServerConfig {
    /// This supervisor's node name, for one listening on `listen`.
    pub fn node(&self, listen: SocketAddr) -> String {
        self.node_name.clone().unwrap_or_else(|| {
            let host = nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok());
            format!("{}:{}", host.unwrap_or_else(|| "localhost".into()), listen.port())
        })
    }
}

fn default_store_cache_records() -> usize {
    crate::store::DEFAULT_CACHE_RECORDS
}

/// `[server.tls]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert_file: PathBuf,
    /// PEM private key.
    pub key_file: PathBuf,
    /// How often the files are checked for changes (a changed pair is reloaded).
    #[serde(default = "default_reload_interval", with = "duration")]
    pub reload_interval: Duration,
}

fn default_reload_interval() -> Duration {
    Duration::from_secs(10)
}

fn default_max_body_bytes() -> usize {
    1 << 20
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            tls: None,
            plain_http: false,
            public_url: None,
            max_body_bytes: default_max_body_bytes(),
            admin_listen: default_admin_listen(),
            data_dir: None,
            shutdown_timeout: default_shutdown_timeout(),
            store_cache_records: default_store_cache_records(),
            node_name: None,
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_admin_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9090))
}
fn default_shutdown_timeout() -> Duration {
    Duration::from_secs(10)
}

/// `[apps.<name>]`: one SCIM tenant URL.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    /// Connector that holds this app's Users.
    pub users: String,
    /// Connector that holds this app's Groups (the app has no /Groups without it).
    pub groups: Option<String>,
    /// Custom extension schemas, by URN: listed in /Schemas and /ResourceTypes, their values
    /// type-checked, and mappable like any attribute (`"<urn>:<attribute>"`).
    #[serde(default)]
    pub extensions: BTreeMap<String, ExtensionConfig>,
    /// Environment variable holding the bearer token.
    pub token_env: Option<String>,
    /// File holding the bearer token (trailing whitespace ignored).
    pub token_file: Option<PathBuf>,
    /// Token used when the variable is unset and there is no file: for trying things out only; a
    /// warning is logged when it is in use.
    pub insecure_default_token: Option<String>,
    /// What to do with an attribute that no schema of the resource defines (in a body or a PATCH
    /// path): `"refuse"` (400, the default) or `"ignore"` (dropped, never stored; for clients
    /// that send attributes mapped without being declared here).
    #[serde(default)]
    pub unknown_attributes: crate::scim::schema::UnknownAttributes,
}

impl AppConfig {
    /// The app's custom extension schemas, as the SCIM layer holds them.
    pub fn scim_extensions(&self) -> Vec<crate::scim::Extension> {
        self.extensions
            .iter()
            .map(|(urn, e)| crate::scim::Extension {
                urn: urn.clone(),
                resource: match e.resource {
                    ExtensionResource::User => "User",
                    ExtensionResource::Group => "Group",
                },
                description: e.description.clone(),
                attributes: e.attributes.iter().map(|(n, k)| (n.clone(), *k)).collect(),
            })
            .collect()
    }
}

/// `[apps.<name>.extensions."<urn>"]`: a custom extension schema.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtensionConfig {
    /// The resource it extends: `User` or `Group`.
    pub resource: ExtensionResource,
    #[serde(default)]
    pub description: String,
    /// Attribute name = type (`string`, `integer`, `decimal`, `boolean`, `dateTime`,
    /// `reference`, `binary`).
    pub attributes: BTreeMap<String, AttributeKind>,
}

/// The resource an extension extends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum ExtensionResource {
    User,
    Group,
}

/// The SCIM type of an extension attribute (RFC 7643 §2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum AttributeKind {
    String,
    Integer,
    Decimal,
    Boolean,
    DateTime,
    Reference,
    Binary,
}

impl AttributeKind {
    /// The name in a SCIM schema.
    pub fn scim_name(self) -> &'static str {
        match self {
            AttributeKind::String => "string",
            AttributeKind::Integer => "integer",
            AttributeKind::Decimal => "decimal",
            AttributeKind::Boolean => "boolean",
            AttributeKind::DateTime => "dateTime",
            AttributeKind::Reference => "reference",
            AttributeKind::Binary => "binary",
        }
    }
}

/// `[connectors.<name>]`: one connector child process. (`Debug` is written by hand: parameters
/// and environment may hold secrets.)
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectorConfig {
    /// Executable: a path, or a bare name looked up next to the supervisor binary, then on PATH.
    pub executable: String,
    /// Arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Environment for the child (its environment is otherwise cleared but for PATH, HOME,
    /// LANG, TZ, RUST_LOG and the process contract's variables).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The one object type this connector serves (checked against its GetSchema).
    #[serde(deserialize_with = "exactly_one")]
    pub object_type: String,
    /// The one partition this connector serves (checked against its GetPartitions).
    #[serde(deserialize_with = "exactly_one")]
    pub partition: String,
    /// Connector parameters, as declared by the connector's GetConfigParameters. A value is a
    /// string, number or boolean, or `{ env = "VAR" }` / `{ file = "/path" }` for secrets kept
    /// out of the file.
    #[serde(default)]
    pub parameters: BTreeMap<String, toml::Value>,
    /// `parameters` in their text form, with `env` and `file` values read (filled at load).
    #[serde(skip)]
    resolved_parameters: BTreeMap<String, String>,
    /// Attribute mapping: connector attribute = SCIM attribute path.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// Connector attribute used to find an object whose write outcome is unknown (defaults to
    /// the one mapped from `userName`).
    pub match_attribute: Option<String>,
    /// How long a new child may take to answer `Hello`.
    #[serde(default = "default_startup_timeout", with = "duration")]
    pub startup_timeout: Duration,
    /// Deadline of every call into the connector; a child that overruns it is restarted.
    #[serde(default = "default_call_timeout", with = "duration")]
    pub call_timeout: Duration,
    /// Interval of `grpc.health.v1` checks.
    #[serde(default = "default_health_interval", with = "duration")]
    pub health_interval: Duration,
    /// A call outstanding this long gets the child probed (a health check on the call's
    /// connection), and again each time this passes while the call lasts. No probe when it is
    /// not shorter than `call_timeout`.
    #[serde(default = "default_hang_check_after", with = "duration")]
    pub hang_check_after: Duration,
    /// Deadline of each health check (the probes during calls and the periodic ones): a child
    /// that does not answer within it is taken for hung. A probe during a call kills it at once
    /// (the call's outcome is unknown); two periodic checks in a row do.
    #[serde(default = "default_hang_probe_timeout", with = "duration")]
    pub hang_probe_timeout: Duration,
    /// How long a write whose outcome is unknown (its child died, hung or overran a deadline
    /// during the call) waits for the next incarnation to look the object up; past it, the
    /// answer is 503 with Retry-After, and the pending record is settled by the client's retry
    /// or when the connector is ready again.
    #[serde(default = "default_reconcile_wait", with = "duration")]
    pub reconcile_wait: Duration,
    /// Restart policy.
    #[serde(default)]
    pub restart: RestartConfig,
    /// When imports run.
    #[serde(default)]
    pub import: ImportConfig,
    /// What DELETE and `active: false` do to the target object.
    #[serde(default)]
    pub deprovision: DeprovisionConfig,
    /// Most entries per PutExportEntries batch (also bounded by the connector's own limit).
    #[serde(default = "default_batch_size")]
    pub export_batch_size: usize,
}

fn default_startup_timeout() -> Duration {
    Duration::from_secs(15)
}
fn default_call_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_health_interval() -> Duration {
    Duration::from_secs(5)
}
fn default_hang_check_after() -> Duration {
    Duration::from_secs(2)
}
fn default_hang_probe_timeout() -> Duration {
    Duration::from_secs(1)
}
fn default_reconcile_wait() -> Duration {
    Duration::from_secs(1)
}
fn default_batch_size() -> usize {
    100
}

/// `[connectors.<name>.import]`: when the connector space is brought in step with the target.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportConfig {
    /// A full import each time the connector becomes ready after starting (default true).
    #[serde(default = "default_true")]
    pub on_start: bool,
    /// A full import at this interval (any length; none by default).
    #[serde(default, with = "optional_duration")]
    pub full_interval: Option<Duration>,
    /// A delta import at this interval, where the connector supports delta (full otherwise).
    #[serde(default, with = "optional_duration")]
    pub delta_interval: Option<Duration>,
}

fn default_true() -> bool {
    true
}

impl Default for ImportConfig {
    fn default() -> Self {
        Self { on_start: true, full_interval: None, delta_interval: None }
    }
}

mod optional_duration {
    use std::time::Duration;

    use serde::Deserializer;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        super::duration::deserialize(d).map(Some)
    }
}

/// What happens to a target object when its SCIM resource is deleted or disabled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeprovisionAction {
    /// Delete the target object.
    Delete,
    /// Set the attribute values in `set` (e.g. a status column, a disabled flag).
    Set,
    /// Leave the target object as it is.
    #[default]
    None,
}

/// `[connectors.<name>.deprovision]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeprovisionConfig {
    /// On DELETE (default `delete`). With `set` or `none` the object stays in the target and a
    /// later create with the same name takes it up again.
    #[serde(default = "default_on_delete")]
    pub on_delete: DeprovisionAction,
    /// On `active: false` (default `none`: only the mapped attributes change). With `delete` the
    /// object comes back when the resource is enabled again.
    #[serde(default)]
    pub on_disable: DeprovisionAction,
    /// Connector attribute values for the `set` action.
    #[serde(default)]
    pub set: BTreeMap<String, toml::Value>,
}

fn default_on_delete() -> DeprovisionAction {
    DeprovisionAction::Delete
}

impl Default for DeprovisionConfig {
    fn default() -> Self {
        Self {
            on_delete: DeprovisionAction::Delete,
            on_disable: DeprovisionAction::None,
            set: BTreeMap::new(),
        }
    }
}

/// `[connectors.<name>.restart]`: exponential backoff with jitter.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestartConfig {
    #[serde(default = "default_initial_backoff", with = "duration")]
    pub initial_backoff: Duration,
    #[serde(default = "default_max_backoff", with = "duration")]
    pub max_backoff: Duration,
    /// A child that ran this long without trouble resets the backoff (and ends a quarantine).
    #[serde(default = "default_reset_after", with = "duration")]
    pub reset_after: Duration,
    /// More restarts than this within `window` quarantine the connector.
    #[serde(default = "default_max_restarts")]
    pub max_restarts: usize,
    #[serde(default = "default_window", with = "duration")]
    pub window: Duration,
    /// How often a quarantined connector is tried again (until an operator resets it with
    /// `POST /admin/connectors/<name>/reset`).
    #[serde(default = "default_quarantine_probe", with = "duration")]
    pub quarantine_probe: Duration,
}

impl Default for RestartConfig {
    fn default() -> Self {
        Self {
            initial_backoff: default_initial_backoff(),
            max_backoff: default_max_backoff(),
            reset_after: default_reset_after(),
            max_restarts: default_max_restarts(),
            window: default_window(),
            quarantine_probe: default_quarantine_probe(),
        }
    }
}

fn default_initial_backoff() -> Duration {
    Duration::from_millis(100)
}
fn default_max_backoff() -> Duration {
    Duration::from_secs(30)
}
fn default_reset_after() -> Duration {
    Duration::from_secs(60)
}
fn default_max_restarts() -> usize {
    5
}
fn default_window() -> Duration {
    Duration::from_secs(60)
}
fn default_quarantine_probe() -> Duration {
    Duration::from_secs(300)
}

/// One name, given as a string (or a list of one). A connector serves one object type and one
/// partition; a list of several is refused with the fix.
fn exactly_one<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => Ok(s),
        OneOrMany::Many(mut v) if v.len() == 1 => Ok(v.remove(0)),
        OneOrMany::Many(v) => Err(serde::de::Error::custom(format!(
            "{v:?} names {} values, but a connector serves exactly one (one object type and one partition \
             per connector): configure one connector for each",
            v.len()
        ))),
    }
}

mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!("{text:?} is not a duration like \"5s\" or \"200ms\" ({e})"))
        })
    }
}

impl Config {
    /// Reads, substitutes and checks `file`. `data_dir` is the value for `${data_dir}`; the
    /// file's own directory that for `${config_dir}`.
    pub fn load(file: &Path, data_dir: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(file).map_err(|e| ConfigError {
            file: file.to_path_buf(),
            problems: vec![Problem { key: String::new(), message: format!("cannot read the file: {e}") }],
        })?;
        let config_dir = std::path::absolute(file)
            .ok()
            .and_then(|f| f.parent().map(Path::to_path_buf))
            .unwrap_or_else(|| PathBuf::from("."));
        Self::parse(&text, data_dir, &|name| {
            if name == CONFIG_DIR_VARIABLE {
                Some(config_dir.display().to_string())
            } else {
                std::env::var(name).ok()
            }
        })
        .map_err(|problems| ConfigError { file: file.to_path_buf(), problems })
    }

    /// Parses configuration text; `env` resolves `${VAR}`.
    pub fn parse(
        text: &str,
        data_dir: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, Vec<Problem>> {
        let mut value: toml::Value = toml::from_str(text).map_err(|e| {
            vec![Problem {
                key: String::new(),
                message: format!("not valid TOML: {}", e.to_string().trim_end()),
            }]
        })?;
        let mut problems = Vec::new();
        let lookup = |name: &str| {
            if name == DATA_DIR_VARIABLE { Some(data_dir.display().to_string()) } else { env(name) }
        };
        substitute(&mut value, String::new(), &lookup, &mut problems);
        if !problems.is_empty() {
            return Err(problems);
        }
        let config: Config = serde_path_to_error::deserialize(value).map_err(|e| {
            let key = e.path().to_string();
            let message = e.into_inner().to_string();
            let message = if message.starts_with("unknown field") {
                format!("{message}; remove or rename the key")
            } else {
                message
            };
            vec![Problem { key: if key == "." { String::new() } else { key }, message }]
        })?;
        let mut config = config;
        config.check()?;
        let mut problems = Vec::new();
        for (name, connector) in &mut config.connectors {
            connector.resolve_parameters(name, env, &mut problems);
        }
        config.store.resolve(env, &mut problems);
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(config)
    }

    /// Cross-references between sections.
    fn check(&self) -> Result<(), Vec<Problem>> {
        let mut problems = Vec::new();
        let mut problem = |key: String, message: String| problems.push(Problem { key, message });
        match (&self.server.tls, self.server.plain_http) {
            (None, false) => problem(
                "server.tls".into(),
                "TLS is required: set cert_file and key_file (`supervisor cert generate` writes a pair for \
                 trying things out), or plain_http = true for loopback trials"
                    .into(),
            ),
            (Some(_), true) => problem(
                "server.plain_http".into(),
                "plain_http = true and [server.tls] exclude each other".into(),
            ),
            _ => {}
        }
        if self.apps.is_empty() {
            problem("apps".into(), "no app is configured; add an [apps.<name>] section".into());
        }
        for endpoint in &self.admin.open_endpoints {
            if !["healthz", "readyz", "metrics"].contains(&endpoint.as_str()) {
                problem(
                    "admin.open_endpoints".into(),
                    format!(
                        "{endpoint:?} is not one of \"healthz\", \"readyz\", \"metrics\" (the only endpoints that may answer without a token)"
                    ),
                );
            }
        }
        if self.admin.session_ttl < Duration::from_secs(5) {
            problem(
                "admin.session_ttl".into(),
                "a console login must last at least 5 seconds (e.g. \"8h\")".into(),
            );
        }
        for (name, app) in &self.apps {
            if !valid_name(name) {
                problem(
                    format!("apps.{name}"),
                    "app names may hold letters, digits, '-' and '_' only".into(),
                );
            }
            for (key, connector) in [("users", Some(&app.users)), ("groups", app.groups.as_ref())] {
                if let Some(connector) = connector
                    && !self.connectors.contains_key(connector)
                {
                    problem(
                        format!("apps.{name}.{key}"),
                        format!(
                            "no connector named {connector:?}; configured connectors: {:?}",
                            self.connectors.keys().collect::<Vec<_>>()
                        ),
                    );
                }
            }
            for (other_name, other) in &self.apps {
                if other_name != name
                    && (other.users == app.users || other.groups.as_ref() == Some(&app.users))
                {
                    problem(
                        format!("apps.{name}.users"),
                        format!(
                            "connector {:?} already serves app {other_name:?}; give each app its own",
                            app.users
                        ),
                    );
                }
            }
            if app.groups.as_ref() == Some(&app.users) {
                problem(
                    format!("apps.{name}.groups"),
                    "users and groups need a connector each (one object type per connector)".into(),
                );
            }
            for (urn, extension) in &app.extensions {
                let key = format!("apps.{name}.extensions.\"{urn}\"");
                if !urn.to_ascii_lowercase().starts_with("urn:") || urn.ends_with(':') {
                    problem(key.clone(), "an extension schema is named by a URN, e.g. urn:example:scim:schemas:extension:acme:2.0:User".into());
                }
                if extension.resource == ExtensionResource::Group && app.groups.is_none() {
                    problem(key.clone(), "extends Group, but the app has no groups connector".into());
                }
                for attribute in extension.attributes.keys() {
                    if crate::paths::AttrPath::parse(attribute).map(|p| p.sub.is_some()).unwrap_or(true) {
                        problem(format!("{key}.attributes.{attribute}"), "not an attribute name".into());
                    }
                }
            }
            // Every SCIM path a mapping reads must be an attribute of the resource's schemas:
            // what no schema defines is never stored, so it could never be exported.
            let extensions = app.scim_extensions();
            for (connector, resource) in [(Some(&app.users), "User"), (app.groups.as_ref(), "Group")] {
                let Some(connector_config) = connector.and_then(|c| self.connectors.get(c)) else { continue };
                let schemas = crate::scim::schema::ResourceSchemas::of(
                    resource,
                    &extensions,
                    crate::scim::schema::UnknownAttributes::Refuse,
                );
                for (target, source) in &connector_config.attributes {
                    for path in crate::mapping::source_paths(source) {
                        if let Err(reason) = schemas.check(&path) {
                            problem(
                                format!("connectors.{}.attributes.{target}", connector.unwrap_or(&app.users)),
                                format!(
                                    "{reason}: map an attribute that /Schemas lists for {resource}, or declare it \
                                     in a custom extension ([apps.{name}.extensions.\"<urn>\"])"
                                ),
                            );
                        }
                    }
                }
            }
            if app.token_env.is_none() && app.token_file.is_none() && app.insecure_default_token.is_none() {
                problem(
                    format!("apps.{name}"),
                    "no bearer token source; set token_env = \"SCIM_TOKEN\" or token_file".into(),
                );
            }
        }
        for (name, connector) in &self.connectors {
            if !valid_name(name) {
                problem(
                    format!("connectors.{name}"),
                    "connector names may hold letters, digits, '-' and '_' only".into(),
                );
            }
            if connector.executable.trim().is_empty() {
                problem(
                    format!("connectors.{name}.executable"),
                    "must name the connector's executable".into(),
                );
            }
            for (key, value) in [
                ("startup_timeout", connector.startup_timeout),
                ("call_timeout", connector.call_timeout),
                ("health_interval", connector.health_interval),
                ("hang_check_after", connector.hang_check_after),
                ("hang_probe_timeout", connector.hang_probe_timeout),
                ("import.full_interval", connector.import.full_interval.unwrap_or(Duration::MAX)),
                ("import.delta_interval", connector.import.delta_interval.unwrap_or(Duration::MAX)),
                ("restart.window", connector.restart.window),
                ("restart.quarantine_probe", connector.restart.quarantine_probe),
            ] {
                if value.is_zero() {
                    problem(format!("connectors.{name}.{key}"), "must be longer than zero".into());
                }
            }
            if connector.export_batch_size == 0 {
                problem(format!("connectors.{name}.export_batch_size"), "must be at least 1".into());
            }
            for (target, path) in &connector.attributes {
                if let Err(e) = crate::mapping::parse_source(path) {
                    problem(format!("connectors.{name}.attributes.{target}"), format!("{path:?}: {e}"));
                }
            }
            if connector.match_attribute().is_none() {
                problem(
                    format!("connectors.{name}.attributes"),
                    "map userName (users) or displayName (groups) to a connector attribute, or set \
                     match_attribute, so that a write whose outcome is unknown can be found again"
                        .into(),
                );
            }
            let d = &connector.deprovision;
            let uses_set = d.on_delete == DeprovisionAction::Set || d.on_disable == DeprovisionAction::Set;
            if uses_set && d.set.is_empty() {
                problem(
                    format!("connectors.{name}.deprovision.set"),
                    "the \"set\" action needs attribute values here, e.g. set = { status = \"disabled\" }"
                        .into(),
                );
            }
            for (key, value) in &d.set {
                if matches!(value, toml::Value::Array(_) | toml::Value::Table(_) | toml::Value::Datetime(_)) {
                    problem(
                        format!("connectors.{name}.deprovision.set.{key}"),
                        "must be a string, integer or boolean".into(),
                    );
                }
            }
            if let Some(m) = &connector.match_attribute
                && !connector.attributes.contains_key(m)
            {
                problem(
                    format!("connectors.{name}.match_attribute"),
                    format!("{m:?} is not a mapped attribute"),
                );
            }
            for (key, value) in &connector.parameters {
                let ok = match value {
                    toml::Value::Array(_) => false,
                    toml::Value::Table(t) => {
                        t.len() == 1
                            && (t.get("env").is_some_and(|v| v.is_str())
                                || t.get("file").is_some_and(|v| v.is_str()))
                    }
                    _ => true,
                };
                if !ok {
                    problem(
                        format!("connectors.{name}.parameters.{key}"),
                        "must be a string, number or boolean, or { env = \"VAR\" } or { file = \"/path\" }"
                            .into(),
                    );
                }
            }
        }
        if problems.is_empty() { Ok(()) } else { Err(problems) }
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

impl fmt::Debug for ConnectorConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectorConfig")
            .field("executable", &self.executable)
            .field("object_type", &self.object_type)
            .field("partition", &self.partition)
            .field("parameters", &self.parameters.keys().collect::<Vec<_>>())
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl ConnectorConfig {
    /// The connector attribute used to find an object again (see `match_attribute`): the one
    /// mapped from `userName`, else from `displayName`.
    pub fn match_attribute(&self) -> Option<&str> {
        let mapped_from = |scim: &str| {
            self.attributes.iter().find(|(_, path)| path.eq_ignore_ascii_case(scim)).map(|(t, _)| t.as_str())
        };
        self.match_attribute
            .as_deref()
            .or_else(|| mapped_from("userName"))
            .or_else(|| mapped_from("displayName"))
    }

    /// Parameters in their text form, as the protocol carries them.
    pub fn parameter_values(&self) -> BTreeMap<String, String> {
        self.resolved_parameters.clone()
    }

    /// Reads `env` and `file` parameter values. Problems name the key, never the value.
    fn resolve_parameters(
        &mut self,
        name: &str,
        env: &dyn Fn(&str) -> Option<String>,
        problems: &mut Vec<Problem>,
    ) {
        for (key, value) in &self.parameters {
            let problem_key = format!("connectors.{name}.parameters.{key}");
            // A table without env or file is reported by check().
            if let toml::Value::Table(t) = value
                && !t.contains_key("env")
                && !t.contains_key("file")
            {
                continue;
            }
            let Some(text) = secret_value(value, &problem_key, env, problems) else { continue };
            self.resolved_parameters.insert(key.clone(), text);
        }
    }
}

/// Replaces `${VAR}` and `${VAR:-default}` in every string; `$$` is a literal `$`.
fn substitute(
    value: &mut toml::Value,
    key: String,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<Problem>,
) {
    match value {
        toml::Value::String(s) => match expand(s, env) {
            Ok(expanded) => *s = expanded,
            Err(message) => problems.push(Problem { key, message }),
        },
        toml::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                substitute(item, format!("{key}[{i}]"), env, problems);
            }
        }
        toml::Value::Table(table) => {
            for (k, item) in table.iter_mut() {
                let path = if key.is_empty() { k.clone() } else { format!("{key}.{k}") };
                substitute(item, path, env, problems);
            }
        }
        _ => {}
    }
}

/// Expands variables in one string.
pub fn expand(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body.find('}').ok_or_else(|| format!("unclosed ${{ in {text:?}"))?;
            let inner = &body[..end];
            let (name, default) = match inner.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (inner, None),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!(
                    "${{{inner}}} is not a variable reference like ${{NAME}} or ${{NAME:-default}}"
                ));
            }
            match (env(name).filter(|v| !v.is_empty()), default) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => {
                    return Err(format!(
                        "environment variable {name} is not set; export it, or write ${{{name}:-default}}"
                    ));
                }
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal valid configuration (one app, one SQLite connector), for other modules' tests too.
    pub(crate) const MINIMAL: &str = r#"
        [server]
        plain_http = true

        [apps.demo]
        users = "people"
        token_env = "SCIM_TOKEN"

        [connectors.people]
        executable = "connector-sql"
        object_type = "user"
        partition = "default"
        parameters = { connection_string = "sqlite://${data_dir}/demo.db", create_table = true }
        attributes = { user_name = "userName", mail = "emails[type eq \"work\"].value" }
    "#;

    fn parse(text: &str) -> Result<Config, Vec<Problem>> {
        Config::parse(text, Path::new("/var/lib/x"), &|name| (name == "HOME").then(|| "/home/u".to_string()))
    }

    #[test]
    fn a_mapping_that_reads_no_schema_attribute_is_refused_naming_the_fix() {
        let text = MINIMAL.replace(
            "mail = \"emails[type eq \\\"work\\\"].value\"",
            "mail = \"favouriteColour\", title = \"ToLower([name.nickname])\"",
        );
        assert!(text.contains("favouriteColour"), "{text}");
        let problems = parse(&text).unwrap_err();
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert!(keys.contains(&"connectors.people.attributes.mail"), "{problems:?}");
        assert!(keys.contains(&"connectors.people.attributes.title"), "{problems:?}");
        assert!(problems.iter().all(|p| p.message.contains("extensions")), "{problems:?}");
        // Declared in an extension, it maps.
        let declared = text
            .replace("mail = \"favouriteColour\"", "mail = \"urn:example:2.0:User:colour\"")
            .replace("name.nickname", "nickName")
            + "\n[apps.demo.extensions.\"urn:example:2.0:User\"]\nresource = \"User\"\nattributes = { colour = \"string\" }\n";
        parse(&declared).expect("declared attributes map");
    }

    #[test]
    fn minimal_config_loads_with_defaults() {
        let config = parse(MINIMAL).unwrap();
        assert_eq!(config.server.listen, "127.0.0.1:8080".parse().unwrap());
        let people = &config.connectors["people"];
        assert_eq!(people.parameter_values()["connection_string"], "sqlite:///var/lib/x/demo.db");
        assert_eq!(people.parameter_values()["create_table"], "true");
        assert_eq!(people.match_attribute(), Some("user_name"));
        assert_eq!(people.restart.initial_backoff, Duration::from_millis(100));
        assert_eq!(people.restart.max_restarts, 5);
        // A hung child is found within 3 s of a call meeting it, and its write waits 1 s more
        // for the next incarnation: an answer within about 4 s.
        assert_eq!(people.hang_check_after, Duration::from_secs(2));
        assert_eq!(people.hang_probe_timeout, Duration::from_secs(1));
        assert_eq!(people.reconcile_wait, Duration::from_secs(1));
    }

    #[test]
    fn unknown_key_is_named() {
        let text = MINIMAL.replace("partition = \"default\"", "partition = \"default\"\nexecutabel = \"x\"");
        let problems = parse(&text).unwrap_err();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].key, "connectors.people.executabel");
        assert!(problems[0].message.contains("unknown field `executabel`"), "{}", problems[0].message);
    }

    #[test]
    fn two_object_types_are_refused_with_the_fix() {
        let text = MINIMAL.replace("object_type = \"user\"", "object_type = [\"user\", \"group\"]");
        let problems = parse(&text).unwrap_err();
        assert_eq!(problems[0].key, "connectors.people.object_type");
        assert!(problems[0].message.contains("exactly one"), "{}", problems[0].message);
        let text = MINIMAL.replace("object_type = \"user\"", "object_type = [\"user\"]");
        assert_eq!(parse(&text).unwrap().connectors["people"].object_type, "user");
    }

    #[test]
    fn tls_is_required_unless_plain_http_is_asked_for() {
        let problems = parse(&MINIMAL.replace("plain_http = true", "")).unwrap_err();
        assert_eq!(problems[0].key, "server.tls");
        assert!(problems[0].message.contains("supervisor cert generate"));
        let text =
            MINIMAL.replace("plain_http = true", "[server.tls]\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"");
        let config = parse(&text).unwrap();
        assert_eq!(config.server.tls.unwrap().reload_interval, Duration::from_secs(10));
    }

    #[test]
    fn zero_intervals_are_refused() {
        let text =
            MINIMAL.replace("partition = \"default\"", "partition = \"default\"\nhealth_interval = \"0s\"");
        let problems = parse(&text).unwrap_err();
        assert_eq!(problems[0].key, "connectors.people.health_interval");
        for key in ["hang_check_after", "hang_probe_timeout"] {
            let text = MINIMAL
                .replace("partition = \"default\"", &format!("partition = \"default\"\n{key} = \"0ms\""));
            let problems = parse(&text).unwrap_err();
            assert_eq!(problems[0].key, format!("connectors.people.{key}"));
            assert!(problems[0].message.contains("longer than zero"), "{}", problems[0].message);
        }
        // No wait for the next incarnation is a choice: 503 at once after an unknown outcome.
        let text =
            MINIMAL.replace("partition = \"default\"", "partition = \"default\"\nreconcile_wait = \"0s\"");
        assert_eq!(parse(&text).unwrap().connectors["people"].reconcile_wait, Duration::ZERO);
    }

    #[test]
    fn debug_output_holds_no_parameter_values() {
        let config = parse(MINIMAL).unwrap();
        let shown = format!("{:?}", config.connectors["people"]);
        assert!(shown.contains("connection_string") && !shown.contains("demo.db"), "{shown}");
    }

    #[test]
    fn bad_duration_names_the_key() {
        let text =
            MINIMAL.replace("partition = \"default\"", "partition = \"default\"\nstartup_timeout = \"soon\"");
        let problems = parse(&text).unwrap_err();
        assert_eq!(problems[0].key, "connectors.people.startup_timeout");
        let text =
            MINIMAL.replace("partition = \"default\"", "partition = \"default\"\nhang_check_after = \"2\"");
        let problems = parse(&text).unwrap_err();
        assert_eq!(problems[0].key, "connectors.people.hang_check_after");
    }

    #[test]
    fn every_cross_reference_problem_is_reported() {
        let text = MINIMAL
            .replace("users = \"people\"", "users = \"nobody\"")
            .replace("token_env = \"SCIM_TOKEN\"", "");
        let problems = parse(&text).unwrap_err();
        let keys: Vec<_> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["apps.demo.users", "apps.demo"]);
    }

    #[test]
    fn the_store_url_and_password_come_from_env_or_file_and_a_bad_url_names_its_key() {
        let dir = std::env::temp_dir().join(format!("config-store-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let password = dir.join("store-password");
        std::fs::write(&password, "s3cret\n").unwrap();
        let text = format!(
            "{MINIMAL}\n[store]\nurl = {{ env = \"STORE_URL\" }}\npassword = {{ file = \"{}\" }}\n",
            password.display()
        );
        let env = |name: &str| (name == "STORE_URL").then(|| "postgres://ecma@db:5432/ecma".to_string());
        let config = Config::parse(&text, Path::new("/var/lib/x"), &env).unwrap();
        match config.store.location(Path::new("/var/lib/x")) {
            crate::store::Location::Postgres(settings) => {
                assert_eq!(settings.url, "postgres://ecma@db:5432/ecma");
                assert_eq!(
                    settings.password.as_deref(),
                    Some("s3cret"),
                    "the file's trailing newline is not the secret's"
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(!format!("{config:?}").contains("s3cret"), "never in a Debug print");
        // Without [store]: the SQLite file in the data directory.
        let config = parse(MINIMAL).unwrap();
        assert!(
            matches!(config.store.location(Path::new("/d")), crate::store::Location::Sqlite(p) if p == Path::new("/d/connector-space.db"))
        );
        // A URL that is not PostgreSQL's, an unset variable: the key and the fix.
        let problems = parse(&format!("{MINIMAL}\n[store]\nurl = \"mysql://u:pw@db/x\"\n")).unwrap_err();
        assert_eq!(problems[0].key, "store.url");
        assert!(
            problems[0].message.contains("postgres://") && !problems[0].message.contains("pw@"),
            "{}",
            problems[0].message
        );
        let problems =
            parse(&format!("{MINIMAL}\n[store]\nurl = {{ env = \"NO_SUCH_VAR\" }}\n")).unwrap_err();
        assert_eq!(
            (problems[0].key.as_str(), problems[0].message.as_str()),
            ("store.url", "environment variable NO_SUCH_VAR is not set")
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn secret_parameters_come_from_env_or_file() {
        let dir = std::env::temp_dir().join(format!("config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let secret_file = dir.join("password");
        std::fs::write(&secret_file, "s3cret\n").unwrap();
        let text = MINIMAL.replace(
            "create_table = true }",
            &format!(
                "create_table = true, a = {{ env = \"HOME\" }}, b = {{ file = \"{}\" }} }}",
                secret_file.display()
            ),
        );
        let config = parse(&text).unwrap();
        let values = config.connectors["people"].parameter_values();
        assert_eq!(values["a"], "/home/u");
        assert_eq!(values["b"], "s3cret");

        let text = MINIMAL.replace("create_table = true }", "create_table = true, a = { env = \"NOPE\" }, c = { file = \"/no/such\" }, d = { envv = \"X\" } }");
        let problems = parse(&text).unwrap_err();
        let keys: Vec<_> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["connectors.people.parameters.d"], "shape problems first");
        let text = MINIMAL.replace(
            "create_table = true }",
            "create_table = true, a = { env = \"NOPE\" }, c = { file = \"/no/such\" } }",
        );
        let problems = parse(&text).unwrap_err();
        let keys: Vec<_> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            ["connectors.people.parameters.a", "connectors.people.parameters.c"],
            "all reported at once"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn variables_expand() {
        let env = |name: &str| (name == "A").then(|| "1".to_string());
        assert_eq!(expand("x${A}y", &env).unwrap(), "x1y");
        assert_eq!(expand("${B:-two}", &env).unwrap(), "two");
        assert_eq!(expand("$$A $5", &env).unwrap(), "$A $5");
        assert!(expand("${B}", &env).unwrap_err().contains("B is not set"));
        assert!(expand("${A", &env).is_err());
    }

    #[test]
    fn missing_variable_names_the_key() {
        let problems = parse(&MINIMAL.replace("${data_dir}", "${NOPE}")).unwrap_err();
        assert_eq!(problems[0].key, "connectors.people.parameters.connection_string");
        assert!(problems[0].message.contains("NOPE"));
    }
}
