//! The SCIM listener's transport: TLS 1.2 and 1.3 by rustls with a certificate from files,
//! reloaded when the files change; bearer tokens.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use e2e::{Supervisor, TempDir, binary, quickstart_config, tls_request};

fn generate(dir: &Path, names: &[&str]) {
    let mut command = Command::new(binary("supervisor"));
    command.args(["cert", "generate", "--out-dir"]).arg(dir);
    for name in names {
        command.args(["--name", name]);
    }
    let output = command.output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
}

fn tls_config(certs: &Path) -> String {
    quickstart_config().replace(
        "plain_http = true",
        &format!(
            "[server.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\nreload_interval = \"200ms\"",
            certs.join("cert.pem").display(),
            certs.join("key.pem").display()
        ),
    )
}

#[test]
fn scim_over_tls_1_2_and_1_3_with_certificate_reload() {
    let dir = TempDir::new("tls");
    let certs = dir.path().join("certs");
    generate(&certs, &["localhost"]);
    let s = Supervisor::start(&tls_config(&certs), dir.path());
    let ca = certs.join("cert.pem");

    for (versions, expected) in
        [(&[&rustls::version::TLS13][..], "TLSv1_3"), (&[&rustls::version::TLS12][..], "TLSv1_2")]
    {
        let r =
            tls_request(s.scim, "localhost", &ca, versions, "/scim/demo/Users", Some(e2e::TOKEN)).unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.header("x-test-tls-version"), Some(expected));
        let r = tls_request(s.scim, "localhost", &ca, versions, "/scim/demo/Users", None).unwrap();
        assert_eq!(r.status, 401);
    }
    // Plain HTTP on the TLS port gets no HTTP answer.
    let plain = e2e::try_request(s.scim, "GET", "/scim/demo/Users", Some(e2e::TOKEN), None);
    assert!(plain.is_err() || plain.unwrap().status != 200);
    // A certificate for another name is refused by the client.
    assert!(
        tls_request(s.scim, "example.test", &ca, &[&rustls::version::TLS13], "/scim/demo/Users", None)
            .is_err()
    );

    // Replace the pair on disk: the new certificate is served without a restart.
    std::thread::sleep(Duration::from_millis(1100)); // a new modification time
    generate(&certs, &["localhost", "example.test"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = tls_request(
            s.scim,
            "example.test",
            &ca,
            &[&rustls::version::TLS13],
            "/scim/demo/Users",
            Some(e2e::TOKEN),
        );
        if let Ok(r) = r {
            assert_eq!(r.status, 200);
            break;
        }
        assert!(Instant::now() < deadline, "the new certificate was never served; log:\n{}", s.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(s.log().contains("TLS certificate reloaded"));
}

#[test]
fn tls_is_required_unless_plain_http_is_configured() {
    let dir = TempDir::new("no-tls");
    let config = quickstart_config().replace("plain_http = true", "");
    let mut s = Supervisor::spawn(&config, dir.path());
    assert_eq!(s.wait_exit(Duration::from_secs(10)).code(), Some(64));
    assert!(s.log().contains("server.tls: TLS is required"), "{}", s.log());
}

#[test]
fn short_tokens_are_refused_and_several_tokens_work() {
    let dir = TempDir::new("tokens");
    let config = quickstart_config().replace("token_env = \"SCIM_TOKEN\"", "token_env = \"SHORT_TOKEN\"");
    let mut s = Supervisor::spawn_with_env(&config, dir.path(), &[("SHORT_TOKEN", "tooshort")]);
    assert_ne!(s.wait_exit(Duration::from_secs(10)).code(), Some(0));
    let log = s.log();
    assert!(log.contains("apps.demo") && log.contains("shorter than 16"), "{log}");
    assert!(!log.contains("tooshort"), "the token was logged");

    // Two tokens (rotation): both are accepted.
    let dir = TempDir::new("tokens2");
    let tokens = format!("{} second-token-0123456789", e2e::TOKEN);
    let config = quickstart_config().replace("token_env = \"SCIM_TOKEN\"", "token_env = \"TWO_TOKENS\"");
    let s = Supervisor::spawn_with_env(&config, dir.path(), &[("TWO_TOKENS", &tokens)]);
    s.wait_ready(Duration::from_secs(30));
    for token in [e2e::TOKEN, "second-token-0123456789"] {
        assert_eq!(e2e::request(s.scim, "GET", "/scim/demo/Users", Some(token), None).status, 200);
    }
    assert_eq!(
        e2e::request(s.scim, "GET", "/scim/demo/Users", Some("second-token-012345678"), None).status,
        401
    );
}

#[test]
fn oversized_bodies_get_a_scim_413() {
    let dir = TempDir::new("413");
    let config = quickstart_config().replace("plain_http = true", "plain_http = true\nmax_body_bytes = 1000");
    let s = Supervisor::start(&config, dir.path());
    let big = format!(
        r#"{{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"big","title":"{}"}}"#,
        "x".repeat(2000)
    );
    let r = s.scim("POST", "/scim/demo/Users", Some(&big));
    assert_eq!(r.status, 413, "{}", r.body);
    assert_eq!(r.json()["status"], "413");
    assert_eq!(s.scim("POST", "/scim/demo/Users", Some(&e2e::user_body("small"))).status, 201);
}
