//! `ecma-connector-check`: the conformance kit. It starts any connector executable the way the
//! supervisor does (the process contract of docs/connector-protocol.md: a Unix socket, a
//! per-spawn token, the protocol versions, the supervisor's pid) and checks the `ecma.v1`
//! contract: handshake and version negotiation, the token, health, parameter declarations and
//! the refusal of a configuration without a required one, the object type, schema and
//! partition, and, given a test object, exports (one result per entry, idempotent re-sends, the
//! error kinds on the wire), lookups, paged imports and watermarks, concurrent calls when the
//! connector declares them; then that it writes nothing on stdout, stops on SIGTERM and exits when
//! its supervisor is gone. One line per check, then `N passed, M failed`; exit 0 when every check
//! passed, 1 when one failed, 2 when the description cannot be used.
//!
//!   ecma-connector-check <description.toml>
//!
//! The description (see docs/connector-protocol.md, "Checking a connector"):
//!
//! ```toml
//! executable = "/usr/local/bin/connector-sql"
//! args = []
//! env = { RUST_LOG = "warn" }
//! object_type = "user"
//! partition = "default"
//! [parameters]
//! connection_string = "sqlite:///tmp/check.db"
//! # A test object, for the checks that write (leave it out for the protocol checks only).
//! [object]
//! match_attribute = "user_name"        # unique in the target; each object gets its own value
//! dn = "uid={match},ou=People,dc=example,dc=com"   # optional; {match} is the match value
//! attributes = { user_name = "ecma-check", display_name = "Check" }
//! update = { display_name = "Checked" }
//! ```

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ecma_proto::v1::{self, ErrorKind, ObjectModificationType, connector_client::ConnectorClient};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncReadExt;
use tokio::net::UnixStream;
use tonic::metadata::AsciiMetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic_health::pb::health_client::HealthClient;

/// A test target's description.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Description {
    executable: PathBuf,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    object_type: String,
    partition: String,
    #[serde(default)]
    parameters: BTreeMap<String, toml::Value>,
    object: Option<TestObject>,
}

/// How to make a test object in the target.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TestObject {
    match_attribute: String,
    dn: Option<String>,
    attributes: BTreeMap<String, toml::Value>,
    #[serde(default)]
    update: BTreeMap<String, toml::Value>,
}

/// The outcome of the checks so far, printed as they pass or fail.
#[derive(Default)]
struct Report {
    passed: usize,
    failed: usize,
}

impl Report {
    fn check(&mut self, name: &str, outcome: Result<(), String>) -> bool {
        match outcome {
            Ok(()) => {
                self.passed += 1;
                println!("ok    {name}");
                true
            }
            Err(reason) => {
                self.failed += 1;
                println!("FAIL  {name}: {reason}");
                false
            }
        }
    }

    fn skip(&self, name: &str, reason: &str) {
        println!("skip  {name}: {reason}");
    }
}

/// Adds the per-spawn token to every call.
#[derive(Clone)]
struct Token(Option<AsciiMetadataValue>);

impl Interceptor for Token {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(token) = &self.0 {
            request.metadata_mut().insert(ecma_proto::TOKEN_METADATA, token.clone());
        }
        Ok(request)
    }
}

type Client = ConnectorClient<InterceptedService<Channel, Token>>;

/// One started connector process.
struct Connector {
    process: tokio::process::Child,
    socket: PathBuf,
    token: String,
    stdout: Arc<Mutex<Vec<u8>>>,
    dir: PathBuf,
}

