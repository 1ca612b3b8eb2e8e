//! The admin listener's guard and what it serves, through the real binaries: the admin token
//! (bearer for the API, a session cookie with CSRF for the console, other sites' forms refused,
//! brute force locked out, loopback only without a token, TLS), the provisioning log (every
//! write sent to a connector, in the connector space, SQLite or PostgreSQL; `GET /admin/log` and
//! `supervisor log`), and the dry run (`POST /admin/apps/{app}/preview`, which writes nothing,
//! and with `apply=true` writes once).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use e2e::databases::{self, Postgres};
use e2e::{
    Response, Supervisor, TOKEN, TempDir, binary, free_addr, quickstart_config, request, sqlite_exec,
    sqlite_rows, tls_request, try_request, try_request_with, wait_until,
};
use serde_json::{Value, json};

/// The admin token the tests configure (and a second one: the variable may hold several).
const ADMIN: &str = "e2e-admin-token-0123456789abcdef";
const ADMIN_2: &str = "e2e-second-admin-token-fedcba9876";
const FORM: (&str, &str) = ("Content-Type", "application/x-www-form-urlencoded");

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

/// `GET /admin/log?<query>` (with the admin token when `token`), as JSON.
fn log_query(addr: SocketAddr, token: Option<&str>, query: &str) -> Value {
    let r = request(addr, "GET", &format!("/admin/log?{query}"), token, None);
    assert_eq!(r.status, 200, "/admin/log?{query}: {}", r.body);
    r.json()
}

fn entries(answer: &Value) -> Vec<Value> {
    answer["entries"].as_array().cloned().unwrap_or_else(|| panic!("no entries in {answer}"))
}

/// The `name=value` pair of the session cookie in a `Set-Cookie` header.
fn session_cookie(r: &Response) -> String {
    let set = r.header("set-cookie").unwrap_or_else(|| panic!("no Set-Cookie: {r:?}"));
    let pair = set.split(';').next().unwrap().trim();
    assert!(pair.starts_with("ecma_console=") && pair.len() > "ecma_console=".len() + 20, "{set}");
    pair.to_string()
}

/// The CSRF token of a console page's forms.
fn csrf_of(html: &str) -> String {
    let marker = "name=\"csrf\" value=\"";
    let start =
        html.find(marker).unwrap_or_else(|| panic!("no CSRF field in the page:\n{html}")) + marker.len();
    let token = &html[start..start + html[start..].find('"').unwrap()];
    assert!(token.len() >= 20, "a CSRF token this short is guessable: {token:?}");
    token.to_string()
}

/// A POST to the admin listener with exactly these headers (no bearer token unless among them).
fn post(addr: SocketAddr, path: &str, headers: &[(&str, &str)], body: &str) -> Response {
    try_request_with(addr, "POST", path, headers, Some(body)).unwrap_or_else(|e| panic!("POST {path}: {e}"))
}

