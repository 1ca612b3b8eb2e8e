//! Benchmark: SCIM reads from a connector space of 100,000 users, against a ceiling measured in
//! the same run, alternately: an axum handler (in a process of its own, like the supervisor) that
//! answers a fixed user JSON body. Goal: at least half of the ceiling.
//!
//! Run: `cargo build --release --workspace --bins && cargo bench -p e2e --bench scim_reads`
//! (`USERS=10000` for a quicker run). The data directory is on /dev/shm when there is one, so
//! that the figure measures code, not the disk.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use e2e::{KeepAlive, Supervisor, median, quickstart_config, request, sqlite_rows};

const CONNECTIONS: usize = 8;
const ROUND: Duration = Duration::from_secs(4);
const ROUNDS: usize = 3;

/// A user as the supervisor answers it, for the fixed baseline.
const FIXED_BODY: &str = r#"{"active":true,"displayName":"User 4242","emails":[{"primary":true,"type":"work","value":"user-4242@example.com"}],"id":"5f0e1d9a-6c1b-4f0e-9d0c-3a4b5c6d7e8f","meta":{"created":"2026-11-26T12:00:00Z","lastModified":"2026-11-26T12:00:00Z","location":"http://127.0.0.1:8080/scim/demo/Users/5f0e1d9a-6c1b-4f0e-9d0c-3a4b5c6d7e8f","resourceType":"User","version":"W/\"1\""},"name":{"familyName":"4242","givenName":"User"},"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"user-4242"}"#;

/// Requests per second over `ROUND`, with `CONNECTIONS` connections each asking `path(n)`.
fn measure(
    addr: SocketAddr,
    path: Arc<dyn Fn(u64) -> String + Send + Sync>,
    check: fn(&[u8]) -> bool,
) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..CONNECTIONS as u64)
        .map(|t| {
            let (stop, done, path) = (stop.clone(), done.clone(), path.clone());
            std::thread::spawn(move || {
                let mut client = KeepAlive::connect(addr);
                let mut n = t * 7919;
                while !stop.load(Ordering::Relaxed) {
                    let (status, body) = client.send("GET", &path(n), None);
                    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
                    assert!(check(&body), "unexpected body: {}", String::from_utf8_lossy(&body));
                    done.fetch_add(1, Ordering::Relaxed);
                    n += 1;
                }
            })
        })
        .collect();
    let started = Instant::now();
    std::thread::sleep(ROUND);
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

/// The baseline server process, stopped however the benchmark ends.
fn main() {
    if e2e::fixed_http::serve_if_asked(FIXED_BODY) {
        return;
    }
    let users: u64 = std::env::var("USERS").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    let base = if std::path::Path::new("/dev/shm").is_dir() { "/dev/shm" } else { "/tmp" };
    let dir = std::path::PathBuf::from(format!("{base}/bench-scim-reads-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = quickstart_config().replace(
        "[connectors.demo-users.parameters]",
        "[connectors.demo-users.import]\non_start = false\n\n[connectors.demo-users.parameters]",
    );
    let s = Supervisor::start(&config, &dir);

    // The users go into the target table at once, then into the connector space by an import.
    let db = dir.join("demo.db");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        use sqlx::{ConnectOptions, Connection};
        let mut conn = sqlx::sqlite::SqliteConnectOptions::new().filename(&db).connect().await.unwrap();
        let mut tx = conn.begin().await.unwrap();
        for i in 0..users {
            sqlx::query("INSERT INTO users (id, user_name, display_name, given_name, family_name, email, active) VALUES (?1, ?2, ?3, 'User', ?4, ?5, 1)")
                .bind(format!("anchor-{i}"))
                .bind(format!("user-{i}"))
                .bind(format!("User {i}"))
                .bind(i.to_string())
                .bind(format!("user-{i}@example.com"))
                .execute(&mut *tx)
                .await
                .unwrap();
        }
        tx.commit().await.unwrap();
    });
    let started = Instant::now();
    let r = request(s.admin, "POST", "/admin/connectors/demo-users/import?type=full", None, None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["added"].as_u64(), Some(users), "{}", r.body);
    let import_seconds = started.elapsed().as_secs_f64();
    let ids: Arc<Vec<String>> = Arc::new(
        sqlite_rows(&dir.join("connector-space.db"), "SELECT id FROM objects WHERE resource_type = 'User'")
            .into_iter()
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect(),
    );
    assert_eq!(ids.len() as u64, users);

    let fixed = e2e::fixed_http::FixedServer::start();
    let fixed_addr = fixed.addr;

    let by_filter: Arc<dyn Fn(u64) -> String + Send + Sync> =
        Arc::new(move |n| format!("/scim/demo/Users?filter=userName%20eq%20%22user-{}%22", n % users));
    let by_id: Arc<dyn Fn(u64) -> String + Send + Sync> = {
        let ids = ids.clone();
        Arc::new(move |n| format!("/scim/demo/Users/{}", ids[(n % ids.len() as u64) as usize]))
    };
    let fixed_path: Arc<dyn Fn(u64) -> String + Send + Sync> = Arc::new(|_| "/scim/demo/Users/x".to_string());
    let found_one =
        |b: &[u8]| b.windows(17).any(|w| w == b"\"totalResults\":1}" || w == b"\"totalResults\":1,");
    let is_user = |b: &[u8]| b.windows(10).any(|w| w == b"\"userName\"");

    let (mut ceiling, mut filter, mut get) = (vec![], vec![], vec![]);
    for _ in 0..ROUNDS {
        ceiling.push(measure(fixed_addr, fixed_path.clone(), is_user));
        filter.push(measure(s.scim, by_filter.clone(), found_one));
        get.push(measure(s.scim, by_id.clone(), is_user));
    }
    let (c, f, g) = (median(ceiling.clone()), median(filter.clone()), median(get.clone()));
    println!(
        "scim_reads benchmark: {users} users, {CONNECTIONS} keep-alive connections, {ROUNDS} rounds of {ROUND:?}, alternating"
    );
    println!("import of {users} users into the connector space: {import_seconds:.1} s");
    println!("ceiling: fixed axum handler          median {c:>9.0} req/s   rounds {ceiling:.0?}");
    println!(
        "GET /Users?filter=userName eq ...    median {f:>9.0} req/s   rounds {filter:.0?}   {:.0}% of the ceiling",
        100.0 * f / c
    );
    println!(
        "GET /Users/{{id}}                      median {g:>9.0} req/s   rounds {get:.0?}   {:.0}% of the ceiling",
        100.0 * g / c
    );
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}