impl Drop for Connector {
    fn drop(&mut self) {
        let _ = self.process.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Starts the connector as the supervisor does, with `supervisor_pid` as the parent it watches;
/// waits (up to 15 s) until it listens.
async fn start(description: &Description, supervisor_pid: u32) -> Result<Connector, String> {
    let mut connector = spawn(description, supervisor_pid)?;
    let deadline = Instant::now() + Duration::from_secs(15);
    while UnixStream::connect(&connector.socket).await.is_err() {
        if let Ok(Some(status)) = connector.process.try_wait() {
            return Err(format!("it exited ({status}) before listening: {}", connector.stderr_tail()));
        }
        if Instant::now() > deadline {
            return Err(format!("it did not listen on ECMA_SOCKET within 15 s: {}", connector.stderr_tail()));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(connector)
}

/// Starts the connector process with the process contract's environment.
fn spawn(description: &Description, supervisor_pid: u32) -> Result<Connector, String> {
    spawn_with(description, supervisor_pid, &[])
}

/// [`spawn`], with some of the contract's variables replaced.
fn spawn_with(
    description: &Description,
    supervisor_pid: u32,
    replaced: &[(&str, &str)],
) -> Result<Connector, String> {
    use ecma_proto::env;
    let dir = std::env::temp_dir().join(format!("ecma-check-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let socket = dir.join("connector.sock");
    let token = uuid::Uuid::new_v4().simple().to_string();
    let stderr = std::fs::File::create(dir.join("stderr.log")).map_err(|e| e.to_string())?;
    let mut process = tokio::process::Command::new(&description.executable)
        .args(&description.args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(&description.env)
        .env(env::SOCKET, &socket)
        .env(env::TOKEN, &token)
        .env(env::PROTOCOL_VERSIONS, join(ecma_proto::PROTOCOL_VERSIONS))
        .env(env::CONNECTOR_NAME, "ecma-connector-check")
        .env(env::INCARNATION, "1")
        .env(env::SUPERVISOR_PID, supervisor_pid.to_string())
        .envs(replaced.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", description.executable.display()))?;
    let stdout = Arc::new(Mutex::new(Vec::new()));
    if let Some(mut out) = process.stdout.take() {
        let stdout = stdout.clone();
        tokio::spawn(async move {
            let mut buffer = [0u8; 4096];
            while let Ok(n) = out.read(&mut buffer).await {
                if n == 0 {
                    break;
                }
                stdout.lock().unwrap_or_else(|e| e.into_inner()).extend_from_slice(&buffer[..n]);
            }
        });
    }
    Ok(Connector { process, socket, token, stdout, dir })
}

fn join(versions: &[u32]) -> String {
    versions.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

impl Connector {
    fn stderr_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().rev().take(5).collect();
        lines.into_iter().rev().collect::<Vec<_>>().join(" | ")
    }

    /// A client of its socket, with the token or without.
    async fn client(
        &self,
        with_token: bool,
    ) -> Result<(Client, HealthClient<InterceptedService<Channel, Token>>), String> {
        let socket = self.socket.clone();
        let channel = Endpoint::from_static("http://connector.invalid")
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let socket = socket.clone();
                async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(socket).await?)) }
            }))
            .await
            .map_err(|e| format!("cannot connect to its socket: {e}"))?;
        let token = Token(with_token.then(|| self.token.parse().expect("a hex token")));
        Ok((
            ConnectorClient::with_interceptor(channel.clone(), token.clone()),
            HealthClient::with_interceptor(channel, token),
        ))
    }

    /// Waits up to `timeout` for the process to exit by itself; its exit code.
    async fn exited_within(&mut self, timeout: Duration) -> Option<Option<i32>> {
        tokio::time::timeout(timeout, self.process.wait()).await.ok().and_then(Result::ok).map(|s| s.code())
    }
}

fn to_value(value: &toml::Value) -> Vec<v1::Value> {
    match value {
        toml::Value::String(s) => vec![v1::Value::string(s.clone())],
        toml::Value::Integer(i) => vec![v1::Value::integer(*i)],
        toml::Value::Boolean(b) => vec![v1::Value::boolean(*b)],
        toml::Value::Array(items) => items.iter().flat_map(to_value).collect(),
        other => vec![v1::Value::string(other.to_string())],
    }
}

fn text(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// What the calls of one run share.
struct Run<'a> {
    client: Client,
    config: Option<v1::ConfigParameters>,
    description: &'a Description,
}

impl Run<'_> {
    fn lookup_request(&self, by: v1::lookup_entries_request::By) -> v1::LookupEntriesRequest {
        v1::LookupEntriesRequest {
            config: self.config.clone(),
            object_type: self.description.object_type.clone(),
            partition_id: self.description.partition.clone(),
            by: Some(by),
        }
    }

    async fn lookup_anchor(&mut self, anchor: &v1::Anchor) -> Result<Vec<v1::Entry>, String> {
        let request = self.lookup_request(v1::lookup_entries_request::By::Anchor(anchor.clone()));
        Ok(self.client.lookup_entries(request).await.map_err(|e| e.to_string())?.into_inner().entries)
    }

    async fn lookup_match(&mut self, attribute: &str, value: &str) -> Result<Vec<v1::Entry>, String> {
        let request = self.lookup_request(v1::lookup_entries_request::By::Attribute(v1::AttributeValues {
            name: attribute.to_string(),
            values: vec![v1::Value::string(value.to_string())],
        }));
        Ok(self.client.lookup_entries(request).await.map_err(|e| e.to_string())?.into_inner().entries)
    }

    async fn open_export(&mut self) -> Result<String, String> {
        let request = v1::OpenExportConnectionRequest {
            config: self.config.clone(),
            object_type: self.description.object_type.clone(),
            partition_id: self.description.partition.clone(),
            export_type: v1::ExportType::AttributeUpdate as i32,
        };
        Ok(self
            .client
            .open_export_connection(request)
            .await
            .map_err(|e| e.to_string())?
            .into_inner()
            .session_id)
    }

    async fn export(
        &mut self,
        session: &str,
        entries: Vec<v1::CsEntryChange>,
    ) -> Result<Vec<v1::CsEntryChangeResult>, String> {
        let request = v1::PutExportEntriesRequest { session_id: session.to_string(), entries };
        Ok(self.client.put_export_entries(request).await.map_err(|e| e.to_string())?.into_inner().results)
    }
}

/// The ADD of a test object whose match attribute is `value`.
fn add_of(
    description: &Description,
    object: &TestObject,
    identifier: &str,
    value: &str,
) -> v1::CsEntryChange {
    let mut attributes = object.attributes.clone();
    attributes.insert(object.match_attribute.clone(), toml::Value::String(value.to_string()));
    v1::CsEntryChange {
        identifier: identifier.to_string(),
        object_type: description.object_type.clone(),
        modification_type: ObjectModificationType::Add as i32,
        anchors: vec![],
        dn: object.dn.as_deref().map(|dn| dn.replace("{match}", value)).unwrap_or_default(),
        attribute_changes: attributes
            .iter()
            .map(|(name, value)| v1::AttributeChange {
                name: name.clone(),
                modification_type: v1::AttributeModificationType::Add as i32,
                value_adds: to_value(value),
                value_deletes: vec![],
            })
            .collect(),
    }
}

fn change_of(
    description: &Description,
    kind: ObjectModificationType,
    identifier: &str,
    anchors: &[v1::Anchor],
    dn: &str,
    replace: &BTreeMap<String, toml::Value>,
) -> v1::CsEntryChange {
    v1::CsEntryChange {
        identifier: identifier.to_string(),
        object_type: description.object_type.clone(),
        modification_type: kind as i32,
        anchors: anchors.to_vec(),
        dn: dn.to_string(),
        attribute_changes: replace
            .iter()
            .map(|(name, value)| v1::AttributeChange {
                name: name.clone(),
                modification_type: v1::AttributeModificationType::Replace as i32,
                value_adds: to_value(value),
                value_deletes: vec![],
            })
            .collect(),
    }
}

fn kind_name(kind: i32) -> &'static str {
    ErrorKind::try_from(kind).map(|k| k.as_str_name()).unwrap_or("an unknown error kind")
}

