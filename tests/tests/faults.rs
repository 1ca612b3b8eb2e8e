//! Faults injected into the real binaries: what the SCIM client sees, what the admin API shows,
//! and what the target holds afterwards.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use e2e::{
    Created, Supervisor, TempDir, create_retrying, faulty_config, is_alive, quickstart_config, request,
    signal, sqlite_rows, user_body,
};
use nix::sys::signal::Signal;

fn user_names(data_dir: &Path) -> Vec<String> {
    sqlite_rows(&data_dir.join("demo.db"), "SELECT user_name FROM users ORDER BY user_name")
        .into_iter()
        .map(|r| r["user_name"].as_str().unwrap().to_string())
        .collect()
}

/// Counts of each user name in the target table.
fn counts(data_dir: &Path) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for name in user_names(data_dir) {
        *counts.entry(name).or_default() += 1;
    }
    counts
}

/// Asserts that each name is in the target exactly once and in the connector space, and that
/// the target holds nothing else.
fn assert_exactly_once<'a>(s: &Supervisor, data_dir: &Path, names: impl IntoIterator<Item = &'a String>) {
    let counts = counts(data_dir);
    let mut expected = 0;
    for name in names {
        expected += 1;
        assert_eq!(counts.get(name), Some(&1), "{name} must be in the target exactly once");
        let r = s.scim("GET", &format!("/scim/demo/Users?filter=userName%20eq%20%22{name}%22"), None);
        assert_eq!(r.json()["totalResults"], 1, "{name} must be in the connector space");
    }
    assert_eq!(counts.len(), expected, "nothing else in the target: {counts:?}");
}

fn arm(dir: &TempDir) -> std::path::PathBuf {
    let file = dir.path().join("fault-armed");
    std::fs::write(&file, "armed").unwrap();
    file
}

#[test]
fn crash_after_the_write_is_reconciled_not_repeated() {
    let dir = TempDir::new("crash-mid-export");
    let fault = dir.path().join("fault-armed");
    let s = Supervisor::start(&faulty_config("crash-mid-export", &fault, ""), dir.path());
    std::fs::write(&fault, "armed").unwrap();

    // The connector writes the row, then dies before answering. The supervisor waits for the
    // restart, finds the row by userName, and answers 201: the client never knows.
    let r = s.scim("POST", "/scim/demo/Users", Some(&user_body("curie")));
    assert_eq!(r.status, 201, "{}", r.body);
    assert!(!fault.exists(), "the fault fired");
    let id = r.json()["id"].as_str().unwrap().to_string();
    assert_eq!(user_names(dir.path()), ["curie"]);
    let c = s.connector("demo-users");
    assert_eq!(c["restarts"], 1, "{c}");
    assert!(c["last_exit"].as_str().unwrap().contains("SIGABRT"), "{c}");

    // The store knows the anchor: the user is readable and writable, and a retry is refused.
    assert_eq!(s.scim("GET", &format!("/scim/demo/Users/{id}"), None).status, 200);
    let patch = r#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","path":"displayName","value":"Marie"}]}"#;
    assert_eq!(s.scim("PATCH", &format!("/scim/demo/Users/{id}"), Some(patch)).status, 200);
    assert_eq!(s.scim("POST", "/scim/demo/Users", Some(&user_body("curie"))).status, 409);
    assert_eq!(user_names(dir.path()), ["curie"]);
}

#[test]
fn entries_of_another_type_or_partition_are_rejected_and_counted() {
    let dir = TempDir::new("foreign");
    let fault = dir.path().join("fault-armed");
    let config = faulty_config("crash-mid-export", &fault, "")
        .replace("FAULT_FILE =", "FOREIGN_LOOKUP = \"1\", FAULT_FILE =");
    let s = Supervisor::start(&config, dir.path());
    std::fs::write(&fault, "armed").unwrap();
    // The reconciliation's lookup returns a foreign entry first, then the real one.
    let r = s.scim("POST", "/scim/demo/Users", Some(&user_body("goedel")));
    assert_eq!(r.status, 201, "{}", r.body);
    let c = s.connector("demo-users");
    assert_eq!(c["rejected_entries"], 1, "{c}");
    let metrics = request(s.admin, "GET", "/metrics", None, None).body;
    assert!(metrics.contains("connector_rejected_entries_total{connector=\"demo-users\"} 1"), "{metrics}");
    assert!(s.log().contains("rejected entries of another object type or partition"));
    assert_eq!(user_names(dir.path()), ["goedel"]);
    let r = s.scim("GET", "/scim/demo/Users?filter=userName%20eq%20%22goedel%22", None);
    assert_eq!(r.json()["totalResults"], 1, "only our entry was stored");
}

