//! The connector space on an operator's bad day, against the real binaries: a damaged store file
//! is refused at start with what to do, `supervisor store check` finds it and `supervisor store
//! rebuild` rebuilds it from the target; a full filesystem under a burst of creates loses no
//! acknowledged create and answers 503 with Retry-After while it lasts.

use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use e2e::{Supervisor, TempDir, binary, quickstart_config, request, sqlite_rows, user_body};

fn supervisor_cli(args: &[&str]) -> std::process::Output {
    Command::new(binary("supervisor")).args(args).output().expect("run supervisor")
}

fn damage(path: &Path, offset: u64, len: usize) {
    let mut file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.seek(SeekFrom::Start(offset)).unwrap();
    let noise: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(151).wrapping_add(7)).collect();
    file.write_all(&noise).unwrap();
}

#[test]
fn a_damaged_store_is_refused_checked_and_rebuilt_from_the_target() {
    let dir = TempDir::new("store-damaged");
    let mut s = Supervisor::start(&quickstart_config(), dir.path());
    for i in 0..40 {
        let r = s.scim("POST", "/scim/demo/Users", Some(&user_body(&format!("kept-{i}"))));
        assert_eq!(r.status, 201, "{}", r.body);
    }
    assert!(s.stop().success());
    let store = dir.path().join("connector-space.db");
    let config = dir.path().join("supervisor.toml");
    let (config, data_dir) = (config.to_str().unwrap(), dir.path().to_str().unwrap());
    let check = supervisor_cli(&["store", "check", "--config", config, "--data-dir", data_dir]);
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));

    // 4 KiB of noise over the first table's root page, while stopped.
    damage(&store, 4096, 4096);
    let mut refused = Supervisor::spawn(&quickstart_config(), dir.path());
    let status = refused.wait_exit(Duration::from_secs(20));
    assert!(!status.success(), "a damaged store is not served");
    let log = refused.log();
    assert!(log.contains("damaged") && log.contains("supervisor store rebuild"), "{log}");

    let check = supervisor_cli(&["store", "check", "--config", config, "--data-dir", data_dir]);
    assert_eq!(check.status.code(), Some(1), "{}", String::from_utf8_lossy(&check.stdout));
    assert!(String::from_utf8_lossy(&check.stderr).contains("damaged"));

    let rebuild = supervisor_cli(&["store", "rebuild", "--config", config, "--data-dir", data_dir]);
    let out = String::from_utf8_lossy(&rebuild.stdout).to_string();
    assert!(rebuild.status.success(), "{out}{}", String::from_utf8_lossy(&rebuild.stderr));
    assert!(out.contains("kept at"), "{out}");
    let kept = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().starts_with("connector-space.db.damaged-"));
    assert!(kept, "the damaged file is kept for the operator");

    // The next start imports the target in full: every user is served again.
    let s = Supervisor::start(&quickstart_config(), dir.path());
    e2e::wait_until(Duration::from_secs(20), "the import to bring every user back", || {
        let r = s.scim("GET", "/scim/demo/Users?count=1000", None);
        r.status == 200 && r.json()["totalResults"] == 40
    });
    let r = s.scim("GET", "/scim/demo/Users?filter=userName+eq+%22kept-7%22", None);
    assert_eq!(r.json()["totalResults"], 1, "{}", r.body);
    // The marker goes once every connector's full import has succeeded (users and groups).
    e2e::wait_until(Duration::from_secs(20), "the rebuild marker to go", || {
        !dir.path().join("connector-space.rebuild").exists()
    });
    // A sound store is left alone.
    let again = supervisor_cli(&["store", "rebuild", "--config", config, "--data-dir", data_dir]);
    assert!(!again.status.success(), "refused while the supervisor runs");
    drop(s);
}

/// A tmpfs of `size` mounted at `path` for the test's life (unmounted, lazily, on drop). Needs
/// root (the test command runs as root; without it the test fails, saying so).
struct SmallFilesystem(std::path::PathBuf);

