//! The walking skeleton end to end: SCIM over HTTP into the real supervisor, through a real
//! `connector-sql` child process, into a real SQLite file.

use std::time::{Duration, Instant};

use e2e::{Supervisor, TempDir, is_alive, quickstart_config, sqlite_rows};
use serde_json::{Value, json};

fn user(name: &str) -> String {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": name,
        "name": {"givenName": "Ada", "familyName": "Lovelace"},
        "displayName": "Ada Lovelace",
        "emails": [{"value": format!("{name}@example.com"), "type": "work", "primary": true}],
        "active": true
    })
    .to_string()
}

fn rows(s: &Supervisor) -> Vec<Value> {
    sqlite_rows(&s.data_dir.join("demo.db"), "SELECT * FROM users ORDER BY user_name")
}

fn create(s: &Supervisor, name: &str) -> Value {
    let r = s.scim("POST", "/scim/demo/Users", Some(&user(name)));
    assert_eq!(r.status, 201, "{}", r.body);
    r.json()
}

#[test]
fn crud_cycle_reaches_the_sqlite_table() {
    let dir = TempDir::new("crud");
    let s = Supervisor::start(&quickstart_config(), dir.path());

    // Create.
    let r = s.scim("POST", "/scim/demo/Users", Some(&user("ada")));
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.header("content-type"), Some("application/scim+json"));
    let created = r.json();
    let id = created["id"].as_str().expect("id").to_string();
    let location = r.header("location").expect("Location header");
    assert!(location.ends_with(&format!("/scim/demo/Users/{id}")), "{location}");
    assert_eq!(created["meta"]["resourceType"], "User");
    let table = rows(&s);
    assert_eq!(table.len(), 1);
    assert_eq!(table[0]["user_name"], "ada");
    assert_eq!(table[0]["given_name"], "Ada");
    assert_eq!(table[0]["email"], "ada@example.com");
    assert_eq!(table[0]["active"], 1);

    // Read, and filter.
    let r = s.scim("GET", &format!("/scim/demo/Users/{id}"), None);
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["userName"], "ada");
    let r = s.scim("GET", "/scim/demo/Users?filter=userName%20eq%20%22ADA%22", None);
    assert_eq!(r.status, 200);
    let list = r.json();
    assert_eq!(list["totalResults"], 1);
    assert_eq!(list["Resources"][0]["id"], id.as_str());
    let r = s.scim("GET", "/scim/demo/Users?filter=userName%20eq%20%22nobody%22", None);
    assert_eq!(r.json()["totalResults"], 0);
    let r = s.scim("GET", "/scim/demo/Users?filter=userName%20eq", None);
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["scimType"], "invalidFilter");

    // PATCH as Entra sends it: capitalised op, boolean as a string.
    let patch = json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [
            {"op": "Replace", "path": "active", "value": "False"},
            {"op": "replace", "path": "name.givenName", "value": "Augusta"},
            {"op": "Add", "value": {"displayName": "Augusta Ada King"}}
        ]
    });
    let r = s.scim("PATCH", &format!("/scim/demo/Users/{id}"), Some(&patch.to_string()));
    assert_eq!(r.status, 200, "{}", r.body);
    let patched = r.json();
    assert_eq!(patched["active"], false);
    assert_eq!(patched["name"]["givenName"], "Augusta");
    assert_eq!(patched["meta"]["version"], "W/\"2\"");
    let table = rows(&s);
    assert_eq!(table[0]["active"], 0);
    assert_eq!(table[0]["given_name"], "Augusta");
    assert_eq!(table[0]["display_name"], "Augusta Ada King");

    // PUT replaces: attributes left out are cleared in the target.
    let put =
        json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "ada", "active": true});
    let r = s.scim("PUT", &format!("/scim/demo/Users/{id}"), Some(&put.to_string()));
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.json().get("name").is_none());
    let table = rows(&s);
    assert_eq!(table[0]["given_name"], Value::Null);
    assert_eq!(table[0]["email"], Value::Null);
    assert_eq!(table[0]["active"], 1);

    // A second user with the same userName is refused and writes nothing.
    let r = s.scim("POST", "/scim/demo/Users", Some(&user("ADA")));
    assert_eq!(r.status, 409, "{}", r.body);
    assert_eq!(r.json()["scimType"], "uniqueness");
    assert_eq!(rows(&s).len(), 1);

    // Delete.
    let r = s.scim("DELETE", &format!("/scim/demo/Users/{id}"), None);
    assert_eq!(r.status, 204);
    assert!(rows(&s).is_empty());
    let r = s.scim("GET", &format!("/scim/demo/Users/{id}"), None);
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["schemas"][0], "urn:ietf:params:scim:api:messages:2.0:Error");
    assert_eq!(s.scim("DELETE", &format!("/scim/demo/Users/{id}"), None).status, 404);
    assert_eq!(s.scim("PATCH", "/scim/demo/Users/no-such-id", Some(&patch.to_string())).status, 404);
}

