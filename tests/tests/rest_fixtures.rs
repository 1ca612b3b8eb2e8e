//! connector-rest's third-party servers themselves (tests/src/rest_servers.rs), and the fault
//! proxy in front of them: json-server's data in its file, a write that the client never hears
//! of, the token endpoint's client check and token lifetime, the SOAP service's operations,
//! faults and Basic authentication, and scim2-server's token, refusals and resources kept across
//! a kill.

use std::time::Duration;

use e2e::http_faults::{Fault, FaultKind, FaultProxy};
use e2e::rest_servers::{JsonServer, OAuthServer, ScimServer, SoapUsers};
use e2e::{try_request_with, wait_until};
use serde_json::json;

#[test]
fn json_server_keeps_its_data_in_its_file_across_a_restart() {
    let mut server = JsonServer::start();
    assert_eq!(server.get("/users"), json!([]));
    let alice = server.post("/users", &json!({"userName": "alice", "emails": ["alice@example.com"]}));
    assert_eq!(alice["id"], 1, "json-server numbers ids from 1");
    assert_eq!(server.get("/users?userName=alice")[0]["emails"][0], "alice@example.com");
    assert_eq!(server.collection("users"), vec![alice.clone()]);
    server.wait_for_file();
    assert_eq!(server.db_file()["users"], json!([alice]));

    server.restart();
    assert_eq!(server.get("/users/1"), alice);
    assert_eq!(server.request("GET", "/users/2", None).status, 404);
}

#[test]
fn a_write_behind_the_proxy_happens_though_the_client_never_hears_of_it() {
    let server = JsonServer::start();
    let proxy = FaultProxy::start(server.addr());
    proxy.push(Fault::on("POST", "/users", FaultKind::DropAfterForward));
    let body = r#"{"userName":"bob"}"#;
    let headers = [("Content-Type", "application/json")];
    assert!(try_request_with(proxy.addr(), "POST", "/users", &headers, Some(body)).is_err());
    assert_eq!(server.collection("users")[0]["userName"], "bob", "the write happened");
    assert_eq!(proxy.requests()[0].body, body.as_bytes(), "the bytes the client sent");

    proxy.push(Fault::on("GET", "/users", FaultKind::ReplaceBody { status: None, body: "[{".into() }));
    let r = try_request_with(proxy.addr(), "GET", "/users", &[], None).unwrap();
    assert_eq!((r.status, r.body.as_str()), (200, "[{"));
}

