//! Soak benchmark: several minutes of mixed SCIM load on the quickstart (creates, PATCHes,
//! filtered reads, deletes), watching the connector space's write-ahead log and the resident
//! memory of the supervisor and of the users' connector. Two phases: first the number of users
//! grows (creates outnumber deletes), then it stays flat (each client deletes as many as it
//! creates), so that memory that follows the data can be told from memory that does not.
//!
//! Run: `cargo build --release --workspace --bins && cargo bench -p e2e --bench soak`
//! (`SOAK_SECS=360` by default: two phases of three minutes). The data directory is on /dev/shm
//! when there is one (fsync latency here swings 5-10x; this measures the code, not the disk).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use e2e::{KeepAlive, Supervisor, quickstart_config, request};
use serde_json::{Value, json};

const CLIENTS: u64 = 8;

fn rss_kib(pid: u32) -> u64 {
    e2e::status_kib(pid, "VmRSS")
}

fn file_len(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

struct Sample {
    at: f64,
    wal: u64,
    db: u64,
    supervisor: u64,
    supervisor_anon: u64,
    supervisor_file: u64,
    connector: u64,
    users: u64,
    requests: u64,
}

fn main() {
    let secs: u64 = std::env::var("SOAK_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(360);
    let base = if std::path::Path::new("/dev/shm").is_dir() { "/dev/shm" } else { "/tmp" };
    let dir = std::path::PathBuf::from(format!("{base}/bench-soak-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let s = Supervisor::start(&quickstart_config(), &dir);
    let connector_pid = s.connector("demo-users")["pid"].as_u64().expect("connector pid") as u32;
    let (wal, db) = (dir.join("connector-space.db-wal"), dir.join("connector-space.db"));

    let stop = Arc::new(AtomicBool::new(false));
    let flat = Arc::new(AtomicBool::new(false));
    let requests = Arc::new(AtomicU64::new(0));
    let users = Arc::new(AtomicU64::new(0));
    let addr = s.scim;
    let clients: Vec<_> = (0..CLIENTS)
        .map(|t| {
            let (stop, flat, requests, users) = (stop.clone(), flat.clone(), requests.clone(), users.clone());
            std::thread::spawn(move || {
                let mut client = KeepAlive::connect(addr);
                let mut mine: Vec<String> = Vec::new();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    // Growing: 4 creates, 3 PATCHes, 2 reads, 1 delete in 10. Flat: a delete for
                    // every create.
                    let step = n % 10;
                    let delete = if flat.load(Ordering::Relaxed) { step < 4 } else { step == 9 };
                    if step < 4 {
                        let name = format!("soak-{t}-{n}");
                        let body = json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                            "userName": name, "displayName": format!("Soak {n}"), "active": true,
                            "name": {"givenName": "Soak", "familyName": name},
                            "emails": [{"value": format!("{name}@example.com"), "type": "work"}]});
                        let (status, answer) = client.send("POST", "/scim/demo/Users", Some(&body.to_string()));
                        assert_eq!(status, 201, "{}", String::from_utf8_lossy(&answer));
                        let created: Value = serde_json::from_slice(&answer).unwrap();
                        mine.push(created["id"].as_str().unwrap().to_string());
                        users.fetch_add(1, Ordering::Relaxed);
                    } else if step < 7 && !mine.is_empty() {
                        let id = &mine[(n as usize * 31) % mine.len()];
                        let patch = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                            "Operations": [{"op": "replace", "path": "displayName", "value": format!("Soak {n}")}]});
                        let (status, answer) =
                            client.send("PATCH", &format!("/scim/demo/Users/{id}"), Some(&patch.to_string()));
                        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
                    } else if step < 9 && !delete {
                        let name = format!("soak-{t}-{}", n.saturating_sub(15));
                        let (status, _) =
                            client.send("GET", &format!("/scim/demo/Users?filter=userName%20eq%20%22{name}%22"), None);
                        assert_eq!(status, 200);
                    }
                    if delete && !mine.is_empty() {
                        let id = mine.swap_remove((n as usize * 17) % mine.len());
                        let (status, answer) = client.send("DELETE", &format!("/scim/demo/Users/{id}"), None);
                        assert_eq!(status, 204, "{}", String::from_utf8_lossy(&answer));
                        users.fetch_sub(1, Ordering::Relaxed);
                    }
                    requests.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();

    let started = Instant::now();
    let mut samples = Vec::new();
    let sample = |samples: &mut Vec<Sample>| {
        samples.push(Sample {
            at: started.elapsed().as_secs_f64(),
            wal: file_len(&wal),
            db: file_len(&db),
            supervisor: rss_kib(s.pid()),
            supervisor_anon: e2e::status_kib(s.pid(), "RssAnon"),
            supervisor_file: e2e::status_kib(s.pid(), "RssFile"),
            connector: rss_kib(connector_pid),
            users: users.load(Ordering::Relaxed),
            requests: requests.load(Ordering::Relaxed),
        })
    };
    sample(&mut samples);
    println!(
        "{:>6} {:>10} {:>10} {:>12} {:>12} {:>8} {:>9}",
        "t (s)", "WAL KiB", "DB KiB", "superv. KiB", "conn. KiB", "users", "req/s"
    );
    let half = secs / 2;
    for second in 1..=secs {
        std::thread::sleep(
            Duration::from_secs(1)
                .saturating_sub(started.elapsed().saturating_sub(Duration::from_secs(second - 1))),
        );
        if second == half {
            flat.store(true, Ordering::Relaxed);
        }
        sample(&mut samples);
        if second % 30 == 0 || second == half {
            let (now, before) = (&samples[samples.len() - 1], &samples[samples.len().saturating_sub(31)]);
            let rate = (now.requests - before.requests) as f64 / (now.at - before.at).max(1e-9);
            println!(
                "{:>6.0} {:>10} {:>10} {:>12} {:>12} {:>8} {:>9.0}",
                now.at,
                now.wal / 1024,
                now.db / 1024,
                now.supervisor,
                now.connector,
                now.users,
                rate
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let store = request(s.admin, "GET", "/admin/connectors", None, None).json()["store"].clone();
    let at = |t: u64| samples.iter().find(|x| x.at >= t as f64).unwrap_or(samples.last().unwrap());
    let (first, middle, last) = (&samples[1.min(samples.len() - 1)], at(half), samples.last().unwrap());
    let peak = |f: fn(&Sample) -> u64| samples.iter().map(f).max().unwrap_or(0);
    let total = last.requests as f64 / last.at;
    println!();
    println!(
        "mixed load, {CLIENTS} clients, {secs} s: {:.0} requests/s on average ({} requests)",
        total, last.requests
    );
    println!(
        "WAL: peak {} KiB (sampled each second; the store's own peak: {} KiB), at the end {} KiB; database {} KiB",
        peak(|x| x.wal) / 1024,
        store["wal_peak_bytes"].as_u64().unwrap_or(0) / 1024,
        last.wal / 1024,
        last.db / 1024
    );
    for (name, f) in [
        ("supervisor", (|x: &Sample| x.supervisor) as fn(&Sample) -> u64),
        ("connector-sql", |x: &Sample| x.connector),
    ] {
        let grow = f(middle) as f64 - f(first) as f64;
        let users_grown = middle.users as f64 - first.users as f64;
        println!(
            "{name}: RSS {} KiB after 1 s, {} KiB at {half} s ({} users), {} KiB at the end ({} users), peak {} KiB; \
             growing phase {:+.0} KiB ({:.2} KiB per user added), flat phase {:+.0} KiB",
            f(first),
            f(middle),
            middle.users,
            f(last),
            last.users,
            peak(f),
            grow,
            if users_grown > 0.0 { grow / users_grown } else { 0.0 },
            f(last) as f64 - f(middle) as f64,
        );
    }
    println!(
        "supervisor's RSS split: heap {} KiB and mapped files {} KiB at {half} s; heap {} KiB and mapped files {} KiB at the end",
        middle.supervisor_anon, middle.supervisor_file, last.supervisor_anon, last.supervisor_file
    );
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}
