//! Fixtures for end-to-end tests: the real `supervisor` and connector binaries, started as
//! processes on free ports with a throwaway data directory, and a small HTTP client.
//!
//! The binaries are those of the same build (`target/<profile>/`); `scripts/test-all.sh` builds
//! them before running the tests.

pub mod browser;
pub mod cut_proxy;
pub mod databases;
pub mod direct_connector;
pub mod dirsrv;
pub mod fixed_http;
pub mod http_faults;
pub mod otlp;
pub mod rest_servers;
pub mod slapd;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The bearer token the fixtures configure.
pub const TOKEN: &str = "e2e-test-token-0123456789";

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ is inside the workspace").to_path_buf()
}

/// A binary of this build; panics with the fix when it was not built.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe.parent().and_then(Path::parent).expect("test binary is in target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: build the binaries first (`cargo build --workspace --bins`, as scripts/test-all.sh does)",
        path.display()
    );
    // `cargo test` does not rebuild other packages' binaries: refuse to test a stale one.
    let built = std::fs::metadata(&path).and_then(|m| m.modified()).expect("binary mtime");
    if let Some(newer) = newest_source(name).filter(|(t, _)| *t > built) {
        panic!(
            "{} is older than {}: run `cargo build --workspace --bins` first (scripts/test-all.sh does)",
            path.display(),
            newer.1.display()
        );
    }
    path
}

/// The most recently modified source file of the crates binary `name` is built from.
fn newest_source(name: &str) -> Option<(std::time::SystemTime, PathBuf)> {
    let own = match name {
        // The supervisor is built from proto and telemetry, not from the connectors' SDK.
        "supervisor" => return newest_in(&["proto", "telemetry/src", "supervisor/src"]),
        "connector-faulty" => "tests/src/bin",
        "ecma-connector-check" => return newest_in(&["proto", "connector-check/src"]),
        other => match other.strip_prefix("connector-") {
            // connector-rest and connector-scim are built from connector-web too.
            Some(_) if matches!(other, "connector-rest" | "connector-scim") => {
                let own = format!("{other}/src");
                return newest_in(&["proto", "connector-sdk/src", "connector-web/src", &own]);
            }
            Some(_) => return newest_in(&["proto", "connector-sdk/src", &format!("{other}/src")]),
            None => return newest_in(&["proto", "connector-sdk/src", "supervisor/src"]),
        },
    };
    newest_in(&["proto", "connector-sdk/src", own])
}

fn newest_in(dirs: &[&str]) -> Option<(std::time::SystemTime, PathBuf)> {
    fn walk(dir: &Path, newest: &mut Option<(std::time::SystemTime, PathBuf)>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, newest);
            } else if path.extension().is_some_and(|e| e == "rs" || e == "proto")
                && let Ok(modified) = entry.metadata().and_then(|m| m.modified())
                && newest.as_ref().is_none_or(|(t, _)| modified > *t)
            {
                *newest = Some((modified, path));
            }
        }
    }
    let mut newest = None;
    for dir in dirs {
        walk(&workspace().join(dir), &mut newest);
    }
    newest
}

/// A directory removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(label: &str) -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "e2e-{label}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        Self(path)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A free loopback port, never the same twice in this process. Ports come from 10000-31999,
/// below the kernel's ephemeral range (so that no outgoing connection takes one meanwhile), from
/// a counter (so that two tests running at once never pick the same one), and each is checked
/// free by binding it.
pub fn free_addr() -> SocketAddr {
    use std::sync::atomic::AtomicU32;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    // Test binaries run one after another; the process id spreads concurrent runs apart.
    let base = (std::process::id() % 1000) * 22;
    loop {
        let port = 10_000 + (base + NEXT.fetch_add(1, Ordering::SeqCst)) % 22_000;
        let addr = SocketAddr::from(([127, 0, 0, 1], port as u16));
        if TcpListener::bind(addr).is_ok() {
            return addr;
        }
    }
}

/// The quickstart configuration, as shipped.
pub fn quickstart_config() -> String {
    std::fs::read_to_string(workspace().join("deploy/examples/quickstart.toml"))
        .expect("read quickstart.toml")
}

