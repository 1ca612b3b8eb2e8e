//! Benchmark: SCIM creates through the supervisor and connector-rest into json-server (the
//! shipped example, `deploy/examples/rest/json-server.toml`), against direct POSTs of the same
//! users to json-server from the same client at the same concurrency, alternately in one run,
//! with the HTTP floor (a server that only answers) measured by the same client.
//!
//! Run: `cargo build --release --workspace --bins && cargo bench -p e2e --bench rest`
//! (`CREATES=1000` users per round). json-server keeps its data in memory and writes its file
//! after answering, so neither side waits for a disk.

use std::time::Duration;

use e2e::rest_servers::JsonServer;
use e2e::{Supervisor, TempDir, cpu_seconds, workspace};

const CONCURRENCY: usize = 8;
const ROUNDS: usize = 3;

/// The object the example's create template makes of `e2e::fixed_http::bench_user(name)`.
fn service_user(name: &str) -> String {
    serde_json::json!({
        "userName": name, "displayName": format!("User {name}"), "active": true,
        "name": {"givenName": "Bench", "familyName": name},
        "email": format!("{name}@example.com"), "updatedAt": "2026-12-05T00:00:00.000Z"
    })
    .to_string()
}

fn main() {
    if e2e::fixed_http::serve_if_asked(e2e::fixed_http::CREATED_USER) {
        return;
    }
    let creates: usize = std::env::var("CREATES").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
    let service = JsonServer::start();
    let dir = TempDir::new("bench-rest");
    let config =
        std::fs::read_to_string(workspace().join("deploy/examples/rest/json-server.toml")).unwrap().replace(
            "[connectors.rest-users.import]\ndelta_interval = \"5m\"",
            "[connectors.rest-users.import]\non_start = false",
        );
    let s = Supervisor::spawn_with_env(
        &config,
        dir.path(),
        &[("REST_BASE_URL", &service.url()), ("RUST_LOG", "warn")],
    );
    s.wait_ready(Duration::from_secs(30));
    let cpu = || {
        let connector = s.connector("rest-users")["pid"].as_u64().unwrap_or(0) as u32;
        (cpu_seconds(s.pid()), cpu_seconds(connector))
    };
    e2e::fixed_http::CreateBench {
        direct_label: "direct POSTs to json-server",
        connector: "connector-rest",
        scim: s.scim,
        creates,
        rounds: ROUNDS,
        concurrency: CONCURRENCY,
    }
    .run(
        |names| {
            e2e::posts_per_second(
                service.addr(),
                "/users",
                "application/json",
                names,
                CONCURRENCY,
                service_user,
            )
        },
        |scim, names| {
            e2e::creates_per_second(scim, "/scim/rest/Users", names, CONCURRENCY, e2e::fixed_http::bench_user)
        },
        cpu,
    );
    let stored = service.collection("users");
    println!("json-server holds {} users ({} expected)", stored.len(), (creates * ROUNDS + 200) * 2);
}