impl SmallFilesystem {
    fn mount(path: &Path, size: &str) -> Self {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test mounts a small tmpfs to fill: run it as root (scripts/test-all.sh does)"
        );
        std::fs::create_dir_all(path).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .status()
            .expect("run mount");
        assert!(status.success(), "mount -t tmpfs failed");
        Self(path.to_path_buf())
    }
}

impl Drop for SmallFilesystem {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the filesystem holding `dir` with a file of zeros until it is full; returns the file.
fn fill(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).unwrap();
    let block = vec![0u8; 16 * 1024];
    while file.write_all(&block).is_ok() {}
    let small = [0u8; 512];
    while file.write_all(&small).is_ok() {}
    let _ = file.sync_all();
    path
}

/// The fault campaign's bad day: the data directory (connector space and the SQLite target) on a
/// small filesystem, filled while 8 clients create users, then freed. (16 MB rather than the
/// campaign's 3: the two write-ahead logs under a burst take several MB of their own, and on a
/// smaller disk they can take back the freed room before a checkpoint folds them, which only
/// freeing other files can clear. 8 MB did until records gained their anchor and reference
/// indexes: each write's transaction then carries two more pages, and one run in five wedged.)
/// Every create answered 201 must be in the target exactly once, and the others must have been
/// told to retry (503 with Retry-After); the service must be ready again by itself.
#[test]
fn a_full_disk_under_a_burst_loses_no_acknowledged_create() {
    let dir = TempDir::new("store-full-disk");
    let fs = SmallFilesystem::mount(&dir.path().join("fs"), "16m");
    let data = fs.0.clone();
    // The log and the configuration elsewhere (as journald would hold the log).
    let s = Supervisor::start_with_data_dir(&quickstart_config(), dir.path(), &data);
    for i in 0..20 {
        let r = s.scim("POST", "/scim/demo/Users", Some(&user_body(&format!("before-{i}"))));
        assert_eq!(r.status, 201, "{}", r.body);
    }
    // 8 clients create users all along; meanwhile the filesystem is filled, stays full for a
    // while, and is freed again, so that writes fail and succeed around the moments it fills
    // and frees (inside transactions, at commits), as on a real bad day.
    let acknowledged = std::sync::Mutex::new(Vec::<String>::new());
    let refused = std::sync::atomic::AtomicUsize::new(0);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let mut readyz_while_full = 0;
    std::thread::scope(|scope| {
        for t in 0..8 {
            let (s, acknowledged, refused, stop) = (&s, &acknowledged, &refused, &stop);
            scope.spawn(move || {
                let mut i = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let name = format!("burst-{t}-{i}");
                    i += 1;
                    let r = s.scim("POST", "/scim/demo/Users", Some(&user_body(&name)));
                    match r.status {
                        201 => acknowledged.lock().unwrap().push(name),
                        503 => {
                            assert!(r.header("retry-after").is_some(), "503 without Retry-After: {}", r.body);
                            refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        other => panic!("{name}: {other} {}", r.body),
                    }
                }
            });
        }
        // The clients stop however this ends (a failed wait below included), or the scope
        // would wait for them forever.
        struct StopOnDrop<'a>(&'a std::sync::atomic::AtomicBool);
        impl Drop for StopOnDrop<'_> {
            fn drop(&mut self) {
                self.0.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        }
        let _stop = StopOnDrop(&stop);
        let acknowledged_so_far = || acknowledged.lock().unwrap().len();
        e2e::wait_until(Duration::from_secs(30), "creates under way before the fill", || {
            acknowledged_so_far() >= 40
        });
        let filler = fill(&data);
        // Full for as long as it takes many creates to be refused and the service to say so.
        e2e::wait_until(Duration::from_secs(30), "creates refused and /readyz 503 while full", || {
            readyz_while_full = request(s.admin, "GET", "/readyz", None, None).status;
            refused.load(std::sync::atomic::Ordering::Relaxed) >= 100 && readyz_while_full == 503
        });
        std::fs::remove_file(&filler).unwrap();
        // Freed under the same burst, until it has taken many more creates.
        let before = acknowledged_so_far();
        e2e::wait_until(Duration::from_secs(30), "creates acknowledged again once freed", || {
            acknowledged_so_far() >= before + 40
        });
    });
    let refused = refused.into_inner();
    assert!(refused > 0, "the full disk refused some creates");
    // Not ready while the disk is full: the connector space, or the connector, says so.
    assert_eq!(readyz_while_full, 503, "not ready while the disk is full");

    // Back to ready by itself, and creates work again.
    e2e::wait_until(Duration::from_secs(30), "ready again once the disk has room", || {
        request(s.admin, "GET", "/readyz", None, None).status == 200
    });
    let mut acknowledged = acknowledged.into_inner().unwrap();
    let during = acknowledged.len();
    for i in 0..10 {
        let name = format!("after-{i}");
        let created = e2e::create_retrying(s.scim, "demo", &name, Duration::from_secs(20));
        assert!(matches!(created, e2e::Created::Id(_)), "{name}");
        acknowledged.push(name);
    }
    // Every acknowledged create is served, and is a row of the target, committed: read by
    // another connection, while the supervisor still runs, and again after it stopped.
    let rows = |db: &Path| -> Vec<String> {
        sqlite_rows(db, "SELECT user_name FROM users")
            .into_iter()
            .map(|r| r["user_name"].as_str().unwrap().to_string())
            .collect()
    };
    let db = data.join("demo.db");
    let mut s = s;
    for pass in ["running", "stopped"] {
        let names = rows(&db);
        for name in &acknowledged {
            assert_eq!(names.iter().filter(|n| *n == name).count(), 1, "{pass}: {name} once in the target");
        }
        if pass == "running" {
            for name in &acknowledged {
                let r = s.scim("GET", &format!("/scim/demo/Users?filter=userName+eq+%22{name}%22"), None);
                assert_eq!(r.json()["totalResults"], 1, "{name} served");
            }
            assert!(s.stop().success());
        }
    }
    eprintln!("full disk: {during} creates acknowledged during the burst, {refused} refused with 503");
}

