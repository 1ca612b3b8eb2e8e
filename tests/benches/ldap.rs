//! Benchmark: SCIM creates through the supervisor into slapd, against direct `ldap3` adds of the
//! same entries into the same slapd at the same concurrency, alternately in one run; and a full
//! import of many entries against `ldapsearch` (paged) of the same entries. Goal: creates at
//! least 0.85 of the direct throughput (issues 5 and 6), since #22 at least 0.75 of the bound the
//! HTTP floor puts on that ratio (printed by each round).
//!
//! Run: `cargo build --release --workspace --bins && cargo bench -p e2e --bench ldap`
//! (`CREATES=2000` entries per round, `IMPORT=100000` entries for the import part). slapd runs
//! with `olcDbNoSync` (the fixture's setting), so the figures measure code rather than fsync;
//! `DURABLE=1` lets it sync every write, as a directory in service does.

#[path = "common/store_writes.rs"]
mod store_writes;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use e2e::direct_connector::{DirectConnector, Target, added};
use e2e::slapd::{LdapServer, Slapd};
use e2e::{Supervisor, TempDir, cpu_seconds, request, workspace};
use ecma_proto::v1;
use ldap3::{LdapConnAsync, LdapConnSettings};

const CONCURRENCY: usize = 8;
const ROUNDS: usize = 3;

/// The attributes both sides write, as the example's mapping makes them from a SCIM user.
fn person(name: &str) -> (String, String) {
    let scim = serde_json::json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": name, "displayName": format!("User {name}"),
        "name": {"givenName": "Bench", "familyName": name},
        "emails": [{"type": "work", "value": format!("{name}@example.com"), "primary": true}]
    });
    (name.to_string(), scim.to_string())
}

/// Creates `names` through SCIM from CONCURRENCY keep-alive connections; returns entries/s.
fn through_scim(scim: SocketAddr, names: &[String]) -> f64 {
    e2e::creates_per_second(scim, "/scim/directory/Users", names, CONCURRENCY, |name| person(name).1)
}

/// Adds the same entries directly with ldap3 from CONCURRENCY tasks, each on a connection of its
/// own; or, with `like_connector`, as connector-ldap adds them: all on one connection, each asking
/// for the new entry's entryUUID with the post-read control. Returns entries/s.
fn direct(runtime: &tokio::runtime::Runtime, slapd: &Slapd, names: &[String], like_connector: bool) -> f64 {
    let (url, admin, password, base) =
        (slapd.url(), slapd.admin_dn(), slapd.admin_password().to_string(), slapd.suffix().to_string());
    let connections = if like_connector { 1 } else { CONCURRENCY };
    runtime.block_on(async {
        let mut clients = Vec::new();
        for _ in 0..connections {
            let (conn, mut ldap) = LdapConnAsync::with_settings(LdapConnSettings::new(), &url).await.unwrap();
            ldap3::drive!(conn);
            ldap.simple_bind(&admin, &password).await.unwrap().success().unwrap();
            clients.push(ldap);
        }
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for (i, chunk) in names.chunks(names.len().div_ceil(CONCURRENCY)).enumerate() {
            let mut ldap = clients[i % connections].clone();
            let chunk = chunk.to_vec();
            let base = base.clone();
            tasks.spawn(async move {
                for name in chunk {
                    let dn = format!("uid={},ou=Direct,{base}", ldap3::dn_escape(&name));
                    let set = |v: String| std::collections::HashSet::from([v]);
                    let attrs = vec![
                        ("objectClass".to_string(), set("inetOrgPerson".into())),
                        ("uid".into(), set(name.clone())),
                        ("cn".into(), set(format!("User {name}"))),
                        ("sn".into(), set(name.clone())),
                        ("givenName".into(), set("Bench".into())),
                        ("displayName".into(), set(format!("User {name}"))),
                        ("mail".into(), set(format!("{name}@example.com"))),
                    ];
                    if like_connector {
                        ldap.with_controls(ldap3::controls::PostRead::new(vec!["entryUUID"]));
                    }
                    ldap.add(&dn, attrs).await.unwrap().success().unwrap();
                }
            });
        }
        while let Some(r) = tasks.join_next().await {
            r.unwrap();
        }
        names.len() as f64 / started.elapsed().as_secs_f64()
    })
}