#[test]
fn hung_connector_is_killed_and_the_write_sent_again_once() {
    let dir = TempDir::new("hang");
    let fault = dir.path().join("fault-armed");
    let s = Supervisor::start(&faulty_config("hang-export", &fault, ""), dir.path());
    let old_pid = s.connector("demo-users")["pid"].as_u64().unwrap() as u32;
    std::fs::write(&fault, "armed").unwrap();

    let started = Instant::now();
    let r = s.scim("POST", "/scim/demo/Users", Some(&user_body("noether")));
    assert_eq!(r.status, 201, "{}", r.body);
    assert!(started.elapsed() >= Duration::from_secs(2), "answered only after the 2 s deadline");
    let c = s.connector("demo-users");
    assert_eq!(c["restarts"], 1, "{c}");
    assert!(c["last_exit"].as_str().unwrap().contains("deadline"), "{c}");
    assert!(!is_alive(old_pid), "the hung child was killed");
    assert_eq!(user_names(dir.path()), ["noether"]);
}

/// SIGKILLs a process group when dropped, if its leader is still there: a test that stops a
/// process (SIGSTOP) leaves nothing stopped behind, whatever it asserts.
struct KillGroupOnDrop(u32);

impl Drop for KillGroupOnDrop {
    fn drop(&mut self) {
        if is_alive(self.0) {
            let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(self.0 as i32), Signal::SIGKILL);
        }
    }
}

#[test]
fn a_stopped_connector_costs_a_write_less_than_5_s_with_the_default_settings() {
    let dir = TempDir::new("sigstop");
    // The shipped settings (no UNIQUE constraint on user_name, so that a duplicate would show).
    let s = Supervisor::start(&quickstart_config().replace("user_name unique,", "user_name,"), dir.path());
    // A connector that has been serving: its export session is open.
    assert_eq!(s.scim("POST", "/scim/demo/Users", Some(&user_body("hopper"))).status, 201);
    let pid = s.connector("demo-users")["pid"].as_u64().unwrap() as u32;
    let _cleanup = KillGroupOnDrop(pid);

    // Stopped, the child neither dies nor answers: its socket takes the call, and nothing comes
    // back. A probe 2 s into the call gets no answer within 1 s: the child is killed, the write's
    // outcome is unknown, and it is reconciled against the next incarnation (201), or, if that
    // one is not ready within reconcile_wait, answered 503 with Retry-After.
    signal(pid, Signal::SIGSTOP);
    let started = Instant::now();
    let r = s.scim("POST", "/scim/demo/Users", Some(&user_body("lovelace")));
    let took = started.elapsed();
    eprintln!("a write on a stopped connector: {} after {took:?}", r.status);
    assert!(took < Duration::from_secs(5), "answered after {took:?}: {} {}", r.status, r.body);
    match r.status {
        201 => {}
        503 => {
            assert!(r.header("retry-after").is_some(), "503 without Retry-After");
            // The client retries, as Entra does: the pending write is found or sent again once.
            create_retrying(s.scim, "demo", "lovelace", Duration::from_secs(30));
        }
        other => panic!("unexpected {other}: {}", r.body),
    }
    assert_exactly_once(&s, dir.path(), &["hopper".to_string(), "lovelace".to_string()]);
    let c = s.connector("demo-users");
    assert_eq!(c["restarts"], 1, "{c}");
    assert!(c["last_exit"].as_str().unwrap().contains("hung"), "{c}");
    assert!(!is_alive(pid), "the stopped child was killed");
}