/// `config`, with the connector space in a new PostgreSQL database when `E2E_STORE_URL` names a
/// PostgreSQL server (`postgres://user@host:port/postgres`) and the configuration has no
/// `[store]` of its own: the same suites then run against the shared store (scripts/test-all.sh
/// runs the SCIM protocol suites both ways).
pub fn with_store_from_env(config: &str) -> String {
    let Some(server) = std::env::var("E2E_STORE_URL").ok().filter(|s| !s.is_empty()) else {
        return config.to_string();
    };
    if config.contains("\n[store]") || config.starts_with("[store]") {
        return config.to_string();
    }
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let name = format!("e2e_store_{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::SeqCst));
    databases::execute(&server, &format!("CREATE DATABASE {name}"), &[]);
    let url = match server.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{name}"),
        None => panic!("E2E_STORE_URL must end with a database name: {server}"),
    };
    // Small pools: many supervisors of a parallel test run share the server's connections.
    format!("{config}\n[store]\nurl = \"{url}\"\nmax_connections = 4\nlock_connections = 2\n")
}

/// A running supervisor process.
pub struct Supervisor {
    child: Option<Child>,
    pub scim: SocketAddr,
    pub admin: SocketAddr,
    pub data_dir: PathBuf,
    log: PathBuf,
}

impl Supervisor {
    /// Starts `supervisor run` with `config` (TOML text) and waits until `/readyz` says ready.
    pub fn start(config: &str, data_dir: &Path) -> Self {
        let supervisor = Self::spawn(config, data_dir);
        supervisor.wait_ready(Duration::from_secs(30));
        supervisor
    }

    /// Starts `supervisor run` without waiting for readiness.
    pub fn spawn(config: &str, data_dir: &Path) -> Self {
        Self::spawn_with(config, data_dir, true, &[])
    }

    /// Like [`Supervisor::spawn`], with extra environment variables.
    pub fn spawn_with_env(config: &str, data_dir: &Path, env: &[(&str, &str)]) -> Self {
        Self::spawn_with(config, data_dir, true, env)
    }

    /// Starts `supervisor run` in `dir` without `--data-dir`, so that it uses its default data
    /// directory (`./supervisor-data`), and waits until it is ready.
    pub fn start_with_default_data_dir(config: &str, dir: &Path) -> Self {
        let supervisor = Self::spawn_with(config, dir, false, &[]);
        supervisor.wait_ready(Duration::from_secs(30));
        supervisor
    }

    /// Starts `supervisor run` with its configuration file and log in `dir` and its data in
    /// `data_dir` (a filesystem of its own, say), and waits until it is ready.
    pub fn start_with_data_dir(config: &str, dir: &Path, data_dir: &Path) -> Self {
        let mut supervisor = Self::spawn_with_files(config, dir, data_dir, true, &[]);
        supervisor.data_dir = data_dir.to_path_buf();
        supervisor.wait_ready(Duration::from_secs(30));
        supervisor
    }

    fn spawn_with(config: &str, data_dir: &Path, pass_data_dir: bool, env: &[(&str, &str)]) -> Self {
        Self::spawn_with_files(config, data_dir, data_dir, pass_data_dir, env)
    }

    /// Starts `supervisor run` listening on the given SCIM and admin addresses (the same ones
    /// again after a restart, so that clients keep their address), without waiting.
    pub fn spawn_at(config: &str, data_dir: &Path, scim: SocketAddr, admin: SocketAddr) -> Self {
        Self::spawn_with_addrs(config, data_dir, data_dir, true, &[], (scim, admin))
    }

    fn spawn_with_files(
        config: &str,
        files: &Path,
        data_dir: &Path,
        pass_data_dir: bool,
        env: &[(&str, &str)],
    ) -> Self {
        Self::spawn_with_addrs(config, files, data_dir, pass_data_dir, env, (free_addr(), free_addr()))
    }

