//! The operator's commands beside `run`: `status` and `import` talk to a running supervisor's
//! admin API; `test-connection` and `schema` start one connector on their own (the same
//! supervision code as `run`, no listener), report, and stop it; `store check` and `store rebuild`
//! look after the connector space file of a stopped supervisor.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow};
use ecma_proto::v1;
use serde_json::Value;
use tokio::sync::watch;

use crate::config::Config;
use crate::supervision::spawn::Spawner;
use crate::supervision::{ConnectorHandle, Phase, lifecycle};

/// `EX_UNAVAILABLE`: the supervisor (or the connector's target) cannot be reached.
pub const EXIT_UNAVAILABLE: u8 = 69;

/// How the operator's commands reach a running supervisor's admin API: its address, the admin
/// token (from the environment variable `[admin] token_env` names, default `ADMIN_TOKEN`, or
/// `token_file`), and TLS when `[admin.tls]` is set (the certificate file is trusted as is, which
/// suits a self-signed one; `--admin-ca` names another CA).
#[derive(Clone)]
pub struct AdminClient {
    pub addr: SocketAddr,
    pub token: Option<String>,
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl std::fmt::Debug for AdminClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminClient").field("addr", &self.addr).field("tls", &self.tls.is_some()).finish()
    }
}

impl AdminClient {
    /// A client for `addr`, with the token and TLS of `admin` (a configuration's `[admin]`).
    pub fn new(
        addr: SocketAddr,
        admin: &crate::config::AdminConfig,
        ca: Option<&Path>,
    ) -> anyhow::Result<Self> {
        let token = crate::server::resolve_admin_tokens(admin)?.map(|t| t.first().to_string());
        let ca = ca.map(Path::to_path_buf).or_else(|| admin.tls.as_ref().map(|t| t.cert_file.clone()));
        let tls = match ca {
            Some(ca) => {
                crate::transport::install_crypto_provider();
                let pem = std::fs::read(&ca).with_context(|| format!("cannot read {}", ca.display()))?;
                let mut roots = rustls::RootCertStore::empty();
                for cert in
                    <rustls::pki_types::CertificateDer as rustls::pki_types::pem::PemObject>::pem_slice_iter(
                        &pem,
                    )
                {
                    roots.add(cert.with_context(|| format!("{} is not a PEM certificate", ca.display()))?)?;
                }
                Some(Arc::new(
                    rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth(),
                ))
            }
            None => None,
        };
        Ok(Self { addr, token, tls })
    }
}

/// One request to the admin API (HTTP/1.1, over TLS where configured); the status and the JSON
/// body.
pub async fn admin(client: &AdminClient, method: &str, path: &str) -> anyhow::Result<(u16, Value)> {
    use http_body_util::BodyExt;
    let addr = client.addr;
    let stream = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| anyhow!("no answer from the admin listener at {addr} within 5s"))?
        .with_context(|| format!("cannot reach the admin listener at {addr} (is the supervisor running?)"))?;
    let mut request =
        hyper::Request::builder().method(method).uri(path).header(hyper::header::HOST, addr.to_string());
    if let Some(token) = &client.token {
        request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let request = request.body(http_body_util::Empty::<bytes::Bytes>::new())?;
    // An import answers when it is done: no deadline on the answer.
    let response = match &client.tls {
        Some(config) => {
            let name = rustls::pki_types::ServerName::from(addr.ip());
            let stream = tokio_rustls::TlsConnector::from(config.clone())
                .connect(name, stream)
                .await
                .with_context(|| format!("TLS with the admin listener at {addr} failed"))?;
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
            tokio::spawn(connection);
            sender.send_request(request).await?
        }
        None => {
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
            tokio::spawn(connection);
            sender.send_request(request).await?
        }
    };
    let status = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes();
    let json = serde_json::from_slice(&body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into()));
    if status == 401 {
        return Err(anyhow!(
            "the admin listener at {addr} wants an admin token: set ADMIN_TOKEN (or the variable [admin] token_env names)"
        ));
    }
    Ok((status, json))
}