/// The one result for `identifier` among `results`, which must hold exactly one per entry sent.
fn one_result<'a>(
    results: &'a [v1::CsEntryChangeResult],
    sent: usize,
    identifier: &str,
) -> Result<&'a v1::CsEntryChangeResult, String> {
    if results.len() != sent {
        return Err(format!("{} results for {sent} entries", results.len()));
    }
    let matching: Vec<_> = results.iter().filter(|r| r.identifier == identifier).collect();
    match matching.as_slice() {
        [one] => Ok(one),
        _ => Err(format!("{} results carry the identifier {identifier:?}", matching.len())),
    }
}

/// The one result for `identifier` in an export's answer, whose error kind must be one of
/// `allowed`.
fn expect(
    answer: Result<Vec<v1::CsEntryChangeResult>, String>,
    identifier: &str,
    allowed: &[ErrorKind],
) -> Result<v1::CsEntryChangeResult, String> {
    let results = answer?;
    let result = one_result(&results, 1, identifier)?;
    if allowed.iter().any(|k| *k as i32 == result.error_kind) {
        Ok(result.clone())
    } else {
        Err(format!("{}: {}", kind_name(result.error_kind), result.error_detail))
    }
}

fn has_value(entry: &v1::Entry, name: &str, wanted: &[v1::Value]) -> bool {
    let values = entry.attributes.iter().find(|a| a.name.eq_ignore_ascii_case(name)).map(|a| &a.values);
    let texts =
        |values: &[v1::Value]| -> HashSet<String> { values.iter().filter_map(v1::Value::as_text).collect() };
    values.is_some_and(|v| texts(v) == texts(wanted))
}

