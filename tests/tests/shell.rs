//! connector-shell through the supervisor's SCIM front: the two shipped examples (a CSV file,
//! and a JSON-over-HTTP service that the test starts), scripts that hang, crash, print garbage
//! or leave entries without a result, and user names full of shell metacharacters.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use e2e::{Supervisor, TempDir, free_addr, is_alive, request, workspace};
use serde_json::{Value, json};

const PATCH: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
const USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";

/// A shipped example, with `${config_dir}` as the supervisor would resolve it for the file.
fn example(name: &str) -> String {
    let dir = workspace().join("deploy/examples/shell");
    std::fs::read_to_string(dir.join(name))
        .expect("read example")
        .replace("${config_dir}", dir.to_str().unwrap())
}

fn user(name: &str, display: &str) -> Value {
    json!({"schemas": [USER], "userName": name, "displayName": display, "active": true,
           "name": {"givenName": "Given", "familyName": "Family"},
           "emails": [{"type": "work", "value": "someone@example.com", "primary": true}]})
}

/// The CSV file's rows, read by Python's csv module (as any CSV reader would read them).
fn csv_rows(path: &Path) -> Vec<Value> {
    if !path.exists() {
        return vec![];
    }
    let out = Command::new("python3")
        .args([
            "-c",
            "import csv, json, sys; print(json.dumps(list(csv.DictReader(open(sys.argv[1], newline='')))))",
        ])
        .arg(path)
        .output()
        .expect("python3 (Debian package python3)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("JSON rows")
}

/// Rewrites the CSV file as another program would: `edit` gets the rows.
fn edit_csv(path: &Path, edit: impl FnOnce(&mut Vec<Value>)) {
    let mut rows = csv_rows(path);
    edit(&mut rows);
    let script = "import csv, json, sys\nrows = json.load(sys.stdin)\n\
                  w = csv.DictWriter(open(sys.argv[1], 'w', newline=''), fieldnames=['id', 'userName', 'displayName', 'givenName', 'familyName', 'email', 'active'])\n\
                  w.writeheader(); w.writerows(rows)\n";
    let mut child = Command::new("python3")
        .args(["-c", script])
        .arg(path)
        .stdin(Stdio::piped())
        .spawn()
        .expect("python3");
    use std::io::Write;
    child.stdin.take().unwrap().write_all(serde_json::to_string(&rows).unwrap().as_bytes()).unwrap();
    assert!(child.wait().unwrap().success());
}

fn import(s: &Supervisor, connector: &str, kind: &str) -> Value {
    let r =
        request(s.admin, "POST", &format!("/admin/connectors/{connector}/import?type={kind}"), None, None);
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
}

fn find(s: &Supervisor, app: &str, name: &str) -> Value {
    let r = s.scim("GET", &format!("/scim/{app}/Users?filter=userName+eq+%22{name}%22"), None);
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
}

#[test]
fn csv_example_provisions_and_delta_imports_by_file_modification() {
    let dir = TempDir::new("shell-csv");
    let csv = dir.path().join("users.csv");
    let s =
        Supervisor::spawn_with_env(&example("csv.toml"), dir.path(), &[("CSV_PATH", csv.to_str().unwrap())]);
    s.wait_ready(Duration::from_secs(30));

    let r = s.scim("POST", "/scim/csv/Users", Some(&user("alice", "Alice").to_string()));
    assert_eq!(r.status, 201, "{}", r.body);
    let alice = r.json()["id"].as_str().unwrap().to_string();
    let rows = csv_rows(&csv);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!((rows[0]["userName"].as_str(), rows[0]["active"].as_str()), (Some("alice"), Some("true")));
    let alice_anchor = rows[0]["id"].as_str().unwrap().to_string();

    let r = s.scim(
        "PATCH",
        &format!("/scim/csv/Users/{alice}"),
        Some(
            &json!({"schemas": [PATCH], "Operations": [
            {"op": "Replace", "path": "displayName", "value": "Alice L."},
            {"op": "Replace", "path": "active", "value": "False"}]})
            .to_string(),
        ),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let rows = csv_rows(&csv);
    assert_eq!(
        (rows[0]["displayName"].as_str(), rows[0]["active"].as_str()),
        (Some("Alice L."), Some("false"))
    );
    let r = s.scim("POST", "/scim/csv/Users", Some(&user("bob", "Bob").to_string()));
    assert_eq!(r.status, 201, "{}", r.body);
    let bob = r.json()["id"].as_str().unwrap().to_string();

    // The file changed by another program: one row added, one changed, one removed. A delta
    // import (the file's modification is its watermark) brings all three in.
    import(&s, "csv-users", "full");
    edit_csv(&csv, |rows| {
        rows.retain(|r| r["userName"] != "bob");
        rows[0]["displayName"] = json!("Alice Edited");
        rows.push(json!({"id": "carol-1", "userName": "carol", "displayName": "Carol", "givenName": "",
                         "familyName": "", "email": "", "active": "true"}));
    });
    let report = import(&s, "csv-users", "delta");
    assert_eq!(report["import_type"], "delta", "{report}");
    assert_eq!(
        (report["added"].as_u64(), report["updated"].as_u64(), report["deleted"].as_u64()),
        (Some(1), Some(1), Some(1)),
        "{report}"
    );
    assert_eq!(find(&s, "csv", "carol")["totalResults"], 1);
    assert_eq!(s.scim("GET", &format!("/scim/csv/Users/{bob}"), None).status, 404);
    assert_eq!(
        s.scim("GET", &format!("/scim/csv/Users/{alice}"), None).json()["displayName"],
        "Alice Edited"
    );
    // Nothing changed since: the next delta reads nothing.
    let report = import(&s, "csv-users", "delta");
    assert_eq!(
        (report["added"].as_u64(), report["updated"].as_u64(), report["deleted"].as_u64()),
        (Some(0), Some(0), Some(0)),
        "{report}"
    );

    assert_eq!(s.scim("DELETE", &format!("/scim/csv/Users/{alice}"), None).status, 204);
    let rows = csv_rows(&csv);
    assert!(rows.iter().all(|r| r["id"] != alice_anchor.as_str()), "{rows:?}");
    assert_eq!(rows.len(), 1, "carol stays: {rows:?}");
}

/// An import whose page was read from the target before a SCIM write reached it must not undo
/// that write in the connector space: the import script reads the file, then waits (a file
/// named by `HOLD` exists) while a client changes one user and deletes another, and only then
/// hands its page over. Imports of both kinds are tried.
#[test]
fn an_import_page_read_before_a_scim_write_does_not_undo_it() {
    let dir = TempDir::new("shell-import-race");
    let csv = dir.path().join("users.csv");
    let hold = dir.path().join("hold");
    let held = dir.path().join("hold.held");
    let script = dir.path().join("held_import.sh");
    let real = workspace().join("deploy/examples/shell/csv_users.py");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n\
             page=$(python3 '{}') || exit $?\n\
             if [ -e \"$HOLD\" ]; then\n  touch \"$HOLD.held\"\n  while [ -e \"$HOLD\" ]; do sleep 0.05; done\nfi\n\
             printf '%s\\n' \"$page\"\n",
            real.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = example("csv.toml")
        .replace(
            &format!("import_script = \"{}\"", real.display()),
            &format!("import_script = \"{}\"", script.display()),
        )
        .replace(
            r#"env = { CSV_PATH = "${CSV_PATH}" }"#,
            r#"env = { CSV_PATH = "${CSV_PATH}", HOLD = "${HOLD}" }"#,
        );
    assert!(config.contains("held_import.sh") && config.contains("HOLD ="), "{config}");
    let s = Supervisor::spawn_with_env(
        &config,
        dir.path(),
        &[("CSV_PATH", csv.to_str().unwrap()), ("HOLD", hold.to_str().unwrap())],
    );
    s.wait_ready(Duration::from_secs(30));
    s.wait_connector("csv-users", Duration::from_secs(20), |c| !c["last_import"].is_null());

    for (round, kind) in ["full", "delta"].into_iter().enumerate() {
        let names = [format!("kept-{round}"), format!("gone-{round}")];
        let ids: Vec<String> = names
            .iter()
            .map(|name| {
                let r = s.scim("POST", "/scim/csv/Users", Some(&user(name, "Before").to_string()));
                assert_eq!(r.status, 201, "{}", r.body);
                r.json()["id"].as_str().unwrap().to_string()
            })
            .collect();
        if kind == "delta" {
            // The delta import's snapshot beside the file must already hold both users, so
            // that the held page lists the change of each as the file had it before.
            import(&s, "csv-users", "delta");
            edit_csv(&csv, |rows| {
                for row in rows.iter_mut().filter(|r| names.iter().any(|n| r["userName"] == n.as_str())) {
                    row["displayName"] = json!("Outside");
                }
            });
        }

        std::fs::write(&hold, "").unwrap();
        let admin = s.admin;
        let importing = std::thread::spawn(move || {
            request(admin, "POST", &format!("/admin/connectors/csv-users/import?type={kind}"), None, None)
        });
        e2e::wait_until(Duration::from_secs(20), "the import script to read the file", || held.exists());
        // The page is read; now the client writes.
        let patch = json!({"schemas": [PATCH], "Operations": [
            {"op": "Replace", "path": "displayName", "value": "After"}]});
        let r = s.scim("PATCH", &format!("/scim/csv/Users/{}", ids[0]), Some(&patch.to_string()));
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(s.scim("DELETE", &format!("/scim/csv/Users/{}", ids[1]), None).status, 204);
        std::fs::remove_file(&hold).unwrap();
        std::fs::remove_file(&held).unwrap();
        let r = importing.join().unwrap();
        assert_eq!(r.status, 200, "{}", r.body);

        // The connector space still says what the client wrote, as the file does.
        let user = s.scim("GET", &format!("/scim/csv/Users/{}", ids[0]), None);
        assert_eq!(user.status, 200, "{}", user.body);
        assert_eq!(user.json()["displayName"], "After", "{kind} import, report {}", r.body);
        assert_eq!(s.scim("GET", &format!("/scim/csv/Users/{}", ids[1]), None).status, 404);
        assert_eq!(
            find(&s, "csv", &names[1])["totalResults"],
            0,
            "{kind} import brought back a deleted user: {}",
            r.body
        );
        let rows = csv_rows(&csv);
        let row = rows.iter().find(|r| r["userName"] == names[0].as_str()).expect("the kept user's row");
        assert_eq!(row["displayName"], "After");
        assert!(rows.iter().all(|r| r["userName"] != names[1].as_str()), "{rows:?}");

        // The next import reads the file as it is now, and finds nothing to change.
        let report = import(&s, "csv-users", "full");
        assert_eq!((report["added"].as_u64(), report["updated"].as_u64()), (Some(0), Some(0)), "{report}");
        assert_eq!(
            s.scim("GET", &format!("/scim/csv/Users/{}", ids[0]), None).json()["displayName"],
            "After"
        );
    }
}

#[test]
fn user_names_full_of_shell_metacharacters_arrive_byte_for_byte_and_run_nothing() {
    let dir = TempDir::new("shell-injection");
    let csv = dir.path().join("users.csv");
    let canary = dir.path().join("pwned");
    let s =
        Supervisor::spawn_with_env(&example("csv.toml"), dir.path(), &[("CSV_PATH", csv.to_str().unwrap())]);
    s.wait_ready(Duration::from_secs(30));
    let nasty = [
        format!("a$(touch {})b", canary.display()),
        format!("`touch {}`", canary.display()),
        format!("x'; touch {}; echo '\"y", canary.display()),
        "here | cat /etc/passwd > /dev/null & ${HOME} %s %n \\".to_string(),
    ];
    for name in &nasty {
        let r = s.scim("POST", "/scim/csv/Users", Some(&user(name, name).to_string()));
        assert_eq!(r.status, 201, "{name:?}: {}", r.body);
    }
    // A line break or a tab in a userName is refused before it gets near a script (and a
    // displayName may hold them: it arrives as sent too).
    for name in [format!("line one\nline two; touch {} #", canary.display()), "tab\there".into()] {
        let r = s.scim("POST", "/scim/csv/Users", Some(&user(&name, &name).to_string()));
        assert_eq!((r.status, r.json()["scimType"].as_str()), (400, Some("invalidValue")), "{name:?}");
    }
    let multi_line = format!("line one\nline two; touch {} #", canary.display());
    let r = s.scim("POST", "/scim/csv/Users", Some(&user("multi-line", &multi_line).to_string()));
    assert_eq!(r.status, 201, "{}", r.body);
    let rows = csv_rows(&csv);
    let mut stored: Vec<&str> = rows.iter().map(|r| r["userName"].as_str().unwrap()).collect();
    let mut sent: Vec<&str> = nasty.iter().map(String::as_str).chain(["multi-line"]).collect();
    stored.sort();
    sent.sort();
    assert_eq!(stored, sent, "every name is in the file exactly as sent");
    assert!(rows.iter().filter(|r| r["userName"] != "multi-line").all(|r| r["userName"] == r["displayName"]));
    assert!(rows.iter().any(|r| r["displayName"] == multi_line.as_str()), "the line break arrived as sent");
    assert!(!canary.exists(), "nothing ran");
}

/// The JSON-over-HTTP service of the Python example, started here.
struct Service {
    child: Child,
    addr: SocketAddr,
}

impl Service {
    fn start(token: &str) -> Self {
        let addr = free_addr();
        let child = Command::new("python3")
            .arg(workspace().join("deploy/examples/shell/http_service.py"))
            .arg(addr.port().to_string())
            .env("SERVICE_TOKEN", token)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 (Debian package python3)");
        let deadline = Instant::now() + Duration::from_secs(20);
        while e2e::try_request(addr, "GET", "/health", None, None).map(|r| r.status).ok() != Some(200) {
            assert!(Instant::now() < deadline, "the example service did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child, addr }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn python_example_drives_a_json_over_http_service() {
    let token = "service-token-4f1b9c2e7d";
    let service = Service::start(token);
    let dir = TempDir::new("shell-http");
    let url = format!("http://{}", service.addr);
    let s = Supervisor::spawn_with_env(
        &example("http.toml"),
        dir.path(),
        &[("SERVICE_URL", &url), ("SERVICE_TOKEN", token)],
    );
    s.wait_ready(Duration::from_secs(30));
    let users =
        || request(service.addr, "GET", "/users?limit=100", Some(token), None).json()["users"].clone();

    let r = s.scim("POST", "/scim/api/Users", Some(&user("dora", "Dora").to_string()));
    assert_eq!(r.status, 201, "{}", r.body);
    let dora = r.json()["id"].as_str().unwrap().to_string();
    let list = users();
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(
        (list[0]["userName"].as_str(), list[0]["active"].as_bool()),
        (Some("dora"), Some(true)),
        "{list}"
    );
    assert_eq!(list[0]["email"], "someone@example.com");

    let r = s.scim(
        "PATCH",
        &format!("/scim/api/Users/{dora}"),
        Some(&json!({"schemas": [PATCH], "Operations": [{"op": "replace", "path": "displayName", "value": "Dora E."}]}).to_string()),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(users()[0]["displayName"], "Dora E.");

    // A user made in the service directly comes in with an import; the service's 409 for a
    // taken name is a SCIM 409.
    let made = request(
        service.addr,
        "POST",
        "/users",
        Some(token),
        Some(r#"{"userName": "eve", "displayName": "Eve"}"#),
    );
    assert_eq!(made.status, 201, "{}", made.body);
    let report = import(&s, "api-users", "full");
    assert_eq!(report["added"], 1, "{report}");
    assert_eq!(find(&s, "api", "eve")["Resources"][0]["displayName"], "Eve");

    assert_eq!(s.scim("DELETE", &format!("/scim/api/Users/{dora}"), None).status, 204);
    let list = users();
    assert_eq!(list.as_array().unwrap().len(), 1, "only eve is left: {list}");
    assert!(!s.log().contains(token), "the service token never reaches the log");
}

/// A supervisor whose one connector runs `export_script` (a bash script written here), with
/// `extra` parameters.
fn with_script(dir: &TempDir, script: &str, extra: &str) -> Supervisor {
    let path = dir.path().join("export.sh");
    std::fs::write(&path, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = format!(
        r#"
[server]
plain_http = true

[apps.t]
users = "t-users"
token_env = "SCIM_TOKEN"

[connectors.t-users]
executable = "connector-shell"
object_type = "user"
partition = "default"
call_timeout = "20s"

[connectors.t-users.import]
on_start = false

[connectors.t-users.parameters]
export_script = "{}"
attributes = "userName, displayName"
{extra}

[connectors.t-users.attributes]
userName = "userName"
displayName = "displayName"
"#,
        path.display()
    );
    let s = Supervisor::spawn(&config, dir.path());
    s.wait_ready(Duration::from_secs(30));
    s
}

#[test]
fn a_hanging_script_is_killed_with_its_process_group_at_its_timeout() {
    let dir = TempDir::new("shell-hang");
    let pidfile = dir.path().join("child.pid");
    let s = with_script(
        &dir,
        &format!("#!/bin/bash\nsleep 300 &\necho $! > {}\nwait\n", pidfile.display()),
        "export_timeout = \"1s\"",
    );
    let started = Instant::now();
    let r = s.scim("POST", "/scim/t/Users", Some(&user("hang", "Hang").to_string()));
    assert_eq!(r.status, 503, "a timeout is worth a retry: {}", r.body);
    assert!(r.header("retry-after").is_some());
    assert!(r.body.contains("did not finish within 1s"), "{}", r.body);
    assert!(started.elapsed() < Duration::from_secs(15), "answered after the timeout, not the call's");
    let child: u32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while is_alive(child) {
        assert!(Instant::now() < deadline, "the script's child {child} survived");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(s.connector("t-users")["restarts"], 0, "the connector itself was fine");
}

#[test]
fn a_crashing_script_is_reported_with_its_exit_code_and_stderr() {
    let dir = TempDir::new("shell-crash");
    let s = with_script(
        &dir,
        "#!/bin/bash\ncat > /dev/null\necho 'boom: the target is on fire' >&2\nexit 3\n",
        "",
    );
    let r = s.scim("POST", "/scim/t/Users", Some(&user("crash", "Crash").to_string()));
    assert_eq!(r.status, 500, "{}", r.body);
    assert!(r.body.contains("exited with 3") && r.body.contains("boom: the target is on fire"), "{}", r.body);
    assert!(s.log().contains("boom: the target is on fire"), "stderr reaches the supervisor's log");
    // Exit 75 (EX_TEMPFAIL) is a temporary failure: 503 with Retry-After.
    let dir = TempDir::new("shell-tempfail");
    let s = with_script(&dir, "#!/bin/bash\ncat > /dev/null\nexit 75\n", "");
    let r = s.scim("POST", "/scim/t/Users", Some(&user("later", "Later").to_string()));
    assert_eq!(r.status, 503, "{}", r.body);
}

#[test]
fn garbage_on_stdout_is_an_error_naming_the_line() {
    let dir = TempDir::new("shell-garbage");
    let s = with_script(
        &dir,
        "#!/bin/bash\ncat > /dev/null\necho\necho 'Traceback (most recent call last):'\n",
        "",
    );
    let r = s.scim("POST", "/scim/t/Users", Some(&user("junk", "Junk").to_string()));
    assert_eq!(r.status, 500, "{}", r.body);
    assert!(r.body.contains("line 2 is not a JSON object") && r.body.contains("Traceback"), "{}", r.body);
    assert_eq!(find(&s, "t", "junk")["totalResults"], 0, "nothing recorded");
}

#[test]
fn entries_without_a_result_are_reported_failed() {
    let dir = TempDir::new("shell-partial");
    let s = with_script(&dir, "#!/bin/bash\ncat > /dev/null\nexit 0\n", "");
    let r = s.scim("POST", "/scim/t/Users", Some(&user("lost", "Lost").to_string()));
    assert_eq!(r.status, 500, "{}", r.body);
    assert!(r.body.contains("printed no result for this entry"), "{}", r.body);
    assert_eq!(find(&s, "t", "lost")["totalResults"], 0);
    // A script that answers its entry works (the same connector, a script that does).
    let dir = TempDir::new("shell-answers");
    let s = with_script(
        &dir,
        "#!/usr/bin/env python3\nimport json, sys\nfor e in json.load(sys.stdin)['entries']:\n    print(json.dumps({'identifier': e['identifier'], 'anchor': 'a-' + e['attributes']['userName'][0]}))\n",
        "",
    );
    let r = s.scim("POST", "/scim/t/Users", Some(&user("found", "Found").to_string()));
    assert_eq!(r.status, 201, "{}", r.body);
}

/// A script serving every operation: its schema (types, a multi-valued attribute, another
/// object type and anchor), validation problems, exports, and passwords, which must arrive on
/// stdin and nowhere else.
const ALL_OPERATIONS: &str = r#"#!/usr/bin/env python3
import json, os, sys
request = json.load(sys.stdin)
op = request["operation"]
state = os.environ["STATE_FILE"]
def record(line):
    with open(state, "a") as f:
        f.write(json.dumps(line) + "\n")
if op == "schema":
    print(json.dumps({"object_type": "account", "anchor": "key", "attributes": [
        {"name": "login", "type": "string", "required": True},
        {"name": "aliases", "type": "string", "multi_valued": True}]}))
elif op == "validate":
    if request["parameters"].get("fail"):
        print(json.dumps({"problem": "the target says no", "parameter": "parameters"}))
elif op == "export":
    for e in request["entries"]:
        record({"export": e})
        print(json.dumps({"identifier": e["identifier"], "anchor": "k-" + e["attributes"]["login"][0]}))
elif op == "password":
    password = request["new_password"]
    leaked = any(password in a for a in sys.argv) or any(password in v for v in os.environ.values())
    record({"password": password, "anchor": request["anchor"], "leaked": leaked})
"#;

fn all_operations(dir: &TempDir, parameters: &str) -> Supervisor {
    let script = dir.path().join("all.py");
    std::fs::write(&script, ALL_OPERATIONS).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = format!(
        r#"
[server]
plain_http = true

[apps.t]
users = "t-accounts"
token_env = "SCIM_TOKEN"

[connectors.t-accounts]
executable = "connector-shell"
object_type = "account"
partition = "default"
env = {{ STATE_FILE = "{state}" }}
health_interval = "300ms"

[connectors.t-accounts.import]
on_start = false

[connectors.t-accounts.parameters]
schema_script = "{script}"
validate_script = "{script}"
export_script = "{script}"
password_script = "{script}"
parameters = '{parameters}'

[connectors.t-accounts.attributes]
login = "userName"
aliases = "emails.value"
"#,
        state = dir.path().join("state.jsonl").display(),
        script = script.display(),
    );
    Supervisor::spawn(&config, dir.path())
}

#[test]
fn schema_validate_and_password_scripts() {
    let dir = TempDir::new("shell-all");
    let s = all_operations(&dir, "{}");
    s.wait_ready(Duration::from_secs(30));
    let password = "Pa55-w0rd-never-logged";
    let mut body = user("frank", "Frank");
    body["password"] = json!(password);
    body["emails"] =
        json!([{"value": "f@example.com", "type": "work"}, {"value": "frank@example.org", "type": "home"}]);
    let r = s.scim("POST", "/scim/t/Users", Some(&body.to_string()));
    assert_eq!(r.status, 201, "{}", r.body);
    let state: Vec<Value> = std::fs::read_to_string(dir.path().join("state.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let export = &state.iter().find(|l| l.get("export").is_some()).expect("an export")["export"];
    assert_eq!(export["modification"], "add");
    assert_eq!(export["attributes"]["aliases"], json!(["f@example.com", "frank@example.org"]), "{export}");
    let set = state.iter().find(|l| l.get("password").is_some()).expect("a password set");
    assert_eq!(
        (set["password"].as_str(), set["anchor"].as_str(), set["leaked"].as_bool()),
        (Some(password), Some("k-frank"), Some(false)),
        "{set}"
    );
    assert!(!s.log().contains(password), "the password never reaches the log");

    // The validate script's problems are the connector's state and reason.
    let dir = TempDir::new("shell-all-fail");
    let s = all_operations(&dir, r#"{"fail": true}"#);
    s.wait_admin_up();
    let c = s.wait_connector("t-accounts", Duration::from_secs(20), |c| c["state"] != "starting");
    assert_eq!(c["state"], "degraded", "{c}");
    assert!(c["reason"].as_str().unwrap().contains("the target says no"), "{c}");
}
