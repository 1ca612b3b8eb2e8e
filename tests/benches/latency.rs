//! Create latency, not throughput (#22 items 3 and 4): the quickstart (connector space and target
//! in SQLite, on /dev/shm so that the disk's fsync swings are not measured) under
//!
//! 1. one client creating users one after another: p50, p99 and max, against the same client's
//!    round trip to the HTTP floor (a server that only answers 201) plus its direct insert of the
//!    same row into a SQLite table (what the work costs without the supervisor), alternating;
//! 2. sixteen keep-alive connections creating as fast as they can for `SECS` seconds: p50, p90,
//!    p99, p99.9 and max, whether p99 stays under 4 times p50, and when the slow requests came
//!    (per 100 ms bucket), to tell periodic stalls (checkpoints, pruning) from scattered ones.
//!
//! Run: `cargo build --release --workspace --bins && cargo bench -p e2e --bench latency`
//! (`SINGLE=2000` creates for the single client, `SECS=10` for the load, `CLIENTS=16`;
//! `ON_DISK=1` puts the data directory in /var/tmp instead of /dev/shm; `DURABILITY=power-loss`
//! makes the connector space sync every commit; `TARGET=ldap` runs the LDAP example into a
//! throwaway slapd instead of the quickstart, with the same direct SQLite baseline in part 1).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use e2e::fixed_http::{CREATED_USER, FixedServer, bench_user, serve_if_asked};
use e2e::slapd::LdapServer;
use e2e::{KeepAlive, Supervisor, quickstart_config};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The q-quantile of sorted microseconds.
fn quantile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn summary(label: &str, mut micros: Vec<u64>) -> (u64, u64) {
    micros.sort_unstable();
    let (p50, p90, p99, p999) =
        (quantile(&micros, 0.5), quantile(&micros, 0.9), quantile(&micros, 0.99), quantile(&micros, 0.999));
    println!(
        "{label:<44} n={:>6}  p50 {:>7.2} ms  p90 {:>7.2} ms  p99 {:>7.2} ms  p99.9 {:>7.2} ms  max {:>7.2} ms",
        micros.len(),
        p50 as f64 / 1000.0,
        p90 as f64 / 1000.0,
        p99 as f64 / 1000.0,
        p999 as f64 / 1000.0,
        *micros.last().unwrap_or(&0) as f64 / 1000.0
    );
    (p50, p99)
}

/// Direct inserts of the rows a create writes, one after another, into a SQLite table like the
/// quickstart's (same file system, WAL, synchronous NORMAL): microseconds each.
fn direct_inserts(db: &std::path::Path, names: &[String]) -> Vec<u64> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        use sqlx::ConnectOptions;
        let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(db)
            .create_if_missing(true)
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
            .synchronous(sqlx::sqlite::SqliteSynchronous::Normal)
            .connect()
            .await
            .unwrap();
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS users (id TEXT PRIMARY KEY NOT NULL, user_name TEXT UNIQUE, \
             display_name TEXT, given_name TEXT, family_name TEXT, email TEXT, active BOOLEAN)",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        let mut micros = Vec::with_capacity(names.len());
        for (i, name) in names.iter().enumerate() {
            let started = Instant::now();
            sqlx::query("INSERT INTO users VALUES (?1, ?2, ?3, ?4, ?5, ?6, 1)")
                .bind(format!("{name}-{i}"))
                .bind(name)
                .bind(format!("User {name}"))
                .bind("Bench")
                .bind(name)
                .bind(format!("{name}@example.com"))
                .execute(&mut conn)
                .await
                .unwrap();
            micros.push(started.elapsed().as_micros() as u64);
        }
        micros
    })
}

/// `TARGET=ldap`: the LDAP example (connector-ldap into a throwaway slapd) instead of the
/// quickstart.
fn ldap_target() -> bool {
    std::env::var("TARGET").is_ok_and(|v| v == "ldap")
}

