//! connector-scim through the supervisor's SCIM front, against a real SCIM 2.0 service:
//! scim2-server 0.8.3 (PyPI) as the downstream application, configured by the shipped
//! deploy/examples/scim-relay.toml (app `relay`: Users and Groups) but for its URL, token and the
//! odd parameter a test needs. Each test asserts on the downstream's own state (read through its
//! own API, field by field) and, through a fault proxy between the connector and the service, on
//! the exact requests the connector sent: RFC 7644 whatever dialect the client spoke.
//!
//! Entra ID speaks two dialects (tests/tests/entra.rs mixes them; it has no switch between
//! them): the one it uses by default (capitalised ops, booleans as the strings "True" and
//! "False", members removed by a value list) and the RFC 7644 one it uses with the
//! `aadOptscim062020` feature flag (lower-case ops, JSON booleans, members removed by a
//! `members[value eq "id"]` filter). The user lifecycle runs in each (with a manager as a bare id
//! in the first, as `{"value": id}` in the second), and the group lifecycle uses both.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use e2e::http_faults::{Fault, FaultKind, FaultProxy, Recorded};
use e2e::rest_servers::ScimServer;
use e2e::{Created, Response, Supervisor, TempDir, create_retrying, post_user, try_request, workspace};
use serde_json::{Value, json};

const USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const GROUP: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

// ---------------------------------------------------------------------------------------------
// Set-up
// ---------------------------------------------------------------------------------------------

/// deploy/examples/scim-relay.toml as shipped.
fn example() -> String {
    let path = workspace().join("deploy/examples/scim-relay.toml");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// `config` with `lines` added to the parameters of connector `connector`.
fn with_parameters(config: &str, connector: &str, lines: &str) -> String {
    let table = format!("[connectors.{connector}.parameters]");
    assert_eq!(config.matches(&table).count(), 1, "the example has {table}");
    config.replacen(&table, &format!("{table}\n{lines}"), 1)
}

/// `config` without `connector`'s full import at start (so that the supervisor knows nothing
/// of what the downstream holds until the test imports).
fn without_import_at_start(config: &str, connector: &str) -> String {
    let table = format!("[connectors.{connector}.import]");
    if config.contains(&table) {
        config.replacen(&table, &format!("{table}\non_start = false"), 1)
    } else {
        format!("{config}\n{table}\non_start = false\n")
    }
}

/// A relay: scim2-server, a fault proxy in front of it, and a supervisor whose connectors reach
/// the service through the proxy, with the service's token and RUST_LOG=debug. Fields drop in
/// this order: the supervisor first.
struct Relay {
    s: Supervisor,
    proxy: FaultProxy,
    downstream: ScimServer,
    /// Whether the connectors reach the service directly, without the proxy.
    direct: bool,
    _dir: TempDir,
}

impl Relay {
    /// Starts everything with `config` (the example, edited); waits until the supervisor is
    /// ready and the connectors in `imported` have ended their import at start.
    fn start(label: &str, config: &str, imported: &[&str]) -> Self {
        Self::start_with(label, config, imported, false)
    }

    /// [`Relay::start`]; with `direct`, the connectors reach the service without the proxy.
    fn start_with(label: &str, config: &str, imported: &[&str], direct: bool) -> Self {
        let downstream = ScimServer::start();
        let proxy = FaultProxy::start(downstream.addr());
        let dir = TempDir::new(label);
        let url = if direct { downstream.url() } else { format!("{}/v2", proxy.url()) };
        let env = [
            ("SCIM_TARGET_URL", url.as_str()),
            ("SCIM_TARGET_TOKEN", downstream.token()),
            ("RUST_LOG", "debug"),
        ];
        let s = Supervisor::spawn_with_env(config, dir.path(), &env);
        s.wait_ready(Duration::from_secs(30));
        for c in imported {
            s.wait_connector(c, Duration::from_secs(20), |c| !c["last_import"].is_null());
        }
        Self { s, proxy, downstream, direct, _dir: dir }
    }

    fn scim(&self, method: &str, path: &str, body: Option<&Value>) -> Response {
        let body = body.map(Value::to_string);
        self.s.scim(method, &format!("/scim/relay{path}"), body.as_deref())
    }

    /// Creates a resource through SCIM (`/Users`, `/Groups`); panics unless 201. Its SCIM id.
    fn create(&self, endpoint: &str, body: &Value) -> String {
        let r = self.scim("POST", endpoint, Some(body));
        assert_eq!(r.status, 201, "create {body}: {}", r.body);
        r.json()["id"].as_str().expect("id").to_string()
    }

    fn patch(&self, path: &str, operations: Value) -> Response {
        self.scim("PATCH", path, Some(&json!({"schemas": [PATCH_OP], "Operations": operations})))
    }

    /// PATCHes through SCIM; panics unless 200.
    fn patch_ok(&self, path: &str, operations: Value) -> Value {
        let r = self.patch(path, operations.clone());
        assert_eq!(r.status, 200, "PATCH {path} {operations}: {}", r.body);
        r.json()
    }

    /// The SCIM users named `name` (`filter=userName eq`).
    fn find_users(&self, name: &str) -> Vec<Value> {
        let filter = e2e::percent_encode(&format!("userName eq {}", Value::String(name.into())));
        let r = self.scim("GET", &format!("/Users?filter={filter}"), None);
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()["Resources"].as_array().cloned().unwrap_or_default()
    }

    /// The downstream's one user named `name`; panics unless exactly one.
    fn downstream_user(&self, name: &str) -> Value {
        let found = self.downstream.users_named(name);
        assert_eq!(found.len(), 1, "the downstream must hold exactly one user {name:?}: {found:#?}");
        found.into_iter().next().unwrap()
    }

    /// The downstream's one group named `name`; panics unless exactly one.
    fn downstream_group(&self, name: &str) -> Value {
        let found: Vec<Value> =
            self.downstream.groups().into_iter().filter(|g| g["displayName"] == name).collect();
        assert_eq!(found.len(), 1, "the downstream must hold exactly one group {name:?}: {found:#?}");
        found.into_iter().next().unwrap()
    }

    /// Runs an import on the admin API; panics unless it ends 200 within 30 s.
    fn import(&self, connector: &str, kind: &str) -> Value {
        let (admin, path) = (self.s.admin, format!("/admin/connectors/{connector}/import?type={kind}"));
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(try_request(admin, "POST", &path, None, None));
        });
        let r = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("the {kind} import of {connector} did not end within 30 s"))
            .unwrap_or_else(|e| panic!("{kind} import of {connector}: {e}"));
        assert_eq!(r.status, 200, "{kind} import of {connector}: {}", r.body);
        r.json()
    }

    /// The requests the connector sent downstream with this method, to a target starting with
    /// `/v2<prefix>`.
    fn sent(&self, method: &str, prefix: &str) -> Vec<Recorded> {
        let prefix = format!("/v2{prefix}");
        self.proxy
            .requests()
            .into_iter()
            .filter(|r| r.method == method && r.path_and_query.starts_with(&prefix))
            .collect()
    }

    /// How many requests the proxy has seen so far (for [`Relay::sent_since`]).
    fn mark(&self) -> usize {
        self.proxy.requests().len()
    }

    /// [`Relay::sent`], of the requests after `mark`.
    fn sent_since(&self, mark: usize, method: &str, prefix: &str) -> Vec<Recorded> {
        let prefix = format!("/v2{prefix}");
        self.proxy.requests()[mark..]
            .iter()
            .filter(|r| r.method == method && r.path_and_query.starts_with(&prefix))
            .cloned()
            .collect()
    }

    /// The POSTs of a user named `name` the connector sent.
    fn posts_of(&self, name: &str) -> Vec<Recorded> {
        self.sent("POST", "/Users").into_iter().filter(|r| r.json()["userName"] == name).collect()
    }

    /// What holds after every test: each request the connector sent downstream carried the
    /// service's token, and was RFC 7644 (see [`assert_rfc_request`]); the token is nowhere in
    /// the supervisor's log, at debug level.
    fn assert_clean(&self) {
        let expected = format!("Bearer {}", self.downstream.token());
        let requests = self.proxy.requests();
        assert!(self.direct || !requests.is_empty(), "the connector sent requests through the proxy");
        for r in &requests {
            assert_eq!(
                r.header("authorization"),
                Some(expected.as_str()),
                "{} {} went without the service's token",
                r.method,
                r.path_and_query
            );
            assert_rfc_request(r);
        }
        let log = self.s.log();
        assert!(
            log.contains("discovered the downstream service") && log.contains("DEBUG"),
            "the connectors' lines and debug lines are in the log, so that the check below means something"
        );
        assert!(
            !log.contains(self.downstream.token()),
            "the downstream's bearer token is in the supervisor's log"
        );
        let admin = e2e::request(self.s.admin, "GET", "/admin/connectors", None, None).body;
        assert!(!admin.contains(self.downstream.token()), "the admin API shows the token");
    }
}

