//! The operator's commands, run as a new user would, against the real binaries: `status` and
//! `import` against a running supervisor, `test-connection` and `schema` on their own,
//! `check-config`, completions; with the usual mistakes.

use std::process::{Command, Output};

use e2e::{Supervisor, TempDir, binary, quickstart_config, user_body};

fn supervisor(args: &[&str]) -> Output {
    Command::new(binary("supervisor")).args(args).output().expect("run supervisor")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn status_and_import_talk_to_a_running_supervisor() {
    let dir = TempDir::new("cli-status");
    let s = Supervisor::start(&quickstart_config(), dir.path());
    let admin = s.admin.to_string();
    let out = supervisor(&["status", "--admin", &admin]);
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    assert!(text.lines().any(|l| l.starts_with("demo-users") && l.contains("ready")), "{text}");
    assert!(text.lines().any(|l| l.starts_with("demo-groups") && l.contains("ready")), "{text}");

    assert_eq!(s.scim("POST", "/scim/demo/Users", Some(&user_body("imported-by-cli"))).status, 201);
    let out = supervisor(&["import", "demo-users", "--full", "--admin", &admin]);
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("import_type: \"full\""), "{}", stdout(&out));
    assert!(stdout(&out).contains("unchanged: 1"), "{}", stdout(&out));
    let out = supervisor(&["import", "nobody", "--admin", &admin]);
    assert_ne!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("no connector named \"nobody\""), "{}", stderr(&out));

    // Nothing listening: 69 (EX_UNAVAILABLE) and a message saying so.
    drop(s);
    let out = supervisor(&["status", "--admin", &admin]);
    assert_eq!(out.status.code(), Some(69), "{}", stderr(&out));
    assert!(stderr(&out).contains("is the supervisor running?"), "{}", stderr(&out));
}

#[test]
fn test_connection_and_schema_start_one_connector_on_their_own() {
    let dir = TempDir::new("cli-probe");
    let config = dir.path().join("quickstart.toml");
    std::fs::write(&config, quickstart_config()).unwrap();
    let (config, data) = (config.to_str().unwrap(), dir.path().join("data"));
    let data = data.to_str().unwrap();

    let out = supervisor(&["test-connection", "demo-users", "--config", config, "--data-dir", data]);
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
    assert!(
        stdout(&out).contains("state: ready") && stdout(&out).contains("connector-sql"),
        "{}",
        stdout(&out)
    );

    let out = supervisor(&["schema", "demo-groups", "--config", config, "--data-dir", data]);
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("object type group (anchor: id)"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.trim_start().starts_with("members") && l.contains("reference") && l.contains("multi")),
        "{text}"
    );

    // Mistakes: an unknown connector (64, naming the ones there are); a target that cannot be
    // reached (69, with the connector's reason); a refused configuration (64).
    let out = supervisor(&["test-connection", "demo-user", "--config", config, "--data-dir", data]);
    assert_eq!(out.status.code(), Some(64));
    assert!(stderr(&out).contains("it has: demo-groups, demo-users"), "{}", stderr(&out));

    let unreachable = dir.path().join("unreachable.toml");
    std::fs::write(
        &unreachable,
        quickstart_config().replace("${data_dir}/demo.db", "${data_dir}/missing-volume/demo.db"),
    )
    .unwrap();
    let out = supervisor(&[
        "test-connection",
        "demo-users",
        "--config",
        unreachable.to_str().unwrap(),
        "--data-dir",
        data,
    ]);
    assert_eq!(out.status.code(), Some(69), "{}{}", stdout(&out), stderr(&out));
    assert!(
        stdout(&out).contains("state: degraded") && stdout(&out).contains("cannot connect to the database"),
        "{}",
        stdout(&out)
    );

    let refused = dir.path().join("refused.toml");
    std::fs::write(&refused, quickstart_config().replacen("table = \"users\"", "table = \"users; drop\"", 1))
        .unwrap();
    let out = supervisor(&[
        "test-connection",
        "demo-users",
        "--config",
        refused.to_str().unwrap(),
        "--data-dir",
        data,
    ]);
    assert_eq!(out.status.code(), Some(64), "{}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("not a valid SQL identifier"), "{}", stdout(&out));
}

