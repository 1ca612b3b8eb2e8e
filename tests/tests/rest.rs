//! connector-rest through the supervisor's SCIM front, against real services: json-server 0.17
//! (users and groups, deploy/examples/rest/json-server.toml) and the spyne SOAP user service
//! (deploy/examples/rest/soap.toml), each as shipped but for its URL, credentials and the odd
//! parameter a test needs. Each test asserts on the service's own state (json-server's
//! collections, the SOAP service's store) and, where a fault proxy sits between the connector
//! and the service, on the exact requests the connector sent.

use std::collections::BTreeSet;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use e2e::http_faults::{Fault, FaultKind, FaultProxy, Recorded};
use e2e::rest_servers::{JsonServer, OAuthServer, SoapUsers};
use e2e::{Created, Response, Supervisor, TempDir, create_retrying, free_addr, try_request, workspace};
use serde_json::{Value, json};

const USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const GROUP: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

/// A value shaped to break whatever it is pasted into: JSON (a quote, a backslash), XML (an end
/// tag, a CDATA end), the templates themselves (a placeholder), and URLs (an encoded slash, dot
/// segments, a query, a fragment, another query parameter).
const NASTY: &str = r#"a"b\</x>]]>{{userName}}%2F../../x?y#z&w=1"#;

// ---------------------------------------------------------------------------------------------
// Configuration and SCIM helpers
// ---------------------------------------------------------------------------------------------

/// A shipped example of deploy/examples/rest/.
fn example(name: &str) -> String {
    let path = workspace().join("deploy/examples/rest").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// The json-server example with `lines` added to the parameters of the users' connector (the
/// first `base_url`), or of both connectors with `both`.
fn json_config(lines: &str, both: bool) -> String {
    let config = example("json-server.toml");
    let base = "base_url = \"${REST_BASE_URL}\"";
    assert_eq!(config.matches(base).count(), 2, "the example's two connectors take REST_BASE_URL");
    let replacement = format!("{base}\n{lines}");
    if both { config.replace(base, &replacement) } else { config.replacen(base, &replacement, 1) }
}

/// `config` without `connector`'s full import at start (so that the test's own import is the
/// first, or that nothing reaches the service before the test's requests).
fn without_import_at_start(config: &str, connector: &str) -> String {
    let table = format!("[connectors.{connector}.import]");
    if config.contains(&table) {
        config.replacen(&table, &format!("{table}\non_start = false"), 1)
    } else {
        format!("{config}\n{table}\non_start = false\n")
    }
}

/// Starts a supervisor with `config` and `env`, and waits until it is ready.
fn start(dir: &TempDir, config: &str, env: &[(&str, &str)]) -> Supervisor {
    let s = Supervisor::spawn_with_env(config, dir.path(), env);
    s.wait_ready(Duration::from_secs(30));
    s
}

/// Waits until each connector's import at start has ended (so that it cannot interleave with
/// the test's writes).
fn wait_imported(s: &Supervisor, connectors: &[&str]) {
    for c in connectors {
        s.wait_connector(c, Duration::from_secs(20), |c| !c["last_import"].is_null());
    }
}

fn scim_user(name: &str) -> Value {
    json!({"schemas": [USER], "userName": name, "displayName": format!("{name} display"),
           "name": {"givenName": "Given", "familyName": "Family"},
           "emails": [{"type": "work", "value": format!("{name}@example.com"), "primary": true}],
           "active": true})
}

fn create(s: &Supervisor, body: &Value) -> Response {
    s.scim("POST", "/scim/rest/Users", Some(&body.to_string()))
}

/// Creates a user; panics unless 201. Returns its SCIM id.
fn create_ok(s: &Supervisor, app: &str, body: &Value) -> String {
    let r = s.scim("POST", &format!("/scim/{app}/Users"), Some(&body.to_string()));
    assert_eq!(r.status, 201, "create {}: {}", body["userName"], r.body);
    r.json()["id"].as_str().expect("id").to_string()
}

fn patch(s: &Supervisor, path: &str, operations: Value) -> Response {
    let body = json!({"schemas": [PATCH_OP], "Operations": operations});
    s.scim("PATCH", path, Some(&body.to_string()))
}

/// A request target's path and its decoded query pairs.
fn split_target(target: &str) -> (String, Vec<(String, String)>) {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let pairs = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (e2e::form_decode(k), e2e::form_decode(v))
        })
        .collect();
    (path.to_string(), pairs)
}

/// `GET /scim/<app>/Users?filter=userName eq "<name>"`, its `Resources`.
fn find_users(s: &Supervisor, app: &str, name: &str) -> Vec<Value> {
    let filter =
        e2e::percent_encode(&format!("userName eq \"{}\"", name.replace('\\', "\\\\").replace('"', "\\\"")));
    let r = s.scim("GET", &format!("/scim/{app}/Users?filter={filter}"), None);
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["Resources"].as_array().cloned().unwrap_or_default()
}

/// json-server's users named `name`.
fn js_users(js: &JsonServer, name: &str) -> Vec<Value> {
    js.collection("users").into_iter().filter(|u| u["userName"] == name).collect()
}

/// json-server's one user named `name`; panics unless exactly one.
fn js_user(js: &JsonServer, name: &str) -> Value {
    let found = js_users(js, name);
    assert_eq!(found.len(), 1, "json-server must hold exactly one user {name:?}: {found:?}");
    found.into_iter().next().unwrap()
}