/// A GET with exactly these headers.
fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Response {
    try_request_with(addr, "GET", path, headers, None).unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

/// This machine's non-loopback IPv4 address (the one a route to a TEST-NET address leaves by;
/// connecting a UDP socket sends nothing).
fn non_loopback_ip() -> IpAddr {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").expect("udp socket");
    socket.connect("192.0.2.1:9").expect(
        "this test needs a non-loopback IPv4 address (a network interface with a route) to reach the \
         admin listener from outside loopback",
    );
    let ip = socket.local_addr().unwrap().ip();
    assert!(!ip.is_loopback() && !ip.is_unspecified(), "{ip}");
    ip
}

/// A supervisor with its admin listener on all interfaces (the harness binds loopback only), so
/// that the same listener can be reached from loopback and from this machine's other address.
/// `ADMIN_TOKEN` is taken from `env` only (never inherited).
struct Exposed {
    child: Option<Child>,
    admin_port: u16,
    log: PathBuf,
    _dir: TempDir,
}

impl Exposed {
    fn start(label: &str, env: &[(&str, &str)]) -> Self {
        let dir = TempDir::new(label);
        let config = dir.path().join("supervisor.toml");
        std::fs::write(&config, e2e::with_store_from_env(&quickstart_config())).unwrap();
        let log = dir.path().join("supervisor.log");
        let log_file = std::fs::File::create(&log).unwrap();
        let admin_port = free_addr().port();
        let child = Command::new(binary("supervisor"))
            .args(["run", "--config"])
            .arg(&config)
            .args(["--listen", &free_addr().to_string(), "--admin-listen", &format!("0.0.0.0:{admin_port}")])
            .arg("--data-dir")
            .arg(dir.path())
            .env("SCIM_TOKEN", TOKEN)
            .env("RUST_LOG", "info")
            .env_remove("ADMIN_TOKEN")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .expect("spawn supervisor");
        let exposed = Self { child: Some(child), admin_port, log, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if try_request(exposed.loopback(), "GET", "/readyz", None, None).is_ok_and(|r| r.status == 200) {
                return exposed;
            }
            assert!(Instant::now() < deadline, "supervisor not ready; log:\n{}", exposed.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn loopback(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.admin_port))
    }

    fn outside(&self) -> SocketAddr {
        SocketAddr::new(non_loopback_ip(), self.admin_port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Exposed {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            e2e::signal(child.id(), nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(15);
            while child.try_wait().ok().flatten().is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// A child process killed (by its handle) when the test ends, whatever way it ends.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn admin_api_needs_the_token_and_open_endpoints_do_not() {
    let s = Exposed::start("admin-auth", &[("ADMIN_TOKEN", &format!("{ADMIN}, {ADMIN_2}"))]);
    let admin = s.loopback();

    // No token: 401 with a JSON reason and a Bearer challenge, for reads and writes alike.
    for (method, path) in [
        ("GET", "/admin/connectors"),
        ("GET", "/admin/log"),
        ("POST", "/admin/reload"),
        ("POST", "/admin/apps/demo/preview"),
    ] {
        let r = request(admin, method, path, None, Some("{}"));
        assert_eq!(r.status, 401, "{method} {path}: {}", r.body);
        assert!(r.json()["error"].as_str().is_some_and(|e| !e.is_empty()), "{}", r.body);
        assert!(r.header("www-authenticate").is_some_and(|v| v.starts_with("Bearer")), "{r:?}");
    }
    // Either configured token opens it.
    for token in [ADMIN, ADMIN_2] {
        let r = request(admin, "GET", "/admin/connectors", Some(token), None);
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.json()["connectors"].as_array().map(Vec::len), Some(2), "{}", r.body);
    }
    // The open endpoints answer without one.
    for path in ["/healthz", "/readyz", "/metrics"] {
        let r = request(admin, "GET", path, None, None);
        assert_eq!(r.status, 200, "{path}: {}", r.body);
    }

    // Brute force: five wrong tokens from one address are 401s; then even the right token is
    // refused with 429 and Retry-After for the rest of the minute, on the API and the console's
    // login alike.
    let wrong: Vec<String> = (0..5).map(|i| format!("wrong-admin-token-attempt-{i}-zzzzzz")).collect();
    for token in &wrong {
        let r = request(admin, "GET", "/admin/connectors", Some(token), None);
        assert_eq!(r.status, 401, "{}", r.body);
        assert!(r.header("www-authenticate").is_some_and(|v| v.starts_with("Bearer")), "{r:?}");
    }
    for token in [ADMIN, wrong[0].as_str()] {
        let r = request(admin, "GET", "/admin/connectors", Some(token), None);
        assert_eq!(r.status, 429, "locked out, the right token too: {}", r.body);
        let wait: u64 = r.header("retry-after").expect("Retry-After").parse().expect("seconds");
        assert!((1..=60).contains(&wait), "Retry-After {wait}");
        assert!(r.json()["error"].is_string(), "{}", r.body);
    }
    let r = post(admin, "/console/login", &[FORM], &format!("token={ADMIN}&next=%2Fconsole%2F"));
    assert_eq!(r.status, 429, "the console login is locked out too: {}", r.body);
    assert!(r.header("retry-after").is_some(), "{r:?}");
    assert!(r.header("set-cookie").is_none(), "no session while locked out");
    // The open endpoints still answer, and the lock-out is per client address: this machine's
    // other address still gets in with the token.
    assert_eq!(request(admin, "GET", "/healthz", None, None).status, 200);
    let r = request(s.outside(), "GET", "/admin/connectors", Some(ADMIN), None);
    assert_eq!(r.status, 200, "another client address is not locked out: {}", r.body);
    assert_eq!(request(s.outside(), "GET", "/admin/connectors", None, None).status, 401);

    // The failures are logged, and counted, without any token.
    let metrics = request(admin, "GET", "/metrics", None, None).body;
    assert!(metrics.contains("admin_auth_failures_total"), "{metrics}");
    wait_until(Duration::from_secs(5), "the refusals in the log", || {
        s.log().matches("refused: the admin token does not match").count() >= 5
    });
    let log = s.log();
    for secret in wrong.iter().map(String::as_str).chain([ADMIN, ADMIN_2]) {
        assert!(!log.contains(secret), "the log holds a token ({secret}):\n{log}");
    }
    // Not even a part of one.
    assert!(!log.contains("wrong-admin-token") && !log.contains("0123456789abcdef"), "{log}");
}

#[test]
fn console_login_cookie_csrf_and_cross_site() {
    let dir = TempDir::new("admin-console");
    // /metrics taken off the open endpoints.
    let config = format!(
        "{}\n[admin]\nsession_ttl = \"2h\"\nopen_endpoints = [\"healthz\", \"readyz\"]\n",
        quickstart_config()
    );
    let s = Supervisor::spawn_with_env(&config, dir.path(), &[("ADMIN_TOKEN", ADMIN)]);
    s.wait_ready(Duration::from_secs(30));
    let admin = s.admin;
    let own_origin = format!("http://{admin}");
    assert_eq!(request(admin, "GET", "/healthz", None, None).status, 200);
    let r = request(admin, "GET", "/metrics", None, None);
    assert_eq!(r.status, 401, "not an open endpoint here: {r:?}");
    let r = request(admin, "GET", "/metrics", Some(ADMIN), None);
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body.contains("# TYPE"), "{}", r.body);

    // No session: console pages redirect to the login, saying where to come back to.
    let r = get(admin, "/console/", &[]);
    assert_eq!(r.status, 303, "{r:?}");
    assert_eq!(r.header("location"), Some("/console/login?next=%2Fconsole%2F"));
    let r = get(admin, "/console/config", &[]);
    assert_eq!(r.status, 303, "{r:?}");
    assert_eq!(r.header("location"), Some("/console/login?next=%2Fconsole%2Fconfig"));
    let r = get(admin, "/console/login?next=%2Fconsole%2Fconfig", &[]);
    assert_eq!(r.status, 200);
    assert!(r.body.contains("name=\"token\"") && r.body.contains("value=\"/console/config\""), "{}", r.body);
    // A console POST without a session is refused, not served.
    let r = post(admin, "/console/connectors/demo-users/test", &[FORM], "");
    assert_eq!(r.status, 401, "{r:?}");

    // A wrong token: 401, the login page again, no cookie.
    let r =
        post(admin, "/console/login", &[FORM], "token=not-the-admin-token-at-all&next=%2Fconsole%2Fconfig");
    assert_eq!(r.status, 401, "{r:?}");
    assert!(r.header("content-type").is_some_and(|v| v.starts_with("text/html")), "{r:?}");
    assert!(r.body.contains("That is not the admin token"), "{}", r.body);
    assert!(r.header("set-cookie").is_none(), "{r:?}");
    // A login form posted from another site is refused (login CSRF).
    let r = post(
        admin,
        "/console/login",
        &[FORM, ("Origin", "https://evil.example")],
        &format!("token={ADMIN}&next=%2Fconsole%2F"),
    );
    assert_eq!(r.status, 403, "{r:?}");
    assert!(r.header("set-cookie").is_none(), "{r:?}");

    // The right token: back to `next`, with a strict session cookie lasting session_ttl.
    let r = post(admin, "/console/login", &[FORM], &format!("token={ADMIN}&next=%2Fconsole%2Fconfig"));
    assert_eq!(r.status, 303, "{r:?}");
    assert_eq!(r.header("location"), Some("/console/config"));
    let set = r.header("set-cookie").expect("Set-Cookie").to_string();
    for attribute in ["Path=/", "HttpOnly", "SameSite=Strict", "Max-Age=7200"] {
        assert!(set.split(';').any(|a| a.trim() == attribute), "{attribute} missing: {set}");
    }
    assert!(!set.contains("Secure"), "plain HTTP: no Secure attribute: {set}");
    let cookie = session_cookie(&r);
    assert!(!cookie.contains(ADMIN), "the cookie is not the token");
    // A login never redirects off the console (no open redirect).
    for next in ["https%3A%2F%2Fevil.example%2F", "%2F%2Fevil.example%2Fconsole%2F"] {
        let r = post(admin, "/console/login", &[FORM], &format!("token={ADMIN}&next={next}"));
        assert_eq!(r.status, 303);
        assert_eq!(r.header("location"), Some("/console/"), "next={next}");
    }

    // With the cookie, console pages answer, and their forms carry the CSRF token.
    let with_cookie = ("Cookie", cookie.as_str());
    for path in ["/console/", "/console/config", "/console/log", "/console/preview"] {
        let r = get(admin, path, &[with_cookie]);
        assert_eq!(r.status, 200, "{path}: {r:?}");
    }
    let page = get(admin, "/console/config", &[with_cookie]);
    assert!(page.body.contains("/console/connectors/demo-users/test"), "{}", page.body);
    let csrf = csrf_of(&page.body);
    // A forged cookie is no session.
    let r = get(admin, "/console/config", &[("Cookie", "ecma_console=forged-session-value-0123456789")]);
    assert_eq!(r.status, 303);

    // A state-changing request with the cookie needs the CSRF token: missing or wrong, 403.
    let test = "/console/connectors/demo-users/test";
    let r = post(admin, test, &[FORM, with_cookie], "");
    assert_eq!(r.status, 403, "no CSRF token: {r:?}");
    assert!(r.json()["error"].as_str().is_some_and(|e| e.contains("CSRF")), "{}", r.body);
    let r = post(admin, test, &[FORM, with_cookie], "csrf=not-the-right-csrf-token-0123456789");
    assert_eq!(r.status, 403, "a wrong CSRF token: {r:?}");
    let r = post(admin, test, &[with_cookie, ("X-CSRF-Token", "not-the-right-csrf-token-0123456789")], "");
    assert_eq!(r.status, 403, "a wrong CSRF header: {r:?}");
    // Right, as a form field or as the header: the test runs.
    let r = post(admin, test, &[FORM, with_cookie], &format!("csrf={}", e2e::percent_encode(&csrf)));
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body.contains("demo-users: the connection works"), "{}", r.body);
    let r = post(admin, test, &[with_cookie, ("X-CSRF-Token", csrf.as_str())], "");
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body.contains("demo-users: the connection works"), "{}", r.body);
    // Our own origin is fine.
    let r = post(
        admin,
        test,
        &[with_cookie, ("X-CSRF-Token", csrf.as_str()), ("Origin", own_origin.as_str())],
        "",
    );
    assert_eq!(r.status, 200, "own Origin {own_origin}: {r:?}");

    // Another site's request is refused whatever it carries: cookie and CSRF token, or the
    // bearer token; by Origin or by Sec-Fetch-Site.
    let r = post(
        admin,
        test,
        &[FORM, with_cookie, ("Origin", "https://evil.example")],
        &format!("csrf={}", e2e::percent_encode(&csrf)),
    );
    assert_eq!(r.status, 403, "cross-site with cookie and CSRF: {r:?}");
    let r = post(admin, test, &[with_cookie, ("X-CSRF-Token", &csrf), ("Sec-Fetch-Site", "cross-site")], "");
    assert_eq!(r.status, 403, "Sec-Fetch-Site: cross-site: {r:?}");
    let bearer = format!("Bearer {ADMIN}");
    let r = post(
        admin,
        "/admin/connectors/demo-users/test",
        &[("Authorization", &bearer), ("Origin", "https://evil.example")],
        "",
    );
    assert_eq!(r.status, 403, "cross-site with the bearer token: {r:?}");
    let r = post(admin, "/admin/connectors/demo-users/test", &[("Authorization", &bearer)], "");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["ok"], true, "{}", r.body);

    // Logging out needs the CSRF token too (else any page could log one out), then ends the
    // session: the same cookie is sent to the login again.
    let r = post(admin, "/console/logout", &[FORM, with_cookie], "");
    assert_eq!(r.status, 403, "{r:?}");
    assert_eq!(get(admin, "/console/config", &[with_cookie]).status, 200, "still logged in");
    let r =
        post(admin, "/console/logout", &[FORM, with_cookie], &format!("csrf={}", e2e::percent_encode(&csrf)));
    assert_eq!(r.status, 303, "{r:?}");
    assert_eq!(r.header("location"), Some("/console/login"));
    assert!(
        r.header("set-cookie").is_some_and(|c| c.starts_with("ecma_console=;") && c.contains("Max-Age=0")),
        "{r:?}"
    );
    let r = get(admin, "/console/config", &[with_cookie]);
    assert_eq!(r.status, 303, "the session ended: {r:?}");
    assert!(r.header("location").is_some_and(|l| l.starts_with("/console/login")), "{r:?}");
    let r = post(admin, test, &[with_cookie, ("X-CSRF-Token", csrf.as_str())], "");
    assert_eq!(r.status, 401, "the old cookie and CSRF token open nothing: {r:?}");

    let log = s.log();
    assert!(!log.contains(ADMIN), "the log holds the admin token:\n{log}");
    assert!(!log.contains(&cookie["ecma_console=".len()..]), "the log holds the session cookie:\n{log}");
}

#[test]
fn without_a_token_only_loopback_is_served() {
    let s = Exposed::start("admin-open", &[]);
    assert!(s.log().contains("no admin token is configured"), "{}", s.log());

    // Loopback: the API and the console answer without a token, as before there was one.
    let r = request(s.loopback(), "GET", "/admin/connectors", None, None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(request(s.loopback(), "GET", "/admin/log", None, None).status, 200);
    let r = request(s.loopback(), "GET", "/console/", None, None);
    assert_eq!(r.status, 200, "{r:?}");

    // Another address: 403 saying why, whatever the request carries.
    let outside = s.outside();
    for (method, path, token) in [
        ("GET", "/admin/connectors", None),
        ("GET", "/admin/connectors", Some("some-guess-at-a-token-0123456789")),
        ("GET", "/admin/log", None),
        ("POST", "/admin/reload", None),
        ("GET", "/console/", None),
        ("GET", "/console/config", None),
    ] {
        let r = request(outside, method, path, token, None);
        assert_eq!(r.status, 403, "{method} {path} from {outside}: {r:?}");
        assert!(r.json()["error"].as_str().is_some_and(|e| e.contains("ADMIN_TOKEN")), "{}", r.body);
        assert!(r.header("set-cookie").is_none(), "no session for an outside client: {r:?}");
    }
    // The open endpoints stay open to it (load balancers, Prometheus).
    for path in ["/healthz", "/readyz", "/metrics"] {
        let r = request(outside, "GET", path, None, None);
        assert_eq!(r.status, 200, "{path} from {outside}: {}", r.body);
    }
    // A login attempt from outside cannot open a session either: there is no token to log in
    // with.
    let r = post(outside, "/console/login", &[FORM], "token=anything-at-all-0123456789&next=%2Fconsole%2F");
    assert_eq!(r.status, 401, "{r:?}");
    assert!(r.header("set-cookie").is_none(), "{r:?}");

    // On loopback the console still guards its forms: a page hands out a session with a CSRF
    // token, and a POST needs both.
    let page = request(s.loopback(), "GET", "/console/config", None, None);
    assert_eq!(page.status, 200, "{page:?}");
    let cookie = session_cookie(&page);
    let csrf = csrf_of(&page.body);
    let test = "/console/connectors/demo-users/test";
    let r = post(s.loopback(), test, &[("Cookie", &cookie)], "");
    assert_eq!(r.status, 403, "no CSRF token: {r:?}");
    let r = post(s.loopback(), test, &[FORM], &format!("csrf={}", e2e::percent_encode(&csrf)));
    assert_eq!(r.status, 403, "a CSRF token without its session: {r:?}");
    let r = post(s.loopback(), test, &[("Cookie", &cookie), ("X-CSRF-Token", &csrf)], "");
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body.contains("the connection works"), "{}", r.body);
    let r = post(
        s.loopback(),
        test,
        &[("Cookie", &cookie), ("X-CSRF-Token", &csrf), ("Origin", "https://evil.example")],
        "",
    );
    assert_eq!(r.status, 403, "cross-site: {r:?}");

    // The session made on loopback opens nothing from another address.
    for (method, path) in [("GET", "/console/config"), ("GET", "/admin/connectors")] {
        let r = e2e::try_request_with(outside, method, path, &[("Cookie", &cookie)], None).unwrap();
        assert_eq!(r.status, 403, "{method} {path} from {outside} with a loopback cookie: {r:?}");
    }
    let r = post(outside, test, &[("Cookie", &cookie), ("X-CSRF-Token", &csrf)], "");
    assert_eq!(r.status, 403, "a POST from {outside} with a loopback cookie and its CSRF token: {r:?}");
}

/// The connector space's rows of a running supervisor's store (`objects` or `provisioning_log`):
/// its SQLite file, or the PostgreSQL database its configuration names.
fn store_rows(s: &Supervisor, dir: &Path, sql_table: &str, columns: &str) -> Vec<Value> {
    let config: toml::Value =
        toml::from_str(&std::fs::read_to_string(dir.join("supervisor.toml")).unwrap()).unwrap();
    match config.get("store").and_then(|s| s.get("url")).and_then(|u| u.as_str()) {
        Some(url) => {
            databases::query(url, &format!("SELECT {columns} FROM connector_space.{sql_table}"), &[])
        }
        None => {
            sqlite_rows(&s.data_dir.join("connector-space.db"), &format!("SELECT {columns} FROM {sql_table}"))
        }
    }
}

fn store_count(s: &Supervisor, dir: &Path, table: &str) -> i64 {
    store_rows(s, dir, table, "count(*) AS n")[0]["n"].as_i64().expect("a count")
}

fn target_users(s: &Supervisor) -> Vec<Value> {
    sqlite_rows(&s.data_dir.join("demo.db"), "SELECT * FROM users ORDER BY user_name")
}

fn user(name: &str, given: &str) -> String {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": name,
        "name": {"givenName": given, "familyName": "Familyname-Secretish"},
        "emails": [{"value": format!("{name}@mail.example"), "type": "work", "primary": true}],
        "active": true
    })
    .to_string()
}