#[test]
fn check_config_completions_and_help() {
    let dir = TempDir::new("cli-misc");
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, quickstart_config().replace("[apps.demo]", "[apps.demo]\ncolour = \"blue\""))
        .unwrap();
    let out = supervisor(&["check-config", "--config", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(64));
    assert!(stderr(&out).contains("apps.demo") && stderr(&out).contains("colour"), "{}", stderr(&out));

    // token generate: 64 hex digits (256 bits), a new one each time.
    let (a, b) = (supervisor(&["token", "generate"]), supervisor(&["token", "generate"]));
    let (a, b) = (stdout(&a).trim().to_string(), stdout(&b).trim().to_string());
    assert!(a.len() == 64 && a.chars().all(|c| c.is_ascii_hexdigit()), "{a}");
    assert_ne!(a, b);
    // cert generate into a directory that cannot be written: an error, exit non-zero.
    let out = supervisor(&["cert", "generate", "--out-dir", "/proc/no-such-dir"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("error"), "{}", stderr(&out));
    // schema of a connector that is not in the file: 64, naming the ones there are.
    let good = dir.path().join("good.toml");
    std::fs::write(&good, quickstart_config()).unwrap();
    let out = supervisor(&[
        "schema",
        "nope",
        "--config",
        good.to_str().unwrap(),
        "--data-dir",
        dir.path().join("d").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(64));
    assert!(stderr(&out).contains("it has: demo-groups, demo-users"), "{}", stderr(&out));
    let out = supervisor(&["check-config", "--config", good.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));

    let out = supervisor(&["completions", "bash"]);
    assert!(out.status.success());
    assert!(stdout(&out).contains("test-connection"), "the completion knows the commands");

    for command in ["run", "check-config", "status", "import", "test-connection", "schema", "completions"] {
        let out = supervisor(&[command, "--help"]);
        assert!(out.status.success(), "{command} --help");
        assert!(stdout(&out).contains("Example: supervisor"), "{command} --help has an example");
    }
}

/// Under systemd (`Type=notify`): READY=1 once the listeners serve, WATCHDOG=1 while it runs,
/// STOPPING=1 on SIGTERM.
#[test]
fn systemd_notifications_readiness_watchdog_and_stopping() {
    use std::os::unix::net::UnixDatagram;
    let dir = TempDir::new("cli-notify");
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(std::time::Duration::from_secs(20))).unwrap();
    let mut s = Supervisor::spawn_with_env(
        &quickstart_config(),
        dir.path(),
        &[("NOTIFY_SOCKET", socket_path.to_str().unwrap()), ("WATCHDOG_USEC", "200000")],
    );
    let mut seen = Vec::new();
    let mut buf = [0u8; 256];
    let mut next = |seen: &mut Vec<String>| {
        let n = socket.recv(&mut buf).expect("a notification");
        let message = String::from_utf8_lossy(&buf[..n]).trim().to_string();
        seen.push(message.clone());
        message
    };
    assert_eq!(next(&mut seen), "READY=1");
    assert_eq!(s.scim("GET", "/scim/demo/ServiceProviderConfig", None).status, 200, "ready means serving");
    assert_eq!(next(&mut seen), "WATCHDOG=1");
    assert_eq!(next(&mut seen), "WATCHDOG=1", "fed again within the period");
    assert!(s.stop().success());
    while next(&mut seen) != "STOPPING=1" {}
}

#[test]
fn import_shows_its_progress_while_it_runs() {
    let dir = TempDir::new("cli-progress");
    let config = quickstart_config().replace(
        "[connectors.demo-users.parameters]",
        "[connectors.demo-users.import]\non_start = false\n\n[connectors.demo-users.parameters]",
    );
    let s = Supervisor::start(&config, dir.path());
    e2e::sqlite_exec(
        &dir.path().join("demo.db"),
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 8000) \
         INSERT INTO users (id, user_name, display_name, active) SELECT 'bulk-' || i, 'bulk' || i, 'Bulk ' || i, 1 FROM n",
        &[],
    );
    let out = supervisor(&["import", "demo-users", "--admin", &s.admin.to_string()]);
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("added: 8000"), "{}", stdout(&out));
    // Not a terminal here: plain progress lines while it ran.
    let progress: Vec<String> =
        stderr(&out).lines().filter(|l| l.contains(" pages, ")).map(String::from).collect();
    assert!(!progress.is_empty(), "no progress line: {}", stderr(&out));
    assert!(progress.iter().all(|l| l.ends_with("unchanged)")), "{progress:?}");
}