/// Asserts that a request the connector sent is RFC 7644 and not Entra's dialect: JSON bodies
/// hold no boolean as a string; a PATCH is a PatchOp whose operations are lower-case `add`,
/// `replace` or `remove`, each with a path; no write of a multi-valued attribute's whole list.
fn assert_rfc_request(r: &Recorded) {
    let what = format!("{} {}: {}", r.method, r.path_and_query, r.body_text());
    if matches!(r.method.as_str(), "GET" | "DELETE") {
        assert!(r.body.is_empty(), "{what}");
        return;
    }
    let body = r.json();
    assert_eq!(r.header("content-type"), Some("application/scim+json"), "{what}");
    fn no_string_booleans(v: &Value, what: &str) {
        match v {
            Value::String(s) => assert!(
                !["true", "false"].contains(&s.to_ascii_lowercase().as_str()),
                "a boolean as a string: {what}"
            ),
            Value::Array(items) => items.iter().for_each(|i| no_string_booleans(i, what)),
            Value::Object(o) => o.values().for_each(|i| no_string_booleans(i, what)),
            _ => {}
        }
    }
    no_string_booleans(&body, &what);
    if r.method == "PATCH" {
        assert_eq!(body["schemas"], json!([PATCH_OP]), "{what}");
        let operations = body["Operations"].as_array().unwrap_or_else(|| panic!("no Operations: {what}"));
        assert!(!operations.is_empty(), "{what}");
        for op in operations {
            let name = op["op"].as_str().unwrap_or_default();
            assert!(["add", "replace", "remove"].contains(&name), "op {name:?} is not RFC 7644's: {what}");
            let path = op["path"].as_str().unwrap_or_else(|| panic!("an operation without a path: {what}"));
            assert!(!(name == "replace" && path == "members"), "the whole member list was replaced: {what}");
            if name == "remove" {
                assert!(op.get("value").is_none(), "a remove with a value (Entra's form): {what}");
            }
        }
    }
}

/// A request target's decoded query pairs.
fn query(target: &str) -> BTreeMap<String, String> {
    let query = target.split_once('?').map(|(_, q)| q).unwrap_or("");
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (e2e::form_decode(k), e2e::form_decode(v))
        })
        .collect()
}