fn given_name_patch(given: &str) -> String {
    json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "replace", "path": "name.givenName", "value": given}]
    })
    .to_string()
}

/// Create, update, a write the connector refuses, delete: each a provisioning log row with its
/// outcome and the names (never the values) of the attributes it carried; the filters and paging
/// of `GET /admin/log` find them; and the rows are in the connector space.
fn provisioning_log_holds_every_write(config: &str, label: &str) {
    let dir = TempDir::new(label);
    let started_ms = now_ms();
    let s = Supervisor::start(config, dir.path());
    let admin = s.admin;

    let r = s.scim("POST", "/scim/demo/Users", Some(&user("log-ada", "Zebulon-Given")));
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.json()["id"].as_str().unwrap().to_string();
    let r = s.scim("PATCH", &format!("/scim/demo/Users/{id}"), Some(&given_name_patch("Quentin-Patched")));
    assert_eq!(r.status, 200, "{}", r.body);
    // A write the connector refuses: the name is free in the connector space (so the supervisor
    // sends the ADD) but taken in the target table, whose user_name column is unique.
    sqlite_exec(
        &s.data_dir.join("demo.db"),
        "INSERT INTO users (id, user_name) VALUES (?1, ?2)",
        &["planted-row-1", "taken-in-target"],
    );
    // The dry run predicts it: the lookup through the connector finds the target's row.
    let dry = request(
        admin,
        "POST",
        "/admin/apps/demo/preview",
        Some(ADMIN),
        Some(&serde_json::json!({"method": "POST", "path": "/Users", "body": serde_json::from_str::<Value>(&user("taken-in-target", "Zebulon-Given")).unwrap()}).to_string()),
    );
    assert_eq!(dry.status, 200, "{}", dry.body);
    assert_eq!(dry.json()["preview"]["answer"], 409, "{}", dry.body);
    assert_eq!(dry.json()["preview"]["targetObject"]["anchor"], "planted-row-1", "{}", dry.body);
    let r = s.scim("POST", "/scim/demo/Users", Some(&user("taken-in-target", "Zebulon-Given")));
    assert_eq!(r.status, 409, "the target's unique constraint refuses it: {}", r.body);
    let r = s.scim("DELETE", &format!("/scim/demo/Users/{id}"), None);
    assert_eq!(r.status, 204, "{}", r.body);

    // Rows are written asynchronously: wait for the four.
    let mut all = vec![];
    wait_until(Duration::from_secs(10), "four provisioning log rows", || {
        all = entries(&log_query(admin, None, "app=demo"));
        all.len() >= 4
    });
    assert_eq!(all.len(), 4, "one row per write sent: {all:#?}");
    // Newest first.
    let ops: Vec<&str> = all.iter().map(|e| e["operation"].as_str().unwrap()).collect();
    assert_eq!(ops, ["delete", "add", "update", "add"], "{all:#?}");
    let seqs: Vec<i64> = all.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] > w[1]), "{seqs:?}");
    let (delete, refused, update, add) = (&all[0], &all[1], &all[2], &all[3]);
    for e in &all {
        assert_eq!(e["source"], "scim", "{e}");
        assert_eq!(e["app"], "demo", "{e}");
        assert_eq!(e["resource_type"], "User", "{e}");
        assert_eq!(e["connector"], "demo-users", "{e}");
        assert!(e["node"].as_str().is_some_and(|n| !n.is_empty()), "{e}");
        let at = e["at_ms"].as_i64().unwrap();
        assert!(at >= started_ms && at <= now_ms(), "at_ms {at} outside the test's time: {e}");
        assert!(e["duration_ms"].as_f64().is_some_and(|d| d >= 0.0), "{e}");
        assert!(e["attributes"].is_array(), "{e}");
    }
    for e in [add, update, delete] {
        assert_eq!(e["scim_id"], id.as_str(), "{e}");
        assert_eq!(e["name"], "log-ada", "{e}");
        assert_eq!(e["outcome"], "applied", "{e}");
        assert_eq!(e["error_kind"], "", "{e}");
    }
    let anchor = add["anchor"].as_str().expect("anchor").to_string();
    assert!(!anchor.is_empty(), "{add}");
    assert_eq!(update["anchor"], anchor.as_str());
    assert_eq!(delete["anchor"], anchor.as_str());
    let names = |e: &Value| -> Vec<String> {
        e["attributes"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_string()).collect()
    };
    for attribute in ["user_name", "given_name", "family_name", "email", "active"] {
        assert!(names(add).iter().any(|a| a == attribute), "{attribute} missing in {add}");
    }
    assert_eq!(names(update), ["given_name"], "{update}");
    assert_eq!(refused["name"], "taken-in-target");
    assert_eq!(refused["outcome"], "refused", "{refused}");
    assert_eq!(refused["error_kind"], "ALREADY_EXISTS", "{refused}");
    assert!(refused["detail"].as_str().is_some_and(|d| !d.is_empty()), "{refused}");
    assert!(refused["scim_id"].as_str().is_some_and(|i| !i.is_empty() && i != id), "{refused}");
    // Names, never values: neither the given names, the family name nor the e-mail address.
    let text = serde_json::to_string(&all).unwrap();
    for value in ["Zebulon", "Quentin", "Familyname-Secretish", "mail.example"] {
        assert!(!text.contains(value), "the log holds the value {value}: {text}");
    }

    // Filters.
    let count = |query: &str| entries(&log_query(admin, None, query)).len();
    assert_eq!(count("app=nope"), 0);
    assert_eq!(count("connector=demo-users"), 4);
    assert_eq!(count("connector=demo-groups"), 0);
    assert_eq!(count("resource_type=User"), 4);
    assert_eq!(count("resource_type=Group"), 0);
    assert_eq!(count("source=scim"), 4);
    assert_eq!(count("source=console"), 0);
    let only = |query: &str| {
        let found = entries(&log_query(admin, None, query));
        assert_eq!(found.len(), 1, "{query}: {found:#?}");
        found[0].clone()
    };
    assert_eq!(only("operation=update")["seq"], update["seq"]);
    assert_eq!(only("app=demo&outcome=refused")["seq"], refused["seq"]);
    assert_eq!(only("operation=add&outcome=applied")["seq"], add["seq"]);
    assert_eq!(only("q=taken")["seq"], refused["seq"], "part of a name");
    assert_eq!(count("outcome=refused&operation=delete"), 0);
    for q in [id.as_str(), anchor.as_str(), "LOG-AD"] {
        let found = entries(&log_query(admin, None, &format!("q={}", e2e::percent_encode(q))));
        let seqs: Vec<&Value> = found.iter().map(|e| &e["seq"]).collect();
        assert_eq!(seqs, [&delete["seq"], &update["seq"], &add["seq"]], "q={q}");
    }
    assert_eq!(count(&format!("since_ms={}", now_ms() + 60_000)), 0);
    assert_eq!(count(&format!("until_ms={}", started_ms - 1)), 0);
    assert_eq!(count(&format!("since_ms={started_ms}&until_ms={}", now_ms())), 4);

    // Paging newest first, one row a page, by `before`; and oldest first by `after`.
    let mut paged = vec![];
    let mut query = "app=demo&limit=1".to_string();
    loop {
        let page = log_query(admin, None, &query);
        let rows = entries(&page);
        assert!(rows.len() <= 1, "limit=1: {page}");
        let Some(row) = rows.first() else {
            assert!(page["next_before"].is_null(), "{page}");
            break;
        };
        assert_eq!(page["next_before"], row["seq"], "{page}");
        paged.push(row["seq"].as_i64().unwrap());
        query = format!("app=demo&limit=1&before={}", row["seq"]);
        assert!(paged.len() <= 4, "paging does not end: {paged:?}");
    }
    assert_eq!(paged, seqs);
    let page = log_query(admin, None, "app=demo&limit=2");
    assert_eq!(entries(&page).len(), 2);
    assert_eq!(page["next_before"], refused["seq"], "the last row of the page");
    let page = log_query(admin, None, &format!("app=demo&after={}", add["seq"]));
    let forward: Vec<i64> = entries(&page).iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert_eq!(forward, [seqs[2], seqs[1], seqs[0]], "after: oldest first, excluding the cursor");
    assert!(page["next_before"].is_null(), "{page}");

    // The rows are in the connector space (the store's own table), names only there too.
    let stored =
        store_rows(&s, dir.path(), "provisioning_log", "seq, operation, outcome, attributes, detail");
    assert_eq!(stored.len(), 4, "{stored:#?}");
    let stored_text = serde_json::to_string(&stored).unwrap();
    for value in ["Zebulon", "Quentin", "Familyname-Secretish", "mail.example"] {
        assert!(!stored_text.contains(value), "the store holds the value {value}: {stored_text}");
    }
}

