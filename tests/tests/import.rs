//! Imports: objects already in the target become SCIM resources (so that clients match them
//! instead of creating duplicates), changes and deletions made in the target reach the
//! connector space, and group members come back as SCIM ids.

use std::time::Duration;

use e2e::{Supervisor, TempDir, quickstart_config, request, sqlite_exec};
use serde_json::Value;

fn import(s: &Supervisor, connector: &str) -> Value {
    let r = request(s.admin, "POST", &format!("/admin/connectors/{connector}/import?type=full"), None, None);
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
}

fn find(s: &Supervisor, endpoint: &str, filter: &str) -> Value {
    let r = s.scim("GET", &format!("/scim/demo/{endpoint}?filter={filter}"), None);
    assert_eq!(r.status, 200);
    r.json()
}

#[test]
fn objects_in_the_target_are_imported_updated_and_removed() {
    let dir = TempDir::new("import");
    let s = Supervisor::start(&quickstart_config(), dir.path());
    // The imports every connector runs at start are over before the target is changed here.
    for connector in ["demo-users", "demo-groups"] {
        s.wait_connector(connector, Duration::from_secs(20), |c| !c["last_import"].is_null());
    }
    let db = dir.path().join("demo.db");
    sqlite_exec(
        &db,
        "INSERT INTO users (id, user_name, display_name, given_name, email, active) VALUES (?1, ?2, ?3, ?4, ?5, 1)",
        &["ext-1", "preexisting", "Pre Existing", "Pre", "pre@example.com"],
    );

    let report = import(&s, "demo-users");
    assert_eq!(
        (report["added"].as_u64(), report["import_type"].as_str()),
        (Some(1), Some("full")),
        "{report}"
    );
    let found = find(&s, "Users", "userName+eq+%22preexisting%22");
    assert_eq!(found["totalResults"], 1, "Entra's match-before-create finds it");
    let user = &found["Resources"][0];
    let id = user["id"].as_str().unwrap().to_string();
    assert_eq!(user["displayName"], "Pre Existing");
    assert_eq!(user["name"]["givenName"], "Pre");
    assert_eq!(user["emails"][0]["value"], "pre@example.com");
    assert_eq!(user["emails"][0]["type"], "work");
    assert_eq!(user["active"], true);
    // A create now meets the imported object instead of duplicating it.
    assert_eq!(s.scim("POST", "/scim/demo/Users", Some(&e2e::user_body("preexisting"))).status, 409);
    // SCIM writes reach the imported object through its anchor.
    let patch = r#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","path":"title","value":"kept"}]}"#;
    assert_eq!(s.scim("PATCH", &format!("/scim/demo/Users/{id}"), Some(patch)).status, 200);

    // Changed in the target: the next import updates the mapped attributes only.
    sqlite_exec(&db, "UPDATE users SET display_name = ?1 WHERE id = ?2", &["Changed Outside", "ext-1"]);
    let report = import(&s, "demo-users");
    assert_eq!(report["updated"], 1, "{report}");
    let user = s.scim("GET", &format!("/scim/demo/Users/{id}"), None).json();
    assert_eq!(
        (user["displayName"].as_str(), user["title"].as_str()),
        (Some("Changed Outside"), Some("kept"))
    );
    let again = import(&s, "demo-users");
    assert_eq!((again["updated"].as_u64(), again["unchanged"].as_u64()), (Some(0), Some(1)), "{again}");

    // Groups: members come back as the SCIM ids of the users.
    sqlite_exec(&db, "INSERT INTO groups (id, display_name) VALUES (?1, ?2)", &["g-ext", "Imported Group"]);
    sqlite_exec(&db, "INSERT INTO groups_members (owner, value) VALUES (?1, ?2)", &["g-ext", "ext-1"]);
    assert_eq!(import(&s, "demo-groups")["added"], 1);
    let groups = find(&s, "Groups", "displayName+eq+%22imported+group%22");
    assert_eq!(groups["Resources"][0]["members"][0]["value"], id.as_str(), "{groups}");

    // Deleted in the target: the next full import removes it from the connector space.
    sqlite_exec(&db, "DELETE FROM users WHERE id = ?1", &["ext-1"]);
    let report = import(&s, "demo-users");
    assert_eq!(report["deleted"], 1, "{report}");
    assert_eq!(s.scim("GET", &format!("/scim/demo/Users/{id}"), None).status, 404);

    let c = s.connector("demo-users");
    assert_eq!(c["last_import"]["deleted"], 1, "{c}");
    assert_eq!(request(s.admin, "POST", "/admin/connectors/nobody/import", None, None).status, 404);
    assert_eq!(
        request(s.admin, "POST", "/admin/connectors/demo-users/import?type=sideways", None, None).status,
        400
    );
}