fn keys(object: &Value) -> BTreeSet<String> {
    object.as_object().unwrap_or_else(|| panic!("not an object: {object}")).keys().cloned().collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// A member list's values, sorted.
fn member_values(resource: &Value) -> Vec<String> {
    let mut values: Vec<String> = resource["members"]
        .as_array()
        .map(|m| m.iter().map(|m| m["value"].as_str().expect("a member's value").to_string()).collect())
        .unwrap_or_default();
    values.sort();
    values
}

fn sorted(items: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = items.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

fn scim_user(name: &str) -> Value {
    json!({"schemas": [USER], "userName": name,
           "name": {"givenName": "Given", "familyName": "Family"},
           "emails": [{"type": "work", "value": format!("{name}@example.com"), "primary": true}],
           "active": true})
}

// ---------------------------------------------------------------------------------------------
// Users, in both of Entra's dialects
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Dialect {
    /// Entra's default: capitalised ops, "True"/"False", a bare manager id.
    Entra,
    /// Entra with `aadOptscim062020`: RFC 7644.
    Rfc,
}

impl Dialect {
    fn op(self, name: &str) -> String {
        match self {
            Dialect::Entra => {
                let mut chars = name.chars();
                chars.next().map(|c| c.to_ascii_uppercase().to_string() + chars.as_str()).unwrap_or_default()
            }
            Dialect::Rfc => name.to_string(),
        }
    }

    fn boolean(self, b: bool) -> Value {
        match self {
            Dialect::Entra => json!(if b { "True" } else { "False" }),
            Dialect::Rfc => json!(b),
        }
    }

    fn manager(self, id: &str) -> Value {
        match self {
            Dialect::Entra => json!(id),
            Dialect::Rfc => json!({"value": id}),
        }
    }
}

fn user_lifecycle(dialect: Dialect) {
    let relay = Relay::start("scim-relay-users", &example(), &["relay-users", "relay-groups"]);
    let d = dialect;
    let name = format!("alice-{dialect:?}@example.com").to_ascii_lowercase();

    // 1. Entra looks the user up before it creates it.
    assert!(relay.find_users(&name).is_empty());

    // 2. Created as Entra sends it: what the mapping does not name (name.formatted, roles,
    // meta, a home email) never reaches the service.
    let created = json!({
        "schemas": [USER, ENTERPRISE],
        "externalId": "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef",
        "userName": name,
        "active": true,
        "emails": [{"primary": true, "type": "work", "value": "alice.work@example.com"},
                   {"type": "home", "value": "alice.home@example.org"}],
        "phoneNumbers": [{"type": "mobile", "value": "+1 555 0100"}],
        "meta": {"resourceType": "User"},
        "name": {"formatted": "Alice Liddell", "familyName": "Liddell", "givenName": "Alice"},
        "roles": [],
        ENTERPRISE: {"employeeNumber": "701", "department": "Sales"}
    });
    let id = relay.create("/Users", &created);
    let stored = relay.downstream_user(&name);
    assert_eq!(
        keys(&stored),
        set(&[
            "schemas",
            "id",
            "meta",
            "userName",
            "externalId",
            "active",
            "emails",
            "phoneNumbers",
            "name",
            ENTERPRISE
        ]),
        "exactly the mapped attributes that have values: {stored:#}"
    );
    assert_eq!(stored["schemas"], json!([USER, ENTERPRISE]), "{stored:#}");
    assert_eq!(stored["externalId"], "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef");
    assert_eq!(stored["active"], json!(true), "a JSON boolean: {stored:#}");
    assert_eq!(stored["name"], json!({"givenName": "Alice", "familyName": "Liddell"}), "{stored:#}");
    assert_eq!(
        stored["emails"],
        json!([{"type": "work", "value": "alice.work@example.com"}]),
        "the work email only: {stored:#}"
    );
    assert_eq!(stored["phoneNumbers"], json!([{"type": "mobile", "value": "+1 555 0100"}]), "{stored:#}");
    assert_eq!(stored[ENTERPRISE], json!({"employeeNumber": "701", "department": "Sales"}), "{stored:#}");
    let anchor = stored["id"].as_str().expect("the service's id").to_string();
    let version = stored["meta"]["version"].clone();
    let posts = relay.posts_of(&name);
    assert_eq!(posts.len(), 1, "one create: {posts:#?}");
    assert_eq!(posts[0].path_and_query, "/v2/Users");
    assert_eq!(
        keys(&posts[0].json()),
        set(&["schemas", "userName", "externalId", "active", "emails", "phoneNumbers", "name", ENTERPRISE]),
        "what the connector sent: {}",
        posts[0].body_text()
    );

    // The same userName again: the supervisor's own uniqueness, before the service.
    let r = relay.scim("POST", "/Users", Some(&created));
    assert_eq!((r.status, r.json()["scimType"].as_str()), (409, Some("uniqueness")), "{}", r.body);
    assert_eq!(relay.posts_of(&name).len(), 1, "the second create never reached the service");

    // 3. Entra's update: a deactivation, a path-less replace of two attributes, a remove of a
    // sub-attribute.
    let path = format!("/Users/{id}");
    relay.patch_ok(
        &path,
        json!([
            {"op": d.op("replace"), "path": "active", "value": d.boolean(false)},
            {"op": d.op("replace"), "value": {"displayName": "Alice L.", "title": "Engineer"}},
            {"op": d.op("remove"), "path": "name.givenName"}
        ]),
    );
    let updated = relay.downstream_user(&name);
    assert_eq!(updated["id"], anchor.as_str(), "the same resource");
    assert_ne!(updated["meta"]["version"], version, "written");
    assert_eq!(updated["active"], json!(false), "deactivated, a JSON boolean: {updated:#}");
    assert_eq!(
        (updated["displayName"].as_str(), updated["title"].as_str()),
        (Some("Alice L."), Some("Engineer")),
        "{updated:#}"
    );
    assert_eq!(
        updated["name"],
        json!({"familyName": "Liddell"}),
        "givenName gone, familyName kept: {updated:#}"
    );
    for kept in ["userName", "externalId", "emails", "phoneNumbers", ENTERPRISE] {
        assert_eq!(updated[kept], stored[kept], "{kept} is kept: {updated:#}");
    }
    let patches = relay.sent("PATCH", "/Users/");
    assert!(!patches.is_empty(), "an update is a PATCH where the service supports it");
    assert!(relay.sent("PUT", "/").is_empty(), "no PUT");
    for p in &patches {
        assert_eq!(p.path_and_query, format!("/v2/Users/{anchor}"), "the service's id in the path");
    }
    let ops: Vec<Value> =
        patches.iter().flat_map(|p| p.json()["Operations"].as_array().cloned().unwrap()).collect();
    assert!(ops.contains(&json!({"op": "replace", "path": "active", "value": false})), "{ops:#?}");
    assert!(ops.contains(&json!({"op": "remove", "path": "name.givenName"})), "{ops:#?}");

    // 5. A manager: the client names it by its SCIM id, the service gets its own id.
    let boss_name = format!("boss-{dialect:?}").to_ascii_lowercase();
    let boss = relay.create("/Users", &scim_user(&boss_name));
    let boss_stored = relay.downstream_user(&boss_name);
    assert!(boss_stored.get("phoneNumbers").is_none(), "{boss_stored:#}");
    let boss_anchor = boss_stored["id"].as_str().unwrap().to_string();

    // 4. A mobile number where there is none: added to phoneNumbers (a replace whose filter
    // matches nothing would be refused).
    relay.patch_ok(
        &format!("/Users/{boss}"),
        json!([{"op": d.op("add"), "path": "phoneNumbers[type eq \"mobile\"].value", "value": "+1 555 0199"}]),
    );
    let boss_stored = relay.downstream_user(&boss_name);
    assert_eq!(
        boss_stored["phoneNumbers"],
        json!([{"type": "mobile", "value": "+1 555 0199"}]),
        "{boss_stored:#}"
    );
    assert_eq!(boss_stored["emails"], json!([{"type": "work", "value": format!("{boss_name}@example.com")}]));
    let manager_path = format!("{ENTERPRISE}:manager");
    let r =
        relay.patch_ok(&path, json!([{"op": d.op("add"), "path": manager_path, "value": d.manager(&boss)}]));
    assert_eq!(r[ENTERPRISE]["manager"]["value"], boss.as_str(), "SCIM shows the SCIM id: {r:#}");
    let updated = relay.downstream_user(&name);
    assert_eq!(
        updated[ENTERPRISE]["manager"]["value"],
        boss_anchor.as_str(),
        "the service holds the manager's id of its own, not the SCIM id {boss}: {updated:#}"
    );
    assert_eq!(
        (updated[ENTERPRISE]["employeeNumber"].as_str(), updated[ENTERPRISE]["department"].as_str()),
        (Some("701"), Some("Sales")),
        "the extension's other attributes are kept: {updated:#}"
    );

    // 6. Enabled again, then disabled again (as Entra does when the user is unassigned).
    relay.patch_ok(&path, json!([{"op": d.op("replace"), "path": "active", "value": d.boolean(true)}]));
    assert_eq!(relay.downstream_user(&name)["active"], json!(true));
    relay.patch_ok(&path, json!([{"op": d.op("replace"), "value": {"active": d.boolean(false)}}]));
    let updated = relay.downstream_user(&name);
    assert_eq!(updated["active"], json!(false), "{updated:#}");
    assert_eq!(updated[ENTERPRISE]["manager"]["value"], boss_anchor.as_str(), "{updated:#}");

    // SCIM agrees with the service.
    let user = relay.scim("GET", &path, None).json();
    assert_eq!(user["active"], json!(false), "{user:#}");
    assert_eq!((user["displayName"].as_str(), user["title"].as_str()), (Some("Alice L."), Some("Engineer")));
    assert!(user["name"].get("givenName").is_none(), "{user:#}");
    assert_eq!(user[ENTERPRISE]["manager"]["value"], boss.as_str());

    // 7. Deleted: gone from the service, the other user stays.
    assert_eq!(relay.scim("DELETE", &path, None).status, 204);
    assert!(relay.downstream.users_named(&name).is_empty(), "{:#?}", relay.downstream.users());
    assert_eq!(relay.downstream.request("GET", &format!("/Users/{anchor}"), None).status, 404);
    assert_eq!(relay.sent("DELETE", &format!("/Users/{anchor}")).len(), 1);
    assert_eq!(relay.scim("GET", &path, None).status, 404);
    assert_eq!(relay.downstream.users().len(), 1, "the manager stays");
    relay.assert_clean();
}

#[test]
fn users_in_entras_default_dialect_reach_the_service_as_rfc_7644() {
    user_lifecycle(Dialect::Entra);
}

#[test]
fn users_in_entras_rfc_dialect_reach_the_service_field_by_field() {
    user_lifecycle(Dialect::Rfc);
}

/// A mobile number removed through SCIM (Entra sends `Remove phoneNumbers[type eq "mobile"].value`
/// when the source attribute is cleared), then set again: the service's phone numbers follow
/// the supervisor's own, one mobile element in the end.
#[test]
fn a_mobile_number_removed_then_set_again_stays_one_element_downstream() {
    let relay = Relay::start("scim-relay-mobile", &example(), &["relay-users", "relay-groups"]);
    let mut body = scim_user("mobile");
    body["phoneNumbers"] = json!([{"type": "mobile", "value": "+1 555 0100"}]);
    let id = relay.create("/Users", &body);
    let path = format!("/Users/{id}");
    assert_eq!(
        relay.downstream_user("mobile")["phoneNumbers"],
        json!([{"type": "mobile", "value": "+1 555 0100"}])
    );

    // The value removed: RFC 7644 3.5.2.2 removes the sub-attribute from the matching element,
    // and the supervisor and the service both keep a `{"type": "mobile"}` without a value.
    let r =
        relay.patch_ok(&path, json!([{"op": "Remove", "path": "phoneNumbers[type eq \"mobile\"].value"}]));
    let stored = relay.downstream_user("mobile");
    assert_eq!(stored["phoneNumbers"], r["phoneNumbers"], "the service agrees with SCIM: {stored:#}\n{r:#}");

    // Set again (Entra's add of the value): the supervisor fills the element in; the service
    // must too, not get a second mobile element.
    let mark = relay.mark();
    let r = relay.patch_ok(
        &path,
        json!([{"op": "Add", "path": "phoneNumbers[type eq \"mobile\"].value", "value": "+1 555 0199"}]),
    );
    assert_eq!(r["phoneNumbers"], json!([{"type": "mobile", "value": "+1 555 0199"}]), "SCIM: {r:#}");
    let stored = relay.downstream_user("mobile");
    let sent: Vec<Value> = relay
        .sent_since(mark, "PATCH", "/Users/")
        .iter()
        .flat_map(|p| p.json()["Operations"].as_array().cloned().unwrap())
        .collect();
    assert_eq!(
        stored["phoneNumbers"],
        json!([{"type": "mobile", "value": "+1 555 0199"}]),
        "one mobile element downstream, as in SCIM; the connector sent {}",
        Value::Array(sent)
    );
    relay.assert_clean();
}

#[test]
fn with_put_updates_read_the_resource_and_send_it_whole_with_if_match() {
    let config = with_parameters(&example(), "relay-users", "update_method = \"put\"");
    let relay = Relay::start("scim-relay-put", &config, &["relay-users", "relay-groups"]);
    let mut body = scim_user("putter");
    body["title"] = json!("Clerk");
    let id = relay.create("/Users", &body);
    let path = format!("/Users/{id}");
    let before = relay.downstream_user("putter");

    // Someone else writes in between the connector's read and its PUT: the first PUT carries a
    // stale If-Match, is refused 412, and the connector reads again and retries.
    relay.proxy.push(Fault::on("PUT", "/v2/Users/", FaultKind::Status { code: 412, retry_after: None, body: r#"{"schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"], "status": "412", "detail": "version mismatch"}"#.into() }));
    let mark = relay.mark();
    relay.patch_ok(&path, json!([{"op": "Replace", "path": "displayName", "value": "Put Whole"}, {"op": "Remove", "path": "title"}]));
    let stored = relay.downstream_user("putter");
    assert_eq!(stored["displayName"], "Put Whole");
    assert!(stored.get("title").is_none(), "title removed: {stored:#}");
    assert_eq!(stored["emails"], before["emails"], "what the change did not touch is kept");
    let puts = relay.sent_since(mark, "PUT", "/Users/");
    assert_eq!(puts.len(), 2, "a refused PUT, then one after a fresh read: {puts:#?}");
    for put in &puts {
        assert!(put.header("if-match").is_some_and(|v| v.starts_with("W/")), "If-Match sent: {put:#?}");
        assert!(put.json().get("meta").is_none(), "meta is not sent back");
    }
    assert!(relay.sent_since(mark, "PATCH", "/Users/").is_empty(), "no PATCH with update_method = put");
    assert!(relay.sent_since(mark, "GET", "/Users/").len() >= 2, "the resource read before each PUT");
    relay.assert_clean();
}

// ---------------------------------------------------------------------------------------------
// Groups
// ---------------------------------------------------------------------------------------------

#[test]
fn group_members_are_added_and_removed_one_by_one() {
    let relay = Relay::start("scim-relay-groups", &example(), &["relay-users", "relay-groups"]);
    let names = ["ann", "bob", "cat"];
    let ids: Vec<String> = names.iter().map(|n| relay.create("/Users", &scim_user(n))).collect();
    let (ann, bob, cat) = (&ids[0], &ids[1], &ids[2]);
    let anchors: Vec<String> =
        names.iter().map(|n| relay.downstream_user(n)["id"].as_str().unwrap().to_string()).collect();
    let (ann_a, bob_a, cat_a) = (anchors[0].as_str(), anchors[1].as_str(), anchors[2].as_str());

    // Created as Entra sends it (its ADSCIM schema, meta), with a member.
    let group = json!({
        "schemas": [GROUP, "http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group"],
        "externalId": "8aa1a0c0-c4c3-4bc0-b4a5-2ef676900159",
        "displayName": "Team",
        "meta": {"resourceType": "Group"},
        "members": [{"value": ann}]
    });
    let gid = relay.create("/Groups", &group);
    let stored = relay.downstream_group("Team");
    assert_eq!(
        keys(&stored),
        set(&["schemas", "id", "meta", "displayName", "externalId", "members"]),
        "{stored:#}"
    );
    assert_eq!(stored["schemas"], json!([GROUP]), "{stored:#}");
    assert_eq!(stored["externalId"], "8aa1a0c0-c4c3-4bc0-b4a5-2ef676900159");
    assert_eq!(member_values(&stored), [ann_a], "the member is the service's id of ann: {stored:#}");
    let group_anchor = stored["id"].as_str().unwrap().to_string();

    // Entra adds members (its default dialect), then removes one by a filter (its RFC dialect).
    let path = format!("/Groups/{gid}");
    relay.patch_ok(
        &path,
        json!([{"op": "Add", "path": "members", "value": [{"value": bob}, {"value": cat}]}]),
    );
    assert_eq!(member_values(&relay.downstream_group("Team")), sorted(&[ann_a, bob_a, cat_a]));
    relay.patch_ok(&path, json!([{"op": "remove", "path": format!("members[value eq \"{ann}\"]")}]));
    assert_eq!(member_values(&relay.downstream_group("Team")), sorted(&[bob_a, cat_a]));
    // And removes one by a value list (its default dialect), renaming the group at once.
    let r = relay.patch_ok(
        &path,
        json!([
            {"op": "Remove", "path": "members", "value": [{"value": bob}]},
            {"op": "Replace", "path": "displayName", "value": "Team B"}
        ]),
    );
    assert_eq!(r["members"].as_array().map(Vec::len), Some(1), "{r:#}");
    let stored = relay.downstream_group("Team B");
    assert_eq!(stored["id"], group_anchor.as_str());
    assert_eq!(member_values(&stored), [cat_a], "only cat is left: {stored:#}");
    assert_eq!(stored["externalId"], "8aa1a0c0-c4c3-4bc0-b4a5-2ef676900159", "kept: {stored:#}");

    // What the service received: the members added and removed, each remove one member, never
    // the whole list.
    let patches = relay.sent("PATCH", "/Groups/");
    assert!(relay.sent("PUT", "/").is_empty(), "no PUT");
    let ops: Vec<Value> =
        patches.iter().flat_map(|p| p.json()["Operations"].as_array().cloned().unwrap()).collect();
    let member_ops: Vec<&Value> =
        ops.iter().filter(|o| o["path"].as_str().is_some_and(|p| p.starts_with("members"))).collect();
    for op in &member_ops {
        match op["op"].as_str() {
            Some("add") => {
                assert_eq!(op["path"], "members", "{op}");
                let values: Vec<&str> =
                    op["value"].as_array().unwrap().iter().map(|v| v["value"].as_str().unwrap()).collect();
                assert!(
                    !values.is_empty() && values.iter().all(|v| [bob_a, cat_a].contains(v)),
                    "an add carries the added members only, never the members already in: {op}"
                );
            }
            Some("remove") => {
                let p = op["path"].as_str().unwrap();
                assert!(
                    p.starts_with("members[value eq \"") && p.ends_with("\"]"),
                    "a remove by filter: {op}"
                );
            }
            other => panic!("a member operation {other:?}: {op}"),
        }
    }
    let added: BTreeSet<String> = member_ops
        .iter()
        .filter(|o| o["op"] == "add")
        .flat_map(|o| o["value"].as_array().unwrap().iter().map(|v| v["value"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(added, set(&[bob_a, cat_a]), "bob and cat were added, by their service ids: {member_ops:#?}");
    let removed: BTreeSet<String> = member_ops
        .iter()
        .filter(|o| o["op"] == "remove")
        .map(|o| o["path"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        removed,
        set(&[&format!("members[value eq \"{ann_a}\"]"), &format!("members[value eq \"{bob_a}\"]")]),
        "{member_ops:#?}"
    );
    assert!(ops.contains(&json!({"op": "replace", "path": "displayName", "value": "Team B"})), "{ops:#?}");

    // Deleted.
    assert_eq!(relay.scim("DELETE", &path, None).status, 204);
    assert!(relay.downstream.groups().is_empty(), "{:#?}", relay.downstream.groups());
    assert_eq!(relay.downstream.users().len(), 3, "the users stay");
    relay.assert_clean();
}

// ---------------------------------------------------------------------------------------------
// Imports
// ---------------------------------------------------------------------------------------------

/// POSTs `body` straight to the service until the id it assigns sorts after `other` (with
/// `after`) or before it: scim2-server lists resources in the order of their ids, which it draws
/// at random, and an import reads them in that order. (The other tries are deleted.)
fn post_listed(downstream: &ScimServer, body: &Value, other: &Value, after: bool) -> Value {
    let other = other["id"].as_str().expect("an id");
    for _ in 0..64 {
        let created = downstream.post("/Users", body);
        let id = created["id"].as_str().expect("an id");
        if (id > other) == after {
            return created;
        }
        assert_eq!(downstream.request("DELETE", &format!("/Users/{id}"), None).status, 204);
    }
    panic!("scim2-server never drew an id on the wanted side of {other}");
}

/// The body of a user for the service itself, whose manager is `manager` (as the service
/// gave it).
fn managed_user(name: &str, manager: &Value) -> Value {
    json!({
        "schemas": [USER, ENTERPRISE], "userName": name, "displayName": "Made Outside",
        "active": false, "name": {"givenName": "Made", "familyName": "Outside"},
        "emails": [{"type": "work", "value": "made@example.com"}],
        ENTERPRISE: {"department": "Ops", "manager": {"value": manager["id"]}}
    })
}

/// Users and a group made straight in the service come in with an on-demand full import, their
/// references as SCIM ids; a change made straight in the service comes in with a delta import,
/// which asks for what changed since the last import; a deletion goes with the next full one.
#[test]
fn imports_bring_in_what_was_made_and_changed_in_the_service() {
    let relay = Relay::start("scim-relay-import", &example(), &["relay-users", "relay-groups"]);
    let boss =
        relay.downstream.post("/Users", &json!({"schemas": [USER], "userName": "made-boss", "active": true}));
    // Listed after its manager (see the next test for the other way round).
    let made = post_listed(&relay.downstream, &managed_user("made-outside", &boss), &boss, true);
    relay.downstream.post(
        "/Groups",
        &json!({"schemas": [GROUP], "displayName": "Made Group", "members": [{"value": made["id"]}]}),
    );
    assert!(relay.find_users("made-outside").is_empty(), "not known before an import");

    let report = relay.import("relay-users", "full");
    assert_eq!((report["added"].as_u64(), report["deleted"].as_u64()), (Some(2), Some(0)), "{report:#}");
    let report = relay.import("relay-groups", "full");
    assert_eq!(report["added"].as_u64(), Some(1), "{report:#}");
    let found = relay.find_users("made-outside");
    assert_eq!(found.len(), 1, "found through SCIM");
    let user = &found[0];
    let id = user["id"].as_str().unwrap().to_string();
    assert_eq!(user["active"], json!(false), "a JSON boolean: {user:#}");
    assert_eq!(user["displayName"], "Made Outside");
    assert_eq!(user["name"]["givenName"], "Made");
    assert_eq!(user["emails"][0]["value"], "made@example.com", "{user:#}");
    assert_eq!(user[ENTERPRISE]["department"], "Ops", "{user:#}");
    let boss_id = relay.find_users("made-boss")[0]["id"].as_str().unwrap().to_string();
    assert_eq!(
        user[ENTERPRISE]["manager"]["value"],
        boss_id.as_str(),
        "the manager as its SCIM id: {user:#}"
    );
    let r = relay.scim("GET", "/Groups?filter=displayName+eq+%22Made+Group%22", None);
    let group = r.json()["Resources"][0].clone();
    assert_eq!(member_values(&group), std::slice::from_ref(&id), "the member as its SCIM id: {group:#}");
    // (`count=1` alone is the connector's check of its credentials.)
    let full_lists: Vec<String> = relay
        .sent("GET", "/Users?")
        .into_iter()
        .map(|r| r.path_and_query)
        .filter(|t| query(t).get("count").is_some_and(|c| c != "1"))
        .collect();
    assert!(!full_lists.is_empty());
    assert!(
        full_lists.iter().all(|t| query(t).contains_key("startIndex") && query(t)["count"] == "100"),
        "paged by startIndex and count (page_size): {full_lists:#?}"
    );

    // Changed straight in the service.
    let anchor = made["id"].as_str().unwrap();
    relay.downstream.patch(
        &format!("/Users/{anchor}"),
        json!([{"op": "replace", "path": "displayName", "value": "Changed Outside"},
               {"op": "replace", "path": "active", "value": true}]),
    );
    let last_modified = relay.downstream.get(&format!("/Users/{anchor}"))["meta"]["lastModified"].clone();
    let mark = relay.mark();
    let report = relay.import("relay-users", "delta");
    assert_eq!(report["import_type"], "delta", "{report:#}");
    assert_eq!(report["updated"].as_u64(), Some(1), "{report:#}");
    let lists = relay.sent_since(mark, "GET", "/Users?");
    assert!(!lists.is_empty());
    let filter = query(&lists[0].path_and_query).get("filter").cloned().unwrap_or_default();
    let since = filter.strip_prefix("meta.lastModified ge \"").and_then(|f| f.strip_suffix('"'));
    let since = since.unwrap_or_else(|| panic!("the delta filters on meta.lastModified: {filter:?}"));
    assert!(
        since >= boss["meta"]["lastModified"].as_str().unwrap() && since < last_modified.as_str().unwrap(),
        "the watermark is the last import's newest lastModified ({since}), before the change ({last_modified})"
    );
    let user = relay.scim("GET", &format!("/Users/{id}"), None).json();
    assert_eq!(
        (user["displayName"].as_str(), user["active"].as_bool()),
        (Some("Changed Outside"), Some(true))
    );

    // Deleted straight in the service: gone after the next full import.
    assert_eq!(relay.downstream.request("DELETE", &format!("/Users/{anchor}"), None).status, 204);
    let report = relay.import("relay-users", "full");
    assert_eq!(report["deleted"].as_u64(), Some(1), "{report:#}");
    assert_eq!(relay.scim("GET", &format!("/Users/{id}"), None).status, 404);
    relay.assert_clean();
}

/// A user whose manager the service lists after it (a forward reference within one import):
/// the import brings the manager in as the user's SCIM manager all the same.
#[test]
fn an_imported_manager_listed_after_its_report_is_resolved() {
    let config = without_import_at_start(&example(), "relay-users");
    let relay = Relay::start("scim-relay-import-order", &config, &["relay-groups"]);
    let boss =
        relay.downstream.post("/Users", &json!({"schemas": [USER], "userName": "late-boss", "active": true}));
    let made = post_listed(&relay.downstream, &managed_user("early-report", &boss), &boss, false);
    let listed: Vec<Value> = relay.downstream.users().iter().map(|u| u["userName"].clone()).collect();
    assert_eq!(listed, [json!("early-report"), json!("late-boss")], "the service's order");

    let report = relay.import("relay-users", "full");
    assert_eq!(report["added"].as_u64(), Some(2), "{report:#}");
    let boss_id = relay.find_users("late-boss")[0]["id"].as_str().unwrap().to_string();
    let user = relay.find_users("early-report")[0].clone();
    assert_eq!(
        user[ENTERPRISE]["manager"]["value"],
        boss_id.as_str(),
        "the manager (service id {}) as its SCIM id, though listed after the user: {user:#}",
        boss["id"]
    );
    assert_eq!(made[ENTERPRISE]["manager"]["value"], boss["id"]);
    relay.assert_clean();
}

// ---------------------------------------------------------------------------------------------
// The service's refusals and faults
// ---------------------------------------------------------------------------------------------

#[test]
fn service_refusals_map_to_scim_statuses() {
    // No import at start: a user made straight in the service is unknown to the supervisor, so
    // that a SCIM create of its name reaches the service.
    let config = without_import_at_start(&example(), "relay-users");
    let relay = Relay::start("scim-relay-refusals", &config, &["relay-groups"]);

    // A userName taken in the service: its 409 is SCIM's.
    relay.downstream.post("/Users", &json!({"schemas": [USER], "userName": "taken"}));
    let r = relay.scim("POST", "/Users", Some(&scim_user("taken")));
    assert_eq!((r.status, r.json()["scimType"].as_str()), (409, Some("uniqueness")), "{}", r.body);
    assert!(r.body.contains("already in use"), "the service's detail reaches the client: {}", r.body);
    assert_eq!(relay.posts_of("taken").len(), 1, "the create reached the service");
    assert_eq!(relay.downstream.users_named("taken").len(), 1, "still one");
    assert!(relay.find_users("taken").is_empty(), "nothing recorded for the refused create");

    // 429 with a Retry-After beyond max_retry_after (10 s): not waited, not retried; SCIM 503
    // with a Retry-After.
    relay.proxy.push(Fault::on(
        "POST",
        "/v2/Users",
        FaultKind::Status { code: 429, retry_after: Some(120), body: "{\"detail\": \"slow down\"}".into() },
    ));
    let started = Instant::now();
    let r = relay.scim("POST", "/Users", Some(&scim_user("throttled")));
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.header("retry-after").is_some(), "a 503 carries Retry-After: {:?}", r.headers);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the 120 s were not waited: {:?}",
        started.elapsed()
    );
    assert_eq!(relay.posts_of("throttled").len(), 1, "not retried");
    assert!(relay.downstream.users_named("throttled").is_empty());
    assert!(relay.find_users("throttled").is_empty());

    // 400 invalidValue with the service's detail: SCIM 400 with that detail.
    relay.proxy.push(Fault::on(
        "POST",
        "/v2/Users",
        FaultKind::Status {
            code: 400,
            retry_after: None,
            body: json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"], "status": "400",
                         "scimType": "invalidValue", "detail": "employeeNumber must be digits"})
            .to_string(),
        },
    ));
    let r = relay.scim("POST", "/Users", Some(&scim_user("invalid")));
    assert_eq!((r.status, r.json()["scimType"].as_str()), (400, Some("invalidValue")), "{}", r.body);
    let detail = r.json()["detail"].as_str().unwrap_or_default().to_string();
    assert!(
        detail.contains("employeeNumber must be digits"),
        "the service's detail reaches the client: {detail}"
    );
    assert!(relay.find_users("invalid").is_empty());

    // The service works again: the connector is (still, or again) ready, and creates.
    relay.s.wait_connector("relay-users", Duration::from_secs(15), |c| c["state"] == "ready");
    relay.create("/Users", &scim_user("after"));
    assert_eq!(relay.downstream.users().len(), 2, "taken and after: {:#?}", relay.downstream.users());
    assert_eq!(relay.proxy.pending_faults(), 0);
    relay.assert_clean();
}

/// Creates `name` as Entra would (retrying on 503): ends with 201, or 409 when an earlier
/// attempt's write was confirmed meanwhile.
fn create_as_entra(relay: &Relay, name: &str) {
    let created = create_retrying(relay.s.scim, "relay", name, Duration::from_secs(30));
    assert!(matches!(created, Created::Id(_) | Created::Conflict), "{name}: {created:?}");
}

/// `name` is in the service exactly once and in SCIM exactly once, and the connector POSTed
/// it `posts` times.
fn assert_once(relay: &Relay, name: &str, posts: usize) {
    assert_eq!(relay.downstream.users_named(name).len(), 1, "{name}: exactly one user downstream");
    assert_eq!(relay.find_users(name).len(), 1, "{name}: exactly one SCIM resource");
    let sent = relay.posts_of(name);
    assert_eq!(sent.len(), posts, "{name}: the POSTs the connector sent: {sent:#?}");
}

#[test]
fn lost_and_unreadable_answers_are_retried_or_reconciled_never_duplicated() {
    let config = with_parameters(&example(), "relay-users", "timeout = \"1s\"");
    let relay = Relay::start("scim-relay-faults", &config, &["relay-users", "relay-groups"]);

    // 503 with Retry-After: 1, once: retried after a second.
    relay.proxy.push(Fault::on(
        "POST",
        "/v2/Users",
        FaultKind::Status { code: 503, retry_after: Some(1), body: "{\"detail\": \"busy\"}".into() },
    ));
    let started = Instant::now();
    let r = relay.scim("POST", "/Users", Some(&scim_user("busy")));
    assert_eq!(r.status, 201, "{}", r.body);
    assert!(started.elapsed() >= Duration::from_secs(1), "the Retry-After was waited");
    assert_once(&relay, "busy", 2);

    // The write happened, the answer was lost (the connection closed).
    relay.proxy.push(Fault::on("POST", "/v2/Users", FaultKind::DropAfterForward));
    create_as_entra(&relay, "dropped");
    assert_once(&relay, "dropped", 1);
    let lookups: Vec<Recorded> = relay
        .sent("GET", "/Users?")
        .into_iter()
        .filter(|r| query(&r.path_and_query).get("filter").is_some_and(|f| f == "userName eq \"dropped\""))
        .collect();
    assert!(!lookups.is_empty(), "the lost create was looked up by userName");

    // The answer comes after the connector's 1 s timeout.
    relay.proxy.push(Fault::on("POST", "/v2/Users", FaultKind::DelayAfterForward(Duration::from_secs(3))));
    create_as_entra(&relay, "delayed");
    assert_once(&relay, "delayed", 1);

    // An answer that is not JSON.
    relay.proxy.push(Fault::on(
        "POST",
        "/v2/Users",
        FaultKind::ReplaceBody { status: None, body: "{\"id\": \"9".into() },
    ));
    create_as_entra(&relay, "malformed");
    assert_once(&relay, "malformed", 1);

    // The reconciled users hold the service's ids: an update reaches the right resource.
    for name in ["dropped", "delayed", "malformed"] {
        let id = relay.find_users(name)[0]["id"].as_str().unwrap().to_string();
        relay.patch_ok(
            &format!("/Users/{id}"),
            json!([{"op": "Replace", "path": "title", "value": "Reconciled"}]),
        );
        assert_eq!(relay.downstream_user(name)["title"], "Reconciled", "{name}");
    }
    assert_eq!(relay.proxy.pending_faults(), 0, "every fault was met");
    assert_eq!(relay.downstream.users().len(), 4, "nothing else downstream: {:#?}", relay.downstream.users());
    relay.assert_clean();
}

// ---------------------------------------------------------------------------------------------
// The service killed mid-burst
// ---------------------------------------------------------------------------------------------

/// How the first attempt of a create ended: its status (0: no answer) and body.
type Attempt = (u16, String);

/// 30 creates from three clients; the service is killed (SIGTERM, which it does not catch) while
/// they run, and started again with what it had acknowledged (its file). Every create the
/// supervisor did not acknowledge is retried as Entra would. In the end every userName is in
/// the service exactly once, every create the supervisor acknowledged is there, and no create
/// was answered other than 201, or 503 with Retry-After (an outage is no client error, nor a
/// refusal). With `behind_gateway`, the connector reaches the service through a reverse proxy,
/// which answers 502 while the service is down (as a load balancer does); without, it connects
/// to the service itself (refused while it is down, reset when killed mid-request).
fn killed_mid_burst(label: &str, behind_gateway: bool) {
    let mut relay = Relay::start_with(label, &example(), &["relay-users", "relay-groups"], !behind_gateway);
    let names: Vec<String> = (0..30).map(|i| format!("burst{i:02}")).collect();
    let first: Arc<Mutex<BTreeMap<String, Attempt>>> = Arc::default();
    let scim = relay.s.scim;
    let clients: Vec<_> = names
        .chunks(10)
        .map(|chunk| {
            let (chunk, first) = (chunk.to_vec(), first.clone());
            std::thread::spawn(move || {
                for name in chunk {
                    let attempt = match post_user(scim, "relay", &name) {
                        Ok(r) => {
                            let retry_after = r.header("retry-after").is_some();
                            (r.status, format!("{} (Retry-After: {retry_after})", r.body))
                        }
                        Err(e) => (0, e.to_string()),
                    };
                    first.lock().unwrap().insert(name, attempt);
                }
            })
        })
        .collect();

    // Killed once a few creates are in, while the others go on.
    e2e::wait_until(Duration::from_secs(20), "a few creates to reach the service", || {
        relay.downstream.users().len() >= 6
    });
    relay.downstream.stop();
    let killed_at = first.lock().unwrap().len();
    e2e::wait_until(Duration::from_secs(30), "the clients to meet the outage", || {
        let first = first.lock().unwrap();
        first.len() == names.len() || first.values().filter(|(status, _)| *status != 201).count() >= 3
    });
    relay.downstream.restart();
    for client in clients {
        client.join().expect("a client");
    }
    let first = first.lock().unwrap().clone();
    let failed: Vec<&String> =
        first.iter().filter(|(_, (status, _))| *status != 201).map(|(n, _)| n).collect();
    assert!(killed_at < names.len() && !failed.is_empty(), "the outage hit the burst: {first:#?}");

    // Entra retries what was not acknowledged, once the connector is back.
    relay.s.wait_connector("relay-users", Duration::from_secs(30), |c| c["state"] == "ready");
    for name in &failed {
        create_as_entra(&relay, name);
    }

    let users = relay.downstream.users();
    let mut count: BTreeMap<String, usize> = BTreeMap::new();
    for u in &users {
        *count.entry(u["userName"].as_str().unwrap().to_string()).or_default() += 1;
    }
    let duplicated: Vec<(&String, &usize)> = count.iter().filter(|(_, n)| **n > 1).collect();
    assert!(duplicated.is_empty(), "duplicated downstream: {duplicated:?}");
    let missing: Vec<&String> = names.iter().filter(|n| !count.contains_key(*n)).collect();
    assert!(missing.is_empty(), "missing downstream: {missing:?}");
    assert_eq!(users.len(), names.len(), "nothing else downstream");
    for (name, (_, body)) in first.iter().filter(|(_, (status, _))| *status == 201) {
        let id = serde_json::from_str::<Value>(body.split(" (Retry-After").next().unwrap()).unwrap()["id"]
            .as_str()
            .expect("a 201 has an id")
            .to_string();
        let r = relay.scim("GET", &format!("/Users/{id}"), None);
        assert_eq!(
            (r.status, r.json()["userName"].as_str()),
            (200, Some(name.as_str())),
            "{name}: {}",
            r.body
        );
    }
    let listed = relay.scim("GET", "/Users?count=100", None).json();
    assert_eq!(listed["totalResults"].as_u64(), Some(names.len() as u64), "one SCIM user per name");
    relay.assert_clean();

    // How the creates during the outage were answered.
    let wrong: Vec<(&String, &Attempt)> = first
        .iter()
        .filter(|(_, (status, body))| {
            !(*status == 201 || (*status == 503 && body.ends_with("(Retry-After: true)")))
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "creates during the outage must be answered 201, or 503 with Retry-After; {} of {} were not: {wrong:#?}",
        wrong.len(),
        failed.len()
    );
}

#[test]
fn a_service_killed_mid_burst_loses_no_acknowledged_write_and_duplicates_none() {
    killed_mid_burst("scim-relay-killed", false);
}

#[test]
fn a_service_killed_behind_a_gateway_mid_burst_loses_and_duplicates_nothing() {
    killed_mid_burst("scim-relay-killed-gw", true);
}