#[test]
fn every_write_is_in_the_provisioning_log() {
    // With E2E_STORE_URL set (as scripts/test-all.sh does for the SCIM suites), the harness puts
    // this connector space in PostgreSQL.
    provisioning_log_holds_every_write(&quickstart_config(), "admin-log");
}

#[test]
fn every_write_is_in_the_provisioning_log_with_the_store_in_postgresql() {
    let pg = Postgres::start();
    let config = format!(
        "{}\n[store]\nurl = \"{}\"\nmax_connections = 4\nlock_connections = 2\n",
        quickstart_config(),
        pg.database()
    );
    provisioning_log_holds_every_write(&config, "admin-log-pg");
}

/// Lines a child writes to its stdout, as they come.
fn lines_of(child: &mut Child) -> mpsc::Receiver<String> {
    let stdout = child.stdout.take().expect("piped stdout");
    let (send, receive) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if send.send(line).is_err() {
                break;
            }
        }
    });
    receive
}

/// Waits for a line that `check` accepts; returns it and the lines before it; panics with the
/// lines seen otherwise.
fn wait_line(
    lines: &mpsc::Receiver<String>,
    what: &str,
    check: impl Fn(&str) -> bool,
) -> (String, Vec<String>) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = vec![];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if check(&line) => return (line, seen),
            Ok(line) => seen.push(line),
            Err(_) => panic!("no line with {what}; lines so far:\n{}", seen.join("\n")),
        }
    }
}