async fn check(description: &Description) -> Report {
    let mut report = Report::default();
    let mut connector = match start(description, std::process::id()).await {
        Ok(connector) => connector,
        Err(reason) => {
            report.check("starts and listens on ECMA_SOCKET", Err(reason));
            return report;
        }
    };
    report.check("starts and listens on ECMA_SOCKET", Ok(()));

    // The token.
    let refused = match connector.client(false).await {
        Ok((mut bare, _)) => {
            let hello = v1::HelloRequest {
                supported_protocol_versions: ecma_proto::PROTOCOL_VERSIONS.to_vec(),
                ..Default::default()
            };
            match bare.hello(hello).await {
                Err(status) if status.code() == tonic::Code::Unauthenticated => Ok(()),
                Err(status) => {
                    Err(format!("refused, but with {:?} instead of UNAUTHENTICATED", status.code()))
                }
                Ok(_) => Err("a call without the per-spawn token was answered".into()),
            }
        }
        Err(e) => Err(e),
    };
    report.check("refuses a call without the per-spawn token", refused);

    let (client, mut health) = match connector.client(true).await {
        Ok(clients) => clients,
        Err(reason) => {
            report.check("accepts a connection on its socket", Err(reason));
            return report;
        }
    };
    let config = Some(v1::ConfigParameters {
        values: description.parameters.iter().map(|(k, v)| (k.clone(), text(v))).collect::<HashMap<_, _>>(),
    });
    let mut run = Run { client, config, description };

    // Hello.
    let hello = v1::HelloRequest {
        supported_protocol_versions: ecma_proto::PROTOCOL_VERSIONS.to_vec(),
        connector_name: "ecma-connector-check".into(),
        incarnation: 1,
    };
    let capabilities = match run.client.hello(hello).await {
        Ok(answer) => {
            let answer = answer.into_inner();
            let agreed = ecma_proto::PROTOCOL_VERSIONS.contains(&answer.protocol_version);
            report.check(
                "Hello: answers with a protocol version both sides speak",
                if agreed { Ok(()) } else { Err(format!("it answered version {}", answer.protocol_version)) },
            );
            answer.capabilities.unwrap_or_default()
        }
        Err(status) => {
            report.check("Hello: answers with a protocol version both sides speak", Err(status.to_string()));
            v1::Capabilities::default()
        }
    };
    let unknown = v1::HelloRequest { supported_protocol_versions: vec![u32::MAX], ..Default::default() };
    let refused = match run.client.hello(unknown).await {
        Err(status) if status.code() == tonic::Code::FailedPrecondition => Ok(()),
        Err(status) => Err(format!("refused with {:?} instead of FAILED_PRECONDITION", status.code())),
        Ok(_) => Err("it agreed to a supervisor that speaks no version it knows".into()),
    };
    report.check("Hello: refuses a supervisor with no common protocol version", refused);

    let serving = health
        .check(tonic_health::pb::HealthCheckRequest { service: String::new() })
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| {
            let status = r.into_inner().status;
            if status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32 {
                Ok(())
            } else {
                Err(format!("status {status}"))
            }
        });
    report.check("grpc.health.v1: SERVING", serving);

    // Parameters.
    let declared = run
        .client
        .get_config_parameters(v1::GetConfigParametersRequest {})
        .await
        .map(|r| r.into_inner().parameters)
        .map_err(|e| e.to_string());
    let declared = match declared {
        Ok(declared) => {
            let mut names = HashSet::new();
            let mut problems = Vec::new();
            for p in &declared {
                if p.name.trim().is_empty() {
                    problems.push("a parameter without a name".to_string());
                }
                if !names.insert(p.name.to_ascii_lowercase()) {
                    problems.push(format!("{:?} declared twice", p.name));
                }
                if p.required && !p.default_value.is_empty() {
                    problems.push(format!("{:?} is required and has a default", p.name));
                }
            }
            for given in description.parameters.keys() {
                if !declared.iter().any(|p| &p.name == given) {
                    problems.push(format!("the description sets {given:?}, which it does not declare"));
                }
            }
            report.check(
                "GetConfigParameters: each parameter declared once, named, no required one with a default",
                if problems.is_empty() { Ok(()) } else { Err(problems.join("; ")) },
            );
            declared
        }
        Err(reason) => {
            report.check(
                "GetConfigParameters: each parameter declared once, named, no required one with a default",
                Err(reason),
            );
            vec![]
        }
    };
    let accepted = run
        .client
        .validate_configuration(v1::ValidateConfigurationRequest { config: run.config.clone() })
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| {
            let problems = r.into_inner().problems;
            if problems.is_empty() {
                Ok(())
            } else {
                Err(problems
                    .iter()
                    .map(|p| format!("{}: {}", p.parameter, p.message))
                    .collect::<Vec<_>>()
                    .join("; "))
            }
        });
    report.check("ValidateConfiguration: accepts the described configuration", accepted);
    match declared.iter().find(|p| p.required && description.parameters.contains_key(&p.name)) {
        Some(required) => {
            let mut without = run.config.clone().unwrap_or_default();
            without.values.remove(&required.name);
            let refused = match run
                .client
                .validate_configuration(v1::ValidateConfigurationRequest { config: Some(without) })
                .await
            {
                Ok(r) if r.get_ref().problems.iter().any(|p| p.parameter == required.name) => Ok(()),
                Ok(r) if !r.get_ref().problems.is_empty() => Err(format!(
                    "problems were found, but none names {:?}: {:?}",
                    required.name,
                    r.get_ref().problems.iter().map(|p| &p.parameter).collect::<Vec<_>>()
                )),
                Ok(_) => Err(format!("a configuration without {:?} was accepted", required.name)),
                Err(status) => {
                    Err(format!("a call error ({status}) instead of a problem naming the parameter"))
                }
            };
            report.check("ValidateConfiguration: a missing required parameter is named", refused);
        }
        None => report.skip(
            "ValidateConfiguration: a missing required parameter is named",
            "no required parameter is set",
        ),
    }

    // Schema and partition.
    let schema = run.client.get_schema(v1::GetSchemaRequest { config: run.config.clone() }).await;
    let object_type = match schema {
        Ok(schema) => {
            let types = schema.into_inner().schema.map(|s| s.types).unwrap_or_default();
            match types.into_iter().find(|t| t.name == description.object_type) {
                Some(t) => {
                    let mut seen = HashSet::new();
                    let mut problems: Vec<String> = t
                        .attributes
                        .iter()
                        .filter(|a| !seen.insert(a.name.to_ascii_lowercase()))
                        .map(|a| format!("attribute {:?} declared twice", a.name))
                        .collect();
                    problems.extend(
                        t.attributes
                            .iter()
                            .filter(|a| a.name.is_empty())
                            .map(|_| "an attribute without a name".into()),
                    );
                    report.check(
                        "GetSchema: offers the object type, each attribute declared once",
                        if problems.is_empty() { Ok(()) } else { Err(problems.join("; ")) },
                    );
                    Some(t)
                }
                None => {
                    report.check(
                        "GetSchema: offers the object type, each attribute declared once",
                        Err(format!("no type {:?}", description.object_type)),
                    );
                    None
                }
            }
        }
        Err(status) => {
            report.check(
                "GetSchema: offers the object type, each attribute declared once",
                Err(status.to_string()),
            );
            None
        }
    };
    let partitions = run
        .client
        .get_partitions(v1::GetPartitionsRequest { config: run.config.clone() })
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| {
            let partitions = r.into_inner().partitions;
            if partitions.iter().any(|p| p.id == description.partition || p.name == description.partition) {
                Ok(())
            } else {
                Err(format!("offered: {:?}", partitions.iter().map(|p| &p.id).collect::<Vec<_>>()))
            }
        });
    report.check("GetPartitions: offers the partition", partitions);

    match (&description.object, &object_type) {
        (Some(object), Some(schema)) => {
            target_checks(&mut report, &mut run, object, schema, &capabilities).await
        }
        (Some(_), None) => report.skip("export, lookup and import checks", "the object type is not offered"),
        (None, _) => report.skip(
            "export, lookup and import checks",
            "the description has no [object] (protocol checks only)",
        ),
    }

    // The process contract's end.
    let stdout = connector.stdout.lock().unwrap_or_else(|e| e.into_inner()).clone();
    report.check(
        "writes nothing on stdout (no handshake line: readiness is Hello)",
        if stdout.is_empty() {
            Ok(())
        } else {
            Err(format!("{:?}", String::from_utf8_lossy(&stdout[..stdout.len().min(200)])))
        },
    );
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(connector.process.id().unwrap_or(0) as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let stopped = match connector.exited_within(Duration::from_secs(10)).await {
        Some(_) => Ok(()),
        None => Err("still running 10 s after SIGTERM".into()),
    };
    report.check("stops on SIGTERM", stopped);
    let stopped =
        if Path::new(&connector.socket).exists() { Err("its socket was left behind".into()) } else { Ok(()) };
    report.check("removes its socket when it stops", stopped);

    // A connector whose supervisor is gone exits by itself.
    let orphaned = match spawn(description, 1) {
        Ok(mut orphan) => match orphan.exited_within(Duration::from_secs(5)).await {
            Some(_) => Ok(()),
            None => Err("still running 5 s after its supervisor was gone".into()),
        },
        Err(reason) => Err(reason),
    };
    report.check("exits when its supervisor is gone (SUPERVISOR_PID is not its parent)", orphaned);

    // A process contract it cannot work with is a bad configuration: exit 78, not a crash that
    // would be restarted in a loop.
    let misconfigured = match spawn_with(
        description,
        std::process::id(),
        &[(ecma_proto::env::PROTOCOL_VERSIONS, "not-a-version")],
    ) {
        Ok(mut child) => match child.exited_within(Duration::from_secs(10)).await {
            Some(Some(78)) => Ok(()),
            Some(code) => Err(format!("it exited with {code:?} instead of 78 (EX_CONFIG)")),
            None => {
                Err("still running 10 s after it was started with a malformed ECMA_PROTOCOL_VERSIONS".into())
            }
        },
        Err(reason) => Err(reason),
    };
    report.check("exits 78 (EX_CONFIG) when the process contract is malformed", misconfigured);
    report
}

