//! The conformance kit (`ecma-connector-check`) run against our connectors, each on a real
//! target, and against deliberately broken connectors, which must fail exactly the checks
//! their fault breaks.

use std::path::Path;

use e2e::slapd::{LdapServer, Slapd};
use e2e::{TempDir, binary, workspace};

/// Runs the kit on `description` (TOML); returns its exit code and report.
fn check(dir: &Path, description: &str) -> (i32, String) {
    let file = dir.join("description.toml");
    std::fs::write(&file, description).unwrap();
    let out = std::process::Command::new(binary("ecma-connector-check")).arg(&file).output().unwrap();
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    (out.status.code().unwrap_or(-1), format!("{report}{}", String::from_utf8_lossy(&out.stderr)))
}

/// The report's closing figures.
fn figures(report: &str) -> (usize, usize) {
    let last = report
        .lines()
        .rev()
        .find(|l| l.ends_with(" failed"))
        .unwrap_or_else(|| panic!("no summary:\n{report}"));
    let numbers: Vec<usize> = last.split_whitespace().filter_map(|w| w.parse().ok()).collect();
    (numbers[0], numbers[1])
}

fn failed_checks(report: &str) -> Vec<String> {
    report
        .lines()
        .filter_map(|l| l.strip_prefix("FAIL  "))
        .map(|l| l.split(':').next().unwrap_or(l).to_string())
        .collect()
}

fn sql_description(executable: &Path, db: &Path, env: &str) -> String {
    format!(
        r#"
executable = "{}"
object_type = "user"
partition = "default"
env = {{ RUST_LOG = "warn"{env} }}

[parameters]
connection_string = "sqlite://{}"
table = "users"
anchor_column = "id"
create_table = "true"
columns = "user_name unique, display_name, email"
watermark_column = "updated_at"

[object]
match_attribute = "user_name"
attributes = {{ user_name = "kit", display_name = "Kit", email = "kit@example.com" }}
update = {{ display_name = "Kit, checked" }}
"#,
        executable.display(),
        db.display()
    )
}

#[test]
fn connector_sql_passes_every_check() {
    let dir = TempDir::new("kit-sql");
    let (code, report) =
        check(dir.path(), &sql_description(&binary("connector-sql"), &dir.path().join("t.db"), ""));
    assert_eq!(code, 0, "{report}");
    let (passed, failed) = figures(&report);
    assert_eq!(failed, 0, "{report}");
    // The writing checks ran: an add, a re-sent add, a lookup, an import, an update, a missing
    // object, concurrency, a delete and its re-send, besides the protocol's.
    assert!(passed >= 20, "{report}");
    assert!(report.contains("ok    export: eight concurrent calls each get their result"), "{report}");
    assert!(!report.contains("skip  "), "every check ran (imports, deltas, lookups, concurrency):\n{report}");
}

#[test]
fn connector_ldap_passes_every_check_against_slapd() {
    let dir = TempDir::new("kit-ldap");
    let slapd = Slapd::start();
    let description = format!(
        r#"
executable = "{}"
object_type = "inetOrgPerson"
partition = "{suffix}"
env = {{ RUST_LOG = "warn" }}

[parameters]
url = "{url}"
security = "starttls"
ca_file = "{ca}"
bind_dn = "{admin}"
bind_password = "{password}"
object_class = "inetOrgPerson"
container = "ou=People,{suffix}"
create_containers = "true"

[object]
match_attribute = "uid"
dn = "uid={{match}},ou=People,{suffix}"
attributes = {{ uid = "kit", cn = "Kit", sn = "Kit" }}
update = {{ sn = "Checked" }}
"#,
        binary("connector-ldap").display(),
        suffix = slapd.suffix(),
        url = slapd.url(),
        ca = slapd.ca_file().display(),
        admin = slapd.admin_dn(),
        password = slapd.admin_password(),
    );
    let (code, report) = check(dir.path(), &description);
    assert_eq!(code, 0, "{report}");
    assert_eq!(figures(&report).1, 0, "{report}");
    assert!(report.contains("ok    LookupEntries: finds the object by its anchor"), "{report}");
}

#[test]
fn connector_shell_passes_every_check_with_the_csv_example() {
    let dir = TempDir::new("kit-shell");
    let script = workspace().join("deploy/examples/shell/csv_users.py");
    let description = format!(
        r#"
executable = "{}"
object_type = "user"
partition = "default"
env = {{ RUST_LOG = "warn", CSV_PATH = "{csv}" }}

[parameters]
export_script = "{script}"
import_script = "{script}"
validate_script = "{script}"
attributes = "userName, displayName, email, active:boolean"
anchor_attribute = "id"

[object]
match_attribute = "userName"
attributes = {{ userName = "kit", displayName = "Kit", email = "kit@example.com", active = true }}
update = {{ displayName = "Kit, checked" }}
"#,
        binary("connector-shell").display(),
        csv = dir.path().join("users.csv").display(),
        script = script.display(),
    );
    let (code, report) = check(dir.path(), &description);
    assert_eq!(code, 0, "{report}");
    assert_eq!(figures(&report).1, 0, "{report}");
}