fn keys(object: &Value) -> BTreeSet<String> {
    object.as_object().unwrap_or_else(|| panic!("not an object: {object}")).keys().cloned().collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// The requests the proxy recorded with this method whose body mentions `needle` (as JSON
/// text, so that quotes and backslashes are escaped as the connector would send them).
fn sent_with(proxy: &FaultProxy, method: &str, needle: &str) -> Vec<Recorded> {
    proxy.requests().into_iter().filter(|r| r.method == method && r.body_text().contains(needle)).collect()
}

/// An RFC 3339 time as the connector writes `{{now}}`: `2026-12-05T10:00:00.000Z`.
fn is_timestamp(value: &Value) -> bool {
    value.as_str().is_some_and(|t| {
        t.len() == 24 && t.ends_with('Z') && t.as_bytes()[10] == b'T' && t.as_bytes()[19] == b'.'
    })
}

/// Runs an import on the admin API, giving up after `timeout` (`None` then).
fn try_import(s: &Supervisor, connector: &str, kind: &str, timeout: Duration) -> Option<Value> {
    let (admin, path) = (s.admin, format!("/admin/connectors/{connector}/import?type={kind}"));
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(try_request(admin, "POST", &path, None, None));
    });
    match rx.recv_timeout(timeout) {
        Ok(Ok(r)) => {
            assert_eq!(r.status, 200, "{kind} import of {connector}: {}", r.body);
            Some(r.json())
        }
        Ok(Err(e)) => panic!("{kind} import of {connector}: {e}"),
        Err(_) => None,
    }
}

fn import(s: &Supervisor, connector: &str, kind: &str) -> Value {
    try_import(s, connector, kind, Duration::from_secs(30))
        .unwrap_or_else(|| panic!("the {kind} import of {connector} did not finish within 30 s"))
}

fn counts(report: &Value) -> (u64, u64, u64) {
    let n = |k: &str| report[k].as_u64().unwrap_or_else(|| panic!("no {k} in {report}"));
    (n("added"), n("updated"), n("deleted"))
}

/// Standard base64 (for the Basic credentials that must not be logged).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            out.push(if i <= chunk.len() {
                ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char
            } else {
                '='
            });
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// json-server: users, groups, imports
// ---------------------------------------------------------------------------------------------