/// Runs `round` (which writes `entries` entries) and prints slapd's CPU time per entry.
fn slapd_cpu(slapd: &Slapd, label: &str, entries: usize, round: impl FnOnce() -> f64) -> f64 {
    let pid = slapd.pid().unwrap_or(0);
    let before = cpu_seconds(pid);
    let rate = round();
    let used = cpu_seconds(pid) - before;
    println!("  slapd CPU per entry, {label}: {:.0} us", used / entries as f64 * 1e6);
    rate
}

/// CPU seconds of the supervisor and of the users' connector.
fn cpu(s: &Supervisor) -> (f64, f64) {
    let connector = s.connector("ldap-users")["pid"].as_u64().unwrap_or(0) as u32;
    (cpu_seconds(s.pid()), cpu_seconds(connector))
}

// The supervisor's allocator: the store's share of an import (`store_floor`) is measured in this
// process, and must cost what it costs in the supervisor.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    if e2e::fixed_http::serve_if_asked(e2e::fixed_http::CREATED_USER) {
        return;
    }
    // As the supervisor runs (its main), for the store's share measured in this process.
    let _ = nix::sys::prctl::set_thp_disable(true);
    let creates: usize = std::env::var("CREATES").ok().and_then(|v| v.parse().ok()).unwrap_or(2000);
    let import: usize = std::env::var("IMPORT").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    // DURABLE=1: slapd syncs every write (its default), to see the figure a real directory gives.
    let durable = std::env::var("DURABLE").is_ok_and(|v| v == "1");
    // DIRECT=connector: the direct client adds as connector-ldap does (one connection, post-read),
    // to tell slapd's cost of that way of adding from the supervisor's and the connector's.
    let like_connector = std::env::var("DIRECT").is_ok_and(|v| v == "connector");
    let slapd = Slapd::start_with(e2e::slapd::SlapdOptions { durable, ..Default::default() });
    let base = slapd.suffix().to_string();
    slapd.ldapmodify(&format!("dn: ou=Direct,{base}\nobjectClass: organizationalUnit\nou: Direct\n"));
    let dir = TempDir::new("bench-ldap");
    let config = std::fs::read_to_string(workspace().join("deploy/examples/ldap.toml")).unwrap().replace(
        "[connectors.ldap-users.parameters]",
        "[connectors.ldap-users.import]\non_start = false\n\n[connectors.ldap-users.parameters]",
    );
    let s = Supervisor::spawn_with_env(
        &config,
        dir.path(),
        &[
            ("LDAP_URL", &slapd.url()),
            ("LDAP_SECURITY", "none"),
            ("LDAP_BIND_DN", &slapd.admin_dn()),
            ("LDAP_BIND_PASSWORD", slapd.admin_password()),
            ("LDAP_BASE_DN", &base),
            ("RUST_LOG", "warn"),
        ],
    );
    s.wait_ready(Duration::from_secs(30));
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();

    let medians = e2e::fixed_http::CreateBench {
        direct_label: "direct ldap3 adds",
        connector: "connector-ldap",
        scim: s.scim,
        creates,
        rounds: ROUNDS,
        concurrency: CONCURRENCY,
    }
    .run(
        |names| slapd_cpu(&slapd, "direct", names.len(), || direct(&runtime, &slapd, names, like_connector)),
        |addr, names| match addr == s.scim {
            true => slapd_cpu(&slapd, "SCIM", names.len(), || through_scim(addr, names)),
            false => through_scim(addr, names),
        },
        || cpu(&s),
    );

    // The same creates through connector-ldap alone, driven over gRPC by this process.
    let alone = runtime.block_on(DirectConnector::start("connector-ldap", dir.path()));
    let people = target(&slapd);
    let of = ("directory", "User", "ldap-users");
    let writes =
        store_writes::create_writes(&runtime, &medians.machine, dir.path(), of, creates, CONCURRENCY);
    medians.against_connector_alone(
        "connector-ldap",
        alone.pid(),
        writes,
        |names| slapd_cpu(&slapd, "direct", names.len(), || direct(&runtime, &slapd, names, like_connector)),
        |names| {
            slapd_cpu(&slapd, "connector-ldap alone", names.len(), || {
                let base = base.clone();
                runtime.block_on(alone.creates(&people, names, CONCURRENCY, move |name| add_of(name, &base)))
            })
        },
    );

    // Import: entries made directly, then a full import against a paged ldapsearch of them.
    let names: Vec<String> = (0..import).map(|i| format!("imp{i}")).collect();
    let loaded = Instant::now();
    let ldif: String = names
        .iter()
        .map(|n| format!("dn: uid={n},ou=People,{base}\nobjectClass: inetOrgPerson\nuid: {n}\ncn: User {n}\nsn: {n}\nmail: {n}@example.com\n\n"))
        .collect();
    slapd.ldapmodify(&ldif);
    println!("loaded {import} entries with ldapmodify in {:.1} s", loaded.elapsed().as_secs_f64());
    // The SCIM creates and their warm-up, and connector-ldap's own creates.
    let total = import + ROUNDS * creates + 200 + ROUNDS * creates;
    let mut search_times = vec![];
    for round in 0..2 {
        let started = Instant::now();
        let out = std::process::Command::new("ldapsearch")
            .env("LDAPNOINIT", "1")
            .args([
                "-x",
                "-LLL",
                "-o",
                "ldif-wrap=no",
                "-E",
                "pr=500/noprompt",
                "-H",
                &slapd.url(),
                "-D",
                &slapd.admin_dn(),
                "-w",
                slapd.admin_password(),
            ])
            .args(["-b", &format!("ou=People,{base}"), "(objectClass=inetOrgPerson)"])
            .output()
            .unwrap();
        let seconds = started.elapsed().as_secs_f64();
        let count = out.stdout.split(|b| *b == b'\n').filter(|l| l.starts_with(b"dn: ")).count();
        assert_eq!(count, total, "ldapsearch saw every entry");
        search_times.push(seconds);

        let (alone_seconds, read) = runtime.block_on(alone.full_import(&people));
        assert_eq!(read, total, "connector-ldap alone read every entry");
        println!(
            "         connector-ldap alone (its pages read over gRPC and decoded, nothing compared or stored) \
             {alone_seconds:.2} s ({:.2} x ldapsearch)",
            alone_seconds / seconds
        );

        let started = Instant::now();
        let before = cpu(&s);
        profile(round, "enable");
        let r = request(s.admin, "POST", "/admin/connectors/ldap-users/import?type=full", None, None);
        profile(round, "disable");
        let after = cpu(&s);
        println!(
            "         CPU per imported entry: supervisor {:.0} µs, connector-ldap {:.0} µs",
            (after.0 - before.0) * 1e6 / total as f64,
            (after.1 - before.1) * 1e6 / total as f64
        );
        assert_eq!(r.status, 200, "{}", r.body);
        let seconds = started.elapsed().as_secs_f64();
        e2e::print_memory(&s, "ldap-users");
        let report = r.json();
        let seen = ["added", "updated", "unchanged"].iter().map(|k| report[k].as_u64().unwrap()).sum::<u64>();
        assert_eq!(seen as usize, total, "{report}");
        println!(
            "import round {round} ({}): ldapsearch -E pr=500 {seconds_search:.2} s ({:.0}/s)   full import into the connector space {seconds:.2} s ({:.0}/s)",
            if round == 0 { "first: every entry is new" } else { "again: every entry unchanged" },
            total as f64 / search_times[round],
            total as f64 / seconds,
            seconds_search = search_times[round],
        );
    }
    // A delta import when nothing changed: every import first notes the connector's records as
    // they stand (so that it never undoes a client's write made meanwhile); here that is most of
    // what it does.
    let started = Instant::now();
    let r = request(s.admin, "POST", "/admin/connectors/ldap-users/import?type=delta", None, None);
    assert_eq!(r.status, 200, "{}", r.body);
    let report = r.json();
    assert_eq!((report["added"].as_u64(), report["updated"].as_u64()), (Some(0), Some(0)), "{report}");
    println!(
        "{} import with nothing changed, {total} records in the connector space: {:.3} s",
        report["import_type"].as_str().unwrap_or("?"),
        started.elapsed().as_secs_f64()
    );
    store_floor(&runtime, &dir.path().join("connector-space.db"), &search_times);
}

