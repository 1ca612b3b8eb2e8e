//! Temporary: proves tests/src/browser.rs drives a real headless Chromium.

use std::time::{Duration, Instant};

use axum::Router;
use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::routing::{get, post};
use e2e::browser::Browser;

const PAGE: &str = r#"<!doctype html>
<html><head><title>probe</title></head>
<body>
<h1 id="title">Probe page</h1>
<p id="js">static</p>
<form id="login" method="post" action="/login">
  <input id="user" name="user" type="text" required>
  <button>Sign in</button>
</form>
<button id="counter" type="button" onclick="this.textContent = 'clicked ' + (++window.n)">count</button>
<script>window.n = 0; document.getElementById('js').textContent = 'script ran: ' + (2 + 3);</script>
</body></html>"#;

async fn login(body: String) -> impl IntoResponse {
    let user = body.strip_prefix("user=").unwrap_or("?").to_string();
    (
        [
            (
                header::SET_COOKIE,
                "session=abc123; Path=/; HttpOnly; SameSite=Strict; Max-Age=3600".to_string(),
            ),
            (header::CONTENT_TYPE, "text/html".to_string()),
        ],
        format!(
            "<html><body><p id=welcome>Welcome, {user}</p><script>document.body.append(document.cookie === '' ? ' (cookie hidden from JS)' : ' visible: ' + document.cookie)</script></body></html>"
        ),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn browser_probe() {
    let app = Router::new().route("/", get(|| async { Html(PAGE) })).route("/login", post(login));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let t0 = Instant::now();
    let browser = Browser::start().await;
    let started = t0.elapsed();
    let t1 = Instant::now();
    browser.goto(&format!("http://{addr}/")).await;
    assert_eq!(browser.text("#title").await, "Probe page");
    let first_page = t1.elapsed();
    eprintln!("chromedriver + Chromium session: {started:?}; first page: {first_page:?}");

    assert_eq!(browser.text("#js").await, "script ran: 5");
    browser.click("#counter").await;
    browser.click("#counter").await;
    assert_eq!(browser.wait_for_text("#counter", "clicked", Duration::from_secs(2)).await, "clicked 2");
    let n = browser.execute("return window.n * arguments[0]", vec![serde_json::json!(10)]).await;
    assert_eq!(n, serde_json::json!(20));
    eprintln!("viewport: {}", browser.execute("return [innerWidth, innerHeight]", vec![]).await);

    browser.fill("#user", "alice").await;
    browser.screenshot("/root/scratch/probe-form.png").await;
    let t2 = Instant::now();
    browser.submit_form("#login").await;
    let text = browser.wait_for_text("#welcome", "Welcome, alice", Duration::from_secs(5)).await;
    eprintln!("after submit ({:?}): {text:?}; body: {:?}", t2.elapsed(), browser.page_text().await);
    assert!(browser.page_text().await.contains("cookie hidden from JS"));
    assert_eq!(browser.current_url().await, format!("http://{addr}/login"));
    assert!(browser.page_source().await.contains("Welcome, alice"));

    let cookies = browser.cookies().await;
    eprintln!("cookies: {cookies:#?}");
    let raw = browser.client.get_all_cookies().await.unwrap();
    eprintln!("raw: {raw:?}");
    let session = browser.cookie("session").await.expect("session cookie");
    assert!(session.http_only);
    assert!(!session.secure);
    assert_eq!(session.same_site.as_deref(), Some("Strict"));
    assert!(session.expiry.is_some());

    let png = browser.screenshot("/root/scratch/probe.png").await;
    browser.set_window_size(390, 844).await;
    eprintln!("phone viewport: {}", browser.execute("return [innerWidth, innerHeight]", vec![]).await);
    browser.screenshot("/root/scratch/probe-phone.png").await;
    let bytes = std::fs::read(&png).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");

    // wait_for_text's timeout message
    let t3 = Instant::now();
    let err = tokio::spawn(async move {
        let b = browser;
        b.wait_for_text("#welcome", "nope", Duration::from_millis(300)).await;
    })
    .await
    .unwrap_err();
    let msg = err.into_panic();
    eprintln!(
        "timeout panic after {:?}: {}",
        t3.elapsed(),
        msg.downcast_ref::<String>().cloned().unwrap_or_default()
    );
    let t4 = Instant::now();
    let b2 = Browser::start().await;
    let pid = b2.driver_addr();
    let ps = || {
        let o = std::process::Command::new("sh")
            .arg("-c")
            .arg("ps -eo pid,ppid,pgid,stat,comm | grep -i -e chrom -e PID")
            .output()
            .unwrap();
        eprintln!("{}", String::from_utf8_lossy(&o.stdout));
    };
    ps();
    let t5 = Instant::now();
    drop(b2);
    eprintln!("drop: {:?}", t5.elapsed());
    ps();
    eprintln!("second start+drop: {:?} ({pid})", t4.elapsed());
}
