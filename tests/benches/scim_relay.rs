//! Benchmark: SCIM creates through the supervisor and connector-scim into scim2-server (the
//! shipped example, `deploy/examples/scim-relay.toml`), against direct POSTs of the same users
//! to scim2-server from the same client at the same concurrency, alternately in one run, with
//! the HTTP floor (a server that only answers) measured by the same client.
//!
//! Run: `cargo build --release --workspace --bins && cargo bench -p e2e --bench scim_relay`
//! (`CREATES=500` users per round). scim2-server answers HTTP/1.0, one request per connection:
//! the direct client connects for each request, as the connector does.

use std::time::{Duration, Instant};

use e2e::rest_servers::ScimServer;
use e2e::{Supervisor, TempDir, cpu_seconds, workspace};

const CONCURRENCY: usize = 8;
const ROUNDS: usize = 3;

/// POSTs `names` straight to scim2-server from CONCURRENCY threads; returns users/s.
fn direct(service: &ScimServer, names: &[String]) -> f64 {
    let started = Instant::now();
    let auth = format!("Bearer {}", service.token());
    std::thread::scope(|scope| {
        for chunk in names.chunks(names.len().div_ceil(CONCURRENCY)) {
            let auth = &auth;
            scope.spawn(move || {
                for name in chunk {
                    let body = e2e::fixed_http::bench_user(name);
                    let headers =
                        [("Authorization", auth.as_str()), ("Content-Type", "application/scim+json")];
                    let answer =
                        e2e::try_request_with(service.addr(), "POST", "/v2/Users", &headers, Some(&body))
                            .expect("POST to scim2-server");
                    assert_eq!(answer.status, 201, "{}", answer.body);
                }
            });
        }
    });
    names.len() as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    if e2e::fixed_http::serve_if_asked(e2e::fixed_http::CREATED_USER) {
        return;
    }
    let creates: usize = std::env::var("CREATES").ok().and_then(|v| v.parse().ok()).unwrap_or(500);
    // In memory: the persistent fixture rewrites its whole state file on every write.
    let service = ScimServer::start_in_memory();
    let dir = TempDir::new("bench-scim-relay");
    let config =
        std::fs::read_to_string(workspace().join("deploy/examples/scim-relay.toml")).unwrap().replace(
            "[connectors.relay-users.import]\ndelta_interval = \"5m\"",
            "[connectors.relay-users.import]\non_start = false",
        );
    let s = Supervisor::spawn_with_env(
        &config,
        dir.path(),
        &[("SCIM_TARGET_URL", &service.url()), ("SCIM_TARGET_TOKEN", service.token()), ("RUST_LOG", "warn")],
    );
    s.wait_ready(Duration::from_secs(30));
    let cpu = || {
        let connector = s.connector("relay-users")["pid"].as_u64().unwrap_or(0) as u32;
        (cpu_seconds(s.pid()), cpu_seconds(connector))
    };
    e2e::fixed_http::CreateBench {
        direct_label: "direct POSTs to scim2-server",
        connector: "connector-scim",
        scim: s.scim,
        creates,
        rounds: ROUNDS,
        concurrency: CONCURRENCY,
    }
    .run(
        |names| direct(&service, names),
        |scim, names| {
            e2e::creates_per_second(
                scim,
                "/scim/relay/Users",
                names,
                CONCURRENCY,
                e2e::fixed_http::bench_user,
            )
        },
        cpu,
    );
}