/// What `supervisor log` asks for.
#[derive(Debug, Default)]
pub struct LogQuery {
    pub filter: Vec<(&'static str, String)>,
    pub limit: usize,
    pub follow: bool,
    pub json: bool,
}

fn log_line(entry: &Value) -> String {
    let at = entry["at_ms"].as_i64().unwrap_or(0);
    let time = crate::journal::time_of_ms(at);
    let text = |k: &str| entry[k].as_str().unwrap_or("").to_string();
    let attributes = entry["attributes"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(","))
        .unwrap_or_default();
    let mut outcome = text("outcome");
    if !text("error_kind").is_empty() {
        outcome = format!("{outcome} {}", text("error_kind"));
    }
    let mut line = format!(
        "{time:<24} {:<10} {:<14} {:<14} {:<18} {:<36} {:<24} {:>8.1}ms  {attributes}",
        text("app"),
        text("connector"),
        text("operation"),
        outcome,
        text("scim_id"),
        text("name"),
        entry["duration_ms"].as_f64().unwrap_or(0.0),
    );
    if !text("detail").is_empty() {
        line.push_str(&format!("  ({})", text("detail")));
    }
    line
}

/// `supervisor log`: provisioning log rows, newest last; `--follow` goes on printing new ones.
pub async fn log(client: &AdminClient, query: LogQuery) -> anyhow::Result<u8> {
    let encode = |pairs: &[(&str, String)]| {
        url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs.iter().map(|(k, v)| (*k, v.as_str())))
            .finish()
    };
    let mut pairs = query.filter.clone();
    pairs.push(("limit", query.limit.to_string()));
    let (code, body) = admin(client, "GET", &format!("/admin/log?{}", encode(&pairs))).await?;
    if code != 200 {
        return Err(anyhow!("the admin listener answered {code}: {body}"));
    }
    let mut entries = body["entries"].as_array().cloned().unwrap_or_default();
    entries.reverse();
    if !query.json {
        println!(
            "{:<24} {:<10} {:<14} {:<14} {:<18} {:<36} {:<24} {:>10}  attributes",
            "time", "app", "connector", "operation", "outcome", "scim id", "name", "duration"
        );
    }
    let print = |entry: &Value| {
        if query.json {
            println!("{entry}");
        } else {
            println!("{}", log_line(entry));
        }
    };
    let mut last = 0;
    for entry in &entries {
        print(entry);
        last = last.max(entry["seq"].as_i64().unwrap_or(0));
    }
    if !query.follow {
        return Ok(0);
    }
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut pairs = query.filter.clone();
        pairs.push(("after", last.to_string()));
        pairs.push(("limit", "1000".into()));
        let (code, body) = match admin(client, "GET", &format!("/admin/log?{}", encode(&pairs))).await {
            Ok(answer) => answer,
            Err(e) => {
                eprintln!("{e:#}; trying again");
                continue;
            }
        };
        if code != 200 {
            eprintln!("the admin listener answered {code}; trying again");
            continue;
        }
        for entry in body["entries"].as_array().into_iter().flatten() {
            print(entry);
            last = last.max(entry["seq"].as_i64().unwrap_or(0));
        }
    }
}

/// `supervisor status`: one line per connector; exit 0 when all are ready, 1 otherwise.
pub async fn status(client: &AdminClient) -> anyhow::Result<u8> {
    let (code, body) = admin(client, "GET", "/admin/connectors").await?;
    if code != 200 {
        return Err(anyhow!("the admin listener answered {code}: {body}"));
    }
    let connectors = body["connectors"].as_array().cloned().unwrap_or_default();
    println!("{:<24} {:<14} {:>8} {:>9} {:>8}  reason", "connector", "state", "pid", "restarts", "pending");
    let mut all_ready = true;
    for c in &connectors {
        let state = c["state"].as_str().unwrap_or("?");
        all_ready &= state == "ready";
        println!(
            "{:<24} {:<14} {:>8} {:>9} {:>8}  {}",
            c["name"].as_str().unwrap_or("?"),
            state,
            c["pid"].as_u64().map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
            c["restarts"].as_u64().unwrap_or(0),
            c["pending_writes"].as_u64().unwrap_or(0),
            c["reason"].as_str().unwrap_or("")
        );
    }
    Ok(if all_ready { 0 } else { 1 })
}

