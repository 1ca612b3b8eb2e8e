//! Third-party web services for connector-rest's end-to-end tests, each a process of its own on
//! a free loopback port with its files and log in a temporary directory, stopped on drop:
//!
//! - [`JsonServer`]: json-server 0.17.4 (npm), a REST/JSON API over a JSON file
//!   (`/users`, `/groups`, with integer ids it assigns).
//! - [`OAuthServer`]: oauth2-mock-server 7.2.1 (npm) as a token endpoint for the client
//!   credentials grant, one client, a token lifetime of the test's choosing
//!   (`tests/fixtures/rest/oauth_server.js`).
//! - [`SoapUsers`]: a SOAP 1.1 user service built with spyne 2.14.0 (PyPI)
//!   (`tests/fixtures/rest/soap_users.py`, whose header shows its requests and answers).
//! - [`ScimServer`]: scim2-server 0.8.3 (PyPI), a SCIM 2.0 service of Users and Groups, its
//!   resources kept in a file too so that they outlive a restart
//!   (`tests/fixtures/rest/scim_server.py`).
//!
//! They come from `scripts/rest-tools.sh` (pinned, installed once per machine under `~/.cache`),
//! run once per test process; it needs Node.js 18.12 or later, npm and python3.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::slapd::terminate;
use crate::{Response, TempDir, free_addr, is_alive, try_request_with, workspace};

/// How long a start may take before it counts as failed.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The directory of `scripts/rest-tools.sh` (its `node_modules/` and `venv/`), set up once per
/// test process (the script itself does the work once per machine). Panics with the script's
/// output when it fails, e.g. when node is missing.
pub fn tools() -> &'static Path {
    static TOOLS: OnceLock<PathBuf> = OnceLock::new();
    TOOLS.get_or_init(|| {
        let script = workspace().join("scripts/rest-tools.sh");
        let output = Command::new("bash")
            .arg(&script)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", script.display()));
        assert!(
            output.status.success(),
            "{} failed ({}):\n{}",
            script.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        PathBuf::from(stdout.lines().last().unwrap_or_default().trim())
    })
}

/// A file of `tests/fixtures/rest/`.
fn fixture(name: &str) -> PathBuf {
    workspace().join("tests/fixtures/rest").join(name)
}

/// A token unique to one start, for telling this fixture's server from another on its port.
fn unique_token(label: &str) -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or_default();
    format!("e2e-{label}-{}-{nanos}", std::process::id())
}

/// How a server is started on a port.
type Launcher = Box<dyn Fn(SocketAddr) -> Command + Send + Sync>;
/// Whether a started server answers, as itself.
type Probe = Box<dyn Fn(&Process) -> bool + Send + Sync>;

/// One server process: its directory, log (stdout and stderr), address and child, and how to
/// start it again.
struct Process {
    name: &'static str,
    dir: TempDir,
    addr: SocketAddr,
    child: Option<Child>,
    command: Launcher,
    ready: Probe,
}

impl Process {
    /// Starts `command(addr)` on a free port, its output in `<dir>/<name>.log`, and waits until
    /// `ready` says it answers; on another port when the port was taken meanwhile. Panics with
    /// the server's output when it exits or does not answer in time.
    fn start(
        name: &'static str,
        dir: TempDir,
        command: impl Fn(SocketAddr) -> Command + Send + Sync + 'static,
        ready: impl Fn(&Process) -> bool + Send + Sync + 'static,
    ) -> Self {
        let mut process = Self {
            name,
            dir,
            addr: free_addr(),
            child: None,
            command: Box::new(command),
            ready: Box::new(ready),
        };
        for attempt in 1.. {
            match process.launch() {
                Ok(()) => break,
                // A port found free may be taken before the server binds it.
                Err(log)
                    if attempt < 3
                        && (log.contains("EADDRINUSE") || log.contains("Address already in use")) =>
                {
                    process.addr = free_addr();
                }
                Err(log) => panic!("{name} did not start; its output:\n{log}"),
            }
        }
        process
    }

