//! The SCIM surface beyond CRUD: discovery, queries, and the shapes real clients send.

use e2e::{Supervisor, TempDir, quickstart_config, request, user_body};
use serde_json::{Value, json};

fn start(label: &str) -> (TempDir, Supervisor) {
    let dir = TempDir::new(label);
    let s = Supervisor::start(&quickstart_config(), dir.path());
    (dir, s)
}

fn ids(list: &Value) -> Vec<String> {
    list["Resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["userName"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn discovery_tells_what_is_supported_and_is_read_only() {
    let (_dir, s) = start("discovery");
    let spc = s.scim("GET", "/scim/demo/ServiceProviderConfig", None);
    assert_eq!(spc.status, 200);
    let spc = spc.json();
    assert_eq!(spc["patch"]["supported"], true);
    assert_eq!(spc["bulk"]["supported"], false);
    assert_eq!(spc["filter"]["supported"], true);
    assert_eq!(spc["sort"]["supported"], true);
    assert_eq!(spc["etag"]["supported"], true);
    assert_eq!(spc["authenticationSchemes"][0]["type"], "oauthbearertoken");

    let types = s.scim("GET", "/scim/demo/ResourceTypes", None).json();
    assert_eq!(types["totalResults"], 2);
    assert_eq!(types["Resources"][0]["endpoint"], "/Users");
    assert_eq!(types["Resources"][1]["endpoint"], "/Groups");
    assert_eq!(
        s.scim("GET", "/scim/demo/ResourceTypes/User", None).json()["schema"],
        "urn:ietf:params:scim:schemas:core:2.0:User"
    );
    assert_eq!(s.scim("GET", "/scim/demo/ResourceTypes/Nope", None).status, 404);

    let schemas = s.scim("GET", "/scim/demo/Schemas", None).json();
    let schema_ids: Vec<&str> =
        schemas["Resources"].as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(
        schema_ids,
        [
            "urn:ietf:params:scim:schemas:core:2.0:User",
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User",
            "urn:ietf:params:scim:schemas:core:2.0:Group"
        ]
    );
    let user = s.scim("GET", "/scim/demo/Schemas/urn:ietf:params:scim:schemas:core:2.0:User", None);
    assert_eq!(user.status, 200);
    assert!(user.json()["attributes"].as_array().unwrap().iter().any(|a| a["name"] == "emails"));

    for (method, path) in [
        ("POST", "/scim/demo/ServiceProviderConfig"),
        ("PUT", "/scim/demo/Schemas"),
        ("DELETE", "/scim/demo/ResourceTypes/User"),
        ("PATCH", "/scim/demo/Schemas/urn:ietf:params:scim:schemas:core:2.0:User"),
    ] {
        let r = s.scim(method, path, Some("{}"));
        assert_eq!(r.status, 405, "{method} {path}");
        assert_eq!(r.json()["status"], "405");
    }
    for (method, path) in
        [("PUT", "/scim/demo/Users"), ("POST", "/scim/demo/Users/some-id"), ("DELETE", "/scim/demo/Groups")]
    {
        let r = s.scim(method, path, Some("{}"));
        assert_eq!((r.status, r.json()["status"].as_str()), (405, Some("405")), "{method} {path}");
    }
    let r = s.scim("GET", "/scim/demo/NoSuchThing", None);
    assert_eq!((r.status, r.json()["status"].as_str()), (404, Some("404")));
    assert_eq!(request(s.scim, "GET", "/elsewhere", None, None).status, 404);
}

#[test]
fn filters_sorting_paging_and_projection() {
    let (_dir, s) = start("queries");
    for (name, title, active) in
        [("carol", "Eng", true), ("alice", "Ops", false), ("bob", "Eng", true), ("dave", "Sales", true)]
    {
        let mut body: Value = serde_json::from_str(&user_body(name)).unwrap();
        body["title"] = json!(title);
        body["active"] = json!(active);
        assert_eq!(s.scim("POST", "/scim/demo/Users", Some(&body.to_string())).status, 201);
    }
    let get = |q: &str| s.scim("GET", &format!("/scim/demo/Users?{q}"), None).json();

    assert_eq!(ids(&get("sortBy=userName")), ["alice", "bob", "carol", "dave"]);
    assert_eq!(ids(&get("sortBy=userName&sortOrder=descending&startIndex=2&count=2")), ["carol", "bob"]);
    let page = get("sortBy=userName&startIndex=2&count=2");
    assert_eq!(
        (page["totalResults"].as_u64(), page["startIndex"].as_u64(), page["itemsPerPage"].as_u64()),
        (Some(4), Some(2), Some(2))
    );
    let eng = get("filter=title%20eq%20%22eng%22%20and%20active%20eq%20true&sortBy=userName");
    assert_eq!(ids(&eng), ["bob", "carol"]);
    let not = get("filter=not%20(title%20eq%20%22Eng%22)%20or%20userName%20sw%20%22c%22&sortBy=userName");
    assert_eq!(ids(&not), ["alice", "carol", "dave"]);
    let emails = get("filter=emails%5Btype%20eq%20%22work%22%20and%20value%20co%20%22bob%22%5D");
    assert_eq!(ids(&emails), ["bob"]);
    assert_eq!(get("filter=title%20pr")["totalResults"], 4);
    assert_eq!(get("count=0")["Resources"], json!([]));
    assert_eq!(get("count=0")["totalResults"], 4);

    let projected = get("filter=userName%20eq%20%22alice%22&attributes=userName,name.familyName");
    let alice = &projected["Resources"][0];
    assert!(alice.get("emails").is_none() && alice.get("title").is_none());
    assert_eq!(alice["name"], json!({"familyName": "alice"}));
    assert!(alice.get("id").is_some() && alice.get("meta").is_some(), "always returned");
    let excluded = get("filter=userName%20eq%20%22alice%22&excludedAttributes=emails,title");
    assert!(excluded["Resources"][0].get("emails").is_none());
    assert_eq!(excluded["Resources"][0]["userName"], "alice");
    let id = alice["id"].as_str().unwrap();
    let one = s.scim("GET", &format!("/scim/demo/Users/{id}?attributes=title"), None).json();
    assert_eq!((one["title"].as_str(), one.get("userName")), (Some("Ops"), None));

    // POST /.search says the same.
    let search = json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
        "filter": "title eq \"Eng\"", "sortBy": "userName", "sortOrder": "descending", "attributes": ["userName"]
    });
    let r = s.scim("POST", "/scim/demo/Users/.search", Some(&search.to_string()));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(ids(&r.json()), ["carol", "bob"]);

    for bad in ["filter=userName%20xx%20%22a%22", "sortOrder=sideways", "count=many", "attributes=a..b"] {
        let r = s.scim("GET", &format!("/scim/demo/Users?{bad}"), None);
        assert_eq!(r.status, 400, "{bad}: {}", r.body);
    }
}