/// `supervisor import <connector>`: runs an import now and prints its report; while it runs,
/// its progress (pages and objects so far, from `/admin/connectors`): one line redrawn on a
/// terminal, a plain line per change otherwise.
pub async fn import(client: &AdminClient, connector: &str, kind: &str) -> anyhow::Result<u8> {
    use std::io::{IsTerminal, Write};
    eprintln!("importing {connector} ({kind}) ...");
    let path = format!("/admin/connectors/{connector}/import?type={kind}");
    let run = admin(client, "POST", &path);
    tokio::pin!(run);
    let terminal = std::io::stderr().is_terminal();
    let mut shown = String::new();
    let (code, report) = loop {
        tokio::select! {
            answer = &mut run => break answer?,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {
                let Ok((200, body)) = admin(client, "GET", "/admin/connectors").await else { continue };
                let Some(running) = body["connectors"]
                    .as_array()
                    .and_then(|cs| cs.iter().find(|c| c["name"] == connector))
                    .map(|c| c["import_running"].clone())
                    .filter(|r| !r.is_null())
                else {
                    continue;
                };
                let n = |k: &str| running[k].as_u64().unwrap_or(0);
                let line = format!(
                    "{} pages, {} objects ({} added, {} updated, {} unchanged)",
                    n("pages"),
                    n("added") + n("updated") + n("unchanged") + n("skipped") + n("rejected") + n("errors"),
                    n("added"),
                    n("updated"),
                    n("unchanged")
                );
                if line != shown {
                    if terminal {
                        eprint!("\r{line}");
                        let _ = std::io::stderr().flush();
                    } else {
                        eprintln!("{line}");
                    }
                    shown = line;
                }
            }
        }
    };
    if terminal && !shown.is_empty() {
        eprintln!();
    }
    match code {
        200 => {
            for key in [
                "import_type",
                "added",
                "updated",
                "unchanged",
                "deleted",
                "skipped",
                "rejected",
                "errors",
                "pages",
                "duration_ms",
            ] {
                if !report[key].is_null() {
                    println!("{key}: {}", report[key]);
                }
            }
            Ok(0)
        }
        404 => Err(anyhow!("no connector named {connector:?} in the running supervisor")),
        _ => {
            let why = report["error"].as_str().map(String::from).unwrap_or_else(|| report.to_string());
            eprintln!("import failed ({code}): {why}");
            Ok(1)
        }
    }
}

/// A connector started on its own, as `run` would start it, until it is ready or has said why
/// not.
struct Probe {
    handle: Arc<ConnectorHandle>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    _sockets: SocketDir,
}

/// A private directory for the probe's socket, removed afterwards.
struct SocketDir(std::path::PathBuf);