#[test]
fn a_slow_but_live_connector_is_not_taken_for_hung() {
    let dir = TempDir::new("slow");
    let fault = arm(&dir);
    // Each export takes 4.5 s, longer than hang_check_after (2 s, the default) twice over and
    // shorter than call_timeout: the probes at 2 s and 4 s are answered, and the call goes on.
    let config = faulty_config("slow-export", &fault, "")
        .replace("call_timeout = \"2s\"", "call_timeout = \"10s\"")
        .replace("FAULT_FILE =", "FAULT_SLOW_MS = \"4500\", FAULT_FILE =");
    let s = Supervisor::start(&config, dir.path());
    let started = Instant::now();
    let r = s.scim("POST", "/scim/demo/Users", Some(&user_body("babbage")));
    assert_eq!(r.status, 201, "{}", r.body);
    assert!(started.elapsed() >= Duration::from_millis(4500), "the export was slow");
    assert!(s.log().contains("taking 4500 ms over PutExportEntries"));
    let c = s.connector("demo-users");
    assert_eq!((c["restarts"].as_u64(), c["incarnation"].as_u64()), (Some(0), Some(1)), "not restarted: {c}");
    assert_eq!(user_names(dir.path()), ["babbage"]);
}

#[test]
fn garbage_on_stdout_is_logged_and_breaks_nothing() {
    let dir = TempDir::new("garbage");
    let fault = arm(&dir);
    let s = Supervisor::start(&faulty_config("garbage-stdout", &fault, ""), dir.path());
    assert_eq!(s.scim("POST", "/scim/demo/Users", Some(&user_body("lovelace"))).status, 201);
    assert_eq!(user_names(dir.path()), ["lovelace"]);
    let c = s.connector("demo-users");
    assert_eq!(c["restarts"], 0);
    let output = c["recent_output"].to_string();
    assert!(output.contains("plugin-address: /tmp/nowhere"), "{output}");
    assert!(output.contains("garbage"), "bytes that are not UTF-8 are shown, not dropped: {output}");
    let log = s.log();
    assert!(log.contains("plugin-address: /tmp/nowhere") && log.contains("demo-users"), "{log}");
}

#[test]
fn wrong_protocol_version_is_refused_and_not_restarted() {
    let dir = TempDir::new("protocol");
    let fault = arm(&dir);
    let s = Supervisor::spawn(&faulty_config("wrong-protocol", &fault, ""), dir.path());
    s.wait_admin_up();
    let c = s.wait_connector("demo-users", Duration::from_secs(20), |c| c["state"] != "starting");
    assert_eq!(c["state"], "failed_config", "{c}");
    assert!(c["reason"].as_str().unwrap().contains("protocol version 999"), "{c}");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(s.connector("demo-users")["restarts"], 0);
    let r = s.scim("POST", "/scim/demo/Users", Some(&user_body("x")));
    assert_eq!(r.status, 503);
    let users_table =
        sqlite_rows(&dir.path().join("demo.db"), "SELECT name FROM sqlite_master WHERE name = 'users'");
    assert!(users_table.is_empty(), "the users' connector never reached its target");
}

#[test]
fn exit_78_is_not_restarted_until_an_operator_resets_it() {
    let dir = TempDir::new("exit78");
    let fault = arm(&dir);
    let s = Supervisor::spawn(&faulty_config("exit-config", &fault, ""), dir.path());
    s.wait_admin_up();
    let c = s.wait_connector("demo-users", Duration::from_secs(20), |c| c["state"] != "starting");
    assert_eq!(c["state"], "failed_config", "{c}");
    assert!(c["reason"].as_str().unwrap().contains("EX_CONFIG"), "{c}");
    std::thread::sleep(Duration::from_millis(500));
    let c = s.connector("demo-users");
    assert_eq!((c["restarts"].as_u64(), c["incarnation"].as_u64()), (Some(0), Some(1)), "{c}");
    assert_eq!(s.scim("POST", "/scim/demo/Users", Some(&user_body("x"))).status, 503);

    // The operator fixes the cause and resets it.
    std::fs::remove_file(&fault).unwrap();
    let r = request(s.admin, "POST", "/admin/connectors/demo-users/reset", None, None);
    assert_eq!(r.status, 202, "{}", r.body);
    s.wait_connector("demo-users", Duration::from_secs(20), |c| c["state"] == "ready");
    assert_eq!(s.scim("POST", "/scim/demo/Users", Some(&user_body("hamilton"))).status, 201);
    // Resetting a ready connector is refused.
    assert_eq!(request(s.admin, "POST", "/admin/connectors/demo-users/reset", None, None).status, 409);
    assert_eq!(request(s.admin, "POST", "/admin/connectors/nobody/reset", None, None).status, 404);
}

