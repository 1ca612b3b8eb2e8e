//! A real headless Chromium, driven over WebDriver (chromedriver) with `fantoccini`, for the web
//! console's end-to-end tests.
//!
//! [`Browser::start`] runs `chromedriver` on a free loopback port, in a process group of its own
//! (it starts Chromium as its child), with a fresh profile under the temp directory; dropping the
//! `Browser` kills the whole group. Chromium runs headless with `--no-sandbox` (the tests run as
//! root, where Chromium's sandbox refuses to start) and `--disable-dev-shm-usage`.
//!
//! The helpers panic with context (the page's text, chromedriver's log) instead of returning
//! errors, like the rest of this crate's fixtures. They need a multi-threaded Tokio runtime:
//! `#[tokio::test(flavor = "multi_thread")]`.
//!
//! `/usr/bin/chromium` and `/usr/bin/chromedriver` come from Debian's `chromium` and
//! `chromium-driver` packages, which `scripts/test-all.sh` installs when run as root.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use crate::{TempDir, free_addr};

/// Chromium, from Debian's `chromium` package.
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// chromedriver, from Debian's `chromium-driver` package (the same Chromium version).
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// How long chromedriver may take to answer `GET /status`.
const DRIVER_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the helpers that look an element up wait for it to appear.
const FIND_TIMEOUT: Duration = Duration::from_secs(10);

/// The window size Chromium starts with.
pub const WINDOW_SIZE: (u32, u32) = (1280, 900);

/// A cookie as the browser holds it (WebDriver's Get All Cookies).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrowserCookie {
    pub name: String,
    pub value: String,
    pub path: Option<String>,
    pub domain: Option<String>,
    pub http_only: bool,
    pub secure: bool,
    /// `"Strict"`, `"Lax"` or `"None"`, as chromedriver reports it (`None` when it does not).
    pub same_site: Option<String>,
    /// Expiry, in seconds since the Unix epoch; `None` for a session cookie.
    pub expiry: Option<i64>,
}