/// Where the benchmark's users are created (the HTTP floor answers any path).
fn users_path() -> &'static str {
    if ldap_target() { "/scim/directory/Users" } else { "/scim/demo/Users" }
}

/// One client's requests one after another, microseconds each.
fn one_after_another(addr: std::net::SocketAddr, names: &[String]) -> Vec<u64> {
    let mut client = KeepAlive::connect(addr);
    names
        .iter()
        .map(|name| {
            let started = Instant::now();
            let (status, body) = client.send("POST", users_path(), Some(&bench_user(name)));
            assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
            started.elapsed().as_micros() as u64
        })
        .collect()
}

fn main() {
    if serve_if_asked(CREATED_USER) {
        return;
    }
    let single = env("SINGLE", 2000) as usize;
    let secs = env("SECS", 10);
    let clients = env("CLIENTS", 16) as usize;
    // ON_DISK=1: the data directory on the disk instead (the connector space's checkpoints then
    // sync to it), as a service runs.
    let on_disk = std::env::var("ON_DISK").is_ok_and(|v| v == "1");
    let base = if !on_disk && std::path::Path::new("/dev/shm").is_dir() { "/dev/shm" } else { "/var/tmp" };
    let dir = std::path::PathBuf::from(format!("{base}/bench-latency-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // DURABILITY=power-loss: the connector space syncs every commit (a group of writes shares one).
    let example = if ldap_target() {
        std::fs::read_to_string(e2e::workspace().join("deploy/examples/ldap.toml")).unwrap().replace(
            "[connectors.ldap-users.parameters]",
            "[connectors.ldap-users.import]\non_start = false\n\n[connectors.ldap-users.parameters]",
        )
    } else {
        quickstart_config()
    };
    let config = match std::env::var("DURABILITY") {
        Ok(d) if !d.is_empty() => format!("{example}\n[store]\ndurability = \"{d}\"\n"),
        _ => example,
    };
    // The LDAP example's directory: the test fixture's slapd (no sync of its own writes).
    let slapd = ldap_target().then(e2e::slapd::Slapd::start);
    let s = match &slapd {
        Some(slapd) => {
            let s = Supervisor::spawn_with_env(
                &config,
                &dir,
                &[
                    ("LDAP_URL", &slapd.url()),
                    ("LDAP_SECURITY", "none"),
                    ("LDAP_BIND_DN", &slapd.admin_dn()),
                    ("LDAP_BIND_PASSWORD", slapd.admin_password()),
                    ("LDAP_BASE_DN", slapd.suffix()),
                ],
            );
            s.wait_ready(Duration::from_secs(30));
            s
        }
        None => Supervisor::start(&config, &dir),
    };
    let fixed = FixedServer::start();
    let names = |prefix: &str, n: usize| -> Vec<String> { (0..n).map(|i| format!("{prefix}{i}")).collect() };

    // Warm-up.
    one_after_another(s.scim, &names("warm-", 300));
    one_after_another(fixed.addr, &names("warm-f", 300));
    direct_inserts(&dir.join("direct.db"), &names("warm-d", 300));

    println!("1. one client, creates one after another ({single} per side, alternating halves)");
    let (mut ours, mut floor, mut direct) = (vec![], vec![], vec![]);
    for half in 0..2 {
        floor.extend(one_after_another(fixed.addr, &names(&format!("f{half}-"), single / 2)));
        direct.extend(direct_inserts(&dir.join("direct.db"), &names(&format!("d{half}-"), single / 2)));
        ours.extend(one_after_another(s.scim, &names(&format!("s{half}-"), single / 2)));
    }
    let (o50, o99) = summary("SCIM creates through the supervisor", ours);
    let (f50, f99) = summary("HTTP floor round trip (answers 201)", floor);
    let (d50, d99) = summary("direct SQLite insert of the same row", direct);
    println!(
        "   floor + direct: p50 {:.2} ms, p99 {:.2} ms; ours is {:.1}x that at p50 and {:.1}x at p99",
        (f50 + d50) as f64 / 1000.0,
        (f99 + d99) as f64 / 1000.0,
        o50 as f64 / (f50 + d50).max(1) as f64,
        o99 as f64 / (f99 + d99).max(1) as f64
    );

    println!("2. {clients} keep-alive connections creating for {secs} s");
    let started = Instant::now();
    let samples: Arc<Mutex<Vec<(u64, u64)>>> = Arc::new(Mutex::new(Vec::new()));
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            let (samples, addr) = (samples.clone(), s.scim);
            std::thread::spawn(move || {
                let mut client = KeepAlive::connect(addr);
                let mut mine = Vec::new();
                let mut i = 0;
                while started.elapsed() < Duration::from_secs(secs) {
                    let name = format!("load-{c}-{i}");
                    i += 1;
                    let at = started.elapsed().as_micros() as u64;
                    let t = Instant::now();
                    let (status, body) = client.send("POST", users_path(), Some(&bench_user(&name)));
                    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
                    mine.push((at, t.elapsed().as_micros() as u64));
                }
                samples.lock().unwrap().extend(mine);
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let samples = samples.lock().unwrap().clone();
    let rate = samples.len() as f64 / secs as f64;
    let (p50, p99) = summary(
        &format!("SCIM creates, {clients} connections ({rate:.0}/s)"),
        samples.iter().map(|s| s.1).collect(),
    );
    println!(
        "   p99 / p50 = {:.1} (goal < 4): {}",
        p99 as f64 / p50.max(1) as f64,
        if p99 < 4 * p50 { "met" } else { "not met" }
    );
    // When the slow requests came: the 100 ms buckets with the most requests over 4 x p50.
    let slow = 4 * p50;
    let mut buckets = std::collections::BTreeMap::<u64, (u64, u64)>::new();
    for (at, micros) in &samples {
        let b = buckets.entry(at / 100_000).or_default();
        b.0 += 1;
        if *micros > slow {
            b.1 += 1;
        }
    }
    let slow_total: u64 = buckets.values().map(|b| b.1).sum();
    let mut worst: Vec<_> = buckets.iter().filter(|(_, b)| b.1 > 0).collect();
    worst.sort_by_key(|(_, b)| std::cmp::Reverse(b.1));
    println!(
        "   {slow_total} requests over 4 x p50 ({:.2} ms), in {} of {} buckets of 100 ms; the worst: {}",
        slow as f64 / 1000.0,
        worst.len(),
        buckets.len(),
        worst
            .iter()
            .take(8)
            .map(|(b, c)| format!("{:.1}s:{}/{}", **b as f64 / 10.0, c.1, c.0))
            .collect::<Vec<_>>()
            .join(" ")
    );
    // The supervisor's own view of the same requests (its summaries cover the whole run, part 1
    // included): how much of a slow request was spent in the call to the connector.
    let metrics = e2e::request_with_headers(s.admin, "GET", "/metrics", &[]).body;
    for (metric, label) in [
        ("scim_request_duration_seconds", "method=\"POST\""),
        ("connector_call_duration_seconds", "operation=\"PutExportEntries\""),
    ] {
        let quantiles: Vec<String> = metrics
            .lines()
            .filter(|l| l.starts_with(metric) && l.contains(label) && l.contains("quantile="))
            .filter_map(|l| {
                let q = l.split("quantile=\"").nth(1)?.split('"').next()?;
                let v: f64 = l.rsplit(' ').next()?.parse().ok()?;
                ["0.5", "0.9", "0.99", "0.999"]
                    .contains(&q)
                    .then(|| format!("p{} {:.2} ms", &q[1..], v * 1000.0))
            })
            .collect();
        println!("   supervisor's {metric}: {}", quantiles.join(", "));
    }
    drop(fixed);
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}