    fn spawn_with_addrs(
        config: &str,
        files: &Path,
        data_dir: &Path,
        pass_data_dir: bool,
        env: &[(&str, &str)],
        (scim, admin): (SocketAddr, SocketAddr),
    ) -> Self {
        let config_file = files.join("supervisor.toml");
        std::fs::write(&config_file, with_store_from_env(config)).expect("write config");
        let log = files.join(format!("supervisor-{}.log", Instant::now().elapsed().as_nanos()));
        let log_file = std::fs::File::create(&log).expect("log file");
        let mut command = Command::new(binary("supervisor"));
        command.args(["run", "--config"]).arg(&config_file).args([
            "--listen",
            &scim.to_string(),
            "--admin-listen",
            &admin.to_string(),
        ]);
        let data_dir = if pass_data_dir {
            command.arg("--data-dir").arg(data_dir);
            data_dir.to_path_buf()
        } else {
            command.current_dir(data_dir);
            data_dir.join("supervisor-data")
        };
        let child = command
            .env("SCIM_TOKEN", TOKEN)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("log"))
            .stderr(log_file)
            .spawn()
            .expect("spawn supervisor");
        Self { child: Some(child), scim, admin, data_dir, log }
    }

    /// The supervisor's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until `/readyz` answers 200; panics with the log otherwise.
    pub fn wait_ready(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(r) = try_request(self.admin, "GET", "/readyz", None, None)
                && r.status == 200
            {
                return;
            }
            assert!(self.running(), "supervisor exited before it was ready; log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("supervisor not ready within {timeout:?}; log:\n{}", self.log());
    }

    /// Waits until the admin listener answers (whatever the connectors' states).
    pub fn wait_admin_up(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while try_request(self.admin, "GET", "/healthz", None, None).is_err() {
            assert!(Instant::now() < deadline, "admin listener never came up; log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether the process is still running. (`&self`: a zombie is reaped later, by `stop`.)
    pub fn running(&self) -> bool {
        self.child.as_ref().is_some_and(|c| is_alive(c.id()))
    }

    /// The supervisor's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// A SCIM request with the test token.
    pub fn scim(&self, method: &str, path: &str, body: Option<&str>) -> Response {
        request(self.scim, method, path, Some(TOKEN), body)
    }

    /// `GET /admin/connectors`, the entry of connector `name`.
    pub fn connector(&self, name: &str) -> Value {
        let r = request(self.admin, "GET", "/admin/connectors", None, None);
        assert_eq!(r.status, 200);
        r.json()["connectors"]
            .as_array()
            .and_then(|all| all.iter().find(|c| c["name"] == name).cloned())
            .unwrap_or_else(|| panic!("no connector {name} in {}", r.body))
    }

    /// Waits until `check` holds for connector `name`'s admin entry; returns that entry.
    pub fn wait_connector(&self, name: &str, timeout: Duration, check: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let c = self.connector(name);
            if check(&c) {
                return c;
            }
            assert!(
                Instant::now() < deadline,
                "connector {name} never reached the expected state: {c}\nlog:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then waits for the exit (SIGKILL after 15 s); returns the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return child.wait().expect("wait");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, as a crash would.
    pub fn kill_hard(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().expect("kill");
        child.wait().expect("wait");
    }

    /// Waits for the process to exit by itself; returns its status.
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "supervisor did not exit; log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.stop();
        }
    }
}

/// Whether a process is alive (a zombie waiting for a reaper counts as dead).
pub fn is_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            // The state follows the parenthesised command name.
            let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.trim_start().chars().next());
            !matches!(state, Some('Z') | Some('X') | None)
        }
        Err(_) => false,
    }
}

/// An HTTP response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// A bodiless request with the test token and extra headers.
pub fn request_with_headers(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Response {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
    let extra: String = headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
    exchange(&mut stream, &addr.to_string(), method, path, Some(TOKEN), None, &extra).expect("request")
}

/// A request with the test token, extra headers and a body.
pub fn request_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Response {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
    let extra: String = headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
    exchange(&mut stream, &addr.to_string(), method, path, Some(TOKEN), body, &extra).expect("request")
}

/// One HTTP/1.1 request; panics on a transport error.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> Response {
    try_request(addr, method, path, token, body).unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// One HTTP/1.1 request over a fresh connection (`Connection: close`).
pub fn try_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> std::io::Result<Response> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    exchange(&mut stream, &addr.to_string(), method, path, token, body, "")
}

/// One HTTP/1.1 request over a fresh connection (`Connection: close`) with exactly these extra
/// headers (no token unless among them; a `Content-Type` among them replaces the default
/// `application/scim+json`): for services other than the supervisor.
pub fn try_request_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> std::io::Result<Response> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let extra: String = headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
    exchange(&mut stream, &addr.to_string(), method, path, None, body, &extra)
}

