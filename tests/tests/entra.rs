//! The request sequences Microsoft documents for Entra ID provisioning (users), replayed against
//! the real binaries; the responses and the target's rows are checked at each step.

use e2e::{Supervisor, TempDir, quickstart_config, sqlite_rows};
use serde_json::{Value, json};

const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

fn row(s: &Supervisor, user_name: &str) -> Value {
    let rows = sqlite_rows(&s.data_dir.join("demo.db"), "SELECT * FROM users");
    rows.into_iter().find(|r| r["user_name"] == user_name).unwrap_or_else(|| panic!("no row for {user_name}"))
}

fn patch(s: &Supervisor, id: &str, operations: Value) -> e2e::Response {
    let body =
        json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": operations});
    s.scim("PATCH", &format!("/scim/demo/Users/{id}"), Some(&body.to_string()))
}

#[test]
fn entra_user_lifecycle() {
    let dir = TempDir::new("entra-users");
    // The quickstart, plus a department column mapped from the enterprise extension.
    // The quickstart, plus a department column mapped from the enterprise extension and a
    // manager column that holds the manager's anchor (a reference).
    let config = quickstart_config()
        .replace("active boolean\"", "active boolean, department, manager_id\"\nreferences = \"manager_id\"")
        .replace(
            "active = \"active\"",
            &format!("active = \"active\"\ndepartment = \"{ENTERPRISE}:department\"\nmanager_id = \"{ENTERPRISE}:manager.value\""),
        );
    let s = Supervisor::start(&config, dir.path());

    // 1. Entra first looks the user up by its matching attribute.
    let r = s.scim("GET", "/scim/demo/Users?filter=userName+eq+%22Test_User_ab6490ee%22", None);
    assert_eq!((r.status, r.json()["totalResults"].as_u64()), (200, Some(0)));

    // 2. Create, as Entra sends it (meta and an empty roles array included).
    let create = json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", ENTERPRISE],
        "externalId": "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef",
        "userName": "Test_User_ab6490ee",
        "active": true,
        "emails": [{"primary": true, "type": "work", "value": "Test_User_fd0ea19b@testuser.com"}],
        "meta": {"resourceType": "User"},
        "name": {"formatted": "givenName familyName", "familyName": "familyName", "givenName": "givenName"},
        "roles": [],
        ENTERPRISE: {"department": "Sales"}
    });
    let r = s.scim("POST", "/scim/demo/Users", Some(&create.to_string()));
    assert_eq!(r.status, 201, "{}", r.body);
    let user = r.json();
    let id = user["id"].as_str().unwrap().to_string();
    assert_eq!(user["externalId"], "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef");
    let stored = row(&s, "Test_User_ab6490ee");
    assert_eq!(
        (stored["email"].as_str(), stored["department"].as_str()),
        (Some("Test_User_fd0ea19b@testuser.com"), Some("Sales"))
    );

    // 3. Matched by filter, by externalId too.
    let r = s.scim(
        "GET",
        "/scim/demo/Users?filter=externalId+eq+%220a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef%22",
        None,
    );
    assert_eq!(r.json()["Resources"][0]["id"], id.as_str());

    // 4. Update multi-valued and single-valued properties.
    let r = patch(
        &s,
        &id,
        json!([
            {"op": "Replace", "path": "emails[type eq \"work\"].value", "value": "updatedEmail@microsoft.com"},
            {"op": "Replace", "path": "name.familyName", "value": "updatedFamilyName"}
        ]),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["emails"][0]["value"], "updatedEmail@microsoft.com");
    let stored = row(&s, "Test_User_ab6490ee");
    assert_eq!(
        (stored["email"].as_str(), stored["family_name"].as_str()),
        (Some("updatedEmail@microsoft.com"), Some("updatedFamilyName"))
    );

    // 4b. A first value for a filtered path: created, not refused.
    let r = patch(
        &s,
        &id,
        json!([{"op": "Add", "path": "phoneNumbers[type eq \"mobile\"].value", "value": "+1 555 0100"}]),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["phoneNumbers"], json!([{"type": "mobile", "value": "+1 555 0100"}]));

    // 5. One path-less replace with dotted and URN-prefixed keys, booleans as strings.
    let r = patch(
        &s,
        &id,
        json!([{"op": "replace", "value": {
            "displayName": "Updated Name",
            "name.givenName": "Updated",
            format!("{ENTERPRISE}:department"): "Engineering",
            "active": "False"
        }}]),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let body = r.json();
    assert_eq!(
        (body["active"].as_bool(), body[ENTERPRISE]["department"].as_str()),
        (Some(false), Some("Engineering"))
    );
    let stored = row(&s, "Test_User_ab6490ee");
    assert_eq!(stored["active"], 0);
    assert_eq!(
        (stored["given_name"].as_str(), stored["display_name"].as_str()),
        (Some("Updated"), Some("Updated Name"))
    );
    assert_eq!(stored["department"], "Engineering");

    // 6. Manager: added as a bare id at the extension's path, then removed.
    let manager = s.scim("POST", "/scim/demo/Users", Some(&e2e::user_body("the-manager"))).json();
    let manager_id = manager["id"].as_str().unwrap();
    let r =
        patch(&s, &id, json!([{"op": "Add", "path": format!("{ENTERPRISE}:manager"), "value": manager_id}]));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()[ENTERPRISE]["manager"], json!({"value": manager_id}));
    let manager_anchor = row(&s, "the-manager")["id"].clone();
    assert_eq!(
        row(&s, "Test_User_ab6490ee")["manager_id"],
        manager_anchor,
        "the target holds the manager's anchor"
    );
    let r = patch(
        &s,
        &id,
        json!([{"op": "Replace", "path": "manager", "value": [{"$ref": null, "value": manager_id}]}]),
    );
    assert_eq!(r.json()[ENTERPRISE]["manager"]["value"], manager_id);
    let r = patch(&s, &id, json!([{"op": "Remove", "path": format!("{ENTERPRISE}:manager")}]));
    assert!(r.json()[ENTERPRISE].get("manager").is_none(), "{}", r.body);
    assert_eq!(row(&s, "Test_User_ab6490ee")["manager_id"], Value::Null);
    let r = patch(
        &s,
        &id,
        json!([{"op": "Add", "path": format!("{ENTERPRISE}:manager"), "value": "no-such-user"}]),
    );
    assert_eq!(r.status, 400, "an unknown manager is refused: {}", r.body);

    // 7. Rename (userName is a single-valued property too).
    let r = patch(&s, &id, json!([{"op": "Replace", "path": "userName", "value": "renamed@testuser.com"}]));
    assert_eq!(r.status, 200);
    assert_eq!(row(&s, "renamed@testuser.com")["department"], "Engineering");

    // 8. A stale If-Match is refused; the current one is accepted.
    let version = s.scim("GET", &format!("/scim/demo/Users/{id}"), None).json()["meta"]["version"]
        .as_str()
        .unwrap()
        .to_string();
    let stale = e2e::request_with_headers(
        s.scim,
        "DELETE",
        &format!("/scim/demo/Users/{id}"),
        &[("If-Match", "W/\"1\"")],
    );
    assert_eq!(stale.status, 412, "{}", stale.body);
    // 9. Delete.
    let r = e2e::request_with_headers(
        s.scim,
        "DELETE",
        &format!("/scim/demo/Users/{id}"),
        &[("If-Match", &version)],
    );
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(s.scim("GET", &format!("/scim/demo/Users/{id}"), None).status, 404);
    let left: Vec<Value> = sqlite_rows(&s.data_dir.join("demo.db"), "SELECT user_name FROM users");
    assert_eq!(left, [json!({"user_name": "the-manager"})]);
}

