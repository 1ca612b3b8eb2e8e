//! connector-rest over mutual TLS: a service (axum on rustls, in this test) that accepts only
//! clients with a certificate signed by its CA. The connector, given `ca_file`,
//! `client_cert_file` and `client_key_file`, provisions through it; without the client
//! certificate the handshake fails and no write is acknowledged.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use e2e::{Supervisor, TOKEN, TempDir, free_addr, request, user_body};
use serde_json::{Value, json};

type Users = Arc<Mutex<BTreeMap<u64, Value>>>;

/// A small JSON users service: POST/GET /users, GET/PATCH/DELETE /users/{id}.
fn app(users: Users) -> Router {
    async fn create(State(users): State<Users>, Json(mut body): Json<Value>) -> (StatusCode, Json<Value>) {
        let mut users = users.lock().unwrap();
        let id = users.keys().last().copied().unwrap_or(0) + 1;
        body["id"] = json!(id.to_string());
        users.insert(id, body.clone());
        (StatusCode::CREATED, Json(body))
    }
    async fn list(State(users): State<Users>) -> Json<Value> {
        Json(Value::Array(users.lock().unwrap().values().cloned().collect()))
    }
    async fn one(State(users): State<Users>, UrlPath(id): UrlPath<u64>) -> Result<Json<Value>, StatusCode> {
        users.lock().unwrap().get(&id).cloned().map(Json).ok_or(StatusCode::NOT_FOUND)
    }
    async fn patch(
        State(users): State<Users>,
        UrlPath(id): UrlPath<u64>,
        Json(body): Json<Value>,
    ) -> Result<Json<Value>, StatusCode> {
        let mut users = users.lock().unwrap();
        let user = users.get_mut(&id).ok_or(StatusCode::NOT_FOUND)?;
        for (k, v) in body.as_object().into_iter().flatten() {
            user[k] = v.clone();
        }
        Ok(Json(user.clone()))
    }
    async fn delete(State(users): State<Users>, UrlPath(id): UrlPath<u64>) -> StatusCode {
        match users.lock().unwrap().remove(&id) {
            Some(_) => StatusCode::NO_CONTENT,
            None => StatusCode::NOT_FOUND,
        }
    }
    Router::new()
        .route("/users", post(create).get(list))
        .route("/users/{id}", get(one).patch(patch).delete(delete))
        .with_state(users)
}

/// Serves [`app`] over TLS on a free port, asking every client for a certificate signed by
/// `tls/ca.pem`.
fn serve_mutual_tls(dir: &Path, users: Users) -> SocketAddr {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let tls = dir.join("tls");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(tls.join("ca.pem")).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .unwrap();
    let chain: Vec<_> =
        CertificateDer::pem_file_iter(tls.join("server.pem")).unwrap().map(Result::unwrap).collect();
    let key = PrivateKeyDer::from_pem_file(tls.join("server.key")).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .unwrap();
    let addr = free_addr();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async move {
            let config = axum_server::tls_rustls::RustlsConfig::from_config(Arc::new(config));
            axum_server::bind_rustls(addr, config).serve(app(users).into_make_service()).await.unwrap();
        });
    });
    e2e::wait_until(Duration::from_secs(10), "the TLS service listens", || {
        std::net::TcpStream::connect(addr).is_ok()
    });
    addr
}

fn config(addr: SocketAddr, tls: &Path, client_certificate: bool) -> String {
    let client = if client_certificate {
        format!(
            "client_cert_file = \"{}\"\nclient_key_file = \"{}\"\n",
            tls.join("client.pem").display(),
            tls.join("client.key").display()
        )
    } else {
        String::new()
    };
    format!(
        r#"
[server]
plain_http = true

[apps.api]
users = "api-users"
token_env = "SCIM_TOKEN"

[connectors.api-users]
executable = "connector-rest"
object_type = "user"
partition = "default"

[connectors.api-users.parameters]
base_url = "https://127.0.0.1:{port}"
ca_file = "{ca}"
{client}attributes = "userName, displayName, active:boolean"
create = "POST /users"
create_body = '{{"userName": "{{{{userName}}}}", "displayName": "{{{{displayName}}}}", "active": "{{{{active}}}}"}}'
get = "GET /users/{{{{anchor}}}}"
update = "PATCH /users/{{{{anchor}}}}"
update_mode = "patch"
delete = "DELETE /users/{{{{anchor}}}}"
list = "GET /users"

[connectors.api-users.attributes]
userName = "userName"
displayName = "displayName"
active = "active"
"#,
        port = addr.port(),
        ca = tls.join("ca.pem").display(),
    )
}

#[test]
fn writes_go_through_mutual_tls_with_the_client_certificate_and_not_without() {
    let dir = TempDir::new("rest-mtls");
    e2e::slapd::write_certificates(dir.path());
    let users: Users = Arc::default();
    let addr = serve_mutual_tls(dir.path(), users.clone());
    let tls = dir.path().join("tls");

    let data = dir.path().join("with");
    std::fs::create_dir_all(&data).unwrap();
    let mut s = Supervisor::start(&config(addr, &tls, true), &data);
    let created = request(s.scim, "POST", "/scim/api/Users", Some(TOKEN), Some(&user_body("tls.user")));
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.json()["id"].as_str().unwrap().to_string();
    let stored: Vec<Value> = users.lock().unwrap().values().cloned().collect();
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(stored[0]["userName"], "tls.user");
    assert_eq!(stored[0]["active"], true, "a boolean, typed");
    let patched = request(
        s.scim,
        "PATCH",
        &format!("/scim/api/Users/{id}"),
        Some(TOKEN),
        Some(
            r#"{"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [{"op": "replace", "path": "displayName", "value": "Over TLS"}]}"#,
        ),
    );
    assert_eq!(patched.status, 200, "{}", patched.body);
    assert_eq!(users.lock().unwrap().values().next().unwrap()["displayName"], "Over TLS");
    s.stop();

    // Without the client certificate the service refuses the handshake: not ready, and a
    // write is a 503, never acknowledged.
    let data = dir.path().join("without");
    std::fs::create_dir_all(&data).unwrap();
    let s = Supervisor::spawn(&config(addr, &tls, false), &data);
    s.wait_admin_up();
    let connector = s.wait_connector("api-users", Duration::from_secs(30), |c| c["state"] == "degraded");
    assert!(
        connector.to_string().contains("connect") || connector.to_string().contains("certificate"),
        "the reason names the failed connection: {connector}"
    );
    let refused = request(s.scim, "POST", "/scim/api/Users", Some(TOKEN), Some(&user_body("no.cert")));
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert_eq!(users.lock().unwrap().len(), 1, "nothing written without the client certificate");
}