#[test]
fn custom_extension_schemas_are_declared_checked_and_mapped() {
    const ACME: &str = "urn:example:scim:schemas:extension:acme:2.0:User";
    let dir = TempDir::new("extensions");
    let config = quickstart_config()
        .replace("active boolean\"", "active boolean, badge\"")
        .replace("active = \"active\"", &format!("active = \"active\"\nbadge = \"{ACME}:badge\""))
        .replace(
            "insecure_default_token = \"quickstart-token\"",
            &format!(
                "insecure_default_token = \"quickstart-token\"\n[apps.demo.extensions.\"{ACME}\"]\nresource = \"User\"\n\
                 description = \"Acme badges\"\nattributes = {{ badge = \"string\", clearance = \"integer\" }}"
            ),
        );
    let s = Supervisor::start(&config, dir.path());

    let schema = s.scim("GET", &format!("/scim/demo/Schemas/{ACME}"), None);
    assert_eq!(schema.status, 200, "{}", schema.body);
    let schema = schema.json();
    let names: Vec<&str> =
        schema["attributes"].as_array().unwrap().iter().map(|a| a["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["badge", "clearance"]);
    let user_type = s.scim("GET", "/scim/demo/ResourceTypes/User", None).json();
    assert!(user_type["schemaExtensions"].as_array().unwrap().iter().any(|e| e["schema"] == ACME));

    let mut user: Value = serde_json::from_str(&user_body("acme")).unwrap();
    user[ACME] = json!({"badge": "B-42", "clearance": "high"});
    let r = s.scim("POST", "/scim/demo/Users", Some(&user.to_string()));
    assert_eq!((r.status, r.json()["scimType"].as_str()), (400, Some("invalidValue")), "{}", r.body);
    user[ACME] = json!({"badge": "B-42", "clearance": 3});
    let r = s.scim("POST", "/scim/demo/Users", Some(&user.to_string()));
    assert_eq!(r.status, 201, "{}", r.body);
    let rows = e2e::sqlite_rows(&dir.path().join("demo.db"), "SELECT badge FROM users");
    assert_eq!(rows, [json!({"badge": "B-42"})]);
    let found = s.scim("GET", &format!("/scim/demo/Users?filter={ACME}:clearance+ge+2"), None).json();
    assert_eq!(found["totalResults"], 1);
}

#[test]
fn mapping_expressions_compute_target_values() {
    let dir = TempDir::new("expressions");
    let config = quickstart_config().replacen(
        "display_name = \"displayName\"",
        "display_name = 'IIF(IsPresent([displayName]), [displayName], Join(\" \", [name.givenName], ToUpper([name.familyName])))'",
        1,
    );
    let s = Supervisor::start(&config, dir.path());
    let r = s.scim("POST", "/scim/demo/Users", Some(&user_body("ada")));
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.json()["id"].as_str().unwrap().to_string();
    let rows = e2e::sqlite_rows(&dir.path().join("demo.db"), "SELECT display_name FROM users");
    assert_eq!(rows, [json!({"display_name": "Test ADA"})]);
    let patch = r#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"add","path":"displayName","value":"Countess"}]}"#;
    assert_eq!(s.scim("PATCH", &format!("/scim/demo/Users/{id}"), Some(patch)).status, 200);
    let rows = e2e::sqlite_rows(&dir.path().join("demo.db"), "SELECT display_name FROM users");
    assert_eq!(rows, [json!({"display_name": "Countess"})]);

    // A malformed expression is a configuration error naming the key.
    let bad = quickstart_config().replacen(
        "display_name = \"displayName\"",
        "display_name = 'Join(\"\", [displayName'",
        1,
    );
    let bad_dir = TempDir::new("bad-expression");
    let mut s = Supervisor::spawn(&bad, bad_dir.path());
    assert_eq!(s.wait_exit(std::time::Duration::from_secs(10)).code(), Some(64));
    assert!(s.log().contains("connectors.demo-users.attributes.display_name"), "{}", s.log());
}
