//! Deprovisioning per connector: what DELETE and `active: false` do to the target object.

use e2e::{Supervisor, TempDir, quickstart_config, sqlite_rows, user_body};
use serde_json::{Value, json};

fn with_policy(policy: &str) -> String {
    format!("{}\n[connectors.demo-users.deprovision]\n{policy}\n", quickstart_config())
}

fn users(s: &Supervisor) -> Vec<Value> {
    sqlite_rows(&s.data_dir.join("demo.db"), "SELECT id, user_name, display_name, active FROM users")
}

fn set_active(s: &Supervisor, id: &str, active: &str) -> e2e::Response {
    let body = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                      "Operations": [{"op": "Replace", "path": "active", "value": active}]});
    s.scim("PATCH", &format!("/scim/demo/Users/{id}"), Some(&body.to_string()))
}

#[test]
fn delete_on_disable_and_set_on_delete() {
    let dir = TempDir::new("deprovision-a");
    let s = Supervisor::start(
        &with_policy(
            "on_disable = \"delete\"\non_delete = \"set\"\nset = { display_name = \"(left the company)\" }",
        ),
        dir.path(),
    );
    let id = s.scim("POST", "/scim/demo/Users", Some(&user_body("leaver"))).json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(users(&s).len(), 1);

    // Disabled: the target object is deleted; the SCIM resource stays, inactive.
    let r = set_active(&s, &id, "False");
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(users(&s).is_empty(), "deleted from the target on disable");
    assert_eq!(s.scim("GET", &format!("/scim/demo/Users/{id}"), None).json()["active"], false);
    // Enabled again: the object comes back.
    assert_eq!(set_active(&s, &id, "True").status, 200);
    let rows = users(&s);
    assert_eq!(
        (rows.len(), rows[0]["user_name"].as_str(), rows[0]["active"].as_i64()),
        (1, Some("leaver"), Some(1))
    );

    // Deleted: the object stays in the target with the configured values; SCIM forgets it.
    assert_eq!(s.scim("DELETE", &format!("/scim/demo/Users/{id}"), None).status, 204);
    assert_eq!(s.scim("GET", &format!("/scim/demo/Users/{id}"), None).status, 404);
    assert_eq!(
        s.scim("GET", "/scim/demo/Users?filter=userName+eq+%22leaver%22", None).json()["totalResults"],
        0
    );
    let rows = users(&s);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["display_name"], "(left the company)");

    // Created again with the same name: the kept object is taken up, not duplicated.
    let mut again: Value = serde_json::from_str(&user_body("leaver")).unwrap();
    again["displayName"] = json!("Back Again");
    let r = s.scim("POST", "/scim/demo/Users", Some(&again.to_string()));
    assert_eq!(r.status, 201, "{}", r.body);
    let rows = users(&s);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["display_name"], "Back Again");
}

#[test]
fn set_on_disable_and_nothing_on_delete() {
    let dir = TempDir::new("deprovision-b");
    let s = Supervisor::start(
        &with_policy("on_disable = \"set\"\non_delete = \"none\"\nset = { display_name = \"DISABLED\" }"),
        dir.path(),
    );
    let id = s.scim("POST", "/scim/demo/Users", Some(&user_body("pauser"))).json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(set_active(&s, &id, "false").status, 200);
    let rows = users(&s);
    assert_eq!((rows[0]["display_name"].as_str(), rows[0]["active"].as_i64()), (Some("DISABLED"), Some(0)));
    assert_eq!(s.scim("DELETE", &format!("/scim/demo/Users/{id}"), None).status, 204);
    let after = users(&s);
    assert_eq!(after, rows, "on_delete = none leaves the target object as it was");
}

#[test]
fn a_set_of_unknown_attributes_is_refused_at_start() {
    let dir = TempDir::new("deprovision-c");
    let s = Supervisor::spawn(&with_policy("on_delete = \"set\"\nset = { no_such_column = 1 }"), dir.path());
    s.wait_admin_up();
    let c = s.wait_connector("demo-users", std::time::Duration::from_secs(20), |c| c["state"] != "starting");
    assert_eq!(c["state"], "failed_config", "{c}");
    assert!(c["reason"].as_str().unwrap().contains("deprovision.set"), "{c}");
}