#[test]
fn quickstart_runs_unchanged_with_its_default_data_dir() {
    // As the README runs it: from a working directory, no --data-dir.
    let dir = TempDir::new("default-dir");
    let s = Supervisor::start_with_default_data_dir(&quickstart_config(), dir.path());
    create(&s, "knuth");
    assert!(dir.path().join("supervisor-data/connector-space.db").is_file());
    let table = rows(&s);
    assert_eq!(table.len(), 1);
    assert_eq!(table[0]["user_name"], "knuth");
}

#[test]
fn requests_without_a_valid_token_get_401() {
    let dir = TempDir::new("auth");
    let s = Supervisor::start(&quickstart_config(), dir.path());
    for token in [None, Some("wrong-token"), Some("")] {
        let r = e2e::request(s.scim, "POST", "/scim/demo/Users", token, Some(&user("mallory")));
        assert_eq!(r.status, 401, "token {token:?}");
        assert_eq!(r.json()["status"], "401");
        assert!(r.header("www-authenticate").is_some_and(|v| v.starts_with("Bearer")));
    }
    let r = e2e::request(s.scim, "GET", "/scim/demo/Users", None, None);
    assert_eq!(r.status, 401);
    assert!(rows(&s).is_empty(), "nothing was written");
}

#[test]
fn malformed_json_gets_a_scim_400_and_loses_nothing() {
    let dir = TempDir::new("malformed");
    let s = Supervisor::start(&quickstart_config(), dir.path());
    create(&s, "grace");
    for body in ["{\"schemas\": [", "not json", "[1, 2]"] {
        let r = s.scim("POST", "/scim/demo/Users", Some(body));
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        assert_eq!(r.header("content-type"), Some("application/scim+json"));
        let error = r.json();
        assert_eq!(error["scimType"], "invalidSyntax");
        assert_eq!(error["schemas"][0], "urn:ietf:params:scim:api:messages:2.0:Error");
    }
    let r = s.scim(
        "POST",
        "/scim/demo/Users",
        Some(r#"{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"]}"#),
    );
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["scimType"], "invalidValue");
    let table = rows(&s);
    assert_eq!(table.len(), 1, "the earlier user is intact and nothing was added");
    assert_eq!(table[0]["user_name"], "grace");
}

#[test]
fn user_keeps_its_id_across_a_supervisor_restart() {
    let dir = TempDir::new("restart");
    let mut s = Supervisor::start(&quickstart_config(), dir.path());
    let id = create(&s, "hopper")["id"].as_str().unwrap().to_string();
    assert!(s.stop().success(), "clean shutdown; log:\n{}", s.log());

    let s = Supervisor::start(&quickstart_config(), dir.path());
    let r = s.scim("GET", &format!("/scim/demo/Users/{id}"), None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["userName"], "hopper");
    let r = s.scim("GET", "/scim/demo/Users?filter=userName%20eq%20%22hopper%22", None);
    assert_eq!(r.json()["Resources"][0]["id"], id.as_str());
    // Still writable through the new connector child: the stored anchor still finds the row.
    let patch = r#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","path":"displayName","value":"Grace Hopper"}]}"#;
    assert_eq!(s.scim("PATCH", &format!("/scim/demo/Users/{id}"), Some(patch)).status, 200);
    let table = rows(&s);
    assert_eq!(table.len(), 1);
    assert_eq!(table[0]["display_name"], "Grace Hopper");
}

#[test]
fn killed_connector_is_restarted_and_nothing_is_lost_or_duplicated() {
    let dir = TempDir::new("kill");
    let s = Supervisor::start(&quickstart_config(), dir.path());
    let first = create(&s, "turing");
    let before = s.connector("demo-users");
    assert_eq!(before["state"], "ready");
    let old_pid = before["pid"].as_u64().expect("pid") as u32;
    let restarts = before["restarts"].as_u64().unwrap();

    nix::sys::signal::kill(nix::unistd::Pid::from_raw(old_pid as i32), nix::sys::signal::Signal::SIGKILL)
        .unwrap();

    // The client retries until the connector is back, as Entra does.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut unavailable = 0;
    let created = loop {
        let r = s.scim("POST", "/scim/demo/Users", Some(&user("church")));
        match r.status {
            201 => break r.json(),
            503 => {
                unavailable += 1;
                let after: u64 = r.header("retry-after").expect("503 carries Retry-After").parse().unwrap();
                assert!(after >= 1);
            }
            other => panic!("unexpected {other}: {}", r.body),
        }
        assert!(Instant::now() < deadline, "connector never came back; log:\n{}", s.log());
        std::thread::sleep(Duration::from_millis(50));
    };
    let after = s.wait_connector("demo-users", Duration::from_secs(10), |c| c["state"] == "ready");
    assert_eq!(after["restarts"].as_u64().unwrap(), restarts + 1, "{after}");
    assert_ne!(after["pid"].as_u64().unwrap() as u32, old_pid);
    assert!(!is_alive(old_pid));
    eprintln!("503 answers while the connector was down: {unavailable}");

    // A client retry of the create that succeeded is refused, not duplicated.
    assert_eq!(s.scim("POST", "/scim/demo/Users", Some(&user("church"))).status, 409);
    let table = rows(&s);
    let names: Vec<_> = table.iter().map(|r| r["user_name"].as_str().unwrap()).collect();
    assert_eq!(names, ["church", "turing"]);
    // Both users are served, with their ids.
    for u in [&first, &created] {
        let r = s.scim("GET", &format!("/scim/demo/Users/{}", u["id"].as_str().unwrap()), None);
        assert_eq!(r.status, 200);
    }
}