/// The users' connector of deploy/examples/ldap.toml, as the supervisor opens it.
fn target(slapd: &Slapd) -> Target {
    let base = slapd.suffix();
    let parameters = [
        ("url", slapd.url()),
        ("security", "none".into()),
        ("ca_file", String::new()),
        ("bind_dn", slapd.admin_dn()),
        ("bind_password", slapd.admin_password().to_string()),
        ("object_class", "inetOrgPerson".into()),
        ("container", format!("ou=People,{base}")),
        ("create_containers", "true".into()),
    ];
    Target::new(&parameters, "inetOrgPerson", base)
}

/// The ADD connector-ldap gets for a SCIM create of `name` (see [`person`]).
fn add_of(name: &str, base: &str) -> v1::CsEntryChange {
    let string = |v: String| v1::Value::string(v);
    v1::CsEntryChange {
        identifier: name.into(),
        object_type: "inetOrgPerson".into(),
        modification_type: v1::ObjectModificationType::Add as i32,
        anchors: vec![],
        dn: format!("uid={},ou=People,{base}", ldap3::dn_escape(name)),
        attribute_changes: vec![
            added("uid", string(name.into())),
            added("cn", string(format!("User {name}"))),
            added("sn", string(name.into())),
            added("givenName", string("Bench".into())),
            added("displayName", string(format!("User {name}"))),
            added("mail", string(format!("{name}@example.com"))),
        ],
    }
}