/// One HTTP/1.1 request over TLS, trusting only `ca_pem`, with the given protocol versions.
pub fn tls_request(
    addr: SocketAddr,
    server_name: &str,
    ca_pem: &Path,
    versions: &[&'static rustls::SupportedProtocolVersion],
    path: &str,
    token: Option<&str>,
) -> std::io::Result<Response> {
    use std::sync::Arc;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(ca_pem)?;
    for cert in rustls_pki_types_certs(&pem) {
        roots.add(cert).map_err(std::io::Error::other)?;
    }
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(std::io::Error::other)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name =
        rustls::pki_types::ServerName::try_from(server_name.to_string()).map_err(std::io::Error::other)?;
    let connection = rustls::ClientConnection::new(Arc::new(config), name).map_err(std::io::Error::other)?;
    let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    tcp.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut stream = rustls::StreamOwned::new(connection, tcp);
    let response =
        exchange(&mut stream, &format!("{server_name}:{}", addr.port()), "GET", path, token, None, "")?;
    let negotiated = stream.conn.protocol_version().map(|v| format!("{v:?}")).unwrap_or_default();
    Ok(Response {
        headers: [response.headers, vec![("x-test-tls-version".into(), negotiated)]].concat(),
        ..response
    })
}

/// The certificates in a PEM file.
fn rustls_pki_types_certs(pem: &[u8]) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem).filter_map(Result::ok).collect()
}

fn exchange(
    stream: &mut (impl Read + Write),
    host: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
    extra_headers: &str,
) -> std::io::Result<Response> {
    let body = body.unwrap_or("");
    let mut head =
        format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n{extra_headers}");
    if let Some(token) = token {
        head.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    if !body.is_empty() || matches!(method, "POST" | "PUT" | "PATCH") {
        if !extra_headers.lines().any(|l| l.to_ascii_lowercase().starts_with("content-type:")) {
            head.push_str("Content-Type: application/scim+json\r\n");
        }
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())?;
    let mut raw = Vec::new();
    match stream.read_to_end(&mut raw) {
        Ok(_) => {}
        // A TLS peer that closes without close_notify after a complete response.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => {}
        Err(e) => return Err(e),
    }
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) =
        text.split_once("\r\n\r\n").ok_or_else(|| std::io::Error::other(format!("bad response: {text}")))?;
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line: {head}")))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':').map(|(k, v)| (k.trim().to_string(), v.trim().to_string())))
        .collect();
    let chunked =
        headers.iter().any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let body = if chunked { dechunk(body) } else { body.to_string() };
    Ok(Response { status, headers, body })
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else { break };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Rows of a SQLite table as JSON objects, read with sqlx (the same driver as the connector).
pub fn sqlite_rows(db: &Path, sql: &str) -> Vec<Value> {
    use sqlx::{Column, Row, TypeInfo, ValueRef};
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        use sqlx::ConnectOptions;
        let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(db)
            .read_only(true)
            .connect()
            .await
            .expect("open sqlite");
        let rows =
            sqlx::query(sqlx::AssertSqlSafe(sql.to_string())).fetch_all(&mut conn).await.expect("query");
        rows.iter()
            .map(|row| {
                let mut object = serde_json::Map::new();
                for (i, column) in row.columns().iter().enumerate() {
                    let raw = row.try_get_raw(i).expect("raw");
                    let value = if raw.is_null() {
                        Value::Null
                    } else {
                        match raw.type_info().name() {
                            "INTEGER" | "BOOLEAN" => Value::from(row.get::<i64, _>(i)),
                            _ => Value::from(row.get::<String, _>(i)),
                        }
                    };
                    object.insert(column.name().to_string(), value);
                }
                Value::Object(object)
            })
            .collect()
    })
}

/// A SCIM User body.
pub fn user_body(name: &str) -> String {
    serde_json::json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": name,
        "name": {"givenName": "Test", "familyName": name},
        "emails": [{"value": format!("{name}@example.com"), "type": "work", "primary": true}],
        "active": true
    })
    .to_string()
}

/// `POST /scim/<app>/Users` of a test user, once (the transport error is the caller's to judge).
pub fn post_user(scim: SocketAddr, app: &str, name: &str) -> std::io::Result<Response> {
    try_request(scim, "POST", &format!("/scim/{app}/Users"), Some(TOKEN), Some(&user_body(name)))
}