/// SQLite ends a transaction by itself on some failures (a full disk, `RAISE(ROLLBACK)`) and keeps
/// it on others; sqlx's bookkeeping then counts one transaction too many, and a connection that
/// went on being used sat inside a transaction that its commits never ended: creates answered
/// 201 and never committed, every other writer "database is locked". Triggers make both
/// failures at will: a connection that cannot be trusted must be dropped, never reused.
#[test]
fn a_target_connection_left_inside_a_transaction_is_dropped_not_reused() {
    let dir = TempDir::new("store-drifted-tx");
    let mut s = Supervisor::start(&quickstart_config(), dir.path());
    let db = dir.path().join("demo.db");
    assert_eq!(s.scim("POST", "/scim/demo/Users", Some(&user_body("first"))).status, 201);
    e2e::sqlite_exec(
        &db,
        "CREATE TRIGGER boom BEFORE INSERT ON users WHEN NEW.user_name LIKE 'boom%' \
         BEGIN SELECT RAISE(ROLLBACK, 'boom'); END",
        &[],
    );
    e2e::sqlite_exec(
        &db,
        "CREATE TRIGGER nope BEFORE INSERT ON users WHEN NEW.user_name LIKE 'abort%' \
         BEGIN SELECT RAISE(ABORT, 'nope'); END",
        &[],
    );
    // Twice the pool's four connections of each: every pooled connection meets both.
    for prefix in ["boom", "abort"] {
        for i in 0..8 {
            let r = s.scim("POST", "/scim/demo/Users", Some(&user_body(&format!("{prefix}-{i}"))));
            assert_ne!(r.status, 201, "{prefix}-{i}: {}", r.body);
        }
    }
    for i in 0..10 {
        let r = s.scim("POST", "/scim/demo/Users", Some(&user_body(&format!("ok-{i}"))));
        assert_eq!(r.status, 201, "ok-{i}: {}", r.body);
    }
    // Committed: another connection sees the rows, and can write itself (nothing holds the lock).
    assert_eq!(sqlite_rows(&db, "SELECT 1 FROM users WHERE user_name LIKE 'ok-%'").len(), 10);
    e2e::sqlite_exec(&db, "INSERT INTO users (id, user_name) VALUES (?1, ?2)", &["outside-1", "outside"]);
    assert!(s.stop().success());
    assert_eq!(sqlite_rows(&db, "SELECT 1 FROM users WHERE user_name LIKE 'ok-%'").len(), 10);
}

