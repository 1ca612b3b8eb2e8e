//! Benchmark (#22 item 5): what a supervisor costs when nothing happens, and how fast it starts.
//!
//! 1. Start-up: a supervisor with 20 connectors configured (10 apps, each users and groups into
//!    a SQLite file of its own, as the quickstart) from spawn to `/readyz` 200, five times,
//!    against the same supervisor with the quickstart's 2 connectors. Goal: 20 within 2 s.
//! 2. Idle: RSS and CPU over 10 s of the supervisor and of each connector, at rest after start.
//! 3. The same with 100,000 users in the connector space (imported from the quickstart's users
//!    table, filled straight in SQLite before the start).
//!
//! Run: `cargo build --release --workspace --bins && cargo bench -p e2e --bench idle`. Data under
//! /dev/shm where there is one (no disk sync in the figures).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use e2e::{Supervisor, cpu_seconds, quickstart_config, request};

/// A field of /proc/<pid>/status in MiB: `VmRSS` (all resident pages), `RssAnon` (the heap:
/// what the process itself holds; the rest is mapped files, which on /dev/shm count as shared
/// memory: SQLite's database and WAL pages).
fn status_mib(pid: u32, field: &str) -> f64 {
    e2e::status_kib(pid, field) as f64 / 1024.0
}

fn rss_mib(pid: u32) -> f64 {
    status_mib(pid, "VmRSS")
}

/// A configuration of `apps` apps, each with a users and a groups connector into its own
/// SQLite file.
fn many(apps: usize) -> String {
    let quickstart = quickstart_config();
    let server = &quickstart[..quickstart.find("[apps.demo]").expect("the quickstart's app")];
    let app = &quickstart[quickstart.find("[apps.demo]").unwrap()..];
    let mut out = server.to_string();
    for i in 0..apps {
        out.push_str(
            &app.replace("[apps.demo]", &format!("[apps.app{i}]"))
                .replace("demo-users", &format!("u{i}"))
                .replace("demo-groups", &format!("g{i}"))
                .replace("demo.db", &format!("app{i}.db")),
        );
    }
    out
}

fn scratch(label: &str) -> PathBuf {
    let base = if Path::new("/dev/shm").is_dir() { "/dev/shm" } else { "/tmp" };
    let dir = PathBuf::from(format!("{base}/bench-idle-{label}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Spawn to `/readyz` 200, in ms.
fn start_ms(config: &str, label: &str) -> (f64, Supervisor) {
    let dir = scratch(label);
    let started = Instant::now();
    let s = Supervisor::spawn_with_env(config, &dir, &[("RUST_LOG", "warn")]);
    loop {
        if let Ok(r) = e2e::try_request(s.admin, "GET", "/readyz", None, None)
            && r.status == 200
        {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "not ready within 60 s:\n{}", s.log());
        std::thread::sleep(Duration::from_millis(2));
    }
    (started.elapsed().as_secs_f64() * 1e3, s)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The connectors' pids.
fn connector_pids(s: &Supervisor) -> Vec<u32> {
    let r = request(s.admin, "GET", "/admin/connectors", None, None);
    r.json()["connectors"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["pid"].as_u64())
        .map(|p| p as u32)
        .collect()
}

/// Prints RSS now and CPU over `secs` seconds at rest, of the supervisor and its connectors.
fn idle(label: &str, s: &Supervisor, secs: u64) {
    let pids = connector_pids(s);
    let before: Vec<f64> = pids.iter().map(|p| cpu_seconds(*p)).collect();
    let sup_before = cpu_seconds(s.pid());
    std::thread::sleep(Duration::from_secs(secs));
    let sup_cpu = (cpu_seconds(s.pid()) - sup_before) / secs as f64 * 100.0;
    let conn_cpu: Vec<f64> =
        pids.iter().zip(&before).map(|(p, b)| (cpu_seconds(*p) - b) / secs as f64 * 100.0).collect();
    let conn_rss: Vec<f64> = pids.iter().map(|p| rss_mib(*p)).collect();
    println!(
        "{label}: supervisor RSS {:.1} MiB (heap {:.1}), CPU {:.2} % | {} connectors: RSS {:.1} MiB each (median; {:.1} in all), CPU {:.3} % each (median; {:.2} % in all)",
        rss_mib(s.pid()),
        status_mib(s.pid(), "RssAnon"),
        sup_cpu,
        pids.len(),
        median(conn_rss.clone()),
        conn_rss.iter().sum::<f64>(),
        median(conn_cpu.clone()),
        conn_cpu.iter().sum::<f64>(),
    );
}

fn main() {
    // 1. Start-up, alternately: 2 connectors, then 20.
    let (mut two, mut twenty) = (vec![], vec![]);
    let config = many(10);
    for round in 0..5 {
        let (ms, s) = start_ms(&quickstart_config(), &format!("two-{round}"));
        two.push(ms);
        drop(s);
        let (ms, s) = start_ms(&config, &format!("twenty-{round}"));
        twenty.push(ms);
        if round == 4 {
            // 2. Idle, 20 connectors.
            idle("idle, 20 connectors, empty", &s, 10);
        }
        drop(s);
    }
    println!(
        "start-up to /readyz 200, median of 5: 2 connectors {:.0} ms (runs {two:.0?}), 20 connectors {:.0} ms (runs {twenty:.0?}); goal: 20 within 2000 ms",
        median(two.clone()),
        median(twenty.clone()),
    );

    // 3. 100,000 users in the connector space.
    let users: usize = std::env::var("USERS").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    let dir = scratch("full");
    let mut s = Supervisor::start(&quickstart_config(), &dir);
    s.stop();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        use sqlx::Connection;
        let mut db = sqlx::SqliteConnection::connect(&format!("sqlite://{}", dir.join("demo.db").display()))
            .await
            .unwrap();
        let mut tx = db.begin().await.unwrap();
        for i in 0..users {
            sqlx::query(
                "INSERT INTO users (id, user_name, display_name, given_name, family_name, email, active) \
                 VALUES (?, ?, ?, 'Idle', ?, ?, 1)",
            )
            .bind(format!("idle-{i:06}"))
            .bind(format!("idle{i}"))
            .bind(format!("Idle {i}"))
            .bind(format!("user{i}"))
            .bind(format!("idle{i}@example.com"))
            .execute(&mut *tx)
            .await
            .unwrap();
        }
        tx.commit().await.unwrap();
    });
    let started = Instant::now();
    let s = Supervisor::start(&quickstart_config(), &dir);
    let c = s.wait_connector("demo-users", Duration::from_secs(600), |c| !c["last_import"].is_null());
    println!(
        "import at start of {users} users: {:.1} s ({} added)",
        started.elapsed().as_secs_f64(),
        c["last_import"]["added"]
    );
    // Right after the import, then once the store has settled (its write-ahead log folded back
    // into the database).
    idle(&format!("just after, 2 connectors, {users} users"), &s, 10);
    idle(&format!("idle, 2 connectors, {users} users"), &s, 10);
    let peak = status_mib(s.pid(), "VmHWM");
    println!("supervisor peak RSS during the import (VmHWM): {peak:.0} MiB");
}
