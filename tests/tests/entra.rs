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
    let config = quickstart_config().replace("active boolean\"", "active boolean, department\"").replace(
        "active = \"active\"",
        &format!("active = \"active\"\ndepartment = \"{ENTERPRISE}:department\""),
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
    let r = patch(
        &s,
        &id,
        json!([{"op": "Replace", "path": "manager", "value": [{"$ref": null, "value": manager_id}]}]),
    );
    assert_eq!(r.json()[ENTERPRISE]["manager"]["value"], manager_id);
    let r = patch(&s, &id, json!([{"op": "Remove", "path": format!("{ENTERPRISE}:manager")}]));
    assert!(r.json()[ENTERPRISE].get("manager").is_none(), "{}", r.body);

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