/// Two apps on one supervisor: "demo" with a healthy connector, "flaky" with a faulty one.
fn two_apps(fault: &str, fault_file: &Path) -> String {
    let healthy = e2e::quickstart_config();
    let flaky = faulty_config(fault, fault_file, "")
        .replace("[apps.demo]", "[apps.flaky]")
        .replace("demo-users", "flaky-users")
        .replace("/demo.db", "/flaky.db");
    // Only its app and users' connector: the [server] section and groups are the healthy config's.
    let flaky = &flaky[flaky.find("[apps.flaky]").expect("an app section")..];
    let flaky = &flaky[..flaky.find("\n# Groups:").unwrap_or(flaky.len())];
    let flaky = flaky.replace("groups = \"demo-groups\"\n", "");
    format!(
        "{healthy}\n{flaky}\n[connectors.flaky-users.restart]\ninitial_backoff = \"20ms\"\nmax_restarts = 3\n\
         window = \"60s\"\nquarantine_probe = \"1h\"\n"
    )
}

#[test]
fn crash_loop_is_quarantined_and_other_connectors_are_unaffected() {
    let dir = TempDir::new("quarantine");
    let fault = arm(&dir);
    let s = Supervisor::spawn(&two_apps("crash-on-start", &fault), dir.path());
    s.wait_admin_up();
    let c = s.wait_connector("flaky-users", Duration::from_secs(30), |c| c["state"] == "quarantined");
    assert_eq!(c["restarts"], 4, "3 restarts allowed in the window, the 4th quarantines: {c}");
    assert_eq!(c["quarantines"], 1);
    assert!(c["recent_output"].to_string().contains("fault: crashing on start"), "crash report: {c}");

    // The healthy app works all along.
    assert_eq!(s.connector("demo-users")["state"], "ready");
    assert_eq!(s.scim("POST", "/scim/demo/Users", Some(&user_body("hopper"))).status, 201);
    assert_eq!(user_names(dir.path()), ["hopper"]);
    // The quarantined one answers 503 with a Retry-After as long as its probe interval.
    let r = s.scim("POST", "/scim/flaky/Users", Some(&user_body("x")));
    assert_eq!(r.status, 503);
    let after: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!(after > 3000, "Retry-After {after}");
    let metrics = request(s.admin, "GET", "/metrics", None, None).body;
    assert!(metrics.contains("connector_quarantines_total{connector=\"flaky-users\"} 1"), "{metrics}");
    assert!(
        metrics.contains("connector_state{connector=\"flaky-users\",state=\"quarantined\"} 1"),
        "{metrics}"
    );
    assert_eq!(request(s.admin, "GET", "/readyz", None, None).status, 503);

    // Fixed and reset: it serves.
    std::fs::remove_file(&fault).unwrap();
    assert_eq!(request(s.admin, "POST", "/admin/connectors/flaky-users/reset", None, None).status, 202);
    s.wait_connector("flaky-users", Duration::from_secs(20), |c| c["state"] == "ready");
    assert_eq!(s.scim("POST", "/scim/flaky/Users", Some(&user_body("x"))).status, 201);
}

#[test]
fn a_flapping_connector_is_quarantined() {
    let dir = TempDir::new("flap");
    let fault = arm(&dir);
    let s = Supervisor::spawn(&two_apps("flap", &fault), dir.path());
    s.wait_admin_up();
    let c = s.wait_connector("flaky-users", Duration::from_secs(30), |c| c["state"] == "quarantined");
    assert!(c["incarnation"].as_u64().unwrap() >= 4, "{c}");
    assert!(c["last_exit"].as_str().unwrap().contains("code 1"), "{c}");
    assert_eq!(s.connector("demo-users")["restarts"], 0);
}

