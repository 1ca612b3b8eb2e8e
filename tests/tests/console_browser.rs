//! The operator's console in a real browser (headless Chromium through chromedriver): an
//! operator's first day (log in, watch a connector restart after `kill -9` and an import finish
//! without reloading, find a user created over SCIM, dry-run a create that writes nothing, apply
//! it and find its log row), then an attacker's (no token, a wrong one, a forged cross-site form,
//! a stolen cookie past its expiry, secrets looked for in every page and the log). The main
//! pages' screenshots are written to docs/console/ on every run.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use e2e::browser::Browser;
use e2e::{Supervisor, TempDir, quickstart_config, request, try_request_with, user_body, workspace};
use serde_json::Value;

const ADMIN_TOKEN: &str = "console-admin-token-0123456789";

fn screenshots() -> PathBuf {
    workspace().join("docs/console")
}

/// The quickstart with an admin token and a short console session.
fn start(dir: &TempDir, session_ttl: &str) -> Supervisor {
    let config = quickstart_config()
        .replace("[apps.demo]", &format!("[admin]\nsession_ttl = \"{session_ttl}\"\n\n[apps.demo]"));
    let supervisor = Supervisor::spawn_with_env(&config, dir.path(), &[("ADMIN_TOKEN", ADMIN_TOKEN)]);
    supervisor.wait_ready(Duration::from_secs(30));
    supervisor
}

/// `GET` on the admin API with the admin token.
fn admin_get(supervisor: &Supervisor, path: &str) -> Value {
    let r = request(supervisor.admin, "GET", path, Some(ADMIN_TOKEN), None);
    assert_eq!(r.status, 200, "{path}: {}", r.body);
    r.json()
}

fn connector(supervisor: &Supervisor, name: &str) -> Value {
    admin_get(supervisor, "/admin/connectors")["connectors"]
        .as_array()
        .and_then(|all| all.iter().find(|c| c["name"] == name).cloned())
        .expect("the connector")
}

/// Runs blocking harness code (HTTP, SQLite) off the runtime's threads.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(work).await.expect("blocking work")
}

async fn log_in(browser: &Browser, supervisor: &Supervisor) {
    browser.goto(&format!("http://{}/console/", supervisor.admin)).await;
    assert!(browser.current_url().await.contains("/console/login"), "not sent to the login page");
    browser.fill("#token", ADMIN_TOKEN).await;
    browser.submit_form("form[action='/console/login']").await;
    browser.wait_for_text("h1", "Overview", Duration::from_secs(10)).await;
}

/// Marks the page, so that a later check can tell it was not reloaded.
async fn mark(browser: &Browser) {
    browser.execute("window.__notReloaded = true; return true;", vec![]).await;
}