#[test]
fn supervisor_log_cli_prints_the_rows() {
    let dir = TempDir::new("admin-cli-log");
    // The token comes from the variable [admin] token_env names.
    let config = format!("{}\n[admin]\ntoken_env = \"E2E_ADMIN_SECRET\"\n", quickstart_config());
    let s = Supervisor::spawn_with_env(&config, dir.path(), &[("E2E_ADMIN_SECRET", ADMIN)]);
    s.wait_ready(Duration::from_secs(30));
    let (admin, config_file) = (s.admin.to_string(), dir.path().join("supervisor.toml"));
    let config_file = config_file.to_str().unwrap();
    let cli = |args: &[&str], env: &[(&str, &str)]| {
        let out = Command::new(binary("supervisor"))
            .arg("log")
            .args(args)
            .env_remove("ADMIN_TOKEN")
            .env_remove("E2E_ADMIN_SECRET")
            .envs(env.iter().copied())
            .output()
            .expect("run supervisor log");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    let r = s.scim("POST", "/scim/demo/Users", Some(&user("cli-log-user", "Given")));
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.json()["id"].as_str().unwrap().to_string();
    wait_until(Duration::from_secs(10), "the create's log row", || {
        entries(&log_query(s.admin, Some(ADMIN), "app=demo")).len() == 1
    });

    // A table: the header, then the row, from ADMIN_TOKEN ...
    let (code, out, err) = cli(&["--admin", &admin], &[("ADMIN_TOKEN", ADMIN)]);
    assert_eq!(code, Some(0), "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("time"), "{out}");
    assert_eq!(lines.len(), 2, "{out}");
    for word in ["demo", "demo-users", "add", "applied", id.as_str(), "cli-log-user", "user_name"] {
        assert!(lines[1].contains(word), "{word} missing: {out}");
    }
    // ... or from the variable the configuration names.
    let (code, out, err) = cli(&["--admin", &admin, "--config", config_file], &[("E2E_ADMIN_SECRET", ADMIN)]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.lines().nth(1).is_some_and(|l| l.contains("cli-log-user")), "{out}");
    // Without a token: an error saying which variable to set.
    let (code, out, err) = cli(&["--admin", &admin], &[]);
    assert_ne!(code, Some(0), "{out}");
    assert!(err.contains("ADMIN_TOKEN"), "{err}");
    assert!(!out.contains("cli-log-user"), "{out}");

    // JSON lines, with filters.
    let (code, out, err) = cli(
        &["--admin", &admin, "--json", "--operation", "add", "--since", "15m"],
        &[("ADMIN_TOKEN", ADMIN)],
    );
    assert_eq!(code, Some(0), "{out}{err}");
    let rows: Vec<Value> =
        out.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect();
    assert_eq!(rows.len(), 1, "{out}");
    assert_eq!(rows[0]["scim_id"], id.as_str());
    assert_eq!(rows[0]["outcome"], "applied");
    for args in [
        &["--operation", "delete"][..],
        &["-q", "nobody-by-that-name"],
        &["--app", "other"],
        &["--outcome", "refused"],
    ] {
        let mut all = vec!["--admin", admin.as_str(), "--json"];
        all.extend_from_slice(args);
        let (code, out, err) = cli(&all, &[("ADMIN_TOKEN", ADMIN)]);
        assert_eq!(code, Some(0), "{args:?}: {err}");
        assert!(out.trim().is_empty(), "{args:?} matches nothing: {out}");
    }
    let (code, out, _) = cli(&["--admin", &admin, "--json", "-q", "cli-log"], &[("ADMIN_TOKEN", ADMIN)]);
    assert_eq!(code, Some(0));
    assert_eq!(out.lines().count(), 1, "{out}");

    // --follow prints a row written after it started.
    let mut follow = KillOnDrop(
        Command::new(binary("supervisor"))
            .args(["log", "--follow", "--admin", &admin])
            .env("ADMIN_TOKEN", ADMIN)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn supervisor log --follow"),
    );
    let lines = lines_of(&mut follow.0);
    wait_line(&lines, "the header", |l| l.starts_with("time"));
    wait_line(&lines, "the first row", |l| l.contains("cli-log-user"));
    let r = s.scim("POST", "/scim/demo/Users", Some(&user("followed-user", "Given")));
    assert_eq!(r.status, 201, "{}", r.body);
    let followed = r.json()["id"].as_str().unwrap().to_string();
    let (line, before) = wait_line(&lines, "the new row", |l| l.contains("followed-user"));
    assert!(line.contains(&followed) && line.contains("add") && line.contains("applied"), "{line}");
    assert!(before.is_empty(), "rows printed twice: {before:?}");
    let r = s.scim("DELETE", &format!("/scim/demo/Users/{followed}"), None);
    assert_eq!(r.status, 204);
    let (line, before) =
        wait_line(&lines, "the delete's row", |l| l.contains("followed-user") && l.contains("delete"));
    assert!(line.contains(&followed), "{line}");
    assert!(before.is_empty(), "rows printed twice: {before:?}");
    assert!(follow.0.try_wait().unwrap().is_none(), "--follow keeps running");
}

/// The quickstart with a password column mapped from SCIM's password, so that a create's ADD
/// carries the password (and the dry run must redact it).
fn password_config() -> String {
    let config = quickstart_config();
    let columns =
        "columns = \"user_name unique, display_name, given_name, family_name, email, active boolean\"";
    assert!(config.contains(columns), "quickstart.toml changed: update this test");
    config.replacen(columns, &columns.replace("active boolean", "active boolean, password"), 1).replacen(
        "active = \"active\"\n",
        "active = \"active\"\npassword = \"password\"\n",
        1,
    )
}

fn preview(admin: SocketAddr, query: &str, body: &Value) -> Value {
    let r = request(
        admin,
        "POST",
        &format!("/admin/apps/demo/preview{query}"),
        Some(ADMIN),
        Some(&body.to_string()),
    );
    assert_eq!(r.status, 200, "{body}: {}", r.body);
    r.json()
}

#[test]
fn dry_run_writes_nothing_and_apply_writes_once() {
    const PASSWORD: &str = "Dry-Run-S3cret-Pw!";
    let dir = TempDir::new("admin-preview");
    let s = Supervisor::spawn_with_env(&password_config(), dir.path(), &[("ADMIN_TOKEN", ADMIN)]);
    s.wait_ready(Duration::from_secs(30));
    let admin = s.admin;

    let r = s.scim("POST", "/scim/demo/Users", Some(&user("dry-existing", "Original-Given")));
    assert_eq!(r.status, 201, "{}", r.body);
    let existing = r.json()["id"].as_str().unwrap().to_string();
    wait_until(Duration::from_secs(10), "the create's log row", || {
        entries(&log_query(admin, Some(ADMIN), "app=demo")).len() == 1
    });
    let space_before = store_count(&s, dir.path(), "objects");
    let target_before = target_users(&s);
    assert_eq!(target_before.len(), 1);

    // A create with a password.
    let mut create: Value = serde_json::from_str(&user("dry-new", "Dora")).unwrap();
    create["password"] = json!(PASSWORD);
    let answer = preview(admin, "", &json!({"method": "POST", "path": "/Users", "body": create}));
    let text = answer.to_string();
    assert!(!text.contains(PASSWORD), "the password is in the dry run's answer: {text}");
    let p = &answer["preview"];
    assert_eq!(p["answer"], 201, "{p:#}");
    assert_eq!(p["written"], false);
    assert_eq!(p["name"], "dry-new");
    assert_eq!(p["password"], "sent (never shown)");
    assert!(p["record"].is_null(), "{p:#}");
    assert_eq!(p["normalised"]["userName"], "dry-new");
    assert!(p["normalised"].get("password").is_none(), "{p:#}");
    assert_eq!(p["values"]["user_name"], json!(["dry-new"]), "{p:#}");
    assert_eq!(p["values"]["given_name"], json!(["Dora"]), "{p:#}");
    assert_eq!(p["values"]["email"], json!(["dry-new@mail.example"]), "{p:#}");
    assert!(p["values"].get("password").is_none(), "{p:#}");
    assert_eq!(p["targetObject"]["looked_up"], true, "{p:#}");
    assert_eq!(p["targetObject"]["found"], false, "{p:#}");
    let change = &p["change"];
    assert_eq!(change["modificationType"], "ADD", "{change:#}");
    assert_eq!(change["objectType"], "user");
    let by_name = |change: &Value, name: &str| {
        change["attributeChanges"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no change of {name}: {change:#}"))
    };
    assert_eq!(by_name(change, "user_name")["add"], json!(["dry-new"]));
    assert_eq!(by_name(change, "given_name")["add"], json!(["Dora"]));
    assert_eq!(by_name(change, "email")["add"], json!(["dry-new@mail.example"]));
    assert_eq!(by_name(change, "password")["add"], json!(["[redacted]"]), "{change:#}");
    // The full path and a lower-case method are the same request.
    let again = preview(admin, "", &json!({"method": "post", "path": "/scim/demo/Users", "body": create}));
    assert_eq!(again["preview"]["change"], *change);

    // A PATCH of an existing user: the record it matches, the target object, one attribute.
    let patch: Value = serde_json::from_str(&given_name_patch("Patched-Given")).unwrap();
    let path = format!("/Users/{existing}");
    let p = preview(admin, "", &json!({"method": "PATCH", "path": path, "body": patch}))["preview"].clone();
    assert_eq!(p["answer"], 200, "{p:#}");
    assert_eq!(p["record"]["id"], existing.as_str(), "{p:#}");
    assert_eq!(p["record"]["name"], "dry-existing");
    assert_eq!(p["record"]["state"], "present");
    let anchor = p["record"]["anchor"].as_str().expect("anchor").to_string();
    assert_eq!(anchor, target_before[0]["id"].as_str().unwrap(), "the record's anchor is the row's id");
    assert_eq!(p["targetObject"]["found"], true, "{p:#}");
    assert_eq!(p["targetObject"]["anchor"], anchor.as_str());
    assert_eq!(p["targetObject"]["values"]["given_name"], json!(["Original-Given"]), "{p:#}");
    assert_eq!(p["change"]["modificationType"], "UPDATE", "{p:#}");
    let changed: Vec<&Value> =
        p["change"]["attributeChanges"].as_array().unwrap().iter().map(|c| &c["name"]).collect();
    assert_eq!(changed, [&json!("given_name")], "{p:#}");
    assert_eq!(by_name(&p["change"], "given_name")["add"], json!(["Patched-Given"]));
    assert!(p["password"].is_null(), "{p:#}");

    // A DELETE.
    let p = preview(admin, "", &json!({"method": "DELETE", "path": path}))["preview"].clone();
    assert_eq!(p["answer"], 204, "{p:#}");
    assert_eq!(p["change"]["modificationType"], "DELETE", "{p:#}");
    assert_eq!(p["change"]["anchors"][0]["value"], anchor.as_str(), "{p:#}");
    assert_eq!(p["record"]["id"], existing.as_str());

    // What the real request would be refused with.
    let mut taken: Value = serde_json::from_str(&user("DRY-EXISTING", "X")).unwrap();
    taken["password"] = json!(PASSWORD);
    let p =
        preview(admin, "", &json!({"method": "POST", "path": "/Users", "body": taken}))["preview"].clone();
    assert_eq!(p["answer"], 409, "{p:#}");
    assert!(p["change"].is_null(), "{p:#}");
    let invalid = json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "name": {"givenName": "No-Username"}});
    let p =
        preview(admin, "", &json!({"method": "POST", "path": "/Users", "body": invalid}))["preview"].clone();
    assert_eq!(p["answer"], 400, "no userName: {p:#}");
    assert!(p["detail"].as_str().is_some_and(|d| !d.is_empty()), "{p:#}");
    assert!(p["scimType"].is_string(), "{p:#}");
    assert_eq!(p["written"], false);
    let p = preview(admin, "", &json!({"method": "PATCH", "path": "/Users/no-such-id", "body": patch}))["preview"].clone();
    assert_eq!(p["answer"], 404, "{p:#}");
    let r = request(
        admin,
        "POST",
        "/admin/apps/nope/preview",
        Some(ADMIN),
        Some(&json!({"method": "DELETE", "path": path}).to_string()),
    );
    assert_eq!(r.status, 404, "{}", r.body);

    // Nothing was written: not the target, not the connector space, no log row. (A real write
    // after the dry runs is the barrier: the log writer keeps order.)
    assert_eq!(target_users(&s), target_before, "the target is unchanged");
    assert_eq!(store_count(&s, dir.path(), "objects"), space_before, "the connector space is unchanged");
    let r = s.scim("POST", "/scim/demo/Users", Some(&user("dry-barrier", "B")));
    assert_eq!(r.status, 201, "{}", r.body);
    wait_until(Duration::from_secs(10), "the barrier's log row", || {
        !entries(&log_query(admin, Some(ADMIN), "q=dry-barrier")).is_empty()
    });
    let all = entries(&log_query(admin, Some(ADMIN), "app=demo"));
    assert_eq!(all.len(), 2, "only the two real creates are logged: {all:#?}");
    assert!(all.iter().all(|e| e["operation"] == "add" && e["source"] == "scim"), "{all:#?}");

    // Apply: the dry run, then the real request, once.
    let answer = preview(admin, "?apply=true", &json!({"method": "POST", "path": "/Users", "body": create}));
    let text = answer.to_string();
    assert!(!text.contains(PASSWORD), "the password is in the applied answer: {text}");
    assert_eq!(answer["preview"]["answer"], 201, "{answer:#}");
    assert_eq!(answer["applied"]["status"], 201, "{answer:#}");
    let body = &answer["applied"]["body"];
    assert_eq!(body["userName"], "dry-new");
    let new_id = body["id"].as_str().expect("the created id").to_string();
    let log = answer["log"].as_array().expect("the request's log rows");
    assert!(!log.is_empty(), "{answer:#}");
    for e in log {
        assert_eq!(e["source"], "console", "{e}");
        assert_eq!(e["scim_id"], new_id.as_str(), "{e}");
        assert_eq!(e["outcome"], "applied", "{e}");
    }
    assert_eq!(log.iter().filter(|e| e["operation"] == "add").count(), 1, "{log:#?}");
    let rows = target_users(&s);
    let created: Vec<&Value> = rows.iter().filter(|r| r["user_name"] == "dry-new").collect();
    assert_eq!(created.len(), 1, "one target row: {rows:#?}");
    assert_eq!(created[0]["given_name"], "Dora");
    assert_eq!(created[0]["password"], PASSWORD, "the apply sent the real password");
    assert_eq!(rows.len(), 3, "{rows:#?}");
    assert_eq!(store_count(&s, dir.path(), "objects"), space_before + 2);
    let r = s.scim("GET", &format!("/scim/demo/Users/{new_id}"), None);
    assert_eq!(r.status, 200, "{}", r.body);
    let console = entries(&log_query(admin, Some(ADMIN), "source=console"));
    assert_eq!(console.len(), log.len(), "{console:#?}");
    // An invalid body applied is the real request's 400: nothing written, nothing logged.
    let answer = preview(admin, "?apply=true", &json!({"method": "POST", "path": "/Users", "body": invalid}));
    assert_eq!(answer["preview"]["answer"], 400, "{answer:#}");
    assert_eq!(answer["applied"]["status"], 400, "{answer:#}");
    assert_eq!(answer["log"], json!([]), "{answer:#}");
    // A delete applied: its row, from the console.
    let answer = preview(admin, "?apply=true", &json!({"method": "DELETE", "path": path}));
    assert_eq!(answer["preview"]["answer"], 204, "{answer:#}");
    assert_eq!(answer["applied"]["status"], 204, "{answer:#}");
    let log = answer["log"].as_array().expect("the request's log rows");
    assert_eq!(log.len(), 1, "{answer:#}");
    assert_eq!(log[0]["operation"], "delete");
    assert_eq!(log[0]["source"], "console");
    assert_eq!(log[0]["scim_id"], existing.as_str());
    assert_eq!(log[0]["anchor"], anchor.as_str());
    assert!(target_users(&s).iter().all(|r| r["user_name"] != "dry-existing"), "deleted in the target");
    // Applying the same create again is the real request's 409, not a second object.
    let again = preview(admin, "?apply=true", &json!({"method": "POST", "path": "/Users", "body": create}));
    assert_eq!(again["preview"]["answer"], 409, "{again:#}");
    assert_eq!(again["applied"]["status"], 409, "{again:#}");
    assert_eq!(target_users(&s).len(), 2);
    // A create the connector refuses (the name is taken in the target only): its refused row
    // comes back with the answer, found by the name it carried.
    sqlite_exec(
        &s.data_dir.join("demo.db"),
        "INSERT INTO users (id, user_name) VALUES (?1, ?2)",
        &["planted-for-apply", "apply-taken-in-target"],
    );
    let taken = json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "apply-taken-in-target"});
    let refused = preview(admin, "?apply=true", &json!({"method": "POST", "path": "/Users", "body": taken}));
    assert_eq!(refused["preview"]["answer"], 409, "{refused:#}");
    assert_eq!(refused["applied"]["status"], 409, "{refused:#}");
    let log = refused["log"].as_array().expect("the request's log rows");
    assert_eq!(log.len(), 1, "{refused:#}");
    assert_eq!(log[0]["outcome"], "refused");
    assert_eq!(log[0]["error_kind"], "ALREADY_EXISTS");
    assert_eq!(log[0]["name"], "apply-taken-in-target");
    assert!(!s.log().contains(PASSWORD), "the supervisor's log holds the password");
}