#[test]
fn kill_9_during_a_burst_of_creates_loses_nothing_and_duplicates_nothing() {
    let dir = TempDir::new("burst");
    // No UNIQUE constraint on user_name in the target: a duplicate would show.
    let config = e2e::quickstart_config().replace("user_name unique,", "user_name,");
    let s = Supervisor::start(&config, dir.path());
    let scim = s.scim;
    let clients: Vec<_> = (0..4)
        .map(|client| {
            std::thread::spawn(move || {
                (0..25)
                    .map(|i| {
                        let name = format!("user-{client}-{i}");
                        let created = create_retrying(scim, "demo", &name, Duration::from_secs(60));
                        (name, created)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    // Kill the connector three times while the clients write.
    let mut kills = 0;
    while kills < 3 {
        std::thread::sleep(Duration::from_millis(150));
        let c = s.connector("demo-users");
        if c["state"] == "ready" {
            signal(c["pid"].as_u64().unwrap() as u32, Signal::SIGKILL);
            kills += 1;
        }
    }
    let results: Vec<(String, Created)> = clients.into_iter().flat_map(|c| c.join().unwrap()).collect();
    assert_eq!(results.len(), 100);
    assert_exactly_once(&s, dir.path(), results.iter().map(|(name, _)| name));
    for (name, created) in &results {
        if let Created::Id(id) = created {
            let r = s.scim("GET", &format!("/scim/demo/Users/{id}"), None);
            assert_eq!(r.json()["userName"], name.as_str(), "the id the client got is the user's");
        }
    }
    // The last kill may come after the clients are done: its restart is counted when the
    // supervisor has seen the exit, which is waited for, not assumed.
    s.wait_connector("demo-users", Duration::from_secs(30), |c| c["restarts"].as_u64().unwrap_or(0) >= 3);
}

#[test]
fn supervisor_kill_9_and_restart_leaves_no_orphans_and_no_duplicates() {
    let dir = TempDir::new("supervisor-crash");
    let config = e2e::quickstart_config().replace("user_name unique,", "user_name,");
    let mut s = Supervisor::start(&config, dir.path());
    let child = s.connector("demo-users")["pid"].as_u64().unwrap() as u32;
    let scim = s.scim;
    let writer = std::thread::spawn(move || {
        // Writes until the supervisor dies; returns what the client saw succeed.
        let mut done = Vec::new();
        for i in 0..1000 {
            let name = format!("early-{i}");
            match e2e::post_user(scim, "demo", &name) {
                Ok(r) if r.status == 201 => done.push(name),
                _ => return (done, name),
            }
        }
        panic!("the supervisor was not killed");
    });
    std::thread::sleep(Duration::from_millis(300));
    s.kill_hard();
    let (done, interrupted) = writer.join().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while is_alive(child) {
        assert!(Instant::now() < deadline, "connector {child} outlived the supervisor");
        std::thread::sleep(Duration::from_millis(20));
    }

    // A new run on the same data: the client retries the create it never got an answer for.
    let s = Supervisor::start(&config, dir.path());
    assert_ne!(s.connector("demo-users")["pid"].as_u64().unwrap() as u32, child);
    create_retrying(s.scim, "demo", &interrupted, Duration::from_secs(30));
    assert_exactly_once(&s, dir.path(), done.iter().chain([&interrupted]));
}

/// The supervisor killed with SIGKILL again and again while clients create users (and retry,
/// as Entra does, until they get 201 or 409): every create a client saw succeed is in the
/// target and the connector space exactly once, and so is every create it retried to the end;
/// nothing else is in the target.
#[test]
fn supervisor_killed_in_a_loop_during_creates_loses_nothing_and_duplicates_nothing() {
    let dir = TempDir::new("supervisor-kill-loop");
    // No UNIQUE constraint on user_name in the target: a duplicate would show.
    let config = e2e::quickstart_config().replace("user_name unique,", "user_name,");
    let (scim, admin) = (e2e::free_addr(), e2e::free_addr());
    let mut s = Supervisor::spawn_at(&config, dir.path(), scim, admin);
    s.wait_ready(Duration::from_secs(30));
    let clients: Vec<_> = (0..4)
        .map(|client| {
            std::thread::spawn(move || {
                (0..60)
                    .map(|i| {
                        let name = format!("loop-{client}-{i}");
                        let created = create_retrying(scim, "demo", &name, Duration::from_secs(120));
                        (name, created)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    // Five kills, at uneven moments while the clients write; each time the supervisor starts
    // again on the same data and addresses.
    let mut kills = 0;
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    while kills < 5 && clients.iter().any(|c| !c.is_finished()) {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(Duration::from_millis(150 + rng % 450));
        s.kill_hard();
        kills += 1;
        s = Supervisor::spawn_at(&config, dir.path(), scim, admin);
        s.wait_ready(Duration::from_secs(30));
    }
    let results: Vec<(String, Created)> = clients.into_iter().flat_map(|c| c.join().unwrap()).collect();
    assert!(kills >= 3, "the clients finished before the supervisor was killed often enough ({kills})");
    assert_eq!(results.len(), 240);
    // Writes whose outcome the kills left unknown are settled when the connector is ready.
    let pending = |s: &Supervisor| s.connector("demo-users")["pending_writes"].as_i64().unwrap_or(-1);
    let deadline = Instant::now() + Duration::from_secs(30);
    while pending(&s) != 0 {
        assert!(Instant::now() < deadline, "pending writes never settled: {}", s.connector("demo-users"));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_exactly_once(&s, dir.path(), results.iter().map(|(name, _)| name));
    for (name, created) in &results {
        if let Created::Id(id) = created {
            let r = s.scim("GET", &format!("/scim/demo/Users/{id}"), None);
            assert_eq!(r.status, 200, "{name}: the id the client got ({id}) was lost");
            assert_eq!(r.json()["userName"], name.as_str(), "the id the client got is the user's");
        }
    }
    println!(
        "{kills} kills; {} of 240 creates answered 409 after a lost answer",
        results.iter().filter(|(_, c)| *c == Created::Conflict).count()
    );
}

#[test]
fn sigterm_under_load_finishes_in_flight_requests_and_leaves_no_child() {
    let dir = TempDir::new("sigterm");
    let mut s = Supervisor::start(&e2e::quickstart_config(), dir.path());
    let child = s.connector("demo-users")["pid"].as_u64().unwrap() as u32;
    let scim = s.scim;
    let writers: Vec<_> = (0..4)
        .map(|w| {
            std::thread::spawn(move || {
                let mut succeeded = Vec::new();
                for i in 0.. {
                    let name = format!("w{w}-{i}");
                    match e2e::post_user(scim, "demo", &name) {
                        Ok(r) if r.status == 201 => succeeded.push(name),
                        Ok(r) => panic!("during shutdown a request got {}: {}", r.status, r.body),
                        Err(_) => break, // the listener is closed
                    }
                }
                succeeded
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(400));
    signal(s.pid(), Signal::SIGTERM);
    let status = s.wait_exit(Duration::from_secs(20));
    assert!(status.success(), "exit {status:?}; log:\n{}", s.log());
    assert!(!is_alive(child), "connector outlived the shutdown");
    let succeeded: Vec<String> = writers.into_iter().flat_map(|w| w.join().unwrap()).collect();
    assert!(!succeeded.is_empty());
    let counts = counts(dir.path());
    for name in &succeeded {
        assert_eq!(counts.get(name), Some(&1), "{name} answered 201, so it is in the target once");
    }
    assert!(s.log().contains("stopped"), "orderly shutdown");
}

#[test]
fn config_naming_two_object_types_is_refused_clearly() {
    let dir = TempDir::new("two-types");
    let config =
        e2e::quickstart_config().replace("object_type = \"user\"", "object_type = [\"user\", \"group\"]");
    let mut s = Supervisor::spawn(&config, dir.path());
    assert_eq!(s.wait_exit(Duration::from_secs(10)).code(), Some(64));
    let log = s.log();
    assert!(log.contains("connectors.demo-users.object_type") && log.contains("exactly one"), "{log}");
    assert!(!dir.path().join("connector-space.db").exists(), "nothing started");
}

#[test]
fn secret_parameters_are_never_logged() {
    let dir = TempDir::new("secrets");
    let secret_file = dir.path().join("conn");
    let db = dir.path().join("demo.db");
    std::fs::write(&secret_file, format!("sqlite://{}\n", db.display())).unwrap();
    let config = e2e::quickstart_config().replace(
        "connection_string = \"sqlite://${data_dir}/demo.db\"",
        &format!("connection_string = {{ file = \"{}\" }}\ntable_typo = \"x\"", secret_file.display()),
    );
    let s = Supervisor::spawn(&config, dir.path());
    s.wait_admin_up();
    let c = s.wait_connector("demo-users", Duration::from_secs(20), |c| c["state"] != "starting");
    assert_eq!(c["state"], "failed_config", "an undeclared parameter is refused: {c}");
    let reason = c["reason"].as_str().unwrap();
    assert!(reason.contains("connectors.demo-users.parameters.table_typo"), "{reason}");
    let everything = format!("{}{}", s.log(), request(s.admin, "GET", "/admin/connectors", None, None).body);
    assert!(!everything.contains(&db.display().to_string()), "the secret connection string leaked");
}

#[test]
fn connectors_that_cannot_export_are_refused_for_an_app() {
    // An import-only connector (it says so in its capabilities) cannot serve an app's writes.
    let dir = TempDir::new("no-export");
    let config = quickstart_config().replacen(
        "executable = \"connector-sql\"",
        "executable = \"connector-faulty\"\nenv = { FAULT = \"no-export\" }",
        1,
    );
    let s = Supervisor::spawn(&config, dir.path());
    s.wait_admin_up();
    let c = s.wait_connector("demo-users", Duration::from_secs(20), |c| c["state"] != "starting");
    assert_eq!(c["state"], "failed_config", "{c}");
    assert!(c["reason"].as_str().unwrap().contains("does not support export"), "{c}");
    assert_eq!(c["protocol_version"], 1, "it answered Hello: {c}");
    assert!(c["connector_version"].as_str().unwrap().starts_with("connector-sql"), "{c}");
    assert_eq!(s.scim("POST", "/scim/demo/Users", Some(&user_body("x"))).status, 503);
}

#[test]
fn unreachable_target_degrades_without_restarts_and_recovers() {
    let dir = TempDir::new("degraded");
    // The database's directory is missing, as on a volume not mounted yet: the connector runs,
    // but its target cannot be reached.
    let config = e2e::quickstart_config()
        .replace("${data_dir}/demo.db", "${data_dir}/volume/demo.db")
        .replace("[connectors.demo-users]", "[connectors.demo-users]\nhealth_interval = \"300ms\"");
    let s = Supervisor::spawn(&config, dir.path());
    s.wait_admin_up();
    let c = s.wait_connector("demo-users", Duration::from_secs(20), |c| c["state"] != "starting");
    assert_eq!(c["state"], "degraded", "{c}");
    assert!(c["reason"].as_str().unwrap().contains("cannot connect to the database"), "{c}");
    let r = s.scim("POST", "/scim/demo/Users", Some(&user_body("ritchie")));
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.header("retry-after").is_some());
    std::thread::sleep(Duration::from_millis(1000));
    let c = s.connector("demo-users");
    assert_eq!(
        (c["state"].as_str(), c["restarts"].as_u64()),
        (Some("degraded"), Some(0)),
        "not restarted: {c}"
    );

    std::fs::create_dir(dir.path().join("volume")).unwrap();
    s.wait_connector("demo-users", Duration::from_secs(10), |c| c["state"] == "ready");
    assert_eq!(s.scim("POST", "/scim/demo/Users", Some(&user_body("ritchie"))).status, 201);
    assert_eq!(s.connector("demo-users")["restarts"], 0);
}

#[test]
fn a_second_sigterm_stops_at_once() {
    let dir = TempDir::new("second-sigterm");
    let fault = dir.path().join("fault-armed");
    let config = faulty_config("hang-export", &fault, "")
        .replace("call_timeout = \"2s\"", "call_timeout = \"60s\"")
        .replace("[server]", "[server]\nshutdown_timeout = \"60s\"");
    let mut s = Supervisor::start(&config, dir.path());
    let child = s.connector("demo-users")["pid"].as_u64().unwrap() as u32;
    std::fs::write(&fault, "armed").unwrap();
    let scim = s.scim;
    let stuck = std::thread::spawn(move || {
        e2e::try_request(scim, "POST", "/scim/demo/Users", Some(e2e::TOKEN), Some(&user_body("stuck")))
    });
    while fault.exists() {
        std::thread::sleep(Duration::from_millis(10)); // until the export hangs
    }
    signal(s.pid(), Signal::SIGTERM);
    std::thread::sleep(Duration::from_millis(300));
    assert!(is_alive(s.pid()), "the first SIGTERM waits for the hung request to drain");
    let second = Instant::now();
    signal(s.pid(), Signal::SIGTERM);
    s.wait_exit(Duration::from_secs(5));
    assert!(second.elapsed() < Duration::from_secs(5));
    let deadline = Instant::now() + Duration::from_secs(5);
    while is_alive(child) {
        assert!(Instant::now() < deadline, "connector {child} outlived the supervisor");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Killing the connector can fail the stuck call an instant before the process exits: the
    // request is then answered as unavailable (its outcome unknown), never as created.
    if let Ok(answer) = stuck.join().unwrap() {
        assert_eq!(answer.status, 503, "the stuck request was cut off or refused: {}", answer.body);
    }
}

/// Runs one statement on the connector space of a stopped supervisor, with string binds.
fn store_exec(data_dir: &Path, sql: &'static str, binds: &[&str]) {
    e2e::sqlite_exec(&data_dir.join("connector-space.db"), sql, binds);
}

/// Writes a pending record into the connector space, as a supervisor crash between recording a
/// create and learning its outcome leaves it.
fn insert_pending(data_dir: &Path, id: &str, user_name: &str) {
    store_exec(
        data_dir,
        "INSERT INTO objects (app, resource_type, id, connector, state, user_name, resource, target, version, \
         created, modified, name_key) VALUES ('demo', 'User', ?1, 'demo-users', 'pending', ?2, ?3, x'', 1, \
         '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z', lower(?2))",
        &[id, user_name, &user_body(user_name)],
    );
}

#[test]
fn pending_writes_left_by_a_crash_are_settled_when_the_connector_is_ready() {
    let dir = TempDir::new("settle");
    let mut s = Supervisor::start(&e2e::quickstart_config(), dir.path());
    // "wirth" reached the target before the crash; "backus" did not.
    create_retrying(s.scim, "demo", "wirth", Duration::from_secs(10));
    assert!(s.stop().success());
    store_exec(dir.path(), "DELETE FROM objects WHERE user_name = ?1", &["wirth"]);
    insert_pending(dir.path(), "id-wirth", "wirth");
    insert_pending(dir.path(), "id-backus", "backus");

    // No client retries: the supervisor settles both on its own once the connector is ready.
    let s = Supervisor::start(&e2e::quickstart_config(), dir.path());
    let c = s.wait_connector("demo-users", Duration::from_secs(10), |c| c["pending_writes"] == 0);
    assert_eq!(c["state"], "ready");
    let r = s.scim("GET", "/scim/demo/Users/id-wirth", None);
    assert_eq!(r.status, 200, "found in the target: confirmed under its id: {}", r.body);
    assert_eq!(r.json()["userName"], "wirth");
    assert_eq!(s.scim("GET", "/scim/demo/Users/id-backus", None).status, 404, "not in the target: dropped");
    assert_eq!(user_names(dir.path()), ["wirth"]);
    // The confirmed record has its anchor: it can be changed and deleted.
    assert_eq!(s.scim("DELETE", "/scim/demo/Users/id-wirth", None).status, 204);
    assert!(user_names(dir.path()).is_empty());
}