/// How a create ended for a client that retries on 503 (as Entra does).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// 201 with this id.
    Id(String),
    /// 409: an earlier attempt had created it.
    Conflict,
}

/// POSTs a user to `/scim/<app>/Users`, retrying on 503 and on a refused connection (the
/// supervisor may be restarting) until `timeout`.
pub fn create_retrying(scim: SocketAddr, app: &str, name: &str, timeout: Duration) -> Created {
    let deadline = Instant::now() + timeout;
    loop {
        match post_user(scim, app, name) {
            Ok(r) if r.status == 201 => return Created::Id(r.json()["id"].as_str().expect("id").to_string()),
            Ok(r) if r.status == 409 => return Created::Conflict,
            Ok(r) if r.status == 503 => assert!(r.header("retry-after").is_some(), "503 without Retry-After"),
            Ok(r) => panic!("create {name}: unexpected {}: {}", r.status, r.body),
            Err(_) => {} // connection refused or reset: the supervisor is restarting
        }
        assert!(Instant::now() < deadline, "create {name} never succeeded");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A configuration like the quickstart's, but with `connector-faulty` and the given fault.
/// `fault_file` arms it while it exists; `extra` is appended (e.g. a restart table).
pub fn faulty_config(fault: &str, fault_file: &Path, extra: &str) -> String {
    let connector = format!(
        "executable = \"connector-faulty\"\nenv = {{ FAULT = \"{fault}\", FAULT_FILE = \"{}\" }}\n\
         call_timeout = \"2s\"\nhealth_interval = \"500ms\"",
        fault_file.display()
    );
    // Only the users' connector is faulty.
    format!("{}\n{extra}\n", quickstart_config().replacen("executable = \"connector-sql\"", &connector, 1))
}

/// Sends a signal to a process.
pub fn signal(pid: u32, signal: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal).expect("kill");
}

/// Runs one statement on a SQLite file, with string binds (for arranging a target or a store).
pub fn sqlite_exec(db: &Path, sql: &'static str, binds: &[&str]) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        use sqlx::ConnectOptions;
        let mut conn =
            sqlx::sqlite::SqliteConnectOptions::new().filename(db).connect().await.expect("open sqlite");
        let mut query = sqlx::query(sql);
        for b in binds {
            query = query.bind(*b);
        }
        query.execute(&mut conn).await.expect("execute");
    });
}

/// One keep-alive HTTP/1.1 connection with the fixtures' bearer token, for benchmarks (the
/// one-request-per-connection helpers above would measure connection set-up).
pub struct KeepAlive {
    reader: std::io::BufReader<TcpStream>,
    writer: TcpStream,
    addr: SocketAddr,
    content_type: &'static str,
}

impl KeepAlive {
    pub fn connect(addr: SocketAddr) -> Self {
        Self::connect_as(addr, "application/scim+json")
    }

    /// A connection whose request bodies are of `content_type` (for services other than SCIM).
    pub fn connect_as(addr: SocketAddr, content_type: &'static str) -> Self {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        Self {
            reader: std::io::BufReader::new(stream.try_clone().expect("clone")),
            writer: stream,
            addr,
            content_type,
        }
    }

    /// Sends one request (a SCIM JSON body when given) and returns the status and the body.
    pub fn send(&mut self, method: &str, path: &str, body: Option<&str>) -> (u16, Vec<u8>) {
        use std::io::BufRead;
        let body = body.unwrap_or("");
        write!(
            self.writer,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {TOKEN}\r\n\
             Content-Type: {}\r\nContent-Length: {}\r\n\r\n{body}",
            self.addr,
            self.content_type,
            body.len()
        )
        .expect("write request");
        let mut status = 0;
        let mut length = 0;
        let mut line = String::new();
        loop {
            line.clear();
            self.reader.read_line(&mut line).expect("read response");
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if status == 0 {
                status = line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
            } else if let Some((k, v)) = line.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse().expect("content-length");
            }
        }
        let mut response = vec![0; length];
        self.reader.read_exact(&mut response).expect("read body");
        (status, response)
    }
}

/// The whole machine's busy CPU time so far, all cores, in seconds (from `/proc/stat`: user,
/// nice, system, irq, softirq and steal).
pub fn machine_busy_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap_or(0.0))
        .collect();
    let field = |i: usize| fields.get(i).copied().unwrap_or(0.0);
    (field(0) + field(1) + field(2) + field(5) + field(6) + field(7)) / 100.0
}