#[test]
fn the_token_endpoint_serves_one_client_with_short_lived_tokens() {
    let oauth = OAuthServer::start("rest-client", "s3cret:+/", 1);
    let form = [("Content-Type", "application/x-www-form-urlencoded")];
    let token_request = |headers: &[(&str, &str)], body: &str| {
        try_request_with(oauth.addr(), "POST", "/token", &[&form[..], headers].concat(), Some(body)).unwrap()
    };
    // client_secret_post, the secret form-encoded.
    let r = token_request(
        &[],
        "grant_type=client_credentials&client_id=rest-client&client_secret=s3cret%3A%2B%2F",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!((r.json()["token_type"].as_str(), r.json()["expires_in"].as_u64()), (Some("Bearer"), Some(1)));
    let token = r.json()["access_token"].as_str().unwrap().to_string();
    // client_secret_basic: `rest-client:s3cret%3A%2B%2F` in base64.
    let basic = [("Authorization", "Basic cmVzdC1jbGllbnQ6czNjcmV0JTNBJTJCJTJG")];
    assert_eq!(token_request(&basic, "grant_type=client_credentials&scope=users").status, 200);
    let wrong = [("Authorization", "Basic cmVzdC1jbGllbnQ6d3Jvbmc=")];
    let r = token_request(&wrong, "grant_type=client_credentials");
    assert_eq!((r.status, r.json()["error"].as_str()), (401, Some("invalid_client")));
    assert_eq!(oauth.tokens_issued(), 2);
    assert_eq!(oauth.tokens()[0], token);
    let auth: Vec<_> = oauth.token_requests().iter().map(|r| r["client_auth"].clone()).collect();
    assert_eq!(auth, vec![json!("post"), json!("basic"), json!("basic")]);

    // A resource server behind the proxy refuses the token once it has expired.
    let api = JsonServer::start();
    let proxy = FaultProxy::start(api.addr());
    proxy.reject_expired_jwt(true);
    let bearer = format!("Bearer {token}");
    let get =
        || try_request_with(proxy.addr(), "GET", "/users", &[("Authorization", &bearer)], None).unwrap();
    wait_until(Duration::from_secs(5), "the token to expire", || get().status == 401);
    let challenge = get().header("www-authenticate").unwrap_or_default().to_string();
    assert!(challenge.contains("invalid_token"), "{challenge}");
}

#[test]
fn the_soap_service_creates_finds_and_faults_behind_basic_auth() {
    let soap = SoapUsers::start(Some("svc:pw"));
    let created = soap.call(
        "<u:CreateUser><u:user><u:userName>alice</u:userName><u:active>true</u:active>\
         <u:groups><u:string>staff</u:string></u:groups></u:user></u:CreateUser>",
    );
    assert_eq!(created.status, 200, "{}", created.body);
    assert!(created.body.contains("<tns:id>u1</tns:id>"), "{}", created.body);
    let again = soap.call("<u:CreateUser><u:user><u:userName>alice</u:userName></u:user></u:CreateUser>");
    assert_eq!(again.status, 500);
    assert!(again.body.contains("<faultcode>soap11env:Client.AlreadyExists</faultcode>"), "{}", again.body);
    let missing = soap.call("<u:GetUser><u:id>u9</u:id></u:GetUser>");
    assert!(missing.body.contains("soap11env:Client.NotFound"), "{}", missing.body);
    assert_eq!(
        soap.call("<u:SetPassword><u:id>u1</u:id><u:password>pw1</u:password></u:SetPassword>").status,
        200
    );

    let alice = soap.user("alice").expect("alice is stored");
    assert_eq!((alice["id"].as_str(), alice["password"].as_str()), (Some("u1"), Some("pw1")));
    assert_eq!(alice["groups"], json!(["staff"]));
    assert_eq!(soap.state()["calls"]["CreateUser"], 2);

    // Without the Basic authorization: 401, nothing called.
    let envelope = "<soapenv:Envelope xmlns:soapenv=\"http://schemas.xmlsoap.org/soap/envelope/\" \
                    xmlns:u=\"urn:example:users\"><soapenv:Body><u:ListUsers/></soapenv:Body></soapenv:Envelope>";
    let r =
        try_request_with(soap.addr(), "POST", "/", &[("Content-Type", "text/xml")], Some(envelope)).unwrap();
    assert_eq!((r.status, r.header("www-authenticate")), (401, Some("Basic realm=\"soap_users\"")));
    assert!(soap.state()["calls"].get("ListUsers").is_none());
}

#[test]
fn scim2_server_needs_its_token_and_keeps_what_it_acknowledged_across_a_kill() {
    let mut server = ScimServer::start();
    let config = server.get("/ServiceProviderConfig");
    assert_eq!(
        (config["patch"]["supported"].as_bool(), config["filter"]["supported"].as_bool()),
        (Some(true), Some(true)),
        "{config}"
    );
    assert_eq!(config["etag"]["supported"], true, "{config}");
    let types: Vec<String> = server.get("/ResourceTypes")["Resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["endpoint"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(types, ["/Users", "/Groups"]);
    // Another token, or none, is refused.
    let unauthorized = try_request_with(
        server.addr(),
        "GET",
        "/v2/Users",
        &[("Authorization", "Bearer not-the-token")],
        None,
    )
    .unwrap();
    assert_eq!(unauthorized.status, 401, "{}", unauthorized.body);
    assert_eq!(try_request_with(server.addr(), "GET", "/Users", &[], None).unwrap().status, 401);

    let user = json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "ann",
                      "emails": [{"type": "work", "value": "ann@example.com"}], "active": true});
    let ann = server.post("/Users", &user);
    let id = ann["id"].as_str().unwrap().to_string();
    assert_eq!(ann["meta"]["version"], "W/\"1\"");
    let taken = server.request("POST", "/Users", Some(&user));
    assert_eq!(
        (taken.status, taken.json()["scimType"].as_str()),
        (409, Some("uniqueness")),
        "{}",
        taken.body
    );
    let group = json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "g",
                       "members": [{"value": id}]});
    server.post("/Groups", &group);
    server.patch(&format!("/Users/{id}"), json!([{"op": "replace", "path": "active", "value": false}]));
    let before = server.get(&format!("/Users/{id}"));
    assert_eq!(server.users_named("ANN").len(), 1, "userName compares case-insensitively");

    // Killed (SIGTERM, not caught) and started again: every acknowledged write is there.
    server.stop();
    assert!(!server.running());
    assert!(try_request_with(server.addr(), "GET", "/v2/Users", &[], None).is_err(), "refused while down");
    server.restart();
    assert_eq!(server.get(&format!("/Users/{id}")), before);
    assert_eq!(server.users().len(), 1);
    assert_eq!(server.groups()[0]["members"], json!([{"value": id}]));
    let taken = server.request("POST", "/Users", Some(&user));
    assert_eq!(taken.status, 409, "the restored users are indexed: {}", taken.body);
    // The ETag counter goes on: a new write never reuses a version.
    let bob = server.post(
        "/Users",
        &json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "bob"}),
    );
    let version: u64 =
        bob["meta"]["version"].as_str().unwrap().trim_matches(|c: char| !c.is_ascii_digit()).parse().unwrap();
    let before_version: u64 = before["meta"]["version"]
        .as_str()
        .unwrap()
        .trim_matches(|c: char| !c.is_ascii_digit())
        .parse()
        .unwrap();
    assert!(version > before_version, "{} after {}", bob["meta"]["version"], before["meta"]["version"]);
    wait_until(Duration::from_secs(5), "its log to show the requests", || {
        server.log().contains("\"POST /v2/Users HTTP/1.1\" 201")
    });
}