fn group_patch(s: &Supervisor, id: &str, operations: Value) -> e2e::Response {
    let body =
        json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": operations});
    s.scim("PATCH", &format!("/scim/demo/Groups/{id}"), Some(&body.to_string()))
}

/// (member anchors) of the group row named `display_name`.
fn member_anchors(s: &Supervisor, display_name: &str) -> Vec<String> {
    let db = s.data_dir.join("demo.db");
    let group = sqlite_rows(&db, "SELECT id, display_name FROM groups")
        .into_iter()
        .find(|g| g["display_name"] == display_name)
        .unwrap_or_else(|| panic!("no group row {display_name}"));
    sqlite_rows(&db, "SELECT owner, value FROM groups_members ORDER BY value")
        .into_iter()
        .filter(|m| m["owner"] == group["id"])
        .map(|m| m["value"].as_str().unwrap().to_string())
        .collect()
}

fn user_anchor(s: &Supervisor, user_name: &str) -> String {
    row(s, user_name)["id"].as_str().unwrap().to_string()
}

#[test]
fn entra_group_lifecycle() {
    let dir = TempDir::new("entra-groups");
    let s = Supervisor::start(&quickstart_config(), dir.path());
    let u1 = s.scim("POST", "/scim/demo/Users", Some(&e2e::user_body("member-one"))).json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let u2 = s.scim("POST", "/scim/demo/Users", Some(&e2e::user_body("member-two"))).json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (a1, a2) = (user_anchor(&s, "member-one"), user_anchor(&s, "member-two"));

    // Matched by displayName first; then created with the ADSCIM schema Entra adds.
    let r = s.scim("GET", "/scim/demo/Groups?filter=displayName+eq+%22Group1DisplayName%22", None);
    assert_eq!(r.json()["totalResults"], 0);
    let create = json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group", "http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group"],
        "externalId": "8aa1a0c0-c4c3-4bc0-b4a5-2ef676900159",
        "displayName": "Group1DisplayName",
        "meta": {"resourceType": "Group"},
        "members": []
    });
    let r = s.scim("POST", "/scim/demo/Groups", Some(&create.to_string()));
    assert_eq!(r.status, 201, "{}", r.body);
    let group = r.json();
    let gid = group["id"].as_str().unwrap().to_string();
    assert_eq!(group["meta"]["resourceType"], "Group");
    assert!(r.header("location").unwrap().ends_with(&format!("/scim/demo/Groups/{gid}")));
    assert!(member_anchors(&s, "Group1DisplayName").is_empty());
    assert_eq!(
        s.scim("POST", "/scim/demo/Groups", Some(&create.to_string())).status,
        409,
        "displayName is unique"
    );

    // Members added one at a time: the target gets the users' anchors.
    let r = group_patch(&s, &gid, json!([{"op": "Add", "path": "members", "value": [{"value": u1}]}]));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.json()["members"],
        json!([{"value": u1, "$ref": format!("http://{}/scim/demo/Users/{u1}", s.scim)}])
    );
    assert_eq!(member_anchors(&s, "Group1DisplayName"), std::slice::from_ref(&a1));
    group_patch(&s, &gid, json!([{"op": "Add", "path": "members", "value": [{"value": u2}, {"value": u1}]}]));
    let mut both = vec![a1.clone(), a2.clone()];
    both.sort();
    assert_eq!(member_anchors(&s, "Group1DisplayName"), both);

    // A member that does not exist is refused, and nothing changes.
    let r = group_patch(
        &s,
        &gid,
        json!([{"op": "Add", "path": "members", "value": [{"value": "no-such-user"}]}]),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(member_anchors(&s, "Group1DisplayName"), both);

    // Removed in both forms Entra and others use.
    let r = group_patch(&s, &gid, json!([{"op": "Remove", "path": "members", "value": [{"value": u1}]}]));
    assert_eq!(
        r.json()["members"],
        json!([{"value": u2, "$ref": format!("http://{}/scim/demo/Users/{u2}", s.scim)}])
    );
    assert_eq!(member_anchors(&s, "Group1DisplayName"), std::slice::from_ref(&a2));
    group_patch(&s, &gid, json!([{"op": "remove", "path": format!("members[value eq \"{u2}\"]")}]));
    assert!(member_anchors(&s, "Group1DisplayName").is_empty());

    // Renamed, found by its new name.
    let r = group_patch(&s, &gid, json!([{"op": "Replace", "path": "displayName", "value": "Renamed"}]));
    assert_eq!(r.status, 200);
    let r = s.scim("GET", "/scim/demo/Groups?filter=displayName+eq+%22renamed%22", None);
    assert_eq!(r.json()["Resources"][0]["id"], gid.as_str());
    assert!(member_anchors(&s, "Renamed").is_empty());

    // A deleted user leaves its groups, in SCIM and in the target.
    group_patch(&s, &gid, json!([{"op": "add", "path": "members", "value": [{"value": u2}]}]));
    assert_eq!(s.scim("DELETE", &format!("/scim/demo/Users/{u2}"), None).status, 204);
    let group = s.scim("GET", &format!("/scim/demo/Groups/{gid}"), None).json();
    assert!(group.get("members").is_none(), "{group}");
    assert!(member_anchors(&s, "Renamed").is_empty());

    // Deleted, with its membership rows; the users stay.
    group_patch(&s, &gid, json!([{"op": "add", "path": "members", "value": [{"value": u1}]}]));
    assert_eq!(s.scim("DELETE", &format!("/scim/demo/Groups/{gid}"), None).status, 204);
    assert_eq!(s.scim("GET", &format!("/scim/demo/Groups/{gid}"), None).status, 404);
    let db = s.data_dir.join("demo.db");
    assert!(sqlite_rows(&db, "SELECT * FROM groups").is_empty());
    assert!(sqlite_rows(&db, "SELECT * FROM groups_members").is_empty());
    assert_eq!(sqlite_rows(&db, "SELECT * FROM users").len(), 1);
}