/// The checks that write: add, re-sent add, lookup, import, update, error kinds, delete,
/// concurrency.
async fn target_checks(
    report: &mut Report,
    run: &mut Run<'_>,
    object: &TestObject,
    schema: &v1::SchemaType,
    capabilities: &v1::Capabilities,
) {
    let description = run.description;
    let unknown: Vec<&String> = object
        .attributes
        .keys()
        .chain(object.update.keys())
        .filter(|name| !schema.attributes.iter().any(|a| a.name.eq_ignore_ascii_case(name)))
        .collect();
    if !unknown.is_empty() {
        report.check(
            "GetSchema: has every attribute the test object uses",
            Err(format!(
                "{unknown:?} are not attributes of {:?} (check the description's [object])",
                schema.name
            )),
        );
        return;
    }
    let base =
        object.attributes.get(&object.match_attribute).map(text).unwrap_or_else(|| "ecma-check".into());
    let value = format!("{base}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let session = match run.open_export().await {
        Ok(session) => session,
        Err(reason) => {
            report.check("OpenExportConnection", Err(reason));
            return;
        }
    };
    let add = add_of(description, object, "check-add", &value);
    let added = expect(run.export(&session, vec![add.clone()]).await, "check-add", &[ErrorKind::None])
        .and_then(|result| {
            if result.anchors.is_empty() { Err("no anchor for the new object".into()) } else { Ok(result) }
        });
    let Ok(added) = added.map_err(|reason| {
        report.check("export: an add gets one result, with the new object's anchor", Err(reason))
    }) else {
        return;
    };
    report.check("export: an add gets one result, with the new object's anchor", Ok(()));
    let anchors = added.anchors.clone();
    let dn = add.dn.clone();

    if capabilities.supports_lookup {
        let found = run.lookup_anchor(&anchors[0]).await.and_then(|entries| match entries.as_slice() {
            [entry] if has_value(entry, &object.match_attribute, &[v1::Value::string(value.clone())]) => {
                Ok(())
            }
            [_] => Err(format!("the entry found has no {} = {value:?}", object.match_attribute)),
            other => Err(format!("{} entries", other.len())),
        });
        report.check("LookupEntries: finds the object by its anchor", found);
    } else {
        report.skip(
            "LookupEntries: finds the object by its anchor",
            "lookups are not declared (supports_lookup)",
        );
    }

    // A re-sent add (the supervisor's retry after an unknown outcome looks first, but a
    // connector must not make a second object either way).
    let resent = expect(
        run.export(&session, vec![add.clone()]).await,
        "check-add",
        &[ErrorKind::None, ErrorKind::AlreadyExists],
    )
    .map(|_| ());
    let resent = match resent {
        Ok(()) if capabilities.supports_lookup => {
            run.lookup_match(&object.match_attribute, &value).await.and_then(|entries| match entries.len() {
                1 => Ok(()),
                n => Err(format!(
                    "{n} objects with {} = {value:?} after the re-sent add",
                    object.match_attribute
                )),
            })
        }
        other => other,
    };
    report.check("export: a re-sent add is ALREADY_EXISTS (or NONE) and makes no second object", resent);

    if capabilities.supports_import {
        let imported = import_all(run, 1).await.and_then(|(entries, watermark)| {
            let ours: Vec<_> = entries.iter().filter(|e| e.anchors.first() == anchors.first()).collect();
            let mut seen = HashSet::new();
            let twice: Vec<_> = entries
                .iter()
                .filter_map(|e| e.anchors.first().cloned())
                .filter(|a| !seen.insert(format!("{a:?}")))
                .collect();
            if ours.len() != 1 {
                return Err(format!("the object came {} times", ours.len()));
            }
            if !twice.is_empty() {
                return Err(format!("{} anchors came twice", twice.len()));
            }
            Ok(watermark)
        });
        let watermark = imported.as_ref().ok().cloned().unwrap_or_default();
        report.check(
            "import: a full import, one entry per page, brings each object once",
            imported.map(|_| ()),
        );
        // A delta import from the full import's watermark (where the configuration gives one).
        if capabilities.delta_import && !watermark.is_empty() {
            let delta = import_from(run, &watermark).await.and_then(|(entries, _)| {
                let mut seen = HashSet::new();
                match entries
                    .iter()
                    .filter_map(|e| e.anchors.first())
                    .find(|a| !seen.insert(format!("{a:?}")))
                {
                    Some(a) => Err(format!("anchor {a:?} came twice in one delta")),
                    None => Ok(()),
                }
            });
            report.check("import: a delta import from the full import's watermark pages to its end", delta);
        } else {
            report.skip(
                "import: a delta import from the full import's watermark",
                "no delta declared, or no watermark for this configuration",
            );
        }
    } else {
        report.skip(
            "import: a full import brings each object once",
            "imports are not declared (supports_import)",
        );
    }

    if !object.update.is_empty() {
        let update = change_of(
            description,
            ObjectModificationType::Update,
            "check-update",
            &anchors,
            &dn,
            &object.update,
        );
        let updated =
            expect(run.export(&session, vec![update]).await, "check-update", &[ErrorKind::None]).map(|_| ());
        let updated = match updated {
            Ok(()) if capabilities.supports_lookup => {
                run.lookup_anchor(&anchors[0]).await.and_then(|entries| {
                    let entry = entries.first().ok_or("the object is gone after the update")?;
                    match object.update.iter().find(|(name, value)| !has_value(entry, name, &to_value(value)))
                    {
                        None => Ok(()),
                        Some((name, _)) => Err(format!("{name} does not hold the new value")),
                    }
                })
            }
            other => other,
        };
        report.check("export: an update is applied", updated);
    }

    let missing = vec![v1::Anchor {
        name: anchors[0].name.clone(),
        value: Some(v1::Value::string(format!("ecma-check-missing-{}", uuid::Uuid::new_v4().simple()))),
    }];
    let missing_dn = if dn.is_empty() {
        String::new()
    } else {
        object.dn.as_deref().unwrap_or_default().replace("{match}", "ecma-check-missing")
    };
    let update = change_of(
        description,
        ObjectModificationType::Update,
        "check-missing",
        &missing,
        &missing_dn,
        &object.update,
    );
    let kind = expect(run.export(&session, vec![update]).await, "check-missing", &[ErrorKind::NoSuchObject])
        .map(|_| ());
    report.check("export: an update of an object that is not there is NO_SUCH_OBJECT", kind);

    if capabilities.concurrent_operation {
        concurrent_checks(report, run, object).await;
    } else {
        report
            .skip("export: concurrent calls each get their results", "concurrent operation is not declared");
    }

    let delete = change_of(
        description,
        ObjectModificationType::Delete,
        "check-delete",
        &anchors,
        &dn,
        &BTreeMap::new(),
    );
    let deleted =
        expect(run.export(&session, vec![delete.clone()]).await, "check-delete", &[ErrorKind::None])
            .map(|_| ());
    let deleted = match deleted {
        Ok(()) if capabilities.supports_lookup => run.lookup_anchor(&anchors[0]).await.and_then(|entries| {
            if entries.is_empty() { Ok(()) } else { Err("the object is still there".into()) }
        }),
        other => other,
    };
    report.check("export: a delete is applied", deleted);
    let again = expect(
        run.export(&session, vec![delete]).await,
        "check-delete",
        &[ErrorKind::None, ErrorKind::NoSuchObject],
    )
    .map(|_| ());
    report.check("export: a re-sent delete is NO_SUCH_OBJECT (or NONE)", again);
    let _ =
        run.client.close_export_connection(v1::CloseExportConnectionRequest { session_id: session }).await;
}

