//! The connector space on an operator's bad day, against the real binaries: a damaged store file
//! is refused at start with what to do, `supervisor store check` finds it and `supervisor store
//! rebuild` rebuilds it from the target; a full filesystem under a burst of creates loses no
//! acknowledged create and answers 503 with Retry-After while it lasts.

use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use e2e::{Supervisor, TempDir, binary, quickstart_config, user_body};

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
    assert!(!dir.path().join("connector-space.rebuild").exists(), "the marker is gone once used");
    // A sound store is left alone.
    let again = supervisor_cli(&["store", "rebuild", "--config", config, "--data-dir", data_dir]);
    assert!(!again.status.success(), "refused while the supervisor runs");
    drop(s);
}