#[test]
fn a_full_import_runs_when_the_connector_starts() {
    let dir = TempDir::new("import-on-start");
    let mut s = Supervisor::start(&quickstart_config(), dir.path());
    assert!(s.stop().success());
    sqlite_exec(
        &dir.path().join("demo.db"),
        "INSERT INTO users (id, user_name, active) VALUES (?1, ?2, 1)",
        &["ext-2", "found-at-start"],
    );
    let s = Supervisor::start(&quickstart_config(), dir.path());
    s.wait_connector("demo-users", Duration::from_secs(10), |c| !c["last_import"].is_null());
    assert_eq!(find(&s, "Users", "userName+eq+%22found-at-start%22")["totalResults"], 1);
}

#[test]
fn an_unchanged_object_is_mapped_again_after_the_mapping_changes() {
    let dir = TempDir::new("import-mapping");
    let mut s = Supervisor::start(&quickstart_config(), dir.path());
    s.wait_connector("demo-users", Duration::from_secs(20), |c| !c["last_import"].is_null());
    sqlite_exec(
        &dir.path().join("demo.db"),
        "INSERT INTO users (id, user_name, display_name, active) VALUES (?1, ?2, ?3, 1)",
        &["ext-3", "remapped", "Shown Name"],
    );
    assert_eq!(import(&s, "demo-users")["added"], 1);
    let again = import(&s, "demo-users");
    assert_eq!((again["unchanged"].as_u64(), again["updated"].as_u64()), (Some(1), Some(0)), "{again}");
    assert!(s.stop().success());

    // The same target column now feeds another SCIM attribute. The object's values in the
    // target are what the connector space holds, yet its resource must follow the new mapping.
    let config =
        quickstart_config().replacen("display_name = \"displayName\"", "display_name = \"nickName\"", 1);
    assert_ne!(config, quickstart_config());
    let s = Supervisor::start(&config, dir.path());
    s.wait_connector("demo-users", Duration::from_secs(20), |c| !c["last_import"].is_null());
    let user = &find(&s, "Users", "userName+eq+%22remapped%22")["Resources"][0];
    assert_eq!(user["nickName"], "Shown Name", "{user}");
    // Once a full import has compared every object under the new mapping, alike is unchanged.
    let again = import(&s, "demo-users");
    assert_eq!((again["unchanged"].as_u64(), again["updated"].as_u64()), (Some(1), Some(0)), "{again}");
}

fn append(file: &std::path::Path, line: Value) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().append(true).open(file).unwrap();
    writeln!(f, "{line}").unwrap();
}

fn delta(s: &Supervisor) -> Value {
    let r = request(s.admin, "POST", "/admin/connectors/demo-users/import?type=delta", None, None);
    assert_eq!(r.status, 200, "{}", r.body);
    let report = r.json();
    assert_eq!(report["import_type"], "delta", "{report}");
    report
}

#[test]
fn delta_imports_start_from_the_watermark_and_apply_each_change() {
    use serde_json::json;
    let dir = TempDir::new("delta");
    let changes = dir.path().join("changes.jsonl");
    std::fs::write(&changes, "").unwrap();
    // connector-faulty without a fault, offering delta imports from a change file.
    let config = e2e::faulty_config("none", &dir.path().join("unused"), "")
        .replace("FAULT_FILE =", &format!("DELTA_FILE = \"{}\", FAULT_FILE =", changes.display()));
    let s = Supervisor::start(&config, dir.path());
    // The full import at start is the base: its watermark covers the (empty) file.
    s.wait_connector("demo-users", Duration::from_secs(10), |c| c["last_import"]["import_type"] == "full");

    append(
        &changes,
        json!({"op": "add", "anchor": "d-1", "attributes": {"user_name": "delta-user", "display_name": "Delta"}}),
    );
    let report = delta(&s);
    assert_eq!(report["added"], 1, "{report}");
    let found = find(&s, "Users", "userName+eq+%22delta-user%22");
    assert_eq!(found["Resources"][0]["displayName"], "Delta");
    let id = found["Resources"][0]["id"].as_str().unwrap().to_string();

    // Only what came after the stored watermark is delivered: the add is not replayed.
    append(&changes, json!({"op": "update", "anchor": "d-1", "attributes": {"display_name": "Changed"}}));
    let report = delta(&s);
    assert_eq!((report["added"].as_u64(), report["updated"].as_u64()), (Some(0), Some(1)), "{report}");
    let user = s.scim("GET", &format!("/scim/demo/Users/{id}"), None).json();
    assert_eq!(
        (user["displayName"].as_str(), user["userName"].as_str()),
        (Some("Changed"), Some("delta-user"))
    );

    append(&changes, json!({"op": "delete", "anchor": "d-1"}));
    assert_eq!(delta(&s)["deleted"], 1);
    assert_eq!(s.scim("GET", &format!("/scim/demo/Users/{id}"), None).status, 404);
    // Nothing new: an empty delta.
    let report = delta(&s);
    assert_eq!(
        (report["added"].as_u64(), report["updated"].as_u64(), report["deleted"].as_u64()),
        (Some(0), Some(0), Some(0))
    );
}