/// The machine's CPU per operation of a run, less what it spends at rest (other services on a
/// shared machine), so that the figure is not above the run's own cost.
#[derive(Clone, Copy, Debug)]
pub struct MachineCpu {
    /// Busy seconds per second at rest.
    background: f64,
}

impl MachineCpu {
    /// Measures the machine at rest for a second.
    pub fn at_rest() -> Self {
        let (started, before) = (Instant::now(), machine_busy_seconds());
        std::thread::sleep(Duration::from_secs(1));
        Self { background: (machine_busy_seconds() - before) / started.elapsed().as_secs_f64() }
    }

    /// Runs `run`, which does `operations` operations; its result and the machine's CPU per
    /// operation in µs.
    pub fn per_operation<T>(&self, operations: usize, run: impl FnOnce() -> T) -> (T, f64) {
        let (started, before) = (Instant::now(), machine_busy_seconds());
        let result = run();
        let busy = machine_busy_seconds() - before - self.background * started.elapsed().as_secs_f64();
        (result, busy.max(0.0) * 1e6 / operations as f64)
    }
}

/// CPU seconds (user + system) a process has used so far (for benchmarks).
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// A field of /proc/<pid>/status in KiB (0 if it cannot be read): `VmRSS` (all resident
/// memory), `VmHWM` (the most it has been), `RssAnon` (heap and stacks: the process's own data
/// structures) or `RssFile` (file pages mapped in, such as the connector space read through
/// mmap, which the kernel can drop and read again).
pub fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Prints the resident memory of the supervisor and of a connector: now, and the most it has
/// been since it started (`VmHWM`), in MiB.
pub fn print_memory(s: &Supervisor, connector: &str) {
    let pid = s.connector(connector)["pid"].as_u64().unwrap_or(0) as u32;
    let mib = |pid: u32, field: &str| status_kib(pid, field) as f64 / 1024.0;
    println!(
        "         memory: supervisor {:.0} MiB resident ({:.0} MiB heap), peak {:.0} MiB; {connector} {:.0} MiB \
         ({:.0} MiB heap), peak {:.0} MiB",
        mib(s.pid(), "VmRSS"),
        mib(s.pid(), "RssAnon"),
        mib(s.pid(), "VmHWM"),
        mib(pid, "VmRSS"),
        mib(pid, "RssAnon"),
        mib(pid, "VmHWM"),
    );
}

/// The median of benchmark figures.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Waits until `condition` holds (polled every 20 ms), or panics after `timeout` saying what it
/// waited for.
pub fn wait_until(timeout: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Creates one resource per name by `POST path` from `concurrency` keep-alive connections (for
/// benchmarks); every answer must be 201. Returns creates per second.
pub fn creates_per_second(
    scim: SocketAddr,
    path: &str,
    names: &[String],
    concurrency: usize,
    body: impl Fn(&str) -> String + Sync,
) -> f64 {
    posts_per_second(scim, path, "application/scim+json", names, concurrency, body)
}

/// [`creates_per_second`] with bodies of `content_type`, against any service that answers 201.
pub fn posts_per_second(
    scim: SocketAddr,
    path: &str,
    content_type: &'static str,
    names: &[String],
    concurrency: usize,
    body: impl Fn(&str) -> String + Sync,
) -> f64 {
    let started = Instant::now();
    std::thread::scope(|scope| {
        for chunk in names.chunks(names.len().div_ceil(concurrency)) {
            let body = &body;
            scope.spawn(move || {
                let mut client = KeepAlive::connect_as(scim, content_type);
                for name in chunk {
                    let (status, answer) = client.send("POST", path, Some(&body(name)));
                    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&answer));
                }
            });
        }
    });
    names.len() as f64 / started.elapsed().as_secs_f64()
}

/// Percent-encodes everything but RFC 3986's unreserved characters (a path segment or a query
/// value as a strict client writes it).
pub fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Decodes one `application/x-www-form-urlencoded` component (`+` is a space).
pub fn form_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
                out.push(
                    hex.and_then(|h| u8::from_str_radix(h, 16).ok())
                        .unwrap_or_else(|| panic!("bad percent-encoding in {text:?}")),
                );
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).expect("UTF-8")
}