/// Eight exports at once, each on its own call, each an add of its own object; then their
/// deletes.
async fn concurrent_checks(report: &mut Report, run: &mut Run<'_>, object: &TestObject) {
    let description = run.description;
    let session = match run.open_export().await {
        Ok(session) => session,
        Err(reason) => {
            report.check("export: concurrent calls each get their results", Err(reason));
            return;
        }
    };
    let base =
        object.attributes.get(&object.match_attribute).map(text).unwrap_or_else(|| "ecma-check".into());
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let calls = (0..8).map(|i| {
        let mut client = run.client.clone();
        let change = add_of(
            description,
            object,
            &format!("check-concurrent-{i}"),
            &format!("{base}-{}-{i}", &tag[..8]),
        );
        let session = session.clone();
        tokio::spawn(async move {
            client
                .put_export_entries(v1::PutExportEntriesRequest {
                    session_id: session,
                    entries: vec![change],
                })
                .await
                .map(|r| r.into_inner().results)
        })
    });
    let mut anchors = Vec::new();
    let mut problems = Vec::new();
    for (i, call) in calls.collect::<Vec<_>>().into_iter().enumerate() {
        match call.await {
            Ok(Ok(results)) => match one_result(&results, 1, &format!("check-concurrent-{i}")) {
                Ok(r) if r.error_kind == ErrorKind::None as i32 => anchors.push((i, r.anchors.clone())),
                Ok(r) => problems.push(format!("call {i}: {}: {}", kind_name(r.error_kind), r.error_detail)),
                Err(e) => problems.push(format!("call {i}: {e}")),
            },
            Ok(Err(status)) => problems.push(format!("call {i}: {status}")),
            Err(e) => problems.push(format!("call {i}: {e}")),
        }
    }
    report.check(
        "export: eight concurrent calls each get their result",
        if problems.is_empty() { Ok(()) } else { Err(problems.join("; ")) },
    );
    for (i, anchors) in anchors {
        let dn = object
            .dn
            .as_deref()
            .map(|dn| dn.replace("{match}", &format!("{base}-{}-{i}", &tag[..8])))
            .unwrap_or_default();
        let delete = change_of(
            description,
            ObjectModificationType::Delete,
            "cleanup",
            &anchors,
            &dn,
            &BTreeMap::new(),
        );
        let _ = run.export(&session, vec![delete]).await;
    }
    let _ =
        run.client.close_export_connection(v1::CloseExportConnectionRequest { session_id: session }).await;
}