/// One HTTP/1.1 request over TLS (trusting `ca_pem`, for `localhost`), with these headers.
fn tls_exchange(
    addr: SocketAddr,
    ca_pem: &Path,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Response {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    use std::sync::Arc;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_pem).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let config =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let connection = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut stream = rustls::StreamOwned::new(connection, tcp);
    let extra: String = headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost:{}\r\nConnection: close\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        addr.port(),
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    let mut raw = Vec::new();
    if let Err(e) = stream.read_to_end(&mut raw) {
        assert!(e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty(), "{e}");
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("bad response: {text}"));
    let mut lines = head.lines();
    let status = lines.next().and_then(|l| l.split_whitespace().nth(1)).and_then(|s| s.parse().ok()).unwrap();
    let headers =
        lines.filter_map(|l| l.split_once(':').map(|(k, v)| (k.trim().into(), v.trim().into()))).collect();
    Response { status, headers, body: body.to_string() }
}

#[test]
fn admin_listener_over_tls() {
    let dir = TempDir::new("admin-tls");
    let certs = dir.path().join("certs");
    let out = Command::new(binary("supervisor"))
        .args(["cert", "generate", "--out-dir"])
        .arg(&certs)
        .args(["--name", "localhost", "--name", "127.0.0.1"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let ca = certs.join("cert.pem");
    // The token from a file this time (one per line).
    let token_file = dir.path().join("admin-tokens");
    std::fs::write(&token_file, format!("{ADMIN}\n")).unwrap();
    let config = format!(
        "{}\n[admin]\ntoken_file = \"{}\"\ntls = {{ cert_file = \"{}\", key_file = \"{}\" }}\n",
        quickstart_config(),
        token_file.display(),
        ca.display(),
        certs.join("key.pem").display()
    );
    let s = Supervisor::spawn_with_env(&config, dir.path(), &[]);
    let tls13 = &[&rustls::version::TLS13][..];
    let get = |path: &str, token: Option<&str>| tls_request(s.admin, "localhost", &ca, tls13, path, token);
    wait_until(Duration::from_secs(30), "/readyz over TLS", || {
        get("/readyz", None).is_ok_and(|r| r.status == 200)
    });

    let r = get("/admin/connectors", Some(ADMIN)).unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["connectors"].as_array().map(Vec::len), Some(2));
    let r = get("/admin/connectors", None).unwrap();
    assert_eq!(r.status, 401, "{}", r.body);
    let r = tls_request(s.admin, "localhost", &ca, &[&rustls::version::TLS12], "/healthz", None).unwrap();
    assert_eq!(r.status, 200, "TLS 1.2 too");

    // Plain HTTP to the TLS listener gets no HTTP answer.
    match try_request(s.admin, "GET", "/healthz", None, None) {
        Err(_) => {}
        Ok(r) => panic!("plain HTTP was answered: {r:?}"),
    }

    // The console's session cookie is Secure on a TLS listener.
    let r = tls_exchange(
        s.admin,
        &ca,
        "POST",
        "/console/login",
        &[FORM],
        &format!("token={ADMIN}&next=%2Fconsole%2Fconfig"),
    );
    assert_eq!(r.status, 303, "{r:?}");
    let set = r.header("set-cookie").expect("Set-Cookie").to_string();
    for attribute in ["Secure", "HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=28800"] {
        assert!(set.split(';').any(|a| a.trim() == attribute), "{attribute} missing: {set}");
    }
    let cookie = session_cookie(&r);
    let r = tls_exchange(s.admin, &ca, "GET", "/console/config", &[("Cookie", &cookie)], "");
    assert_eq!(r.status, 200, "{r:?}");

    // The CLI reaches it with the configuration's certificate as the CA, and the token from its
    // token_file.
    assert_eq!(s.scim("POST", "/scim/demo/Users", Some(&user("tls-admin-user", "G"))).status, 201);
    let config_file = dir.path().join("supervisor.toml");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = Command::new(binary("supervisor"))
            .args(["log", "--json", "--admin", &s.admin.to_string(), "--config"])
            .arg(&config_file)
            .env_remove("ADMIN_TOKEN")
            .output()
            .unwrap();
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        if out.status.success() && stdout.contains("tls-admin-user") {
            break;
        }
        assert!(Instant::now() < deadline, "`supervisor log` over TLS: {:?}\n{stdout}{stderr}", out.status);
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!s.log().contains(ADMIN));
}

#[test]
fn a_short_admin_token_is_refused_at_start() {
    let dir = TempDir::new("admin-short");
    let mut s = Supervisor::spawn_with_env(&quickstart_config(), dir.path(), &[("ADMIN_TOKEN", "short-tok")]);
    let status = s.wait_exit(Duration::from_secs(30));
    assert!(!status.success(), "{}", s.log());
    let log = s.log();
    assert!(log.contains("ADMIN_TOKEN") && log.contains("shorter than 16 characters"), "{log}");
    assert!(!log.contains("short-tok"), "the log holds the token: {log}");
    assert!(!log.contains("connector ready"), "connectors were started before the token was checked: {log}");
}