#[test]
fn writes_get_503_with_retry_after_while_the_connector_is_down_and_reads_still_work() {
    let dir = TempDir::new("down");
    // A long backoff keeps the connector down long enough to look.
    let config =
        format!("{}\n[connectors.demo-users.restart]\ninitial_backoff = \"6s\"\n", quickstart_config());
    let s = Supervisor::start(&config, dir.path());
    let id = create(&s, "lamport")["id"].as_str().unwrap().to_string();
    // The first exit within the restart window is restarted at once; the second waits the
    // backoff (6 s here).
    for incarnation in [1, 2] {
        let c = s.wait_connector("demo-users", Duration::from_secs(10), |c| {
            c["state"] == "ready" && c["incarnation"] == incarnation
        });
        let pid = c["pid"].as_u64().unwrap() as i32;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();
    }
    s.wait_connector("demo-users", Duration::from_secs(10), |c| c["state"] == "backoff");

    let r = s.scim("POST", "/scim/demo/Users", Some(&user("dijkstra")));
    assert_eq!(r.status, 503, "{}", r.body);
    let retry_after: u64 = r.header("retry-after").expect("Retry-After").parse().unwrap();
    assert!((1..=8).contains(&retry_after), "Retry-After {retry_after}");
    assert_eq!(r.json()["status"], "503");
    let r = s.scim("DELETE", &format!("/scim/demo/Users/{id}"), None);
    assert_eq!(r.status, 503);

    // Reads are answered from the connector space, without the connector.
    let r = s.scim("GET", &format!("/scim/demo/Users/{id}"), None);
    assert_eq!(r.status, 200);
    let ready = e2e::request(s.admin, "GET", "/readyz", None, None);
    assert_eq!(ready.status, 503);

    s.wait_connector("demo-users", Duration::from_secs(20), |c| c["state"] == "ready");
    create(&s, "dijkstra");
    let names: Vec<_> = rows(&s).iter().map(|r| r["user_name"].as_str().unwrap().to_string()).collect();
    assert_eq!(names, ["dijkstra", "lamport"], "the refused writes left nothing behind");
}

#[test]
fn connector_children_die_with_the_supervisor() {
    let dir = TempDir::new("orphans");
    let mut s = Supervisor::start(&quickstart_config(), dir.path());
    let child = s.connector("demo-users")["pid"].as_u64().unwrap() as u32;
    assert!(is_alive(child));
    s.kill_hard();
    let deadline = Instant::now() + Duration::from_secs(5);
    while is_alive(child) {
        assert!(Instant::now() < deadline, "connector {child} outlived a SIGKILLed supervisor");
        std::thread::sleep(Duration::from_millis(20));
    }

    // A graceful stop takes the child down too, and a new run starts fresh children.
    let mut s = Supervisor::start(&quickstart_config(), dir.path());
    let child = s.connector("demo-users")["pid"].as_u64().unwrap() as u32;
    assert!(s.stop().success());
    assert!(!is_alive(child), "connector {child} outlived a stopped supervisor");
}

#[test]
fn config_with_an_unknown_key_is_refused_naming_the_key() {
    let dir = TempDir::new("badkey");
    let config =
        quickstart_config().replace("object_type = \"user\"", "object_type = \"user\"\nobject_typo = \"x\"");
    let mut s = Supervisor::spawn(&config, dir.path());
    let status = s.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(64), "EX_USAGE");
    let log = s.log();
    assert!(log.contains("connectors.demo-users") && log.contains("unknown field `object_typo`"), "{log}");
}

#[test]
fn connector_that_does_not_offer_the_configured_type_is_not_started() {
    let dir = TempDir::new("badtype");
    let config = quickstart_config().replace("object_type = \"user\"", "object_type = \"group\"");
    let s = Supervisor::spawn(&config, dir.path());
    s.wait_admin_up();
    let c = s.wait_connector("demo-users", Duration::from_secs(30), |c| c["state"] != "starting");
    assert_eq!(c["state"], "failed_config", "{c}");
    let reason = c["reason"].as_str().unwrap();
    assert!(reason.contains("connectors.demo-users.object_type") && reason.contains("\"user\""), "{reason}");
    // Not restarted in a loop.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(s.connector("demo-users")["restarts"], 0);
    let r = s.scim("POST", "/scim/demo/Users", Some(&user("x")));
    assert_eq!(r.status, 503);
}