/// A headless Chromium behind its own chromedriver; both are killed on drop.
pub struct Browser {
    /// The WebDriver session, for what the helpers do not cover.
    pub client: Client,
    driver: Child,
    driver_addr: SocketAddr,
    dir: TempDir,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session. Panics, saying how to install them,
    /// when Chromium or chromedriver is missing.
    pub async fn start() -> Browser {
        for (path, package) in [(CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")] {
            assert!(
                Path::new(path).is_file(),
                "{path} is missing: the browser tests need Debian's `chromium` and `chromium-driver` \
                 packages; run scripts/test-all.sh as root (it installs them), or \
                 `apt-get install {package}`"
            );
        }
        let dir = TempDir::new("browser");
        let profile = dir.path().join("profile");
        std::fs::create_dir_all(&profile).expect("create the Chromium profile directory");
        let log = dir.path().join("chromedriver.log");

        // A port found free may be taken before chromedriver binds it: retry on another.
        let mut attempt = 0;
        let (driver, driver_addr) = loop {
            attempt += 1;
            let addr = free_addr();
            let log_path = log.clone();
            let started = tokio::task::spawn_blocking(move || launch_driver(addr, &log_path))
                .await
                .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
            match started {
                Ok(child) => break (child, addr),
                Err(output) if attempt < 3 && output.contains("ddress already in use") => continue,
                Err(output) => panic!("chromedriver did not start: {output}"),
            }
        };

        let (width, height) = WINDOW_SIZE;
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("browserName".into(), json!("chrome"));
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-dev-shm-usage",
                    "--disable-gpu",
                    format!("--window-size={width},{height}"),
                    format!("--user-data-dir={}", profile.display()),
                    "--no-first-run",
                    "--no-default-browser-check",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--password-store=basic",
                ],
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let connected = ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&format!("http://{driver_addr}"))
            .await;
        let client = match connected {
            Ok(client) => client,
            Err(e) => {
                let mut driver = driver;
                kill_group(&mut driver);
                panic!(
                    "chromedriver did not start a Chromium session: {e}\nchromedriver's log:\n{}",
                    read_log(&log)
                );
            }
        };
        Browser { client, driver, driver_addr, dir }
    }

    /// The underlying WebDriver session.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Where chromedriver listens.
    pub fn driver_addr(&self) -> SocketAddr {
        self.driver_addr
    }

    /// chromedriver's log so far (`--log-path`; Chromium's own stderr is not in it).
    pub fn driver_log(&self) -> String {
        read_log(&self.dir.path().join("chromedriver.log"))
    }

    /// Navigates to `url` and waits for the page to load.
    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap_or_else(|e| panic!("navigate to {url}: {e}"));
    }

    /// The page's URL.
    pub async fn current_url(&self) -> String {
        self.client.current_url().await.expect("current URL").to_string()
    }

    /// The page's HTML as the browser now has it (after scripts ran).
    pub async fn page_source(&self) -> String {
        self.client.source().await.expect("page source")
    }

    /// The page's visible text (`document.body.innerText`).
    pub async fn page_text(&self) -> String {
        match self.execute("return document.body ? document.body.innerText : ''", vec![]).await {
            Value::String(text) => text,
            other => other.to_string(),
        }
    }

    /// The rendered text of the first element matching `css`, waiting up to 10 s for one. An
    /// element that a live update replaced between the lookup and the read is looked up again.
    pub async fn text(&self, css: &str) -> String {
        let mut attempts = 0;
        loop {
            let element = self.find(css).await;
            match element.text().await {
                Ok(text) => return text,
                Err(e) if attempts < 20 && e.to_string().contains("stale element") => {
                    attempts += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("text of {css}: {e}"),
            }
        }
    }

    /// Waits until an element matching `css` has `needle` in its rendered text; returns that
    /// text. Panics with the page's URL and text on timeout.
    pub async fn wait_for_text(&self, css: &str, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(elements) = self.client.find_all(Locator::Css(css)).await {
                for element in elements {
                    // (An element may go stale between the lookup and the read.)
                    if let Ok(text) = element.text().await
                        && text.contains(needle)
                    {
                        return text;
                    }
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "no element matching {css:?} contained {needle:?} within {timeout:?}\nat {}\npage text:\n{}",
                    self.current_url().await,
                    self.page_text().await
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Replaces the value of the field matching `css` with `value`, typed as keystrokes.
    pub async fn fill(&self, css: &str, value: &str) {
        let element = self.find(css).await;
        element.clear().await.unwrap_or_else(|e| panic!("clear {css}: {e}"));
        element.send_keys(value).await.unwrap_or_else(|e| panic!("type into {css}: {e}"));
    }

    /// Clicks the element matching `css` (waiting up to 10 s for it); a click that navigates
    /// returns once the new page has loaded.
    pub async fn click(&self, css: &str) {
        let element = self.find(css).await;
        element.click().await.unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    /// Submits the form matching `form_css` as a user would: clicks its first submit button
    /// (`<button>` without a type counts), or, with none, calls `requestSubmit()` (which runs
    /// validation and the form's submit handlers, unlike `submit()`).
    pub async fn submit_form(&self, form_css: &str) {
        let form = self.find(form_css).await;
        let buttons = form
            .find_all(Locator::Css("button:not([type]), button[type=submit], input[type=submit]"))
            .await
            .unwrap_or_else(|e| panic!("submit buttons of {form_css}: {e}"));
        if let Some(button) = buttons.first() {
            button.click().await.unwrap_or_else(|e| panic!("click the submit button of {form_css}: {e}"));
        } else {
            let form = serde_json::to_value(&form).expect("element reference");
            self.execute("arguments[0].requestSubmit()", vec![form]).await;
        }
    }

    /// Runs `script` (a function body: `return` gives the result; `arguments[i]` are `args`) in
    /// the page.
    pub async fn execute(&self, script: &str, args: Vec<Value>) -> Value {
        self.client.execute(script, args).await.unwrap_or_else(|e| panic!("execute {script:?}: {e}"))
    }

    /// Writes a PNG screenshot of the viewport to `path`, creating its directory.
    pub async fn screenshot(&self, path: impl AsRef<Path>) -> PathBuf {
        let path = path.as_ref();
        let png = self.client.screenshot().await.expect("screenshot");
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap_or_else(|e| panic!("create {}: {e}", parent.display()));
        }
        std::fs::write(path, png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path.to_path_buf()
    }

    /// The cookies the browser holds for the current page's domain.
    pub async fn cookies(&self) -> Vec<BrowserCookie> {
        let cookies = self.client.get_all_cookies().await.expect("cookies");
        cookies
            .into_iter()
            .map(|c| BrowserCookie {
                name: c.name().to_string(),
                value: c.value().to_string(),
                path: c.path().map(str::to_string),
                domain: c.domain().map(str::to_string),
                http_only: c.http_only().unwrap_or(false),
                secure: c.secure().unwrap_or(false),
                same_site: c.same_site().map(|s| s.to_string()),
                expiry: c.expires_datetime().map(|t| t.unix_timestamp()),
            })
            .collect()
    }

    /// The cookie called `name`, if the browser holds one for the current page's domain.
    pub async fn cookie(&self, name: &str) -> Option<BrowserCookie> {
        self.cookies().await.into_iter().find(|c| c.name == name)
    }

    /// Resizes the window (for a phone-width screenshot, say 390 x 844). This is the outer
    /// window: headless Chromium's viewport (`innerWidth` x `innerHeight`) is as wide, but 143
    /// pixels shorter (1280 x 900 gives a 1280 x 757 viewport).
    pub async fn set_window_size(&self, width: u32, height: u32) {
        self.client
            .set_window_size(width, height)
            .await
            .unwrap_or_else(|e| panic!("set the window size to {width}x{height}: {e}"));
    }

    /// The first element matching `css`, waiting up to 10 s for one.
    async fn find(&self, css: &str) -> fantoccini::elements::Element {
        match self.client.wait().at_most(FIND_TIMEOUT).for_element(Locator::Css(css)).await {
            Ok(element) => element,
            Err(e) => panic!(
                "no element matching {css:?} within {FIND_TIMEOUT:?} ({e})\nat {}\npage text:\n{}",
                self.current_url().await,
                self.page_text().await
            ),
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The session's own close request (fantoccini sends one when the client is dropped)
        // would race with this; chromedriver and Chromium go, with their profile, either way.
        kill_group(&mut self.driver);
    }
}

/// Spawns chromedriver on `addr` in a process group of its own and waits until `GET /status`
/// says it is ready; on failure, kills it and returns what went wrong with its log.
fn launch_driver(addr: SocketAddr, log: &Path) -> Result<Child, String> {
    use std::os::unix::process::CommandExt;
    let _ = std::fs::remove_file(log);
    let output = std::fs::File::create(log.with_extension("out")).expect("create chromedriver.out");
    let mut child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={}", addr.port()))
        .arg(format!("--log-path={}", log.display()))
        .stdin(Stdio::null())
        .stdout(output.try_clone().expect("clone chromedriver.out"))
        .stderr(output)
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {CHROMEDRIVER}: {e}"));
    let deadline = Instant::now() + DRIVER_TIMEOUT;
    loop {
        if driver_ready(addr) {
            return Ok(child);
        }
        if let Some(status) = child.try_wait().expect("wait for chromedriver") {
            return Err(format!(
                "chromedriver exited ({status}):\n{}{}",
                read_log(&log.with_extension("out")),
                read_log(log)
            ));
        }
        if Instant::now() > deadline {
            kill_group(&mut child);
            return Err(format!(
                "chromedriver did not answer GET /status within {DRIVER_TIMEOUT:?}:\n{}{}",
                read_log(&log.with_extension("out")),
                read_log(log)
            ));
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Whether chromedriver's `GET /status` says it is ready for a new session. (chromedriver keeps
/// the connection open whatever `Connection: close` says: the body is read by its length.)
fn driver_ready(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else { return false };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET /status HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&raw);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head.lines().find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("content-length").then(|| value.trim().parse::<usize>().ok())?
            });
            if length.is_some_and(|n| body.len() >= n) {
                return head.starts_with("HTTP/1.1 200")
                    && serde_json::from_str::<Value>(body).is_ok_and(|v| v["value"]["ready"] == true);
            }
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return false,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
        }
    }
}

/// SIGKILLs the process group led by `child` (chromedriver and the Chromium it started) and
/// reaps `child`; waits (up to 2 s) for the rest of the group to go.
fn kill_group(child: &mut Child) {
    use nix::sys::signal::{Signal, killpg};
    use nix::unistd::Pid;
    let group = Pid::from_raw(child.id() as i32);
    let _ = killpg(group, Signal::SIGKILL);
    let _ = child.wait();
    // Chromium's processes, orphaned, are reaped by init; wait for them so that the profile
    // directory is not removed under a live process. (Chromium's two chrome_crashpad_handler
    // processes run in sessions of their own, out of the group's reach, and exit by themselves
    // once the browser is gone; `--disable-crashpad-for-testing` would keep them in it, but
    // then no page ever loads.)
    let deadline = Instant::now() + Duration::from_secs(2);
    while group_alive(group.as_raw()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether a process of group `pgid` is still running: a zombie, which init may take a second to
/// reap, does not count.
fn group_alive(pgid: i32) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else { return false };
    entries.flatten().any(|entry| {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { return false };
        // pid (comm) state ppid pgrp ...: comm may hold spaces and parentheses.
        let Some((_, rest)) = stat.rsplit_once(')') else { return false };
        let mut fields = rest.split_whitespace();
        let state = fields.next();
        let pgrp = fields.nth(1).and_then(|f| f.parse::<i32>().ok());
        pgrp == Some(pgid) && !matches!(state, Some("Z" | "X"))
    })
}

fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| format!("({}: {e})", path.display()))
}