#[test]
fn json_server_users_follow_entras_sequence_with_typed_values() {
    let js = JsonServer::start();
    let dir = TempDir::new("rest-entra");
    let s = start(&dir, &example("json-server.toml"), &[("REST_BASE_URL", &js.url())]);
    wait_imported(&s, &["rest-users", "rest-groups"]);

    // Created as Entra sends it: attributes the mapping does not name (externalId, roles,
    // name.formatted, meta) never reach the service.
    let created = json!({
        "schemas": [USER, ENTERPRISE],
        "externalId": "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef",
        "userName": "alice@example.com",
        "displayName": "Alice Liddell",
        "active": true,
        "emails": [{"primary": true, "type": "work", "value": "alice.work@example.com"},
                   {"type": "home", "value": "alice.home@example.org"}],
        "meta": {"resourceType": "User"},
        "name": {"formatted": "Alice Liddell", "familyName": "Liddell", "givenName": "Alice"},
        "roles": []
    });
    let id = create_ok(&s, "rest", &created);
    let stored = js_user(&js, "alice@example.com");
    assert_eq!(
        keys(&stored),
        set(&["id", "userName", "displayName", "name", "email", "active", "updatedAt"]),
        "exactly the mapped attributes that have values, plus the service's id: {stored}"
    );
    assert_eq!(stored["displayName"], "Alice Liddell");
    assert_eq!(stored["name"], json!({"givenName": "Alice", "familyName": "Liddell"}), "{stored}");
    assert_eq!(stored["email"], "alice.work@example.com", "the work email, not the home one");
    assert_eq!(stored["active"], json!(true), "active is a JSON boolean, not a string: {stored}");
    assert!(is_timestamp(&stored["updatedAt"]), "updatedAt is the time of the write: {stored}");
    assert!(stored["id"].is_u64(), "json-server assigned the id: {stored}");

    // The same userName again: the supervisor's own uniqueness, before the service.
    let r = create(&s, &created);
    assert_eq!((r.status, r.json()["scimType"].as_str()), (409, Some("uniqueness")), "{}", r.body);
    assert_eq!(js_users(&js, "alice@example.com").len(), 1, "no second user in json-server");

    // Entra's update: capitalised ops, a boolean as the string "False", a path-less replace,
    // and a remove of a sub-attribute.
    let r = patch(
        &s,
        &format!("/scim/rest/Users/{id}"),
        json!([
            {"op": "Replace", "path": "active", "value": "False"},
            {"op": "Replace", "value": {"displayName": "Alice L."}},
            {"op": "Remove", "path": "name.givenName"}
        ]),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let updated = js_user(&js, "alice@example.com");
    assert_eq!(updated["active"], json!(false), "\"False\" arrives as the JSON boolean false: {updated}");
    assert_eq!(updated["displayName"], "Alice L.");
    assert_eq!(
        updated["name"],
        json!({"familyName": "Liddell"}),
        "givenName gone, familyName kept: {updated}"
    );
    assert_eq!(updated["email"], "alice.work@example.com", "untouched members stay: {updated}");
    assert_eq!(updated["id"], stored["id"]);
    assert!(
        updated["updatedAt"].as_str() > stored["updatedAt"].as_str(),
        "updatedAt moves on with the write: {} then {}",
        stored["updatedAt"],
        updated["updatedAt"]
    );

    // SCIM agrees with the service.
    let r = s.scim("GET", &format!("/scim/rest/Users/{id}"), None);
    assert_eq!(r.status, 200, "{}", r.body);
    let user = r.json();
    assert_eq!(user["active"], json!(false), "{user}");
    assert_eq!(user["displayName"], "Alice L.");
    assert_eq!(user["name"]["familyName"], "Liddell");
    assert!(user["name"].get("givenName").is_none(), "{user}");

    // Delete: gone from json-server, and from SCIM.
    assert_eq!(s.scim("DELETE", &format!("/scim/rest/Users/{id}"), None).status, 204);
    assert!(js.collection("users").is_empty(), "json-server still has {:?}", js.collection("users"));
    assert_eq!(s.scim("GET", &format!("/scim/rest/Users/{id}"), None).status, 404);
}

#[test]
fn groups_and_managers_hold_json_server_ids() {
    let js = JsonServer::start();
    let dir = TempDir::new("rest-groups");
    let s = start(&dir, &example("json-server.toml"), &[("REST_BASE_URL", &js.url())]);
    wait_imported(&s, &["rest-users", "rest-groups"]);

    let ann = create_ok(&s, "rest", &scim_user("ann"));
    let mut bob = scim_user("bob");
    bob["schemas"] = json!([USER, ENTERPRISE]);
    bob[ENTERPRISE] = json!({"manager": {"value": ann}});
    let bob = create_ok(&s, "rest", &bob);
    let (ann_js, bob_js) = (js_user(&js, "ann")["id"].clone(), js_user(&js, "bob")["id"].clone());
    assert_ne!(ann_js, bob_js);
    // A reference is the referenced object's anchor, as text (the connector's references are
    // strings; json-server's ids are numbers).
    let ann_anchor = ann_js.to_string();
    let bob_anchor = bob_js.to_string();
    assert_eq!(
        js_user(&js, "bob")["manager"],
        json!(ann_anchor),
        "bob's manager is ann's json-server id, not her SCIM id {ann}"
    );

    let group = json!({"schemas": [GROUP], "displayName": "Team", "externalId": "team-ext",
                       "members": [{"value": ann}]});
    let r = s.scim("POST", "/scim/rest/Groups", Some(&group.to_string()));
    assert_eq!(r.status, 201, "{}", r.body);
    let gid = r.json()["id"].as_str().unwrap().to_string();
    let groups = js.collection("groups");
    assert_eq!(groups.len(), 1, "{groups:?}");
    assert_eq!(
        (groups[0]["displayName"].as_str(), groups[0]["externalId"].as_str()),
        (Some("Team"), Some("team-ext")),
        "{}",
        groups[0]
    );
    assert_eq!(groups[0]["members"], json!([ann_anchor]), "{}", groups[0]);

    // Entra's member changes: an add, then a remove by filter.
    let path = format!("/scim/rest/Groups/{gid}");
    let r = patch(&s, &path, json!([{"op": "Add", "path": "members", "value": [{"value": bob}]}]));
    assert_eq!(r.status, 200, "{}", r.body);
    let mut members: Vec<Value> =
        js.collection("groups")[0]["members"].as_array().cloned().unwrap_or_default();
    members.sort_by_key(|m| m.to_string());
    let mut both = vec![json!(ann_anchor), json!(bob_anchor)];
    both.sort_by_key(|m| m.to_string());
    assert_eq!(members, both, "both members after the add");

    let r = patch(&s, &path, json!([{"op": "Remove", "path": format!("members[value eq \"{ann}\"]")}]));
    assert_eq!(r.status, 200, "{}", r.body);
    let groups = js.collection("groups");
    assert_eq!(groups[0]["members"], json!([bob_anchor]), "only bob is left: {}", groups[0]);
    assert_eq!(groups[0]["displayName"], "Team", "the rest of the group is kept: {}", groups[0]);
    let r = s.scim("GET", &path, None);
    assert_eq!(r.json()["members"].as_array().map(|m| m.len()), Some(1), "{}", r.body);
    assert_eq!(r.json()["members"][0]["value"], bob.as_str());
}

/// 250 users straight in json-server, read by an import 40 a page through json-server's Link
/// headers: seven list requests, every user once.
#[test]
fn an_import_pages_through_link_headers() {
    let users: Vec<Value> = (1..=250)
        .map(|i| {
            json!({"id": i, "userName": format!("bulk{i:03}"), "displayName": format!("Bulk {i}"),
                         "active": true, "updatedAt": "2025-01-01T00:00:00.000Z"})
        })
        .collect();
    let js = JsonServer::start_with(&json!({"users": users, "groups": []}));
    let proxy = FaultProxy::start(js.addr());
    let dir = TempDir::new("rest-paging");
    let config = without_import_at_start(
        &example("json-server.toml").replacen("page_size = \"100\"", "page_size = \"40\"", 1),
        "rest-users",
    );
    assert!(config.contains("page_size = \"40\""));
    let s = start(&dir, &config, &[("REST_BASE_URL", &proxy.url())]);
    wait_imported(&s, &["rest-groups"]);
    proxy.clear_requests();

    // The import runs on a thread; a connector that asks for more pages than there are is
    // stopped (every later request answered 500) and reported with the pages it asked for.
    let pages = || -> Vec<String> {
        proxy
            .requests()
            .into_iter()
            .filter(|r| r.method == "GET" && r.path_and_query.starts_with("/users"))
            .map(|r| r.path_and_query)
            .collect()
    };
    let (admin, done) = (s.admin, mpsc::channel());
    std::thread::spawn(move || {
        let r = try_request(admin, "POST", "/admin/connectors/rest-users/import?type=full", None, None);
        let _ = done.0.send(r);
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let report = loop {
        if let Ok(r) = done.1.recv_timeout(Duration::from_millis(50)) {
            let r = r.expect("import request");
            assert_eq!(r.status, 200, "{}", r.body);
            break r.json();
        }
        let asked = pages();
        if asked.len() > 20 || Instant::now() > deadline {
            proxy.push(
                Fault::any(FaultKind::Status { code: 500, retry_after: None, body: "{}".into() })
                    .times(1_000_000),
            );
            let distinct: BTreeSet<&String> = asked.iter().collect();
            panic!(
                "the import asked for {} list pages (7 are needed for 250 users at 40 a page) and had not \
                 finished; the distinct requests: {distinct:#?}",
                asked.len()
            );
        }
    };
    assert_eq!(report["added"], 250, "{report}");
    let asked = pages();
    assert_eq!(asked.len(), 7, "one request per page of 40: {asked:#?}");
    assert!(asked.iter().all(|p| p.contains("_limit=40")), "{asked:#?}");
    for name in ["bulk001", "bulk040", "bulk041", "bulk250"] {
        assert_eq!(find_users(&s, "rest", name).len(), 1, "{name} came in with the import");
    }
}

/// A few users straight in json-server come in with an on-demand import; one deleted straight
/// from json-server goes with the next full import; one changed straight in json-server (with a
/// later updatedAt) comes in with a delta import, which reads only what changed.
#[test]
fn imports_bring_in_adds_deletes_and_delta_changes_made_in_json_server() {
    let users: Vec<Value> = (1..=5)
        .map(|i| {
            json!({"id": i, "userName": format!("made{i}"), "displayName": format!("Made {i}"),
                         "email": format!("made{i}@example.com"), "active": i % 2 == 1,
                         "updatedAt": format!("2025-01-01T00:00:0{i}.000Z")})
        })
        .collect();
    let js = JsonServer::start_with(&json!({"users": users, "groups": []}));
    let proxy = FaultProxy::start(js.addr());
    let dir = TempDir::new("rest-import");
    let config = without_import_at_start(&example("json-server.toml"), "rest-users");
    let s = start(&dir, &config, &[("REST_BASE_URL", &proxy.url())]);

    let report = import(&s, "rest-users", "full");
    assert_eq!(counts(&report), (5, 0, 0), "{report}");
    let made3 = find_users(&s, "rest", "made3");
    assert_eq!(made3.len(), 1, "made3 is found through SCIM");
    assert_eq!(made3[0]["displayName"], "Made 3");
    assert_eq!(made3[0]["emails"][0]["value"], "made3@example.com");
    assert_eq!(find_users(&s, "rest", "made2")[0]["active"], json!(false), "typed from the JSON boolean");

    // Deleted straight from json-server: gone after the next full import.
    assert_eq!(js.request("DELETE", "/users/3", None).status, 200);
    let report = import(&s, "rest-users", "full");
    assert_eq!(counts(&report), (0, 0, 1), "{report}");
    assert!(find_users(&s, "rest", "made3").is_empty(), "made3 is gone from SCIM");
    let id3 = &made3[0]["id"];
    assert_eq!(s.scim("GET", &format!("/scim/rest/Users/{}", id3.as_str().unwrap()), None).status, 404);

    // Changed straight in json-server with a later updatedAt: a delta import asks for what
    // changed since the last import's latest updatedAt, and brings the change in.
    let r = js.request(
        "PATCH",
        "/users/2",
        Some(&json!({"displayName": "Changed Outside", "updatedAt": "2025-06-01T00:00:00.000Z"})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    proxy.clear_requests();
    let report = import(&s, "rest-users", "delta");
    assert_eq!(report["import_type"], "delta", "{report}");
    assert_eq!(counts(&report), (0, 1, 0), "{report}");
    let read = report["updated"].as_u64().unwrap() + report["unchanged"].as_u64().unwrap();
    assert!(
        read <= 2,
        "a delta reads what changed since the watermark (and the newest again), not all 4: {report}"
    );
    let list = proxy.requests().into_iter().find(|r| r.method == "GET").expect("the delta's list request");
    let (path, query) = split_target(&list.path_and_query);
    assert_eq!(path, "/users");
    assert!(
        query.contains(&("updatedAt_gte".to_string(), "2025-01-01T00:00:05.000Z".to_string())),
        "the delta asks for what changed since the newest updatedAt of the last import: {query:?}"
    );
    let made2 = find_users(&s, "rest", "made2");
    assert_eq!(made2[0]["displayName"], "Changed Outside");
}

// ---------------------------------------------------------------------------------------------
// Values that look like syntax
// ---------------------------------------------------------------------------------------------

#[test]
fn injection_shaped_values_stay_data_in_json_bodies_paths_and_queries() {
    let js = JsonServer::start();
    let proxy = FaultProxy::start(js.addr());
    let dir = TempDir::new("rest-injection");
    let s = start(&dir, &example("json-server.toml"), &[("REST_BASE_URL", &proxy.url())]);
    wait_imported(&s, &["rest-users", "rest-groups"]);
    proxy.clear_requests();

    // The create's answer is replaced with `{}` (written, but no id to read): the supervisor
    // then looks the user up by userName, which sends the value in a query string.
    proxy.push(Fault::on("POST", "/users", FaultKind::ReplaceBody { status: None, body: "{}".into() }));
    let mut body = scim_user(NASTY);
    body["displayName"] = json!(NASTY);
    body["name"]["familyName"] = json!(NASTY);
    let id = create_ok(&s, "rest", &body);

    let stored = js_user(&js, NASTY);
    assert_eq!(stored["userName"], NASTY, "byte for byte: {stored}");
    assert_eq!(stored["displayName"], NASTY);
    assert_eq!(stored["name"]["familyName"], NASTY);
    assert_eq!(js.collection("users").len(), 1, "one user, nothing else: {:?}", js.collection("users"));

    let posts: Vec<Recorded> = proxy.requests().into_iter().filter(|r| r.method == "POST").collect();
    assert_eq!(posts.len(), 1, "one create, not repeated after the unreadable answer: {posts:#?}");
    let sent = posts[0].json();
    assert_eq!(
        keys(&sent),
        set(&["userName", "displayName", "name", "email", "active", "updatedAt"]),
        "the body's structure is the template's: {}",
        posts[0].body_text()
    );
    assert_eq!(keys(&sent["name"]), set(&["givenName", "familyName"]));
    assert_eq!(sent["userName"], NASTY);
    assert_eq!(posts[0].path_and_query, "/users");
    assert_eq!(posts[0].header("content-type"), Some("application/json"));

    let searches: Vec<Recorded> = proxy
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path_and_query.starts_with("/users?"))
        .collect();
    assert_eq!(searches.len(), 1, "one lookup by userName: {searches:#?}");
    let (path, query) = split_target(&searches[0].path_and_query);
    assert_eq!(path, "/users", "the value stays out of the path: {}", searches[0].path_and_query);
    assert_eq!(
        query,
        vec![("userName".to_string(), NASTY.to_string())],
        "the value is one query value, percent-encoded: {}",
        searches[0].path_and_query
    );
    assert!(!searches[0].path_and_query.contains('#'), "{}", searches[0].path_and_query);

    // An update puts the anchor in the path and the value in a JSON body.
    let other = r#"x", "admin": true, "y": "{{displayName}}"#;
    proxy.clear_requests();
    let r = patch(
        &s,
        &format!("/scim/rest/Users/{id}"),
        json!([{"op": "replace", "path": "displayName", "value": other}]),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let stored = js_user(&js, NASTY);
    assert_eq!(stored["displayName"], other, "{stored}");
    assert!(stored.get("admin").is_none(), "no member was injected: {stored}");
    let patches: Vec<Recorded> = proxy.requests().into_iter().filter(|r| r.method == "PATCH").collect();
    assert_eq!(patches.len(), 1, "{patches:#?}");
    assert_eq!(patches[0].path_and_query, format!("/users/{}", stored["id"]));
    assert_eq!(keys(&patches[0].json()), set(&["displayName", "updatedAt"]), "{}", patches[0].body_text());
    assert_eq!(s.scim("GET", &format!("/scim/rest/Users/{id}"), None).json()["userName"], NASTY);
}

#[test]
fn injection_shaped_values_stay_data_in_soap_envelopes() {
    let soap = SoapUsers::start(Some("provisioning:soap-basic-pw-7d1e"));
    let proxy = FaultProxy::start(soap.addr());
    let dir = TempDir::new("soap-injection");
    let config = without_import_at_start(&example("soap.toml"), "soap-users");
    let env = [
        ("SOAP_BASE_URL", &*proxy.url()),
        ("SOAP_USER", "provisioning"),
        ("SOAP_PASSWORD", "soap-basic-pw-7d1e"),
    ];
    let s = start(&dir, &config, &env);
    proxy.clear_requests();

    let mut body = scim_user(NASTY);
    body["displayName"] = json!(NASTY);
    body["schemas"] = json!([USER, ENTERPRISE]);
    body[ENTERPRISE] = json!({"department": NASTY});
    create_ok(&s, "soap", &body);
    let stored = soap.user(NASTY).expect("the user is stored under its exact name");
    assert_eq!(stored["displayName"], NASTY, "{stored}");
    assert_eq!(stored["groups"], json!([NASTY]), "{stored}");
    assert_eq!(stored["email"], format!("{NASTY}@example.com"));
    let create = proxy
        .requests()
        .into_iter()
        .find(|r| r.header("soapaction") == Some("\"CreateUser\""))
        .expect("a CreateUser");
    let text = create.body_text();
    assert!(!text.contains("</x>") && !text.contains("]]>"), "markup in values is escaped: {text}");
    assert_eq!(text.matches("<u:userName>").count(), 1, "one userName element: {text}");

    // A create whose answer is not XML: the supervisor looks the user up (FindUsers, the value
    // in an XML body) and finds it rather than creating it again.
    let second = format!("{NASTY}-2");
    proxy.push(Fault::on("POST", "/", FaultKind::ReplaceBody { status: None, body: "<broken".into() }));
    create_ok(&s, "soap", &scim_user(&second));
    let named: Vec<Value> = soap.state()["users"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|u| u["userName"] == second.as_str())
        .cloned()
        .collect();
    assert_eq!(named.len(), 1, "exactly one {second:?}: {named:?}");
    let finds: Vec<Recorded> =
        proxy.requests().into_iter().filter(|r| r.header("soapaction") == Some("\"FindUsers\"")).collect();
    assert_eq!(finds.len(), 1, "one lookup: {finds:#?}");
    assert!(!finds[0].body_text().contains("</x>"), "{}", finds[0].body_text());
    assert_eq!(soap.state()["calls"]["CreateUser"], 2, "no create was repeated");
}

// ---------------------------------------------------------------------------------------------
// Faults between the connector and the service
// ---------------------------------------------------------------------------------------------

/// A supervisor for the json-server example with a fault proxy in front of the service and a
/// request timeout of 1 s.
fn behind_proxy(js: &JsonServer, dir: &TempDir) -> (FaultProxy, Supervisor) {
    let proxy = FaultProxy::start(js.addr());
    let s = start(dir, &json_config("timeout = \"1s\"", false), &[("REST_BASE_URL", &proxy.url())]);
    wait_imported(&s, &["rest-users", "rest-groups"]);
    (proxy, s)
}

/// Creates `name` as a client that retries on 503 would (Entra does): the supervisor
/// reconciles an unknown outcome by looking the user up, so the client ends with 201, or with
/// 409 if an earlier attempt's write was confirmed meanwhile.
fn create_as_entra(s: &Supervisor, name: &str) {
    let created = create_retrying(s.scim, "rest", name, Duration::from_secs(30));
    assert!(matches!(created, Created::Id(_) | Created::Conflict), "{name}: {created:?}");
}

/// Asserts that `name` is in json-server exactly once, in SCIM exactly once, and that the
/// connector POSTed it `posts` times.
fn assert_once(s: &Supervisor, js: &JsonServer, proxy: &FaultProxy, name: &str, posts: usize) {
    assert_eq!(js_users(js, name).len(), 1, "{name}: exactly one user in json-server");
    assert_eq!(find_users(s, "rest", name).len(), 1, "{name}: exactly one SCIM resource");
    let sent = sent_with(proxy, "POST", &format!("\"userName\":\"{name}\""));
    assert_eq!(sent.len(), posts, "{name}: POSTs the connector sent: {sent:#?}");
}

#[test]
fn lost_and_unreadable_answers_are_retried_or_reconciled_never_duplicated() {
    let js = JsonServer::start();
    let dir = TempDir::new("rest-faults");
    let (proxy, s) = behind_proxy(&js, &dir);

    // (a) 429 with Retry-After: 1, once: retried after a second.
    proxy.push(Fault::on(
        "POST",
        "/users",
        FaultKind::Status { code: 429, retry_after: Some(1), body: "{\"message\": \"slow down\"}".into() },
    ));
    let started = Instant::now();
    let r = create(&s, &scim_user("throttled"));
    assert_eq!(r.status, 201, "{}", r.body);
    assert!(started.elapsed() >= Duration::from_secs(1), "the Retry-After was waited");
    assert_once(&s, &js, &proxy, "throttled", 2);

    // (c) The write happened, the answer was lost (the connection closed).
    proxy.push(Fault::on("POST", "/users", FaultKind::DropAfterForward));
    create_as_entra(&s, "dropped");
    assert_once(&s, &js, &proxy, "dropped", 1);

    // (d) The answer comes after the connector's 1 s timeout.
    proxy.push(Fault::on("POST", "/users", FaultKind::DelayAfterForward(Duration::from_secs(3))));
    create_as_entra(&s, "delayed");
    assert_once(&s, &js, &proxy, "delayed", 1);

    // (e) An answer that is not JSON.
    proxy.push(Fault::on(
        "POST",
        "/users",
        FaultKind::ReplaceBody { status: None, body: "{\"id\": 9".into() },
    ));
    create_as_entra(&s, "malformed");
    assert_once(&s, &js, &proxy, "malformed", 1);

    // (f) A 200 without an id.
    proxy.push(Fault::on("POST", "/users", FaultKind::ReplaceBody { status: Some(200), body: "{}".into() }));
    create_as_entra(&s, "no-id");
    assert_once(&s, &js, &proxy, "no-id", 1);

    assert_eq!(proxy.pending_faults(), 0, "every fault was met");
    assert_eq!(js.collection("users").len(), 5, "nothing else in json-server: {:?}", js.collection("users"));
    // The lost outcomes were reconciled in line, the connector never restarted.
    assert_eq!(s.connector("rest-users")["restarts"], 0);
}

#[test]
fn service_refusals_map_to_scim_statuses() {
    let js = JsonServer::start();
    let dir = TempDir::new("rest-refusals");
    let (proxy, s) = behind_proxy(&js, &dir);

    // (b) 503 with a Retry-After beyond max_retry_after (10 s): not waited, not retried; SCIM
    // 503 with a Retry-After of the supervisor's.
    proxy.push(Fault::on(
        "POST",
        "/users",
        FaultKind::Status {
            code: 503,
            retry_after: Some(120),
            body: "{\"message\": \"maintenance\"}".into(),
        },
    ));
    let started = Instant::now();
    let r = create(&s, &scim_user("busy"));
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.header("retry-after").is_some(), "a 503 carries Retry-After: {:?}", r.headers);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the 120 s were not waited: {:?}",
        started.elapsed()
    );
    assert!(js_users(&js, "busy").is_empty(), "nothing written");
    assert_eq!(sent_with(&proxy, "POST", "\"userName\":\"busy\"").len(), 1, "not retried");
    assert!(find_users(&s, "rest", "busy").is_empty(), "nothing recorded");

    // (g) 400 with the service's message: SCIM 400 with the message in its detail.
    proxy.push(Fault::on(
        "POST",
        "/users",
        FaultKind::Status {
            code: 400,
            retry_after: None,
            body: "{\"message\": \"userName too long\"}".into(),
        },
    ));
    let r = create(&s, &scim_user("too-long"));
    assert_eq!((r.status, r.json()["scimType"].as_str()), (400, Some("invalidValue")), "{}", r.body);
    let detail = r.json()["detail"].as_str().unwrap_or_default().to_string();
    assert!(detail.contains("userName too long"), "the service's message reaches the client: {detail}");
    assert!(js_users(&js, "too-long").is_empty());
    assert!(find_users(&s, "rest", "too-long").is_empty());

    // (h) 409 from the service: SCIM 409.
    proxy.push(Fault::on(
        "POST",
        "/users",
        FaultKind::Status {
            code: 409,
            retry_after: None,
            body: "{\"message\": \"userName already in use\"}".into(),
        },
    ));
    let r = create(&s, &scim_user("taken"));
    assert_eq!((r.status, r.json()["scimType"].as_str()), (409, Some("uniqueness")), "{}", r.body);
    assert!(r.body.contains("already in use"), "{}", r.body);
    assert!(find_users(&s, "rest", "taken").is_empty());

    // The service works again: the connector is (still, or again) ready.
    s.wait_connector("rest-users", Duration::from_secs(15), |c| c["state"] == "ready");
    let id = create_ok(&s, "rest", &scim_user("gone-later"));
    assert_eq!(js_users(&js, "gone-later").len(), 1);

    // (i) Deleted straight from json-server, then patched through SCIM: the service's 404 is
    // SCIM's, and the connector space lets the resource go too (provision.rs: "the target lost
    // the object: so does the connector space").
    let anchor = js_user(&js, "gone-later")["id"].clone();
    assert_eq!(js.request("DELETE", &format!("/users/{anchor}"), None).status, 200);
    let r = patch(
        &s,
        &format!("/scim/rest/Users/{id}"),
        json!([{"op": "Replace", "path": "displayName", "value": "Too Late"}]),
    );
    assert_eq!(r.status, 404, "{}", r.body);
    assert_eq!(s.scim("GET", &format!("/scim/rest/Users/{id}"), None).status, 404);
    assert!(js.collection("users").is_empty(), "the PATCH made nothing: {:?}", js.collection("users"));
    assert_eq!(proxy.pending_faults(), 0);
}

// ---------------------------------------------------------------------------------------------
// OAuth 2.0
// ---------------------------------------------------------------------------------------------

/// The json-server example for both connectors with OAuth 2.0 client credentials, the secret
/// from REST_CLIENT_SECRET.
fn oauth_config(token_url: &str) -> String {
    let auth = format!(
        "auth = \"oauth2\"\ntoken_url = \"{token_url}\"\nclient_id = \"rest-client\"\n\
         client_secret = {{ env = \"REST_CLIENT_SECRET\" }}"
    );
    json_config(&auth, true)
}

fn bearer(r: &Recorded) -> Option<String> {
    r.header("authorization").and_then(|a| a.strip_prefix("Bearer ")).map(str::to_string)
}

#[test]
fn oauth2_tokens_are_renewed_sent_on_every_request_and_never_logged() {
    let secret = "oauth-s3cret:+/-5b9e1f";
    let oauth = OAuthServer::start("rest-client", secret, 2);
    let js = JsonServer::start();
    let proxy = FaultProxy::start(js.addr());
    proxy.require_header("authorization", None);
    proxy.reject_expired_jwt(true);
    let dir = TempDir::new("rest-oauth");
    let env = [("REST_BASE_URL", &*proxy.url()), ("REST_CLIENT_SECRET", secret), ("RUST_LOG", "debug")];
    let s = start(&dir, &oauth_config(&oauth.token_url()), &env);
    wait_imported(&s, &["rest-users", "rest-groups"]);

    for name in ["early1", "early2"] {
        create_ok(&s, "rest", &scim_user(name));
    }
    let early: BTreeSet<String> = ["early1", "early2"]
        .iter()
        .flat_map(|n| sent_with(&proxy, "POST", n))
        .filter_map(|r| bearer(&r))
        .collect();
    assert!(!early.is_empty(), "the creates carried a bearer token");
    // The tokens live 2 s: wait until every one of them has expired (their own `exp`).
    let expires = early.iter().filter_map(|t| e2e::http_faults::jwt_exp(t)).max().expect("JWTs with an exp");
    e2e::wait_until(Duration::from_secs(30), "the first tokens expired", || {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() > expires
    });
    for name in ["late1", "late2"] {
        create_ok(&s, "rest", &scim_user(name));
    }
    for name in ["early1", "early2", "late1", "late2"] {
        assert_eq!(js_users(&js, name).len(), 1, "{name} is in json-server");
    }
    for name in ["late1", "late2"] {
        let sent = sent_with(&proxy, "POST", name);
        assert_eq!(sent.len(), 1, "{name} was sent once, with a fresh token (no 401 and retry): {sent:#?}");
        let token = bearer(&sent[0]).expect("a bearer token");
        assert!(!early.contains(&token), "{name} went with a token fetched after the old ones expired");
    }
    assert!(oauth.tokens_issued() >= 2, "tokens were fetched again: {}", oauth.tokens_issued());
    let requests = oauth.token_requests();
    assert!(
        requests.iter().all(|r| r["client_auth"] == "basic" && r["grant_type"] == "client_credentials"),
        "client_secret_basic, client credentials: {requests:?}"
    );

    let issued: BTreeSet<String> = oauth.tokens().into_iter().collect();
    let seen = proxy.requests();
    assert!(!seen.is_empty());
    for r in &seen {
        let token = bearer(r).unwrap_or_else(|| panic!("a request without a bearer token: {r:#?}"));
        assert!(
            issued.contains(&token),
            "a token the endpoint did not issue: {} {}",
            r.method,
            r.path_and_query
        );
    }

    let log = s.log();
    assert!(
        log.contains("fetched an OAuth 2.0 access token"),
        "the connector's debug lines are in the log, so that the checks below mean something"
    );
    assert!(!log.contains(secret), "the client secret is in the supervisor's log");
    assert!(
        !log.contains(&base64(format!("rest-client:{}", e2e::percent_encode(secret)).as_bytes())),
        "the Basic credentials are in the log"
    );
    for token in &issued {
        assert!(!log.contains(token.as_str()), "an access token is in the supervisor's log");
    }
    let admin = e2e::request(s.admin, "GET", "/admin/connectors", None, None).body;
    assert!(!admin.contains(secret), "the admin API shows the secret");
}

#[test]
fn a_wrong_client_secret_keeps_writes_out_and_the_secret_out_of_the_log() {
    let oauth = OAuthServer::start("rest-client", "the-right-secret", 60);
    // No service: the token endpoint refuses before the service would be asked.
    let nowhere = format!("http://{}", free_addr());
    let wrong = "wr0ng-secret-9c4d2a";
    let dir = TempDir::new("rest-oauth-wrong");
    let env = [("REST_BASE_URL", &*nowhere), ("REST_CLIENT_SECRET", wrong), ("RUST_LOG", "debug")];
    let s = Supervisor::spawn_with_env(&oauth_config(&oauth.token_url()), dir.path(), &env);
    s.wait_admin_up();
    let c = s.wait_connector("rest-users", Duration::from_secs(20), |c| c["state"] != "starting");
    assert_ne!(c["state"], "ready", "{c}");
    let reason = c["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("401") && reason.contains("token endpoint"), "the reason names the refusal: {c}");
    assert!(oauth.token_requests().iter().any(|r| r["status"] == 401), "{:?}", oauth.token_requests());

    let r = create(&s, &scim_user("nobody"));
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.header("retry-after").is_some());
    assert_eq!(oauth.tokens_issued(), 0);
    let log = s.log();
    assert!(log.contains("token endpoint"), "the refusal is logged (so the check below means something)");
    assert!(!log.contains(wrong), "the client secret is in the supervisor's log");
    assert!(!c.to_string().contains(wrong), "the admin API shows the secret: {c}");
}

// ---------------------------------------------------------------------------------------------
// SOAP
// ---------------------------------------------------------------------------------------------

#[test]
fn soap_example_creates_updates_sets_passwords_and_deletes() {
    let (user, password) = ("provisioning", "soap-basic-pw-31f9");
    let soap = SoapUsers::start(Some(&format!("{user}:{password}")));
    let dir = TempDir::new("soap");
    // No import at start: a user made straight in the service stays unknown to the supervisor,
    // so that a SCIM create of its name reaches the service and meets its fault.
    let config = without_import_at_start(&example("soap.toml"), "soap-users");
    let env = [
        ("SOAP_BASE_URL", &*soap.url()),
        ("SOAP_USER", user),
        ("SOAP_PASSWORD", password),
        ("RUST_LOG", "debug"),
    ];
    let s = start(&dir, &config, &env);
    let calls = |op: &str| soap.state()["calls"][op].as_u64().unwrap_or(0);

    // A user made straight in the service: the service's Client.AlreadyExists is SCIM's 409.
    let made = soap.call("<u:CreateUser><u:user><u:userName>taken</u:userName></u:user></u:CreateUser>");
    assert_eq!(made.status, 200, "{}", made.body);
    let r = s.scim("POST", "/scim/soap/Users", Some(&scim_user("taken").to_string()));
    assert_eq!((r.status, r.json()["scimType"].as_str()), (409, Some("uniqueness")), "{}", r.body);
    assert!(r.body.contains("AlreadyExists"), "the fault's code is in the detail: {}", r.body);
    assert_eq!(calls("CreateUser"), 2, "the SCIM create reached the service");
    assert!(find_users(&s, "soap", "taken").is_empty(), "nothing recorded for the refused create");

    // Create: every mapped field, and the department as the groups array.
    let mut body = scim_user("alice");
    body["displayName"] = json!("Alice");
    body["schemas"] = json!([USER, ENTERPRISE]);
    body[ENTERPRISE] = json!({"department": "Sales"});
    let id = create_ok(&s, "soap", &body);
    let alice = soap.user("alice").expect("alice is stored");
    assert_eq!(
        (alice["displayName"].as_str(), alice["email"].as_str(), alice["active"].as_bool()),
        (Some("Alice"), Some("alice@example.com"), Some(true)),
        "{alice}"
    );
    assert_eq!(alice["groups"], json!(["Sales"]), "{alice}");
    assert!(alice["password"].is_null(), "{alice}");
    let anchor = alice["id"].as_str().expect("the service's id").to_string();

    // Update: GetUser, then UpdateUser with the whole user; what did not change is kept.
    let (gets, updates) = (calls("GetUser"), calls("UpdateUser"));
    let path = format!("/scim/soap/Users/{id}");
    let r = patch(&s, &path, json!([{"op": "Replace", "path": "displayName", "value": "Alice L."}]));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!((calls("GetUser"), calls("UpdateUser")), (gets + 1, updates + 1), "one read, one write");
    let alice = soap.user("alice").expect("alice is still stored");
    assert_eq!(alice["id"], anchor.as_str());
    assert_eq!(alice["displayName"], "Alice L.", "{alice}");
    assert_eq!(
        (alice["email"].as_str(), alice["active"].as_bool()),
        (Some("alice@example.com"), Some(true)),
        "kept: {alice}"
    );
    assert_eq!(alice["groups"], json!(["Sales"]), "kept: {alice}");

    // A password set by PATCH arrives through SetPassword.
    let secret = "N3w-Pa55word-never-logged";
    let r = patch(&s, &path, json!([{"op": "replace", "path": "password", "value": secret}]));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(calls("SetPassword"), 1);
    assert_eq!(soap.user("alice").expect("alice")["password"], secret);

    // Delete.
    assert_eq!(s.scim("DELETE", &path, None).status, 204);
    assert!(soap.user("alice").is_none(), "alice is gone from the service: {}", soap.state());
    assert!(soap.user("taken").is_some(), "the other user stays");
    assert_eq!(s.scim("GET", &path, None).status, 404);

    let log = s.log();
    assert!(!log.contains(password), "the SOAP password is in the supervisor's log");
    assert!(
        !log.contains(&base64(format!("{user}:{password}").as_bytes())),
        "the Basic credentials are in the log"
    );
    assert!(!log.contains(secret), "the user's password is in the supervisor's log");
}

#[test]
fn the_schema_command_proposes_a_declaration_from_a_sample_object() {
    let js = JsonServer::start();
    js.post(
        "/users",
        &json!({"userName": "sample", "active": true, "age": 41, "emails": ["a@example.com"], "name": {"givenName": "S"}}),
    );
    let out = std::process::Command::new(e2e::binary("connector-rest"))
        .args(["schema", &format!("{}/users", js.url()), "--items", "$[0]"])
        .output()
        .expect("run connector-rest schema");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        text.contains(r#"attributes = "active:boolean, age:integer, emails*, userName""#),
        "types from the JSON values, arrays multi-valued, the id left out:\n{text}"
    );
    assert!(text.contains("name is an object"), "a nested object is named for attribute_paths:\n{text}");
    // A URL that answers no object says so.
    let out = std::process::Command::new(e2e::binary("connector-rest"))
        .args(["schema", &format!("{}/groups", js.url())])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no object found"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