/// The connector space's own share of the import, without LDAP, gRPC or mapping: the records the
/// import wrote, read back from the supervisor's store file, written again into a fresh store as
/// an import writes new objects (2,000 a transaction, each with its `import_add` log row), then
/// looked up 500 anchors at a time as an import reads a page. Twice each, alternately with and
/// without the log rows.
fn store_floor(runtime: &tokio::runtime::Runtime, supervisor_db: &std::path::Path, search_times: &[f64]) {
    use supervisor::store::{Store, log::LogEntry};
    let records = runtime.block_on(async {
        let live = Store::open(supervisor_db).await.expect("open the supervisor's connector space");
        let mut records = vec![];
        let mut after = String::new();
        loop {
            let batch = live.listed("directory", "User", "ldap-users", &after, 5000).await.unwrap();
            let Some(last) = batch.last() else { break };
            after = last.id.clone();
            for listed in batch {
                records
                    .push(live.get("directory", "User", &listed.id).await.unwrap().expect("listed record"));
            }
        }
        live.close().await;
        records
    });
    let anchors: Vec<String> =
        records.iter().map(|r| supervisor::store::anchor_text(&r.target.anchors).unwrap()).collect();
    let ldapsearch = search_times.iter().sum::<f64>() / search_times.len() as f64;
    for (round, logged) in [(0, true), (0, false), (1, true), (1, false)] {
        let dir = TempDir::new("bench-ldap-store");
        let (write, read) = runtime.block_on(async {
            let store = Store::open(&dir.path().join("floor.db")).await.unwrap();
            let started = Instant::now();
            for chunk in records.chunks(2000) {
                let rows: Vec<LogEntry> = chunk
                    .iter()
                    .filter(|_| logged)
                    .map(|r| LogEntry {
                        node: "bench".into(),
                        at_ms: supervisor::store::now_ms(),
                        attributes: r.target.attributes.iter().map(|a| a.name.clone()).collect(),
                        ..LogEntry::of(r, "import", "import_add", "applied")
                    })
                    .collect();
                let inserted = store.insert_imported_all(chunk, rows).await.unwrap();
                assert!(inserted.iter().all(|i| *i), "a fresh store takes every record");
            }
            let write = started.elapsed().as_secs_f64();
            let started = Instant::now();
            let mut found = 0;
            for chunk in anchors.chunks(500) {
                found += store.by_anchors("ldap-users", chunk).await.unwrap().len();
            }
            assert_eq!(found, records.len(), "every record is found by its anchor");
            let read = started.elapsed().as_secs_f64();
            store.close().await;
            (write, read)
        });
        println!(
            "store alone, round {round}: writing the {} imported records {} {write:.2} s ({:.2} x ldapsearch), looking them up by anchor {read:.2} s ({:.2} x)",
            records.len(),
            if logged { "with their log rows" } else { "without log rows " },
            write / ldapsearch,
            read / ldapsearch,
        );
    }
}

/// `PERF_FIFO=<path>` (a `perf record --control fifo:<path> -D -1` started beforehand) and
/// `PERF_ROUND=<n>` (default 1, the unchanged import): the profile covers that import round only.
fn profile(round: usize, command: &str) {
    let Ok(fifo) = std::env::var("PERF_FIFO") else { return };
    let wanted: usize = std::env::var("PERF_ROUND").ok().and_then(|v| v.parse().ok()).unwrap_or(1);
    if round == wanted {
        std::fs::write(fifo, format!("{command}\n")).expect("PERF_FIFO: write to perf's control fifo");
    }
}