    /// Spawns the server on `self.addr` and waits until it answers; on failure, stops it and
    /// returns its output.
    fn launch(&mut self) -> Result<(), String> {
        use std::os::unix::process::CommandExt;
        let log = std::fs::File::create(self.log_path()).expect("create the log");
        let child = (self.command)(self.addr)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log"))
            .stderr(log)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.name));
        self.child = Some(child);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if (self.ready)(self) {
                return Ok(());
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().expect("wait")) {
                self.child = None;
                return Err(format!("{} exited ({status}):\n{}", self.name, self.log()));
            }
            if Instant::now() > deadline {
                self.stop();
                return Err(format!(
                    "{} did not answer within {READY_TIMEOUT:?}:\n{}",
                    self.name,
                    self.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server and starts it again on the same port and files; waits until it answers.
    fn restart(&mut self) {
        self.stop();
        if let Err(log) = self.launch() {
            panic!("{} did not restart; its output:\n{log}", self.name);
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join(format!("{}.log", self.name))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn running(&self) -> bool {
        self.child.as_ref().is_some_and(|c| is_alive(c.id()))
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child);
        }
    }

    /// A request to the server; panics on a transport error, with the server's log.
    fn request(&self, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&str>) -> Response {
        try_request_with(self.addr, method, path, headers, body)
            .unwrap_or_else(|e| panic!("{method} {path} on {}: {e}; its log:\n{}", self.name, self.log()))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
    }
}

/// json-server 0.17.4 over a JSON file in a temporary directory, `{"users": [], "groups": []}`
/// unless the test gives another. It serves `GET /users`, `GET /users/1`, `POST /users` (it
/// assigns the next integer `id` when none is given; a duplicate id is a 500), `PUT`, `PATCH`,
/// `DELETE`, filters (`?userName=alice`), paging (`_page`, `_limit`, with `X-Total-Count`) and
/// `GET /db`, and writes the file after each change (just after it answers). It enforces no
/// uniqueness but the id's.
pub struct JsonServer {
    process: Process,
}

impl JsonServer {
    /// Starts json-server with `{"users": [], "groups": []}`; waits until it answers.
    pub fn start() -> Self {
        Self::start_with(&serde_json::json!({"users": [], "groups": []}))
    }

    /// Starts json-server with `db` (an object of collections) as its data.
    pub fn start_with(db: &Value) -> Self {
        let dir = TempDir::new("json-server");
        std::fs::write(dir.path().join("db.json"), db.to_string()).expect("write db.json");
        // The readiness probe reads a file with a token of this start from its static directory,
        // so that another server on the port cannot pass for this one.
        let token = unique_token("json-server");
        std::fs::create_dir_all(dir.path().join("static")).expect("create the static dir");
        std::fs::write(dir.path().join("static/e2e-token.txt"), &token).expect("write the token");
        let bin = tools().join("node_modules/json-server/lib/cli/bin.js");
        let process = Process::start(
            "json-server",
            dir,
            move |addr| {
                let mut command = Command::new("node");
                command.arg(&bin).args(["db.json", "--host", "127.0.0.1", "--static", "static", "--port"]);
                command.arg(addr.port().to_string());
                command
            },
            move |p| {
                try_request_with(p.addr, "GET", "/e2e-token.txt", &[], None).is_ok_and(|r| r.body == token)
            },
        );
        Self { process }
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.process.addr)
    }

    /// Its address (for a [`crate::http_faults::FaultProxy`] in front).
    pub fn addr(&self) -> SocketAddr {
        self.process.addr
    }

    /// `GET path` (e.g. `/users`, `/users/1`); panics unless 200.
    pub fn get(&self, path: &str) -> Value {
        let r = self.request("GET", path, None);
        assert_eq!(r.status, 200, "GET {path}: {}", r.body);
        r.json()
    }

    /// `POST path` of `body` (e.g. a user into `/users`); returns what it stored (with its id).
    /// Panics unless 201.
    pub fn post(&self, path: &str, body: &Value) -> Value {
        let r = self.request("POST", path, Some(body));
        assert_eq!(r.status, 201, "POST {path}: {}", r.body);
        r.json()
    }

    /// Any request, with a JSON body when given; the response whatever its status.
    pub fn request(&self, method: &str, path: &str, body: Option<&Value>) -> Response {
        let body = body.map(Value::to_string);
        self.process.request(method, path, &[("Content-Type", "application/json")], body.as_deref())
    }

    /// Its whole data as it serves it (`GET /db`).
    pub fn db(&self) -> Value {
        self.get("/db")
    }

    /// A collection (`users`, `groups`) as it serves it, as an array.
    pub fn collection(&self, name: &str) -> Vec<Value> {
        self.db()[name].as_array().cloned().unwrap_or_else(|| panic!("no collection {name} in /db"))
    }

    /// The database file as json-server last wrote it. It writes the file after it has answered
    /// (lowdb's asynchronous adapter, not awaited): right after a write, the file may not have
    /// it yet; [`JsonServer::db`] has.
    pub fn db_file(&self) -> Value {
        let text = std::fs::read_to_string(self.db_path()).expect("read db.json");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("db.json is not JSON ({e}): {text}"))
    }

    /// The path of the database file.
    pub fn db_path(&self) -> PathBuf {
        self.process.dir.path().join("db.json")
    }

    /// Waits until the file holds what it serves (see [`JsonServer::db_file`]).
    pub fn wait_for_file(&self) {
        let served = self.db();
        // (A file caught mid-write is not JSON yet.)
        let file = || {
            std::fs::read_to_string(self.db_path()).ok().and_then(|t| serde_json::from_str::<Value>(&t).ok())
        };
        crate::wait_until(Duration::from_secs(10), "json-server to write its file", || {
            file().as_ref() == Some(&served)
        });
    }

    /// Its output since it last started (a line per request).
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// Whether it is running.
    pub fn running(&self) -> bool {
        self.process.running()
    }

    /// Stops it, as an outage would (connections to its port are refused), once its file holds
    /// every write it answered (see [`JsonServer::db_file`]).
    pub fn stop(&mut self) {
        if self.running() {
            self.wait_for_file();
        }
        self.process.stop();
    }

    /// Stops it as [`JsonServer::stop`] does, if running, and starts it again on the same port,
    /// with the data of its file.
    pub fn restart(&mut self) {
        self.stop();
        self.process.restart();
    }
}

