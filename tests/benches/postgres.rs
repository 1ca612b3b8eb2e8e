//! Benchmark: SCIM creates through the supervisor into PostgreSQL (the shipped example,
//! `deploy/examples/postgres.toml`), against direct `sqlx` inserts of the same rows into the
//! same table at the same concurrency, alternately in one run. Goal: at least 0.85 of the
//! direct throughput (issue 6), since #22 at least 0.75 of the bound the HTTP floor puts on that
//! ratio (printed by each round).
//!
//! Then a full import of `IMPORT` rows (100,000 by default) put in directly, against `psql`
//! copying the same table to a pipe, first with every row new to the connector space, then
//! with every row unchanged.
//!
//! Run: `cargo build --release --workspace --bins && cargo bench -p e2e --bench postgres`
//! (`CREATES=2000` rows per round, `IMPORT=100000`). PostgreSQL is a throwaway cluster with fsync and
//! synchronous_commit off, so the figures measure code rather than the disk; `DURABLE=1` turns
//! them on, as in a database in service.

#[path = "common/store_writes.rs"]
mod store_writes;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use e2e::databases::Postgres;
use e2e::direct_connector::{DirectConnector, Target, added};
use e2e::{Supervisor, TempDir, cpu_seconds, workspace};
use ecma_proto::v1;

const CONCURRENCY: usize = 8;

// The supervisor's allocator: the store's share of a create (`store_writes`) is measured in this
// process, and must cost what it costs in the supervisor.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
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

/// The users' connector of deploy/examples/postgres.toml, as the supervisor opens it.
fn target(url: &str) -> Target {
    let parameters = [
        ("connection_string", url.to_string()),
        ("table", "users".into()),
        ("anchor_column", "id".into()),
        ("create_table", "true".into()),
        ("columns", "user_name unique, display_name, given_name, family_name, email, active boolean".into()),
        ("watermark_column", "updated_at".into()),
        ("soft_delete_column", "deleted".into()),
    ];
    Target::new(&parameters, "user", "default")
}

/// The ADD connector-sql gets for a SCIM create of `name` (see [`e2e::fixed_http::bench_user`]).
fn add_of(name: &str) -> v1::CsEntryChange {
    let string = |v: String| v1::Value::string(v);
    v1::CsEntryChange {
        identifier: name.into(),
        object_type: "user".into(),
        modification_type: v1::ObjectModificationType::Add as i32,
        anchors: vec![],
        dn: String::new(),
        attribute_changes: vec![
            added("user_name", string(name.into())),
            added("display_name", string(format!("User {name}"))),
            added("given_name", string("Bench".into())),
            added("family_name", string(name.into())),
            added("email", string(format!("{name}@example.com"))),
            added("active", v1::Value::boolean(true)),
        ],
    }
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
    // As the supervisor runs (its main), for the store's share measured in this process.
    let _ = nix::sys::prctl::set_thp_disable(true);
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

    let medians = e2e::fixed_http::CreateBench {
        direct_label: "direct sqlx inserts",
        connector: "connector-sql",
        scim: s.scim,
        creates,
        rounds: ROUNDS,
        concurrency: CONCURRENCY,
    }
    .run(|names| direct(&runtime, &pool, names), through_scim, || cpu(&s));

    // The same creates through connector-sql alone, driven over gRPC by this process.
    let alone = runtime.block_on(DirectConnector::start("connector-sql", dir.path()));
    let users = target(&url);
    let of = ("sql", "User", "sql-users");
    let writes =
        store_writes::create_writes(&runtime, &medians.machine, dir.path(), of, creates, CONCURRENCY);
    medians.against_connector_alone(
        "connector-sql",
        alone.pid(),
        writes,
        |names| direct(&runtime, &pool, names),
        |names| runtime.block_on(alone.creates(&users, names, CONCURRENCY, add_of)),
    );

    // Import: rows put in directly, then alternately a COPY of the table to a counted pipe and a
    // full import of the users' connector (first every row new to the connector space, then
    // every row unchanged).
    let import: usize = std::env::var("IMPORT").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    let loaded = Instant::now();
    e2e::databases::execute(
        &url,
        &format!(
            "INSERT INTO users (id, user_name, display_name, given_name, family_name, email, active) \
             SELECT gen_random_uuid()::text, 'imp' || i, 'User imp' || i, 'Bench', 'imp' || i, \
             'imp' || i || '@example.com', true FROM generate_series(1, {import}) i"
        ),
        &[],
    );
    println!("loaded {import} rows with one INSERT in {:.1} s", loaded.elapsed().as_secs_f64());
    let total = e2e::databases::query(&url, "SELECT count(*)::text AS n FROM users", &[])[0]["n"]
        .as_str()
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap();
    for round in 0..2 {
        let started = Instant::now();
        let out = std::process::Command::new("psql")
            .args([url.as_str(), "-c", "copy (select * from users) to stdout"])
            .output()
            .unwrap();
        let copy_seconds = started.elapsed().as_secs_f64();
        let count = out.stdout.split(|b| *b == b'\n').filter(|l| !l.is_empty()).count();
        assert_eq!(count, total, "psql copied every row: {}", String::from_utf8_lossy(&out.stderr));

        let (alone_seconds, read) = runtime.block_on(alone.full_import(&users));
        assert_eq!(read, total, "connector-sql alone read every row");
        println!(
            "         connector-sql alone (its pages read over gRPC and decoded, nothing compared or stored) \
             {alone_seconds:.2} s ({:.1} times the copy)",
            alone_seconds / copy_seconds
        );

        let started = Instant::now();
        let before = cpu(&s);
        let r = e2e::request(s.admin, "POST", "/admin/connectors/sql-users/import?type=full", None, None);
        let after = cpu(&s);
        assert_eq!(r.status, 200, "{}", r.body);
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "         CPU per imported row: supervisor {:.0} µs, connector-sql {:.0} µs",
            (after.0 - before.0) * 1e6 / total as f64,
            (after.1 - before.1) * 1e6 / total as f64
        );
        e2e::print_memory(&s, "sql-users");
        let report = r.json();
        let seen = ["added", "updated", "unchanged"].iter().map(|k| report[k].as_u64().unwrap()).sum::<u64>();
        assert_eq!(seen as usize, total, "{report}");
        println!(
            "import round {round} ({}): psql copy to stdout {copy_seconds:.2} s ({:.0}/s)   full import into the connector space {seconds:.2} s ({:.0}/s), {:.1} times the copy",
            if round == 0 { "first: every row is new" } else { "again: every row unchanged" },
            total as f64 / copy_seconds,
            total as f64 / seconds,
            seconds / copy_seconds,
        );
    }
}