#[test]
fn connector_rest_passes_every_check_against_json_server() {
    let dir = TempDir::new("kit-rest");
    let service = e2e::rest_servers::JsonServer::start();
    // The users' parameters of deploy/examples/rest/json-server.toml, with unique_attribute
    // (json-server keeps nothing unique: the kit re-sends an add and expects no second object).
    let example: toml::Table =
        std::fs::read_to_string(workspace().join("deploy/examples/rest/json-server.toml"))
            .unwrap()
            .parse()
            .unwrap();
    let mut parameters = example["connectors"]["rest-users"]["parameters"].as_table().unwrap().clone();
    parameters.insert("base_url".into(), service.url().into());
    parameters.insert("unique_attribute".into(), "userName".into());
    let description = format!(
        r#"
executable = "{}"
object_type = "user"
partition = "default"
env = {{ RUST_LOG = "warn" }}

[parameters]
{}
[object]
match_attribute = "userName"
attributes = {{ userName = "kit", displayName = "Kit", email = "kit@example.com", active = true }}
update = {{ displayName = "Kit, checked" }}
"#,
        binary("connector-rest").display(),
        toml::to_string(&parameters).unwrap(),
    );
    let (code, report) = check(dir.path(), &description);
    assert_eq!(code, 0, "{report}");
    let (passed, failed) = figures(&report);
    assert_eq!(failed, 0, "{report}");
    assert!(passed >= 20, "{report}");
    assert!(!report.contains("skip  "), "every check ran (imports, deltas, lookups, concurrency):\n{report}");
    // What the kit wrote and deleted is gone from the service.
    assert!(
        service.collection("users").iter().all(|u| u["userName"] != "kit"),
        "{:?}",
        service.collection("users")
    );
}

#[test]
fn connector_scim_passes_every_check_against_scim2_server() {
    let dir = TempDir::new("kit-scim");
    let service = e2e::rest_servers::ScimServer::start();
    let description = format!(
        r#"
executable = "{}"
object_type = "user"
partition = "default"
env = {{ RUST_LOG = "warn" }}

[parameters]
base_url = "{}"
resource_type = "User"
auth = "bearer"
token = "{}"

[object]
match_attribute = "userName"
attributes = {{ userName = "kit", displayName = "Kit", 'emails[type eq "work"].value' = "kit@example.com", active = true }}
update = {{ displayName = "Kit, checked" }}
"#,
        binary("connector-scim").display(),
        service.url(),
        service.token(),
    );
    let (code, report) = check(dir.path(), &description);
    assert_eq!(code, 0, "{report}");
    let (passed, failed) = figures(&report);
    assert_eq!(failed, 0, "{report}");
    assert!(passed >= 20, "{report}");
    assert!(!report.contains("skip  "), "every check ran (imports, deltas, lookups, concurrency):\n{report}");
}

#[test]
fn a_broken_connector_fails_the_checks_its_faults_break_and_no_others() {
    let dir = TempDir::new("kit-broken");
    let faulty = binary("connector-faulty");
    // Garbage on stdout, and a lookup that also returns an entry of another type.
    let env = r#", FAULT = "garbage-stdout", FOREIGN_LOOKUP = "1""#;
    let (code, report) = check(dir.path(), &sql_description(&faulty, &dir.path().join("a.db"), env));
    assert_eq!(code, 1, "{report}");
    let mut failed = failed_checks(&report);
    failed.sort();
    assert_eq!(
        failed,
        [
            "LookupEntries",
            "export", // the re-sent add's lookup finds two entries
            "export", // the update's lookup meets the foreign entry first
            "writes nothing on stdout (no handshake line",
        ],
        "{report}"
    );
    // A Hello that answers a version the supervisor never offered.
    let env = r#", FAULT = "wrong-protocol""#;
    let (code, report) = check(dir.path(), &sql_description(&faulty, &dir.path().join("b.db"), env));
    assert_eq!(code, 1, "{report}");
    assert!(report.contains("FAIL  Hello: answers with a protocol version both sides speak"), "{report}");
    // One that dies at once.
    let env = r#", FAULT = "crash-on-start""#;
    let (code, report) = check(dir.path(), &sql_description(&faulty, &dir.path().join("c.db"), env));
    assert_eq!((code, figures(&report)), (1, (0, 1)), "{report}");
    assert!(report.contains("FAIL  starts and listens on ECMA_SOCKET: it exited"), "{report}");
}