/// oauth2-mock-server as a token endpoint (`tests/fixtures/rest/oauth_server.js`): the client
/// credentials grant for one client (HTTP Basic or form parameters), RS256 JWTs that expire
/// after the test's lifetime; another client or secret is 401 `invalid_client`.
pub struct OAuthServer {
    process: Process,
}

impl OAuthServer {
    /// Starts it for `client_id` with `client_secret`, every token valid `expires_in_secs`
    /// (`expires_in` and the JWT's `exp`); waits until it listens.
    pub fn start(client_id: &str, client_secret: &str, expires_in_secs: u64) -> Self {
        let dir = TempDir::new("oauth-server");
        let script = fixture("oauth_server.js");
        let node_modules = tools().join("node_modules");
        let args = [client_id.to_string(), client_secret.to_string(), expires_in_secs.to_string()];
        let process = Process::start(
            "oauth_server",
            dir,
            move |addr| {
                let mut command = Command::new("node");
                command.env("NODE_PATH", &node_modules).arg(&script).arg(addr.port().to_string());
                command.args(&args);
                command
            },
            // Printed by this very process once it listens on the port.
            |p| p.log().contains(&format!("listening http://{}\n", p.addr)),
        );
        Self { process }
    }

    /// The issuer, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.process.addr)
    }

    /// The token endpoint, `http://127.0.0.1:PORT/token`.
    pub fn token_url(&self) -> String {
        format!("{}/token", self.url())
    }

    /// The JWKS of the signing key, `http://127.0.0.1:PORT/jwks`.
    pub fn jwks_url(&self) -> String {
        format!("{}/jwks", self.url())
    }

    /// Its address (for a [`crate::http_faults::FaultProxy`] in front).
    pub fn addr(&self) -> SocketAddr {
        self.process.addr
    }

    /// How many access tokens it has issued.
    pub fn tokens_issued(&self) -> usize {
        self.stats()["tokens_issued"].as_u64().expect("tokens_issued") as usize
    }

    /// The access tokens it has issued, oldest first.
    pub fn tokens(&self) -> Vec<String> {
        let stats = self.stats();
        stats["tokens"]
            .as_array()
            .expect("tokens")
            .iter()
            .map(|t| t.as_str().expect("token").to_string())
            .collect()
    }

    /// Every token request so far, answered or refused: `{"status", "grant_type", "client_auth":
    /// "basic"|"post"|"none", "client_id", "scope", "aud"}`.
    pub fn token_requests(&self) -> Vec<Value> {
        self.stats()["requests"].as_array().expect("requests").clone()
    }

    fn stats(&self) -> Value {
        let r = self.process.request("GET", "/__stats", &[], None);
        assert_eq!(r.status, 200, "GET /__stats: {}", r.body);
        r.json()
    }

    /// Its output since it last started.
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// Stops it, as an outage would.
    pub fn stop(&mut self) {
        self.process.stop();
    }

    /// Stops it if running and starts it again on the same port: a new signing key, and the
    /// counts start from zero.
    pub fn restart(&mut self) {
        self.process.restart();
    }
}

