//! Benchmark: the connector space in PostgreSQL against the SQLite file, and one node against
//! two, and what a node's death costs a client.
//!
//! 1. SCIM creates and filtered reads (`userName eq`, Entra's query before each create) with the
//!    PostgreSQL store against the SQLite store, the same target (the quickstart's SQLite table
//!    on /dev/shm) and the same client, rounds alternating. Goal: the PostgreSQL store keeps at
//!    least half of the SQLite store's create throughput.
//! 2. Two supervisors on one PostgreSQL store (deploy/examples/ha.toml: store and target in
//!    PostgreSQL) behind a client that spreads its connections over both, against one.
//! 3. Failover: a client writing to node A, which is killed (`kill -9`); the time from the kill
//!    to the client's next 201, from node B (the client's retry).
//!
//! Run: `cargo build --release --workspace --bins && cargo bench -p e2e --bench store`
//! (`CREATES=2000` per round, `KILLS=5`). PostgreSQL is a throwaway cluster with fsync off.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use e2e::databases::Postgres;
use e2e::{KeepAlive, Supervisor, TOKEN, TempDir, median, quickstart_config, try_request, user_body};

const CONCURRENCY: usize = 8;
const ROUNDS: usize = 3;

/// Creates one user per name from CONCURRENCY keep-alive connections spread over `nodes`;
/// returns creates per second.
fn creates(nodes: &[SocketAddr], names: &[String]) -> f64 {
    let started = Instant::now();
    std::thread::scope(|scope| {
        for (i, chunk) in names.chunks(names.len().div_ceil(CONCURRENCY)).enumerate() {
            let node = nodes[i % nodes.len()];
            scope.spawn(move || {
                let mut client = KeepAlive::connect(node);
                for name in chunk {
                    let (status, answer) = client.send("POST", "/scim/demo/Users", Some(&user_body(name)));
                    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&answer));
                }
            });
        }
    });
    names.len() as f64 / started.elapsed().as_secs_f64()
}

/// Filtered reads of `names` (each must find its user); returns reads per second.
fn reads(nodes: &[SocketAddr], names: &[String]) -> f64 {
    let started = Instant::now();
    std::thread::scope(|scope| {
        for (i, chunk) in names.chunks(names.len().div_ceil(CONCURRENCY)).enumerate() {
            let node = nodes[i % nodes.len()];
            scope.spawn(move || {
                let mut client = KeepAlive::connect(node);
                for name in chunk {
                    let path = format!("/scim/demo/Users?filter=userName%20eq%20%22{name}%22");
                    let (status, answer) = client.send("GET", &path, None);
                    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
                    let found: serde_json::Value = serde_json::from_slice(&answer).unwrap();
                    assert_eq!(found["totalResults"], 1, "{found}");
                }
            });
        }
    });
    names.len() as f64 / started.elapsed().as_secs_f64()
}

fn names(label: &str, round: usize, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{label}-{round}-{i}")).collect()
}