#[test]
fn concurrent_member_adds_are_all_kept() {
    // Ten clients add a member each to one group at the same time: a PATCH computed from a
    // version another write replaced is computed again, so no add is lost.
    let dir = TempDir::new("concurrent-members");
    let s = Supervisor::start(&quickstart_config(), dir.path());
    let users: Vec<String> = (0..10)
        .map(|i| {
            let r = s.scim("POST", "/scim/demo/Users", Some(&e2e::user_body(&format!("m{i}"))));
            r.json()["id"].as_str().unwrap().to_string()
        })
        .collect();
    let group = json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "Busy"});
    let gid = s.scim("POST", "/scim/demo/Groups", Some(&group.to_string())).json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let scim = s.scim;
    let threads: Vec<_> = users
        .iter()
        .cloned()
        .map(|u| {
            let gid = gid.clone();
            std::thread::spawn(move || {
                let body = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                                  "Operations": [{"op": "Add", "path": "members", "value": [{"value": u}]}]});
                e2e::request(
                    scim,
                    "PATCH",
                    &format!("/scim/demo/Groups/{gid}"),
                    Some(e2e::TOKEN),
                    Some(&body.to_string()),
                )
                .status
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), 200);
    }
    let members =
        s.scim("GET", &format!("/scim/demo/Groups/{gid}"), None).json()["members"].as_array().unwrap().len();
    assert_eq!(members, 10, "every add is kept in SCIM");
    assert_eq!(member_anchors(&s, "Busy").len(), 10, "and in the target");
}