#[test]
fn at_start_groups_import_after_the_users_they_reference() {
    let dir = TempDir::new("import-order");
    let mut s = Supervisor::start(&quickstart_config(), dir.path());
    assert!(s.stop().success());
    let db = dir.path().join("demo.db");
    for i in 0..50 {
        let (anchor, name) = (format!("u-{i}"), format!("user-{i}"));
        sqlite_exec(&db, "INSERT INTO users (id, user_name, active) VALUES (?1, ?2, 1)", &[&anchor, &name]);
        sqlite_exec(&db, "INSERT INTO groups_members (owner, value) VALUES (?1, ?2)", &["g-1", &anchor]);
    }
    sqlite_exec(&db, "INSERT INTO groups (id, display_name) VALUES (?1, ?2)", &["g-1", "everyone"]);

    let s = Supervisor::start(&quickstart_config(), dir.path());
    s.wait_connector("demo-groups", Duration::from_secs(20), |c| !c["last_import"].is_null());
    let group = find(&s, "Groups", "displayName+eq+%22everyone%22");
    assert_eq!(group["Resources"][0]["members"].as_array().map(Vec::len), Some(50), "every member resolved");
}

/// More new objects than one write takes (2,000): the import maps the next pages while a batch is
/// written, and every object goes in once, with its log row, and is unchanged the next time.
#[test]
fn a_large_import_writes_its_new_objects_in_batches_while_it_reads_on() {
    let dir = TempDir::new("import-large");
    let s = Supervisor::start(&quickstart_config(), dir.path());
    s.wait_connector("demo-users", Duration::from_secs(20), |c| !c["last_import"].is_null());
    let db = dir.path().join("demo.db");
    sqlite_exec(
        &db,
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 4500) \
         INSERT INTO users (id, user_name, display_name, given_name, email, active) \
         SELECT 'bulk-' || i, 'bulk' || i, 'Bulk ' || i, 'B', 'bulk' || i || '@example.com', 1 FROM n",
        &[],
    );
    let report = import(&s, "demo-users");
    assert_eq!(
        ["added", "updated", "unchanged", "skipped", "deleted"].map(|k| report[k].as_u64()),
        [Some(4500), Some(0), Some(0), Some(0), Some(0)],
        "{report}"
    );
    let space = dir.path().join("connector-space.db");
    let count = |sql: &str| e2e::sqlite_rows(&space, sql)[0]["n"].as_i64().unwrap();
    assert_eq!(count("SELECT count(*) AS n FROM objects WHERE connector = 'demo-users'"), 4500);
    assert_eq!(count("SELECT count(DISTINCT anchor) AS n FROM objects WHERE connector = 'demo-users'"), 4500);
    assert_eq!(
        count(
            "SELECT count(*) AS n FROM provisioning_log WHERE operation = 'import_add' AND name LIKE 'bulk%'"
        ),
        4500,
        "one log row per new object, written with it"
    );
    let found = find(&s, "Users", "userName+eq+%22bulk4500%22");
    assert_eq!(found["Resources"][0]["displayName"], "Bulk 4500", "{found}");
    let again = import(&s, "demo-users");
    assert_eq!(
        (again["added"].as_u64(), again["unchanged"].as_u64(), again["deleted"].as_u64()),
        (Some(0), Some(4500), Some(0)),
        "{again}"
    );
}