/// The SOAP user service (`tests/fixtures/rest/soap_users.py`, spyne): SOAP 1.1,
/// document/literal, namespace `urn:example:users`, with an in-memory store that
/// [`SoapUsers::state`] shows.
pub struct SoapUsers {
    process: Process,
    basic: Option<String>,
}

impl SoapUsers {
    /// Starts it; with `basic` (`"user:password"`), every SOAP request needs that HTTP Basic
    /// authorization. Waits until it listens.
    pub fn start(basic: Option<&str>) -> Self {
        let dir = TempDir::new("soap-users");
        let script = fixture("soap_users.py");
        let python = tools().join("venv/bin/python");
        let basic = basic.map(str::to_string);
        let env_basic = basic.clone();
        let process = Process::start(
            "soap_users",
            dir,
            move |addr| {
                let mut command = Command::new(&python);
                command.arg(&script).arg(addr.port().to_string());
                if let Some(basic) = &env_basic {
                    command.env("SOAP_USERS_BASIC", basic);
                }
                command
            },
            // Printed by this very process once it listens on the port.
            |p| p.log().contains(&format!("ready {}\n", p.addr.port())),
        );
        Self { process, basic }
    }

    /// The endpoint, `http://127.0.0.1:PORT/` (the WSDL is at `?wsdl`).
    pub fn url(&self) -> String {
        format!("http://{}/", self.process.addr)
    }

    /// Its address (for a [`crate::http_faults::FaultProxy`] in front).
    pub fn addr(&self) -> SocketAddr {
        self.process.addr
    }

    /// The service's store: `{"users": [{id, userName, displayName, email, active, groups,
    /// password}], "calls": {"CreateUser": N, ...}}`, users in id order, calls faults included.
    pub fn state(&self) -> Value {
        let r = self.process.request("GET", "/__state", &[], None);
        assert_eq!(r.status, 200, "GET /__state: {}", r.body);
        r.json()
    }

    /// The stored user named `user_name`, if any (password included).
    pub fn user(&self, user_name: &str) -> Option<Value> {
        self.state()["users"].as_array()?.iter().find(|u| u["userName"] == user_name).cloned()
    }

    /// Sends `operation` (an element in namespace prefix `u`, `urn:example:users`, e.g.
    /// `<u:GetUser><u:id>u1</u:id></u:GetUser>`) in a SOAP envelope, with the Basic
    /// authorization it was started with; returns the answer whatever its status (a fault is 500).
    /// For arranging a test's data through the service itself.
    pub fn call(&self, operation: &str) -> Response {
        let envelope = format!(
            "<soapenv:Envelope xmlns:soapenv=\"http://schemas.xmlsoap.org/soap/envelope/\" \
             xmlns:u=\"urn:example:users\"><soapenv:Body>{operation}</soapenv:Body></soapenv:Envelope>"
        );
        let authorization = self.basic.as_ref().map(|b| format!("Basic {}", base64(b.as_bytes())));
        let mut headers = vec![("Content-Type", "text/xml; charset=utf-8")];
        headers.extend(authorization.as_deref().map(|a| ("Authorization", a)));
        self.process.request("POST", "/", &headers, Some(&envelope))
    }