impl Drop for SocketDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Probe {
    async fn start(config: &Config, data_dir: &Path, name: &str) -> anyhow::Result<Self> {
        let connector = config
            .connectors
            .get(name)
            .ok_or_else(|| anyhow!("no connector named {name:?} in the configuration"))?;
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("while creating the data directory {}", data_dir.display()))?;
        let sockets = std::env::temp_dir().join(format!("ecma-probe-{}", std::process::id()));
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new().mode(0o700).recursive(true).create(&sockets)?;
        }
        let (handle, _) = crate::provision::Target::handle_for(name, connector.clone())?;
        let ctx = lifecycle::Context {
            spawner: Spawner::start()?,
            socket_dir: sockets.clone(),
            working_dir: data_dir.to_path_buf(),
            shutdown_timeout: Duration::from_secs(5),
        };
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(lifecycle::run(handle.clone(), ctx, stopped));
        let deadline = connector.startup_timeout + Duration::from_secs(2);
        let _ = tokio::time::timeout(deadline, async {
            while matches!(handle.phase(), Phase::Starting) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        Ok(Self { handle, stop, task, _sockets: SocketDir(sockets) })
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

fn reason(phase: &Phase) -> Option<String> {
    match phase {
        Phase::Degraded { reason, .. }
        | Phase::Quarantined { reason, .. }
        | Phase::FailedConfig { reason } => Some(reason.clone()),
        _ => None,
    }
}

/// `supervisor test-connection <connector>`: starts it, lets it validate its configuration and
/// reach its target, and reports. Exit 0 ready, 69 target unreachable, 64 configuration refused,
/// 1 otherwise.
pub async fn test_connection(config: &Config, data_dir: &Path, name: &str) -> anyhow::Result<u8> {
    let probe = Probe::start(config, data_dir, name).await?;
    let status = probe.handle.status();
    let phase = probe.handle.phase();
    println!("connector: {name}");
    println!("executable: {}", probe.handle.config.executable);
    if let Some(version) = &status.connector_version {
        println!("version: {version} (protocol {})", status.protocol_version.unwrap_or_default());
    }
    println!("state: {}", phase.name());
    if let Some(reason) = reason(&phase) {
        println!("reason: {reason}");
    } else if let Some(exit) = &status.last_exit {
        println!("last exit: {exit}");
    }
    let code = match phase {
        Phase::Ready(_) => {
            println!("OK: the connector started, accepted its configuration and reached its target");
            0
        }
        Phase::Degraded { .. } => EXIT_UNAVAILABLE,
        Phase::FailedConfig { .. } => crate::cli::EXIT_USAGE,
        _ => 1,
    };
    if !status.recent_output.is_empty() && code != 0 {
        println!("its last output:");
        for line in &status.recent_output {
            println!("  {line}");
        }
    }
    probe.stop().await;
    Ok(code)
}

/// `supervisor schema <connector>`: what the target offers (object types, attributes,
/// partitions), as the connector reads it.
pub async fn schema(config: &Config, data_dir: &Path, name: &str) -> anyhow::Result<u8> {
    let probe = Probe::start(config, data_dir, name).await?;
    let result = async {
        let session = probe.handle.session().map_err(|e| {
            anyhow!("the connector is not ready ({}): {e}", reason(&probe.handle.phase()).unwrap_or_default())
        })?;
        let schema = session
            .call(
                "GetSchema",
                session.client().get_schema(
                    session.request(v1::GetSchemaRequest { config: Some(session.config.clone()) }),
                ),
            )
            .await
            .map_err(|e| anyhow!("GetSchema: {e}"))?;
        let partitions = session
            .call(
                "GetPartitions",
                session.client().get_partitions(
                    session.request(v1::GetPartitionsRequest { config: Some(session.config.clone()) }),
                ),
            )
            .await
            .map_err(|e| anyhow!("GetPartitions: {e}"))?;
        for partition in partitions.partitions {
            println!("partition {} ({})", partition.id, partition.name);
        }
        for t in schema.schema.unwrap_or_default().types {
            println!("object type {} (anchor: {})", t.name, t.anchor_attributes.join(", "));
            for a in t.attributes {
                let kind = v1::AttributeType::try_from(a.r#type)
                    .map(|k| format!("{k:?}").to_lowercase())
                    .unwrap_or_default();
                let operation = v1::AttributeOperation::try_from(a.operation)
                    .map(|o| format!("{o:?}"))
                    .unwrap_or_default();
                println!(
                    "  {:<32} {:<10}{}{} {}",
                    a.name,
                    kind,
                    if a.multi_valued { " multi" } else { "" },
                    if a.required { " required" } else { "" },
                    operation
                );
            }
        }
        anyhow::Ok(0)
    }
    .await;
    probe.stop().await;
    result
}

/// `store check`: SQLite's integrity check of the connector space; 0 when sound, 1 when
/// damaged (with what was found and what to do), 69 when there is no store to check.
pub fn store_check(data_dir: &Path, full: bool) -> u8 {
    let path = data_dir.join(crate::server::STORE_FILE);
    if !path.is_file() {
        eprintln!("error: there is no connector space at {}", path.display());
        return EXIT_UNAVAILABLE;
    }
    match crate::store::Store::check_file(&path, full) {
        Ok(()) => {
            println!("{}: sound ({})", path.display(), if full { "integrity_check" } else { "quick_check" });
            0
        }
        Err(e @ crate::store::StoreError::Damaged(_)) => {
            eprintln!("{}: {e}", path.display());
            1
        }
        Err(e) => {
            eprintln!("{}: cannot be checked: {e}", path.display());
            EXIT_UNAVAILABLE
        }
    }
}

/// `store rebuild`: sets the connector space aside (renamed `connector-space.db.damaged-<unix
/// time>`, its WAL beside it) and creates an empty one, with a marker that makes the next `run`
/// import every connector in full at start.
pub async fn store_rebuild(data_dir: &Path, force: bool) -> anyhow::Result<u8> {
    let path = data_dir.join(crate::server::STORE_FILE);
    // Held until the rebuild is done: no supervisor starts on the directory meanwhile.
    let _lock = crate::server::lock_data_dir(data_dir)?;
    if path.is_file() {
        match crate::store::Store::check_file(&path, true) {
            Ok(()) if !force => {
                println!("{}: sound; nothing to rebuild (--force rebuilds it anyway)", path.display());
                return Ok(0);
            }
            Ok(()) => {}
            Err(e @ crate::store::StoreError::Damaged(_)) => println!("{}: {e}", path.display()),
            // Not damage (permissions, a full disk...): setting a sound store aside would lose
            // its SCIM ids.
            Err(e) if !force => {
                eprintln!("{}: cannot be checked: {e}; nothing was changed", path.display());
                return Ok(EXIT_UNAVAILABLE);
            }
            Err(e) => println!("{}: {e}", path.display()),
        }
        let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
        let aside = data_dir.join(format!("{}.damaged-{secs}", crate::server::STORE_FILE));
        std::fs::rename(&path, &aside).with_context(|| format!("while moving {} aside", path.display()))?;
        for suffix in ["-wal", "-shm"] {
            let mut from = path.clone().into_os_string();
            from.push(suffix);
            let mut to = aside.clone().into_os_string();
            to.push(suffix);
            if Path::new(&from).exists() {
                std::fs::rename(&from, &to).with_context(|| format!("while moving {from:?} aside"))?;
            }
        }
        println!("the old connector space is kept at {}", aside.display());
    }
    let store = crate::store::Store::open(&path).await?;
    store.close().await;
    std::fs::write(data_dir.join(crate::server::REBUILD_MARKER), b"")?;
    println!(
        "an empty connector space is at {}; the next `supervisor run` imports every connector in full \
         at start (again at each start until every import has succeeded), which rebuilds it from the targets (SCIM ids are new: clients \
         that kept the old ones find the objects again by userName or displayName)",
        path.display()
    );
    Ok(0)
}

/// What a store holds, counted per app, resource type and state (for `store migrate`).
fn census(
    records: &[crate::store::Record],
) -> std::collections::BTreeMap<(String, String, &'static str), u64> {
    let mut counts = std::collections::BTreeMap::new();
    for r in records {
        *counts.entry((r.app.clone(), r.resource_type.clone(), r.state.as_str())).or_insert(0) += 1;
    }
    counts
}

/// `store migrate`: copies every record and watermark of one store into another, then compares
/// what both hold. 0 when the counts match; 1 when they do not; 69 when either store cannot be
/// opened or the destination is not empty (without `--force`).
pub async fn store_migrate(from: &str, to: &str, force: bool) -> anyhow::Result<u8> {
    use crate::store::{Location, Store};
    let (from, to) = (Location::parse(from), Location::parse(to));
    if let (Location::Sqlite(path), _) = (&from, &to)
        && !path.is_file()
    {
        eprintln!("error: there is no connector space at {}", path.display());
        return Ok(EXIT_UNAVAILABLE);
    }
    let source = Store::at(&from, 0).await.with_context(|| format!("while opening {from}"))?;
    let destination = Store::at(&to, 0).await.with_context(|| format!("while opening {to}"))?;
    let already = destination.count().await?;
    if already > 0 && !force {
        eprintln!(
            "error: {to} already holds {already} records; copy into an empty store, or pass --force to \
             replace the records with the same ids"
        );
        return Ok(EXIT_UNAVAILABLE);
    }
    let records = source.all().await?;
    let started = std::time::Instant::now();
    for (i, record) in records.iter().enumerate() {
        destination.update(record).await.with_context(|| format!("while copying record {}", record.id))?;
        if (i + 1) % 10_000 == 0 {
            println!("{} of {} records copied", i + 1, records.len());
        }
    }
    let watermarks = source.watermarks().await?;
    for (connector, watermark) in &watermarks {
        destination.set_watermark(connector, watermark).await?;
    }
    let copied = destination.all().await?;
    let (expected, found) = (census(&records), census(&copied));
    source.close().await;
    destination.close().await;
    println!(
        "copied {} records and {} watermarks from {from} to {to} in {:.1} s",
        records.len(),
        watermarks.len(),
        started.elapsed().as_secs_f64()
    );
    let mut matched = true;
    for key in expected.keys().chain(found.keys()).collect::<std::collections::BTreeSet<_>>() {
        let (a, b) = (expected.get(key).copied().unwrap_or(0), found.get(key).copied().unwrap_or(0));
        let (app, resource_type, state) = key;
        let verdict = if a == b || (force && b >= a) { "ok" } else { "MISMATCH" };
        matched &= verdict == "ok";
        println!("  {app} {resource_type} {state}: {a} in the source, {b} in the destination: {verdict}");
    }
    if matched {
        println!("the counts match; point [store] of every supervisor at {to} and start them");
        Ok(0)
    } else {
        eprintln!("error: the counts differ; do not switch over (see above)");
        Ok(1)
    }
}
