//! A connector in another language: examples/connector-python (grpcio from PyPI, stubs generated
//! from proto/), passing the conformance kit and provisioned through the supervisor with Entra's
//! request sequence; a crash of the Python child is a restart like any connector's.

use std::path::{Path, PathBuf};
use std::time::Duration;

use e2e::{Supervisor, TempDir, binary, workspace};
use serde_json::{Value, json};

/// Sets up the Python connector's venv (pinned grpcio from PyPI, once per machine, under
/// ~/.cache); returns the connector's executable.
fn python_connector() -> PathBuf {
    let dir = workspace().join("examples/connector-python");
    let out = std::process::Command::new(dir.join("setup.sh")).output().expect("run setup.sh");
    assert!(
        out.status.success(),
        "examples/connector-python/setup.sh failed (it needs python3-venv and PyPI): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir.join("connector-python")
}

fn users(file: &Path) -> serde_json::Map<String, Value> {
    let text = std::fs::read_to_string(file).unwrap_or_else(|_| "{}".into());
    serde_json::from_str::<Value>(&text).unwrap().as_object().cloned().unwrap_or_default()
}

fn by_name<'a>(users: &'a serde_json::Map<String, Value>, name: &str) -> Option<&'a Value> {
    users.values().find(|u| u["userName"][0] == name)
}

#[test]
fn the_python_connector_passes_the_conformance_kit() {
    let executable = python_connector();
    let dir = TempDir::new("kit-python");
    let description = format!(
        r#"
executable = "{}"
object_type = "user"
partition = "default"
env = {{ HOME = "{home}" }}

[parameters]
file = "{file}"

[object]
match_attribute = "userName"
attributes = {{ userName = "kit", displayName = "Kit", email = "kit@example.com", active = true }}
update = {{ displayName = "Kit, checked" }}
"#,
        executable.display(),
        home = std::env::var("HOME").unwrap_or_default(),
        file = dir.path().join("users.json").display(),
    );
    let file = dir.path().join("description.toml");
    std::fs::write(&file, description).unwrap();
    let out = std::process::Command::new(binary("ecma-connector-check")).arg(&file).output().unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{report}{}", String::from_utf8_lossy(&out.stderr));
    assert!(report.contains("ok    export: eight concurrent calls each get their result"), "{report}");
    assert!(report.trim_end().ends_with(" passed, 0 failed"), "{report}");
}

#[test]
fn entra_provisions_users_into_the_python_connector() {
    let executable = python_connector();
    let dir = TempDir::new("python-entra");
    let config = format!(
        r#"
[server]
plain_http = true

[apps.demo]
users = "py-users"
token_env = "SCIM_TOKEN"

[connectors.py-users]
executable = "{}"
object_type = "user"
partition = "default"
startup_timeout = "60s"
parameters = {{ file = "${{data_dir}}/users.json" }}

[connectors.py-users.attributes]
userName = "userName"
displayName = "displayName"
email = 'emails[type eq "work"].value'
active = "active"
"#,
        executable.display()
    );
    let s = Supervisor::start(&config, dir.path());
    let file = dir.path().join("users.json");

    // Entra's sequence: look up, create, read, update, disable, look up again, delete.
    let r = s.scim("GET", "/scim/demo/Users?filter=userName+eq+%22Test_User_py%22", None);
    assert_eq!((r.status, r.json()["totalResults"].as_u64()), (200, Some(0)));
    let create = json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "externalId": "6f0a1c2e",
        "userName": "Test_User_py",
        "active": true,
        "displayName": "Test User",
        "emails": [{"primary": true, "type": "work", "value": "test.user@example.com"}],
        "meta": {"resourceType": "User"},
        "roles": []
    });
    let r = s.scim("POST", "/scim/demo/Users", Some(&create.to_string()));
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.json()["id"].as_str().unwrap().to_string();
    let stored = users(&file);
    let user = by_name(&stored, "Test_User_py").expect("the user is in the JSON file");
    assert_eq!(
        (user["email"][0].as_str(), user["active"][0].as_bool()),
        (Some("test.user@example.com"), Some(true))
    );

    let patch = |operations: Value| {
        let body =
            json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": operations});
        s.scim("PATCH", &format!("/scim/demo/Users/{id}"), Some(&body.to_string()))
    };
    let r = patch(json!([{"op": "Replace", "path": "displayName", "value": "Renamed User"}]));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(by_name(&users(&file), "Test_User_py").unwrap()["displayName"][0], "Renamed User");
    // Entra disables with a string boolean.
    let r = patch(json!([{"op": "Replace", "path": "active", "value": "False"}]));
    assert_eq!((r.status, r.json()["active"].as_bool()), (200, Some(false)), "{}", r.body);
    assert_eq!(by_name(&users(&file), "Test_User_py").unwrap()["active"][0], false);

    let r = s.scim("GET", "/scim/demo/Users?filter=userName+eq+%22Test_User_py%22", None);
    assert_eq!(r.json()["totalResults"], 1, "{}", r.body);

    // The Python child killed: restarted, and the next create goes through it.
    let pid = s.connector("py-users")["pid"].as_u64().unwrap() as u32;
    e2e::signal(pid, nix::sys::signal::Signal::SIGKILL);
    s.wait_connector("py-users", Duration::from_secs(60), |c| {
        c["state"] == "ready" && c["pid"].as_u64() != Some(pid as u64)
    });
    let r = s.scim("POST", "/scim/demo/Users", Some(&e2e::user_body("after-restart")));
    assert_eq!(r.status, 201, "{}", r.body);
    assert!(by_name(&users(&file), "after-restart").is_some());

    let r = s.scim("DELETE", &format!("/scim/demo/Users/{id}"), None);
    assert_eq!(r.status, 204, "{}", r.body);
    assert!(by_name(&users(&file), "Test_User_py").is_none(), "deleted from the JSON file");
    assert_eq!(users(&file).len(), 1);
}
