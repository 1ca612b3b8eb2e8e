//! What an attacker holding a token (or none) can send, against the real binary: the deepest and
//! longest inputs of every kind a request can carry are refused with a SCIM 400 and the process
//! goes on serving; and the paths and bodies of RFC 7644 mean what the RFC says (schema URNs as
//! paths, unknown attributes, Entra's short `manager` path, the server-root `.search`, members'
//! `$ref`, authentication before anything else, media types, control characters, Unicode case
//! folding).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use e2e::{Supervisor, TOKEN, TempDir, quickstart_config, request, user_body};
use serde_json::{Value, json};

const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
const SEARCH: &str = "urn:ietf:params:scim:api:messages:2.0:SearchRequest";

/// One raw HTTP/1.1 request with the headers given as they are; the status line's code.
fn raw(addr: SocketAddr, head: &str, body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let request =
        format!("{head}Host: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    let status = answer.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, answer)
}

fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn alive(s: &Supervisor) {
    assert!(s.running(), "the supervisor died: {}", s.log());
    let r = s.scim("GET", "/scim/demo/Users?count=1", None);
    assert_eq!(r.status, 200, "still serving: {}", r.body);
}

fn patch(s: &Supervisor, id: &str, operations: Value) -> e2e::Response {
    let body = json!({"schemas": [PATCH_OP], "Operations": operations});
    s.scim("PATCH", &format!("/scim/demo/Users/{id}"), Some(&body.to_string()))
}

fn create(s: &Supervisor, name: &str) -> String {
    let r = s.scim("POST", "/scim/demo/Users", Some(&user_body(name)));
    assert_eq!(r.status, 201, "{}", r.body);
    r.json()["id"].as_str().unwrap().to_string()
}

/// The worst case of each deep or long input, each sent twice (a crash would show on the
/// second): refused with a 400 and the fitting `scimType`, and the process goes on.
#[test]
fn the_deepest_and_longest_requests_are_refused_and_the_service_survives() {
    let dir = TempDir::new("hostile-deep");
    let s = Supervisor::start(&quickstart_config(), dir.path());
    let id = create(&s, "victim");
    let deep_parens = |n: usize| format!("{}userName eq \"x\"{}", "(".repeat(n), ")".repeat(n));
    let chain = |n: usize, op: &str| vec!["userName eq \"x\""; n].join(&format!(" {op} "));
    let filters = [
        deep_parens(1_500),
        deep_parens(100_000),
        format!("{}userName pr{}", "not (".repeat(5_000), ")".repeat(5_000)),
        format!("emails[{}]", deep_parens(5_000)),
        format!("{}value pr{}", "emails[".repeat(5_000), "]".repeat(5_000)),
        chain(2_000, "and"),
        chain(2_000, "or"),
    ];
    for filter in &filters {
        for _ in 0..2 {
            let r = s.scim("GET", &format!("/scim/demo/Users?filter={}", url_encode(filter)), None);
            // A URL past hyper's limit is refused before it reaches us; either way, no crash.
            assert!(r.status == 400 || r.status == 414 || r.status == 431, "{}: {}", r.status, r.body);
            if r.status == 400 {
                assert_eq!(r.json()["scimType"], "invalidFilter", "{}", r.body);
            }
            let body = json!({"schemas": [SEARCH], "filter": filter}).to_string();
            let r = s.scim("POST", "/scim/demo/Users/.search", Some(&body));
            assert_eq!((r.status, r.json()["scimType"].as_str()), (400, Some("invalidFilter")), "{}", r.body);
            let r = s.scim("POST", "/scim/demo/.search", Some(&body));
            assert_eq!((r.status, r.json()["scimType"].as_str()), (400, Some("invalidFilter")), "{}", r.body);
        }
        alive(&s);
    }
    // PATCH paths: a deep value filter, a long chain inside one.
    for path in [format!("emails[{}].value", deep_parens(3_000)), format!("emails[{}]", chain(3_000, "or"))] {
        let r = patch(&s, &id, json!([{"op": "replace", "path": path, "value": "x"}]));
        assert_eq!((r.status, r.json()["scimType"].as_str()), (400, Some("invalidPath")), "{}", r.body);
    }
    alive(&s);
    // JSON nested far past serde_json's limit, in a create, a PATCH value and a search body.
    let deep_json = |n: usize| format!("{}1{}", "[".repeat(n), "]".repeat(n));
    let deep_object = |n: usize| format!("{}1{}", "{\"a\":".repeat(n), "}".repeat(n));
    for value in [deep_json(100_000), deep_object(100_000), deep_json(120), deep_object(120)] {
        let create = format!(
            r#"{{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"deep","title":{value}}}"#
        );
        let r = s.scim("POST", "/scim/demo/Users", Some(&create));
        assert_eq!(r.status, 400, "{}", r.body);
        let body = format!(
            r#"{{"schemas":["{PATCH_OP}"],"Operations":[{{"op":"add","path":"title","value":{value}}}]}}"#
        );
        let r = s.scim("PATCH", &format!("/scim/demo/Users/{id}"), Some(&body));
        assert_eq!(r.status, 400, "{}", r.body);
        let r = s.scim(
            "POST",
            "/scim/demo/Users/.search",
            Some(&format!(r#"{{"schemas":["{SEARCH}"],"x":{value}}}"#)),
        );
        assert!(r.status == 400 || r.status == 200, "{}", r.body);
    }
    alive(&s);
    // Attribute lists: long ones are refused, not compared with every attribute of every user.
    let many = vec!["userName"; 50_000].join(",");
    let r = s.scim(
        "POST",
        "/scim/demo/Users/.search",
        Some(&json!({"schemas": [SEARCH], "attributes": many}).to_string()),
    );
    assert_eq!((r.status, r.json()["scimType"].as_str()), (400, Some("invalidValue")), "{}", r.body);
    let r = s.scim(
        "GET",
        &format!("/scim/demo/Users/{id}?excludedAttributes={}", vec!["title"; 2_000].join(",")),
        None,
    );
    assert_eq!(r.status, 400, "{}", r.body);
    alive(&s);
    // Nothing half-written: the victim is as it was created.
    let r = s.scim("GET", &format!("/scim/demo/Users/{id}"), None);
    assert_eq!((r.status, r.json()["userName"].as_str()), (200, Some("victim")));
    assert!(r.json().get("title").is_none());
}

#[test]
fn paths_and_bodies_mean_what_the_rfc_says() {
    let dir = TempDir::new("hostile-rfc");
    let s = Supervisor::start(&quickstart_config(), dir.path());
    let id = create(&s, "urn-user");
    let manager = create(&s, "the-boss");

    // The enterprise extension by its schema URN: the whole object, not an attribute "User".
    for op in ["add", "replace"] {
        let r = patch(
            &s,
            &id,
            json!([{"op": op, "path": ENTERPRISE, "value": {"department": op, "manager": {"value": manager}}}]),
        );
        assert_eq!(r.status, 200, "{}", r.body);
        let user = r.json();
        assert_eq!(user[ENTERPRISE]["department"], op);
        assert_eq!(user[ENTERPRISE]["manager"]["value"], manager.as_str());
        assert_eq!(user["schemas"], json!(["urn:ietf:params:scim:schemas:core:2.0:User", ENTERPRISE]));
        assert!(user.get("urn:ietf:params:scim:schemas:extension:enterprise:2.0").is_none(), "{user}");
    }
    let r = patch(&s, &id, json!([{"op": "remove", "path": ENTERPRISE}]));
    assert_eq!(r.status, 200, "{}", r.body);
    let stored = s.scim("GET", &format!("/scim/demo/Users/{id}"), None).json();
    assert!(stored.get(ENTERPRISE).is_none(), "removed and stored so: {stored}");
    assert_eq!(stored["schemas"], json!(["urn:ietf:params:scim:schemas:core:2.0:User"]));

    // Entra's short `manager` path, for add, replace and remove.
    for op in ["Add", "Replace"] {
        let r = patch(
            &s,
            &id,
            json!([{"op": op, "path": "manager", "value": [{"$ref": "x", "value": manager}]}]),
        );
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.json()[ENTERPRISE]["manager"]["value"], manager.as_str(), "{op}");
    }
    let r = patch(&s, &id, json!([{"op": "Remove", "path": "manager"}]));
    assert_eq!(r.status, 200, "{}", r.body);
    let stored = s.scim("GET", &format!("/scim/demo/Users/{id}"), None).json();
    assert!(stored.get(ENTERPRISE).is_none_or(|e| e.get("manager").is_none()), "manager gone: {stored}");

    // Paths and attributes that name nothing: 400, nothing stored.
    let before = s.scim("GET", &format!("/scim/demo/Users/{id}"), None).json();
    for path in ["notAnAttribute", "urn:example:evil:2.0:Thing:attr", "department"] {
        let r = patch(&s, &id, json!([{"op": "add", "path": path, "value": "x"}]));
        assert_eq!(
            (r.status, r.json()["scimType"].as_str()),
            (400, Some("invalidPath")),
            "{path}: {}",
            r.body
        );
    }
    let mut unknown = serde_json::from_str::<Value>(&user_body("unknown-attr")).unwrap();
    unknown["favouriteColour"] = json!("blue");
    let r = s.scim("POST", "/scim/demo/Users", Some(&unknown.to_string()));
    assert_eq!((r.status, r.json()["scimType"].as_str()), (400, Some("invalidValue")), "{}", r.body);
    let mut evil = serde_json::from_str::<Value>(&user_body("unknown-schema")).unwrap();
    evil["schemas"].as_array_mut().unwrap().push(json!("urn:example:evil:2.0:Thing"));
    evil["urn:example:evil:2.0:Thing"] = json!({"attr": "x"});
    let r = s.scim("POST", "/scim/demo/Users", Some(&evil.to_string()));
    assert_eq!(r.status, 400, "{}", r.body);
    let after = s.scim("GET", &format!("/scim/demo/Users/{id}"), None).json();
    assert_eq!(before["meta"]["version"], after["meta"]["version"], "unchanged");
    let names = s.scim("GET", "/scim/demo/Users?filter=userName+sw+%22unknown%22", None).json();
    assert_eq!(names["totalResults"], 0, "nothing stored: {names}");

    // Control characters in names; U+0000 anywhere.
    for name in ["nul\u{0}name", "bell\u{7}", "line\nbreak", "c1\u{85}"] {
        let r = s.scim("POST", "/scim/demo/Users", Some(&user_body(name)));
        assert_eq!(
            (r.status, r.json()["scimType"].as_str()),
            (400, Some("invalidValue")),
            "{name:?}: {}",
            r.body
        );
    }

    // Uniqueness under Unicode case folding.
    create(&s, "CRAB🦀ÉZ");
    let r = s.scim("POST", "/scim/demo/Users", Some(&user_body("crab🦀éz")));
    assert_eq!((r.status, r.json()["scimType"].as_str()), (409, Some("uniqueness")), "{}", r.body);
    let found =
        s.scim("GET", &format!("/scim/demo/Users?filter={}", url_encode("userName eq \"crab🦀éz\"")), None);
    assert_eq!(found.json()["totalResults"], 1);

    // Media types: JSON (with parameters) or none; others are a 415.
    for (content_type, expected) in [
        ("Content-Type: application/scim+json; charset=utf-8\r\n", 201),
        ("Content-Type: application/json\r\n", 201),
        ("", 201),
        ("Content-Type: text/plain\r\n", 415),
        ("Content-Type: application/xml\r\n", 415),
    ] {
        let name = format!("media-{}", expected as usize + content_type.len());
        let head =
            format!("POST /scim/demo/Users HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\n{content_type}");
        let (status, answer) = raw(s.scim, &head, &user_body(&name));
        assert_eq!(status, expected, "{content_type:?}: {answer}");
    }

    // Authentication before anything else; an unknown app's name never echoed.
    for token in [None, Some("wrong-token-0123456789")] {
        let r = request(s.scim, "GET", "/scim/%3Cscript%3Eevil/Users", token, None);
        assert_eq!(r.status, 401, "{}", r.body);
        assert!(!r.body.contains("script") && !r.body.contains("evil"), "{}", r.body);
        let challenge = r.header("www-authenticate").unwrap_or_default().to_string();
        assert!(challenge.starts_with("Bearer"), "{challenge}");
        assert_eq!(challenge.contains("error=\"invalid_token\""), token.is_some(), "{challenge}");
    }
    let r = s.scim("GET", "/scim/%3Cscript%3Eevil/Users", None);
    assert_eq!(r.status, 404, "a valid token learns only that there is no such app");
    assert!(!r.body.contains("script"), "{}", r.body);

    // The server-root search, and members' $ref.
    let group = json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "admins",
                       "members": [{"value": id}]});
    let r = s.scim("POST", "/scim/demo/Groups", Some(&group.to_string()));
    assert_eq!(r.status, 201, "{}", r.body);
    let member_ref = r.json()["members"][0]["$ref"].as_str().unwrap_or_default().to_string();
    assert!(member_ref.ends_with(&format!("/scim/demo/Users/{id}")), "{member_ref}");
    let body =
        json!({"schemas": [SEARCH], "filter": "userName eq \"urn-user\" or displayName eq \"admins\""});
    let r = s.scim("POST", "/scim/demo/.search", Some(&body.to_string()));
    assert_eq!(r.status, 200, "{}", r.body);
    let found = r.json();
    assert_eq!(found["totalResults"], 2, "{found}");
    let mut kinds: Vec<String> = found["Resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["meta"]["resourceType"].as_str().unwrap().to_string())
        .collect();
    kinds.sort();
    assert_eq!(kinds, ["Group", "User"]);
}

/// With `unknown_attributes = "ignore"`, an undeclared attribute is dropped, never stored.
#[test]
fn an_app_can_drop_unknown_attributes_instead() {
    let dir = TempDir::new("hostile-ignore");
    let config =
        quickstart_config().replace("[apps.demo]\n", "[apps.demo]\nunknown_attributes = \"ignore\"\n");
    let s = Supervisor::start(&config, dir.path());
    let mut body = serde_json::from_str::<Value>(&user_body("ignored")).unwrap();
    body["favouriteColour"] = json!("blue");
    body["name"]["nickname"] = json!("x");
    let r = s.scim("POST", "/scim/demo/Users", Some(&body.to_string()));
    assert_eq!(r.status, 201, "{}", r.body);
    let user = r.json();
    assert!(user.get("favouriteColour").is_none() && user["name"].get("nickname").is_none(), "{user}");
    let id = user["id"].as_str().unwrap();
    let r = patch(&s, id, json!([{"op": "add", "path": "notAnAttribute", "value": "x"}]));
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.json().get("notAnAttribute").is_none());
}