fn main() {
    let n: usize = std::env::var("CREATES").ok().and_then(|v| v.parse().ok()).unwrap_or(2000);
    let kills: usize = std::env::var("KILLS").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    let pg = Postgres::start();
    let base = if std::path::Path::new("/dev/shm").is_dir() { "/dev/shm" } else { "/tmp" };
    let quiet = [("RUST_LOG", "warn")];

    // 1. The same supervisor and target, the connector space in SQLite or in PostgreSQL.
    let no_import = quickstart_config().replace(
        "[connectors.demo-users.parameters]",
        "[connectors.demo-users.import]\non_start = false\n\n[connectors.demo-users.parameters]",
    );
    let sqlite_dir = std::path::PathBuf::from(format!("{base}/bench-store-sqlite-{}", std::process::id()));
    let pg_dir = std::path::PathBuf::from(format!("{base}/bench-store-pg-{}", std::process::id()));
    std::fs::create_dir_all(&sqlite_dir).unwrap();
    std::fs::create_dir_all(&pg_dir).unwrap();
    let sqlite = Supervisor::spawn_with_env(&no_import, &sqlite_dir, &quiet);
    let pg_config = format!("{no_import}\n[store]\nurl = \"{}\"\n", pg.database());
    let shared = Supervisor::spawn_with_env(&pg_config, &pg_dir, &quiet);
    sqlite.wait_ready(Duration::from_secs(30));
    shared.wait_ready(Duration::from_secs(30));
    let (mut c_sqlite, mut c_pg, mut r_sqlite, mut r_pg) = (vec![], vec![], vec![], vec![]);
    for round in 0..ROUNDS {
        for (label, s, c, r) in
            [("sqlite", &sqlite, &mut c_sqlite, &mut r_sqlite), ("postgresql", &shared, &mut c_pg, &mut r_pg)]
        {
            let batch = names(label, round, n);
            c.push(creates(&[s.scim], &batch));
            r.push(reads(&[s.scim], &batch));
            println!(
                "round {round} {label:>10} store: {:7.0} creates/s, {:7.0} filtered reads/s",
                c.last().unwrap(),
                r.last().unwrap()
            );
        }
    }
    let (cs, cp, rs, rp) = (median(c_sqlite), median(c_pg), median(r_sqlite), median(r_pg));
    println!(
        "median creates/s: SQLite store {cs:.0}, PostgreSQL store {cp:.0}: ratio {:.2} (goal >= 0.50)",
        cp / cs
    );
    println!("median filtered reads/s: SQLite store {rs:.0}, PostgreSQL store {rp:.0}: ratio {:.2}", rp / rs);
    drop(sqlite);
    drop(shared);
    let _ = std::fs::remove_dir_all(&sqlite_dir);
    let _ = std::fs::remove_dir_all(&pg_dir);

    // 2. One node against two, both on the PostgreSQL store and target (ha.toml).
    let ha = std::fs::read_to_string(e2e::workspace().join("deploy/examples/ha.toml")).unwrap().replace(
        "[connectors.sql-users.parameters]",
        "[connectors.sql-users.import]\non_start = false\n\n[connectors.sql-users.parameters]",
    );
    let (store, target) = (pg.database(), pg.database());
    let env = [("STORE_URL", store.as_str()), ("DATABASE_URL", target.as_str()), ("RUST_LOG", "warn")];
    // The nodes' data directories hold only sockets and a lock file with a shared store.
    let dir = TempDir::new("bench-store-ha");
    let start = |label: &str| {
        let data = dir.path().join(label);
        std::fs::create_dir_all(&data).unwrap();
        let s = Supervisor::spawn_with_env(&ha, &data, &env);
        s.wait_ready(Duration::from_secs(30));
        s
    };
    let a = start("a");
    let b = start("b");
    let (mut one, mut two) = (vec![], vec![]);
    for round in 0..ROUNDS {
        one.push(creates(&[a.scim], &names("one", round, n)));
        two.push(creates(&[a.scim, b.scim], &names("two", round, n)));
        println!(
            "round {round}: one node {:7.0} creates/s, two nodes {:7.0} creates/s",
            one.last().unwrap(),
            two.last().unwrap()
        );
    }
    let (one, two) = (median(one), median(two));
    println!(
        "median creates/s on the PostgreSQL store and target: one node {one:.0}, two nodes {two:.0}: ratio {:.2}",
        two / one
    );

    // 3. Failover: node A killed mid-stream; the client's next 201 comes from node B.
    drop(b);
    let mut a = a;
    let mut costs = vec![];
    for kill in 0..kills {
        let b = start(&format!("b{kill}"));
        let nodes = [a.scim, b.scim];
        // Warm: a few creates on A.
        for i in 0..20 {
            assert_eq!(
                a.scim("POST", "/scim/demo/Users", Some(&user_body(&format!("warm-{kill}-{i}")))).status,
                201
            );
        }
        a.kill_hard();
        let killed = Instant::now();
        let mut i = 0;
        loop {
            // The client's order: A first (as its connection was), then B on a refused connection.
            let name = format!("failover-{kill}-{i}");
            let done = nodes.iter().any(|node| {
                try_request(*node, "POST", "/scim/demo/Users", Some(TOKEN), Some(&user_body(&name)))
                    .is_ok_and(|r| r.status == 201)
            });
            if done {
                break;
            }
            i += 1;
        }
        let cost = killed.elapsed().as_secs_f64() * 1000.0;
        println!("kill {kill}: next 201 {cost:.1} ms after the kill");
        costs.push(cost);
        a = b;
    }
    println!(
        "median failover (kill -9 of a node to the client's next 201, from the other): {:.1} ms",
        median(costs)
    );
}