async fn still_marked(browser: &Browser) -> bool {
    browser.execute("return window.__notReloaded === true;", vec![]).await == Value::Bool(true)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_operator_logs_in_watches_a_restart_and_an_import_finds_a_user_and_provisions_on_demand() {
    let dir = TempDir::new("console-operator");
    let supervisor = start(&dir, "8h");
    let browser = Browser::start().await;
    let base = format!("http://{}", supervisor.admin);
    std::fs::create_dir_all(screenshots()).unwrap();

    // The login page, then in.
    browser.goto(&format!("{base}/console/")).await;
    browser.wait_for_text("h1", "Log in", Duration::from_secs(10)).await;
    browser.screenshot(screenshots().join("login.png")).await;
    log_in(&browser, &supervisor).await;
    let cookie = browser.cookie("ecma_console").await.expect("the session cookie");
    assert!(cookie.http_only, "{cookie:?}");
    assert_eq!(cookie.same_site.as_deref(), Some("Strict"), "{cookie:?}");

    // A connector killed with -9 comes back, and the overview shows it without a reload.
    let row = "tr[data-connector='demo-users']";
    let pid: i32 = browser.text(&format!("{row} td.pid")).await.trim().parse().expect("a pid");
    assert_eq!(browser.text(&format!("{row} td.restarts")).await.trim(), "0");
    mark(&browser).await;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();
    browser.wait_for_text(&format!("{row} td.restarts"), "1", Duration::from_secs(15)).await;
    browser.wait_for_text(&format!("{row} td.state"), "ready", Duration::from_secs(15)).await;
    let new_pid: i32 = browser.text(&format!("{row} td.pid")).await.trim().parse().expect("a pid");
    assert_ne!(new_pid, pid, "the connector was not restarted");
    assert!(still_marked(&browser).await, "the overview reloaded instead of updating in place");
    // The restart is in the chart's totals (refreshed every 5 s).
    browser.wait_for_text("#chart .total-restarts", "1", Duration::from_secs(15)).await;

    // A user created over SCIM, then found in the connector space.
    let created = blocking({
        let scim = supervisor.scim;
        move || {
            e2e::request(
                scim,
                "POST",
                "/scim/demo/Users",
                Some(e2e::TOKEN),
                Some(&user_body("alice@example.com")),
            )
        }
    })
    .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.json()["id"].as_str().unwrap().to_string();
    browser.wait_for_text("#chart .total-requests", "1", Duration::from_secs(15)).await;
    browser.screenshot(screenshots().join("overview.png")).await;

    browser.goto(&format!("{base}/console/space")).await;
    browser.fill("#q", "ALICE@").await;
    browser.submit_form("form[action='/console/space']").await;
    browser.wait_for_text("table.records", "alice@example.com", Duration::from_secs(10)).await;
    browser.click("table.records a").await;
    browser.wait_for_text("h1", "alice@example.com", Duration::from_secs(10)).await;
    let resource: Value =
        serde_json::from_str(&browser.text("pre.resource").await).expect("the resource as JSON");
    assert_eq!(resource["id"], id.as_str());
    assert_eq!(resource["userName"], "alice@example.com");
    let anchor = browser.text("dd.anchor").await;
    let stored = blocking({
        let db = supervisor.data_dir.join("demo.db");
        move || e2e::sqlite_rows(&db, "SELECT id FROM users WHERE user_name = 'alice@example.com'")
    })
    .await;
    assert_eq!(stored[0]["id"].as_str(), Some(anchor.trim()), "the page shows the target row's anchor");
    browser.wait_for_text("table.log", "applied", Duration::from_secs(5)).await;
    browser.screenshot(screenshots().join("record.png")).await;

    // An import of 20,000 rows put in the target behind the supervisor's back: its progress is
    // shown live and ends with the report, without reloading the page.
    blocking({
        let db = supervisor.data_dir.join("demo.db");
        move || {
            e2e::sqlite_exec(
                &db,
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000) \
                 INSERT INTO users (id, user_name, display_name, given_name, family_name, email, active) \
                 SELECT 'bulk-' || i, 'bulk' || i || '@example.com', 'Bulk ' || i, 'Bulk', 'User' || i, \
                 'bulk' || i || '@example.com', 1 FROM n",
                &[],
            )
        }
    })
    .await;
    browser.goto(&format!("{base}/console/imports")).await;
    browser.click("form[action='/console/imports/demo-users?type=full'] button").await;
    browser.wait_for_text("h1", "Imports", Duration::from_secs(10)).await;
    mark(&browser).await;
    let started = Instant::now();
    let mut saw_running = false;
    while started.elapsed() < Duration::from_secs(120) {
        let text = browser.text(".import[data-connector='demo-users']").await;
        saw_running |= text.contains("Running");
        if text.contains("20000 added") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let finished = browser.text(".import[data-connector='demo-users']").await;
    assert!(finished.contains("20000 added"), "the import's report never showed: {finished}");
    assert!(still_marked(&browser).await, "the imports page reloaded instead of updating in place");
    println!("import progress seen running: {saw_running}");
    browser.wait_for_text("table.history", "ok", Duration::from_secs(10)).await;
    browser.screenshot(screenshots().join("imports.png")).await;

    // A dry run of a create: the exact change, and nothing written anywhere.
    let users_before = blocking({
        let s = supervisor.data_dir.clone();
        move || e2e::sqlite_rows(&s.join("demo.db"), "SELECT count(*) AS n FROM users")
    })
    .await;
    browser.goto(&format!("{base}/console/preview")).await;
    let body = r#"{"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "carol@example.com",
        "name": {"givenName": "Carol", "familyName": "Danvers"}, "password": "Pa55-never-shown!",
        "emails": [{"type": "work", "value": "carol@example.com", "primary": true}]}"#;
    browser.fill("#preview-body", body).await;
    browser.click("button[value='dry']").await;
    browser.wait_for_text("#preview-result", "nothing was written", Duration::from_secs(10)).await;
    assert_eq!(browser.text(".change-type").await, "ADD");
    let change = browser.text("table.change").await;
    for attribute in ["user_name", "given_name", "family_name", "email"] {
        assert!(change.contains(attribute), "{attribute} missing from the change: {change}");
    }
    assert!(browser.text("dd.answer").await.contains("201"));
    assert!(browser.text("#preview-result").await.contains("Not in the target"));
    assert!(!browser.page_source().await.contains("Pa55-never-shown!"), "the password was rendered");
    browser.screenshot(screenshots().join("preview.png")).await;
    let users_after = blocking({
        let s = supervisor.data_dir.clone();
        move || e2e::sqlite_rows(&s.join("demo.db"), "SELECT count(*) AS n FROM users")
    })
    .await;
    assert_eq!(users_before, users_after, "a dry run wrote to the target");
    let found = admin_get(&supervisor, "/admin/log?q=carol");
    assert_eq!(found["entries"].as_array().unwrap().len(), 0, "a dry run left a log row: {found}");
    let scim_search = blocking({
        let scim = supervisor.scim;
        move || {
            e2e::request(
                scim,
                "GET",
                "/scim/demo/Users?filter=userName%20eq%20%22carol@example.com%22",
                Some(e2e::TOKEN),
                None,
            )
        }
    })
    .await;
    assert_eq!(scim_search.json()["totalResults"], 0, "a dry run wrote to the connector space");

    // Applied for real: one row in the target, and its log row.
    browser.click("button[value='apply']").await;
    browser.wait_for_text(".applied-status", "201", Duration::from_secs(15)).await;
    let result = browser.text("#preview-result").await;
    assert!(result.contains("applied") && result.contains("console"), "{result}");
    let carol = blocking({
        let s = supervisor.data_dir.clone();
        move || {
            e2e::sqlite_rows(
                &s.join("demo.db"),
                "SELECT user_name FROM users WHERE user_name = 'carol@example.com'",
            )
        }
    })
    .await;
    assert_eq!(carol.len(), 1, "apply did not write exactly one row");
    browser.goto(&format!("{base}/console/log?q=carol%40example.com")).await;
    let log = browser.text("table.log").await;
    assert!(log.contains("carol@example.com") && log.contains("add") && log.contains("console"), "{log}");
    browser.goto(&format!("{base}/console/log")).await;
    browser.screenshot(screenshots().join("log.png")).await;

    // The overview at a phone's width.
    browser.set_window_size(390, 844).await;
    browser.goto(&format!("{base}/console/")).await;
    browser.wait_for_text("h1", "Overview", Duration::from_secs(10)).await;
    browser.screenshot(screenshots().join("overview-phone.png")).await;
    drop(browser);
    drop(supervisor);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_attacker_gets_no_session_no_forged_write_no_lasting_cookie_and_no_secret() {
    let dir = TempDir::new("console-attacker");
    let supervisor = start(&dir, "6s");
    let admin = supervisor.admin;
    let base = format!("http://{admin}");
    let browser = Browser::start().await;

    // No token: the API says 401, the console sends to its login page, a wrong token is refused.
    let api = blocking(move || request(admin, "GET", "/admin/connectors", None, None)).await;
    assert_eq!(api.status, 401);
    let empty = blocking(move || {
        try_request_with(
            admin,
            "POST",
            "/console/login",
            &[("Content-Type", "application/x-www-form-urlencoded")],
            Some("token=&next=%2Fconsole%2F"),
        )
        .unwrap()
    })
    .await;
    assert_eq!(empty.status, 401, "a login without the token: {}", empty.body);
    browser.goto(&format!("{base}/console/config")).await;
    assert!(browser.current_url().await.contains("/console/login"));
    browser.fill("#token", "not-the-admin-token-at-all").await;
    browser.submit_form("form[action='/console/login']").await;
    browser.wait_for_text(".message.bad", "not the admin token", Duration::from_secs(10)).await;
    assert!(browser.cookie("ecma_console").await.is_none(), "a wrong token got a cookie");

    // In; the cookie's expiry is the configured 6 s.
    browser.fill("#token", ADMIN_TOKEN).await;
    browser.submit_form("form[action='/console/login']").await;
    let logged_in = Instant::now();
    browser.wait_for_text("h1", "Configuration", Duration::from_secs(10)).await;
    let cookie = browser.cookie("ecma_console").await.expect("the session cookie");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let expiry = cookie.expiry.expect("an expiring cookie");
    assert!((now + 3..=now + 8).contains(&expiry), "expiry {expiry} vs now {now}");
    assert!(cookie.http_only && cookie.same_site.as_deref() == Some("Strict"), "{cookie:?}");

    // No secret in the configuration page: the SCIM app's default token and the admin token.
    let source = browser.page_source().await;
    assert!(source.contains("insecure_default_token") && source.contains("[redacted]"), "{source}");
    for secret in ["quickstart-token", ADMIN_TOKEN, e2e::TOKEN] {
        assert!(!source.contains(secret), "{secret} rendered in the configuration page");
    }

    // A forged form on another site, posted by the logged-in browser: refused, nothing reloaded.
    let incarnation = connector(&supervisor, "demo-users")["incarnation"].clone();
    let attacker = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let attacker_port = attacker.local_addr().unwrap().port();
    let page = format!(
        "<!doctype html><html><body><form id=f method=post action=\"{base}/console/connectors/demo-users/reload\">\
         <input name=csrf value=guessed></form><script>document.getElementById('f').submit()</script></body></html>"
    );
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for stream in attacker.incoming().take(2) {
            let Ok(mut stream) = stream else { continue };
            let mut buffer = [0u8; 4096];
            let _ = stream.read(&mut buffer);
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}",
                page.len()
            );
        }
    });
    // localhost and 127.0.0.1 are different sites to the browser.
    browser.goto(&format!("http://localhost:{attacker_port}/")).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut landed = String::new();
    while Instant::now() < deadline {
        landed = browser.page_text().await;
        if landed.contains("refused") || landed.contains("token") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        browser.current_url().await.contains("/console/connectors/demo-users/reload"),
        "the form was not posted"
    );
    assert!(
        landed.contains("refused") || landed.contains("token is required"),
        "the forged POST was not refused: {landed}"
    );
    assert!(!landed.contains("reloaded"), "{landed}");
    // (A reload answers when it is done: the refusal above was the whole answer.)
    assert_eq!(connector(&supervisor, "demo-users")["incarnation"], incarnation, "the forged reload ran");

    // The same POST from the console itself (its CSRF token) works: the refusal above was the
    // forgery's, not the action's.
    browser.goto(&format!("{base}/console/config")).await;
    browser.click("form[action='/console/connectors/demo-users/test'] button").await;
    browser.wait_for_text(".message", "the connection works", Duration::from_secs(15)).await;

    // A stolen cookie works until the session's expiry, and not after.
    let stolen = format!("ecma_console={}", cookie.value);
    let with_cookie = move |cookie: String| {
        try_request_with(admin, "GET", "/console/log", &[("Cookie", cookie.as_str())], None).unwrap()
    };
    let before = blocking({
        let stolen = stolen.clone();
        move || with_cookie(stolen)
    })
    .await;
    assert_eq!(before.status, 200, "the cookie should still work: {}", before.status);
    let wait = Duration::from_secs(7).saturating_sub(logged_in.elapsed());
    tokio::time::sleep(wait).await;
    let after = blocking(move || with_cookie(stolen)).await;
    assert_eq!(after.status, 303, "an expired session's cookie still opened a page");
    assert!(after.header("location").is_some_and(|l| l.starts_with("/console/login")));

    // Neither token was ever logged.
    let log = supervisor.log();
    assert!(log.contains("console login refused"), "the failed login was not logged");
    for secret in [ADMIN_TOKEN, "not-the-admin-token-at-all"] {
        assert!(!log.contains(secret), "{secret} appears in the supervisor's log");
    }
    drop(browser);
    drop(supervisor);
}