    /// Its output since it last started (a line per request).
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// Stops it, as an outage would.
    pub fn stop(&mut self) {
        self.process.stop();
    }

    /// Stops it if running and starts it again on the same port, with an empty store (it keeps
    /// its users in memory only).
    pub fn restart(&mut self) {
        self.process.restart();
    }
}

/// scim2-server 0.8.3 (PyPI), a SCIM 2.0 service (RFC 7643/7644) of Users (with the enterprise
/// extension) and Groups, as its `scim2-server` command serves it: the RFC's schemas and
/// resource types, every feature announced (PATCH, filters, sorting, ETags, bulk) but cursor
/// paging, a static bearer token, at `/v2` (and at the root). It assigns ids (32 hex digits),
/// `meta.created`, `meta.lastModified` (to the microsecond) and `meta.version` (`W/"N"`, an
/// ETag from one counter); it refuses a taken userName or group displayName (409 `uniqueness`),
/// a filter that matches no value in a PATCH path (400 `noTarget`), a stale `If-Match` (412).
/// It is lenient with what it reads (it takes `"op": "Replace"` and `"False"`): to know what a
/// client sent, put a [`crate::http_faults::FaultProxy`] in front. Answers are HTTP/1.0, one
/// request per connection.
///
/// Its resources are in memory and, through `tests/fixtures/rest/scim_server.py`, in a file of
/// its directory, written before each write is answered: [`ScimServer::stop`] (SIGTERM, which
/// Python does not catch: as abrupt as a crash) and [`ScimServer::restart`] keep every resource
/// it acknowledged. (The command's own `--dump-resources` would not do: it empties its file at
/// start and writes it only on SIGINT, and nothing reads it back.) [`ScimServer::start_in_memory`]
/// is the plain command, whose restart loses everything.
pub struct ScimServer {
    process: Process,
    token: String,
}

impl ScimServer {
    /// Starts it empty, with a bearer token of its own ([`ScimServer::token`]), its resources
    /// kept in its file too; waits until it answers.
    pub fn start() -> Self {
        Self::start_with(true)
    }

    /// [`ScimServer::start`], but its resources in memory only, as the plain `scim2-server`
    /// command keeps them: a restart empties it. (Each write of a persistent one rewrites its
    /// whole file: for benchmarks of many resources, this one.)
    pub fn start_in_memory() -> Self {
        Self::start_with(false)
    }

    fn start_with(persistent: bool) -> Self {
        let dir = TempDir::new("scim2-server");
        let state = persistent.then(|| dir.path().join("resources.json"));
        let script = fixture("scim_server.py");
        let python = tools().join("venv/bin/python");
        let token = unique_token("scim2-server");
        let (launch_token, probe_token) = (token.clone(), token.clone());
        let process = Process::start(
            "scim2_server",
            dir,
            move |addr| {
                let mut command = Command::new(&python);
                command.arg(&script).args(["--hostname", "127.0.0.1", "--port"]);
                command.arg(addr.port().to_string()).arg("--bearer-token").arg(&launch_token);
                if let Some(state) = &state {
                    command.env("SCIM_SERVER_STATE", state);
                }
                command
            },
            // Printed by this very process once it listens on the port, and it knows the token.
            move |p| {
                p.log().contains(&format!("Serving SCIM on http://{}/v2\n", p.addr))
                    && try_request_with(
                        p.addr,
                        "GET",
                        "/v2/ServiceProviderConfig",
                        &[("Authorization", &format!("Bearer {probe_token}"))],
                        None,
                    )
                    .is_ok_and(|r| r.status == 200)
            },
        );
        Self { process, token }
    }

    /// The SCIM base URL, `http://127.0.0.1:PORT/v2` (behind a proxy: the proxy's URL and
    /// `/v2`).
    pub fn url(&self) -> String {
        format!("http://{}/v2", self.process.addr)
    }

