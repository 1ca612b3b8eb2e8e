//! Benchmark: SCIM creates through the supervisor into PostgreSQL (the shipped example,
//! `deploy/examples/postgres.toml`), against direct `sqlx` inserts of the same rows into the
//! same table at the same concurrency, alternately in one run. Goal: at least 0.85 of the
//! direct throughput.
//!
//! Run: `cargo build --release --workspace --bins && cargo bench -p e2e --bench postgres`
//! (`CREATES=2000` rows per round). PostgreSQL is a throwaway cluster with fsync and
//! synchronous_commit off, so the figures measure code rather than the disk; `DURABLE=1` turns
//! them on, as in a database in service.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use e2e::databases::Postgres;
use e2e::{Supervisor, TempDir, cpu_seconds, workspace};

const CONCURRENCY: usize = 8;
const ROUNDS: usize = 3;

/// Creates `names` through SCIM from CONCURRENCY keep-alive connections; returns rows/s.
fn through_scim(scim: SocketAddr, names: &[String]) -> f64 {
    e2e::creates_per_second(scim, "/scim/sql/Users", names, CONCURRENCY, e2e::fixed_http::bench_user)
}

/// Inserts the same rows (the columns the example's mapping fills, a fresh UUID as the key)
/// with sqlx, CONCURRENCY pooled connections, one autocommitted INSERT each; returns rows/s.
fn direct(runtime: &tokio::runtime::Runtime, pool: &sqlx::PgPool, names: &[String]) -> f64 {
    runtime.block_on(async {
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for chunk in names.chunks(names.len().div_ceil(CONCURRENCY)) {
            let chunk = chunk.to_vec();
            let pool = pool.clone();
            tasks.spawn(async move {
                for name in chunk {
                    sqlx::query(
                        "INSERT INTO users (id, user_name, display_name, given_name, family_name, email, active) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    )
                    .bind(uuid::Uuid::new_v4().to_string())
                    .bind(&name)
                    .bind(format!("User {name}"))
                    .bind("Bench")
                    .bind(&name)
                    .bind(format!("{name}@example.com"))
                    .bind(true)
                    .execute(&pool)
                    .await
                    .unwrap();
                }
            });
        }
        while let Some(r) = tasks.join_next().await {
            r.unwrap();
        }
        names.len() as f64 / started.elapsed().as_secs_f64()
    })
}

/// CPU seconds of the supervisor and of the users' connector.
fn cpu(s: &Supervisor) -> (f64, f64) {
    let connector = s.connector("sql-users")["pid"].as_u64().unwrap_or(0) as u32;
    (cpu_seconds(s.pid()), cpu_seconds(connector))
}

fn main() {
    if e2e::fixed_http::serve_if_asked(e2e::fixed_http::CREATED_USER) {
        return;
    }
    let creates: usize = std::env::var("CREATES").ok().and_then(|v| v.parse().ok()).unwrap_or(2000);
    // DURABLE=1: PostgreSQL syncs every commit (its default), to see the figure a real database gives.
    let durable = std::env::var("DURABLE").is_ok_and(|v| v == "1");
    let pg = Postgres::start_with(durable);
    let url = pg.database();
    let dir = TempDir::new("bench-postgres");
    let config = std::fs::read_to_string(workspace().join("deploy/examples/postgres.toml")).unwrap().replace(
        "[connectors.sql-users.parameters]",
        "[connectors.sql-users.import]\non_start = false\n\n[connectors.sql-users.parameters]",
    );
    let s = Supervisor::spawn_with_env(&config, dir.path(), &[("DATABASE_URL", &url), ("RUST_LOG", "warn")]);
    s.wait_ready(Duration::from_secs(30));
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let pool = runtime
        .block_on(sqlx::postgres::PgPoolOptions::new().max_connections(CONCURRENCY as u32).connect(&url))
        .unwrap();

    e2e::fixed_http::CreateBench {
        direct_label: "direct sqlx inserts",
        connector: "connector-sql",
        scim: s.scim,
        creates,
        rounds: ROUNDS,
        concurrency: CONCURRENCY,
    }
    .run(|names| direct(&runtime, &pool, names), through_scim, || cpu(&s));
}
