//! Zero-downtime connector upgrades: the executable replaced on disk under a steady stream of
//! SCIM creates, then `POST /admin/connectors/<name>/reload` (or SIGHUP): the new incarnation
//! starts beside the old one, takes over, and the old one is drained; not one request fails. A
//! bad new binary leaves the old one serving, and the answer says why.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use e2e::{Supervisor, TempDir, binary, is_alive, post_user, quickstart_config, request, signal, wait_until};

/// Installs `source` at `path` the way an operator should: a copy beside it, renamed over it.
fn install(source: &Path, path: &Path) {
    let staged = path.with_extension("new");
    std::fs::copy(source, &staged).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::rename(&staged, path).unwrap();
}

fn incarnation_and_pid(s: &Supervisor) -> (u64, u64) {
    let c = s.connector("demo-users");
    (c["incarnation"].as_u64().unwrap(), c["pid"].as_u64().unwrap_or(0))
}

#[test]
fn a_connector_swapped_under_load_loses_no_request() {
    let dir = TempDir::new("upgrade");
    let installed = dir.path().join("bin").join("connector-sql");
    std::fs::create_dir_all(installed.parent().unwrap()).unwrap();
    install(&binary("connector-sql"), &installed);
    let config = quickstart_config().replacen(
        "executable = \"connector-sql\"",
        &format!("executable = \"{}\"", installed.display()),
        1,
    );
    let s = Supervisor::start(&config, dir.path());
    let (first, old_pid) = incarnation_and_pid(&s);

    // A steady stream of creates from four clients, each status kept, the answers counted.
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..4)
        .map(|c| {
            let (stop, answered, scim) = (stop.clone(), answered.clone(), s.scim);
            std::thread::spawn(move || {
                let mut statuses = Vec::new();
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let status =
                        post_user(scim, "demo", &format!("stream-{c}-{i}")).map(|r| r.status).unwrap_or(0);
                    statuses.push(status);
                    answered.fetch_add(1, Ordering::SeqCst);
                    i += 1;
                }
                statuses
            })
        })
        .collect();
    // Between the steps, the stream goes on for a while: 20 more answers.
    let more = || {
        let from = answered.load(Ordering::SeqCst);
        wait_until(Duration::from_secs(30), "the stream to go on", || {
            answered.load(Ordering::SeqCst) >= from + 20
        });
    };
    more();

    // The upgrade: a new file on disk, then the reload.
    install(&binary("connector-sql"), &installed);
    let r = request(s.admin, "POST", "/admin/connectors/demo-users/reload", None, None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["incarnation"], first + 1, "{}", r.body);
    let (now, new_pid) = incarnation_and_pid(&s);
    assert_eq!(now, first + 1);
    assert_ne!(new_pid, old_pid);
    more();

    // A bad new binary: it cannot even start; the old one goes on serving.
    let bad = dir.path().join("bad-connector");
    std::fs::write(&bad, "#!/bin/sh\necho 'this is not a connector' >&2\nexit 1\n").unwrap();
    install(&bad, &installed);
    let r = request(s.admin, "POST", "/admin/connectors/demo-users/reload", None, None);
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(r.json()["error"].as_str().unwrap().contains("the old one goes on serving"), "{}", r.body);
    assert_eq!(incarnation_and_pid(&s), (first + 1, new_pid), "the serving incarnation is untouched");
    more();

    // The good one again, by SIGHUP this time.
    install(&binary("connector-sql"), &installed);
    signal(s.pid(), nix::sys::signal::Signal::SIGHUP);
    wait_until(Duration::from_secs(20), "SIGHUP to reload", || incarnation_and_pid(&s).0 == first + 2);
    more();
    stop.store(true, Ordering::Relaxed);

    let statuses: Vec<u16> = clients.into_iter().flat_map(|c| c.join().unwrap()).collect();
    let failed: Vec<&u16> = statuses.iter().filter(|s| **s != 201).collect();
    assert!(statuses.len() > 20, "the stream ran: {} requests", statuses.len());
    assert!(failed.is_empty(), "{} of {} requests failed: {failed:?}", failed.len(), statuses.len());
    // The old children were drained and stopped.
    wait_until(Duration::from_secs(10), "the old incarnations to stop", || {
        !is_alive(old_pid as u32) && !is_alive(new_pid as u32)
    });
    let users = s.scim("GET", "/scim/demo/Users?count=0", None).json();
    assert_eq!(users["totalResults"], statuses.len(), "every create is there once");
}

/// A reload reads the configuration again: a connector's parameters change without a restart
/// (here, the database it writes to); a change of what decides where objects go (the object
/// type) is refused with the reason, as is a file with problems; the serving incarnation stays.
#[test]
fn a_reload_takes_a_changed_configuration() {
    let dir = TempDir::new("reload-config");
    let s = Supervisor::start(&quickstart_config(), dir.path());
    let config_file = dir.path().join("supervisor.toml");
    let reload = || request(s.admin, "POST", "/admin/connectors/demo-users/reload", None, None);
    let (first, _) = incarnation_and_pid(&s);

    // Another database for the users: the next creates land there.
    let moved = quickstart_config().replacen("${data_dir}/demo.db", "${data_dir}/moved.db", 1);
    std::fs::write(&config_file, &moved).unwrap();
    let r = reload();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(incarnation_and_pid(&s).0, first + 1);
    assert_eq!(post_user(s.scim, "demo", "after-move").unwrap().status, 201);
    let rows = e2e::sqlite_rows(&dir.path().join("moved.db"), "SELECT user_name FROM users");
    assert_eq!(rows, vec![serde_json::json!({"user_name": "after-move"})]);

    // What decides where objects go cannot change under a running supervisor.
    std::fs::write(&config_file, moved.replacen("object_type = \"user\"", "object_type = \"account\"", 1))
        .unwrap();
    let r = reload();
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(r.body.contains("object_type changed") && r.body.contains("needs a restart"), "{}", r.body);
    // A file with problems reloads nothing, and says what they are.
    std::fs::write(&config_file, moved.replacen("[apps.demo]", "[apps.demo]\ncolour = \"blue\"", 1)).unwrap();
    let r = reload();
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(r.body.contains("the configuration was not reloaded") && r.body.contains("colour"), "{}", r.body);
    assert_eq!(incarnation_and_pid(&s).0, first + 1, "the serving incarnation stayed");
    assert_eq!(post_user(s.scim, "demo", "still-serving").unwrap().status, 201);
}