    /// Its address (for a [`crate::http_faults::FaultProxy`] in front).
    pub fn addr(&self) -> SocketAddr {
        self.process.addr
    }

    /// The bearer token it accepts (and no other).
    pub fn token(&self) -> &str {
        &self.token
    }

    /// A request to `/v2<path>` with its token, a SCIM JSON body when given; the response
    /// whatever its status.
    pub fn request(&self, method: &str, path: &str, body: Option<&Value>) -> Response {
        let authorization = format!("Bearer {}", self.token);
        let headers = [("Authorization", authorization.as_str()), ("Content-Type", "application/scim+json")];
        let body = body.map(Value::to_string);
        self.process.request(method, &format!("/v2{path}"), &headers, body.as_deref())
    }

    /// `GET /v2<path>` (e.g. `/Users/<id>`); panics unless 200.
    pub fn get(&self, path: &str) -> Value {
        let r = self.request("GET", path, None);
        assert_eq!(r.status, 200, "GET {path}: {}", r.body);
        r.json()
    }

    /// `POST /v2<path>` of `body` (e.g. a user into `/Users`): created straight in the service,
    /// as another client would. Returns what it stored (with its id); panics unless 201.
    pub fn post(&self, path: &str, body: &Value) -> Value {
        let r = self.request("POST", path, Some(body));
        assert_eq!(r.status, 201, "POST {path}: {}", r.body);
        r.json()
    }

    /// `PATCH /v2<path>` with these RFC 7644 operations, straight in the service; panics unless
    /// 200 or 204.
    pub fn patch(&self, path: &str, operations: Value) -> Response {
        let body = serde_json::json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": operations,
        });
        let r = self.request("PATCH", path, Some(&body));
        assert!(matches!(r.status, 200 | 204), "PATCH {path}: {} {}", r.status, r.body);
        r
    }

    /// Every resource of an endpoint (`/Users`, `/Groups`), read through its own list API page
    /// by page, optionally with a SCIM filter.
    pub fn list(&self, endpoint: &str, filter: Option<&str>) -> Vec<Value> {
        let mut out = Vec::new();
        loop {
            let mut query = format!("?startIndex={}&count=200", out.len() + 1);
            if let Some(filter) = filter {
                query.push_str(&format!("&filter={}", crate::percent_encode(filter)));
            }
            let page = self.get(&format!("{endpoint}{query}"));
            let resources = page["Resources"].as_array().cloned().unwrap_or_default();
            let total = page["totalResults"].as_u64().expect("totalResults") as usize;
            let received = resources.len();
            out.extend(resources);
            if received == 0 || out.len() >= total {
                return out;
            }
        }
    }

    /// Every user it holds.
    pub fn users(&self) -> Vec<Value> {
        self.list("/Users", None)
    }

    /// Every group it holds.
    pub fn groups(&self) -> Vec<Value> {
        self.list("/Groups", None)
    }

    /// The users whose userName is `user_name` (by its filter, `userName eq`, which compares
    /// case-insensitively as the RFC's schema says).
    pub fn users_named(&self, user_name: &str) -> Vec<Value> {
        let quoted = Value::String(user_name.to_string()).to_string();
        self.list("/Users", Some(&format!("userName eq {quoted}")))
    }

    /// Its output since it last started (a line per request).
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// Whether it is running.
    pub fn running(&self) -> bool {
        self.process.running()
    }

    /// Stops it, as an outage would: SIGTERM, which kills it at once (requests under way get no
    /// answer, connections to its port are refused). What it acknowledged stays in its file.
    pub fn stop(&mut self) {
        self.process.stop();
    }

    /// Stops it if running and starts it again on the same port, with the resources of its file
    /// (every write it acknowledged), or empty when it was started in memory only.
    pub fn restart(&mut self) {
        self.process.restart();
    }
}

/// Standard base64 with padding (for a Basic authorization).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::base64;

    #[test]
    fn base64_pads() {
        assert_eq!(base64(b"svc:pw"), "c3ZjOnB3");
        assert_eq!(base64(b"svc:p"), "c3ZjOnA=");
        assert_eq!(base64(b"a"), "YQ==");
        assert_eq!(base64(b""), "");
    }
}