/// A full import with `page_size`: every entry, and the last watermark given.
async fn import_all(run: &mut Run<'_>, page_size: u32) -> Result<(Vec<v1::Entry>, Vec<u8>), String> {
    import(run, v1::ImportType::Full, page_size, vec![]).await
}

/// A delta import from `watermark`.
async fn import_from(run: &mut Run<'_>, watermark: &[u8]) -> Result<(Vec<v1::Entry>, Vec<u8>), String> {
    import(run, v1::ImportType::Delta, 100, watermark.to_vec()).await
}

async fn import(
    run: &mut Run<'_>,
    import_type: v1::ImportType,
    page_size: u32,
    watermark: Vec<u8>,
) -> Result<(Vec<v1::Entry>, Vec<u8>), String> {
    let open = v1::OpenImportConnectionRequest {
        config: run.config.clone(),
        import_type: import_type as i32,
        object_type: run.description.object_type.clone(),
        partition_id: run.description.partition.clone(),
        page_size,
        watermark,
    };
    let session =
        run.client.open_import_connection(open).await.map_err(|e| e.to_string())?.into_inner().session_id;
    let mut entries = Vec::new();
    let mut watermark = Vec::new();
    for page in 0.. {
        if page > 100_000 {
            return Err("more than 100,000 pages: more_to_import never ends".into());
        }
        let answer = run
            .client
            .get_import_entries(v1::GetImportEntriesRequest { session_id: session.clone() })
            .await
            .map_err(|e| e.to_string())?
            .into_inner();
        if answer.entries.len() > page_size as usize {
            return Err(format!("a page of {} entries, asked for {page_size}", answer.entries.len()));
        }
        if !answer.watermark.is_empty() {
            watermark = answer.watermark;
        }
        entries.extend(answer.entries.into_iter().filter_map(|e| e.entry));
        if !answer.more_to_import {
            break;
        }
    }
    let closed = run
        .client
        .close_import_connection(v1::CloseImportConnectionRequest { session_id: session })
        .await
        .map_err(|e| e.to_string())?
        .into_inner();
    if !closed.watermark.is_empty() {
        watermark = closed.watermark;
    }
    Ok((entries, watermark))
}

fn main() -> std::process::ExitCode {
    let Some(file) = std::env::args_os().nth(1) else {
        eprintln!(
            "usage: ecma-connector-check <description.toml>  (see docs/connector-protocol.md, \"Checking a connector\")"
        );
        return std::process::ExitCode::from(2);
    };
    let text = match std::fs::read_to_string(&file) {
        Ok(text) => text,
        Err(e) => {
            eprintln!("error: cannot read {}: {e}", Path::new(&file).display());
            return std::process::ExitCode::from(2);
        }
    };
    let description: Description = match toml::from_str(&text) {
        Ok(description) => description,
        Err(e) => {
            eprintln!("error: {}: {e}", Path::new(&file).display());
            return std::process::ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start a runtime: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    println!(
        "checking {} ({} in {})",
        description.executable.display(),
        description.object_type,
        description.partition
    );
    let report = runtime.block_on(check(&description));
    println!("{} passed, {} failed", report.passed, report.failed);
    std::process::ExitCode::from(if report.failed == 0 { 0 } else { 1 })
}