/// Only the target on a small filesystem, filled: one create after another (deterministic,
/// where the burst above is random) each meets SQLITE_FULL at an insert or a commit on every
/// pooled connection; each is answered 503 with Retry-After, and once space is back every
/// create is committed.
#[test]
fn a_full_target_disk_is_503_and_every_later_create_is_committed() {
    let dir = TempDir::new("store-full-target");
    let fs = SmallFilesystem::mount(&dir.path().join("target-fs"), "1m");
    let db = fs.0.join("demo.db");
    let config =
        quickstart_config().replace("sqlite://${data_dir}/demo.db", &format!("sqlite://{}", db.display()));
    let mut s = Supervisor::start(&config, dir.path());
    for i in 0..20 {
        assert_eq!(s.scim("POST", "/scim/demo/Users", Some(&user_body(&format!("before-{i}")))).status, 201);
    }
    let filler = fill(&fs.0);
    for i in 0..16 {
        let r = s.scim("POST", "/scim/demo/Users", Some(&user_body(&format!("full-{i}"))));
        assert_eq!(r.status, 503, "full-{i}: {}", r.body);
        assert!(r.header("retry-after").is_some(), "{}", r.body);
    }
    // The connector says its target cannot take writes (after a few failures in a row; a health
    // check that still passes may make it ready again for the next few, which fail again).
    let mut tries = 0;
    e2e::wait_until(Duration::from_secs(20), "the connector to be degraded", || {
        tries += 1;
        let r = s.scim("POST", "/scim/demo/Users", Some(&user_body(&format!("full-more-{tries}"))));
        assert_eq!(r.status, 503, "{}", r.body);
        s.connector("demo-users")["state"] == "degraded"
    });
    std::fs::remove_file(&filler).unwrap();
    let mut acknowledged: Vec<String> = (0..20).map(|i| format!("before-{i}")).collect();
    for i in 0..20 {
        let name = format!("after-{i}");
        let created = e2e::create_retrying(s.scim, "demo", &name, Duration::from_secs(20));
        assert!(matches!(created, e2e::Created::Id(_)), "{name}");
        acknowledged.push(name);
    }
    s.wait_connector("demo-users", Duration::from_secs(20), |c| c["state"] == "ready");
    let names = |db: &Path| -> Vec<String> {
        sqlite_rows(db, "SELECT user_name FROM users")
            .into_iter()
            .map(|r| r["user_name"].as_str().unwrap().to_string())
            .collect()
    };
    let running = names(&db);
    e2e::sqlite_exec(&db, "INSERT INTO users (id, user_name) VALUES (?1, ?2)", &["outside-1", "outside"]);
    assert!(s.stop().success());
    let stopped = names(&db);
    for name in &acknowledged {
        assert!(running.contains(name), "{name} committed while running");
        assert!(stopped.contains(name), "{name} still there after the stop");
    }
    assert!(!stopped.iter().any(|n| n.starts_with("full-")), "no refused create was written");
}
