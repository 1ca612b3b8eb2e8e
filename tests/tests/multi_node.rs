//! Several supervisors on one PostgreSQL connector space (deploy/examples/ha.toml, as
//! documented): any node serves any request, writes of one object never run at once, names are
//! unique across nodes, a node's death costs a client one retry, one import of a connector runs
//! at a time, and PostgreSQL going away loses nothing. Real PostgreSQL (a throwaway server per
//! test), real supervisor and connector processes.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use e2e::databases::{self, Postgres};
use e2e::{Supervisor, TOKEN, TempDir, try_request, user_body, wait_until};
use serde_json::{Value, json};

/// The documented example, with `extra` appended (e.g. an import schedule).
fn ha_config(extra: &str) -> String {
    let text = std::fs::read_to_string(e2e::workspace().join("deploy/examples/ha.toml")).expect("ha.toml");
    format!("{text}\n{extra}\n")
}

/// One node: its own data directory (sockets, lock file), the shared store and target.
fn node(config: &str, dir: &Path, label: &str, store: &str, target: &str) -> Supervisor {
    let data = dir.join(label);
    std::fs::create_dir_all(&data).unwrap();
    let s = Supervisor::spawn_with_env(config, &data, &[("STORE_URL", store), ("DATABASE_URL", target)]);
    s.wait_ready(Duration::from_secs(60));
    s
}

struct Cluster {
    pg: Postgres,
    /// The target's own server, when it is not the store's.
    _target_pg: Option<Postgres>,
    store: String,
    target: String,
    dir: TempDir,
}

impl Cluster {
    /// The store and the target on one PostgreSQL server (as ha.toml allows).
    fn new(label: &str) -> Self {
        let pg = Postgres::start();
        let (store, target) = (pg.database(), pg.database());
        Self { pg, _target_pg: None, store, target, dir: TempDir::new(label) }
    }

    /// The store and the target on two servers, so that the store can go away alone.
    fn apart(label: &str) -> Self {
        let (pg, target_pg) = (Postgres::start(), Postgres::start());
        let (store, target) = (pg.database(), target_pg.database());
        Self { pg, _target_pg: Some(target_pg), store, target, dir: TempDir::new(label) }
    }

    fn node(&self, config: &str, label: &str) -> Supervisor {
        node(config, self.dir.path(), label, &self.store, &self.target)
    }

    fn store_rows(&self, sql: &str) -> Vec<Value> {
        databases::query(&self.store, sql, &[])
    }

    fn target_rows(&self, sql: &str) -> Vec<Value> {
        databases::query(&self.target, sql, &[])
    }
}

/// How a create ended for a client that moves to the next node on a refused connection or a
/// 503 (as a load balancer's retry, or Entra's, would).
fn create_spread(nodes: &[SocketAddr], first: usize, name: &str, timeout: Duration) -> (Option<String>, u32) {
    let deadline = Instant::now() + timeout;
    let mut attempt = first;
    let mut retries = 0;
    loop {
        let scim = nodes[attempt % nodes.len()];
        match try_request(scim, "POST", "/scim/demo/Users", Some(TOKEN), Some(&user_body(name))) {
            Ok(r) if r.status == 201 => return (Some(r.json()["id"].as_str().unwrap().to_string()), retries),
            Ok(r) if r.status == 409 => return (None, retries),
            Ok(r) if r.status == 503 => assert!(r.header("retry-after").is_some(), "503 without Retry-After"),
            Ok(r) => panic!("create {name}: unexpected {}: {}", r.status, r.body),
            Err(_) => {} // the node is gone: the next one
        }
        retries += 1;
        attempt += 1;
        assert!(Instant::now() < deadline, "create {name} never succeeded");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Four clients, each creating `per_client` users (`<label>-<client>-<i>`) spread over `nodes`
/// and moving on to the next node when one fails; `done` counts the creates that ended. Each
/// client's thread ends with its names and how many retries they cost.
fn burst(
    nodes: &[SocketAddr; 2],
    label: &str,
    per_client: usize,
    done: &Arc<std::sync::atomic::AtomicUsize>,
) -> Vec<std::thread::JoinHandle<(Vec<String>, u32)>> {
    (0..4)
        .map(|client| {
            let (nodes, done, label) = (*nodes, done.clone(), label.to_string());
            std::thread::spawn(move || {
                let mut names = Vec::new();
                let mut retries = 0;
                for i in 0..per_client {
                    let name = format!("{label}-{client}-{i}");
                    retries += create_spread(&nodes, client + i, &name, Duration::from_secs(120)).1;
                    done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    names.push(name);
                }
                (names, retries)
            })
        })
        .collect()
}

/// What a user is called in SCIM, the store and the target: each name must be there once.
fn assert_each_once(cluster: &Cluster, reader: SocketAddr, names: &[String]) {
    let wanted: HashSet<&str> = names.iter().map(String::as_str).collect();
    let count = |rows: Vec<Value>, column: &str| {
        let mut seen = BTreeMap::new();
        for row in rows {
            *seen.entry(row[column].as_str().unwrap_or_default().to_string()).or_insert(0) += 1;
        }
        seen
    };
    let target = count(cluster.target_rows("SELECT user_name FROM users"), "user_name");
    let store = count(
        cluster.store_rows(
            "SELECT user_name FROM connector_space.objects WHERE resource_type = 'User' AND state = 'present'",
        ),
        "user_name",
    );
    for (what, seen) in [("target", &target), ("store", &store)] {
        let missing: Vec<_> = wanted.iter().filter(|n| !seen.contains_key(**n)).collect();
        let doubled: Vec<_> = seen.iter().filter(|(_, c)| **c > 1).collect();
        assert!(missing.is_empty(), "{what}: lost {missing:?}");
        assert!(doubled.is_empty(), "{what}: duplicated {doubled:?}");
        assert_eq!(seen.len(), wanted.len(), "{what}: extra objects");
    }
    let pending = cluster.store_rows("SELECT id FROM connector_space.objects WHERE state = 'pending'");
    assert!(pending.is_empty(), "writes left unsettled: {pending:?}");
    for name in names {
        let r = try_request(
            reader,
            "GET",
            &format!("/scim/demo/Users?filter=userName%20eq%20%22{name}%22"),
            Some(TOKEN),
            None,
        )
        .unwrap();
        assert_eq!(r.json()["totalResults"], 1, "SCIM: {name}: {}", r.body);
    }
}

#[test]
fn a_node_killed_mid_burst_costs_clients_one_retry_and_loses_nothing() {
    let cluster = Cluster::new("ha-kill");
    let config = ha_config("");
    let mut a = cluster.node(&config, "a");
    let b = cluster.node(&config, "b");
    let nodes = [a.scim, b.scim];
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let clients = burst(&nodes, "burst", 40, &done);
    wait_until(Duration::from_secs(60), "a third of the creates", || {
        done.load(std::sync::atomic::Ordering::SeqCst) >= 50
    });
    a.kill_hard();
    let mut names = Vec::new();
    let mut retries = 0;
    for client in clients {
        let (n, r) = client.join().unwrap();
        names.extend(n);
        retries += r;
    }
    assert!(retries >= 1, "the kill cost no client a retry: it came too late to test anything");
    // What node A left pending is settled by node B (its timer) or by the client's retry.
    wait_until(Duration::from_secs(30), "no pending record left", || {
        cluster.store_rows("SELECT id FROM connector_space.objects WHERE state = 'pending'").is_empty()
    });
    assert_each_once(&cluster, b.scim, &names);
    // Node A comes back on its own data directory and serves the same data.
    let a = cluster.node(&config, "a");
    let r = a.scim("GET", "/scim/demo/Users?count=1", None);
    assert_eq!(r.json()["totalResults"], 160, "{}", r.body);
}

#[test]
fn concurrent_member_patches_on_two_nodes_lose_no_member() {
    let cluster = Cluster::new("ha-members");
    let config = ha_config("");
    let a = cluster.node(&config, "a");
    let b = cluster.node(&config, "b");
    let ids: Vec<String> = (0..24)
        .map(|i| {
            let r = a.scim("POST", "/scim/demo/Users", Some(&user_body(&format!("member-{i}"))));
            assert_eq!(r.status, 201, "{}", r.body);
            r.json()["id"].as_str().unwrap().to_string()
        })
        .collect();
    let group = json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "crew"});
    let r = b.scim("POST", "/scim/demo/Groups", Some(&group.to_string()));
    assert_eq!(r.status, 201, "{}", r.body);
    let group_id = r.json()["id"].as_str().unwrap().to_string();
    let start = Arc::new(Barrier::new(2));
    let senders: Vec<_> = [a.scim, b.scim]
        .into_iter()
        .enumerate()
        .map(|(half, scim)| {
            let ids: Vec<String> = ids.iter().skip(half).step_by(2).cloned().collect();
            let (start, group_id) = (start.clone(), group_id.clone());
            std::thread::spawn(move || {
                start.wait();
                for id in ids {
                    // Entra's shape: one member per PATCH.
                    let patch = json!({
                        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                        "Operations": [{"op": "Add", "path": "members", "value": [{"value": id}]}]
                    });
                    let r = try_request(
                        scim,
                        "PATCH",
                        &format!("/scim/demo/Groups/{group_id}"),
                        Some(TOKEN),
                        Some(&patch.to_string()),
                    )
                    .unwrap();
                    assert!(r.status == 200 || r.status == 204, "{}: {}", r.status, r.body);
                }
            })
        })
        .collect();
    for sender in senders {
        sender.join().unwrap();
    }
    for scim in [a.scim, b.scim] {
        let r =
            try_request(scim, "GET", &format!("/scim/demo/Groups/{group_id}"), Some(TOKEN), None).unwrap();
        let members: HashSet<String> = r.json()["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["value"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(members, ids.iter().cloned().collect::<HashSet<_>>(), "members as {scim} serves them");
    }
    let rows = cluster.target_rows("SELECT value FROM groups_members");
    assert_eq!(rows.len(), 24, "rows in the target: {rows:?}");
}

#[test]
fn one_name_created_on_both_nodes_at_once_gives_one_201_and_one_409() {
    let cluster = Cluster::new("ha-names");
    let config = ha_config("");
    let a = cluster.node(&config, "a");
    let b = cluster.node(&config, "b");
    for round in 0..100 {
        // Case differs between the nodes: uniqueness is case-insensitive in the database too.
        let name = format!("Twin-{round}");
        let start = Arc::new(Barrier::new(2));
        let racers: Vec<_> = [(a.scim, name.clone()), (b.scim, name.to_lowercase())]
            .into_iter()
            .map(|(scim, name)| {
                let start = start.clone();
                std::thread::spawn(move || {
                    start.wait();
                    let r =
                        try_request(scim, "POST", "/scim/demo/Users", Some(TOKEN), Some(&user_body(&name)))
                            .unwrap();
                    (r.status, r.body)
                })
            })
            .collect();
        let mut statuses: Vec<(u16, String)> = racers.into_iter().map(|r| r.join().unwrap()).collect();
        statuses.sort();
        assert_eq!((statuses[0].0, statuses[1].0), (201, 409), "round {round}: {statuses:?}");
    }
    let rows = cluster.target_rows("SELECT count(*) AS n, count(DISTINCT lower(user_name)) AS d FROM users");
    assert_eq!((rows[0]["n"].as_i64(), rows[0]["d"].as_i64()), (Some(100), Some(100)));
}

#[test]
fn the_import_leader_killed_mid_import_is_replaced_and_no_import_runs_twice_at_once() {
    let cluster = Cluster::new("ha-import");
    let config = ha_config("");
    // Objects made in the target behind the supervisors' back, for the imports to find.
    {
        let s = cluster.node(&config, "seed");
        assert_eq!(s.scim("POST", "/scim/demo/Users", Some(&user_body("seed"))).status, 201);
    }
    databases::execute(
        &cluster.target,
        "INSERT INTO users (id, user_name, display_name, active, updated_at, deleted) \
         SELECT gen_random_uuid()::text, 'imported-' || g, 'Imported ' || g, true, now(), false \
         FROM generate_series(1, 20000) AS g",
        &[],
    );
    let scheduled = ha_config("[connectors.sql-users.import]\non_start = false\nfull_interval = \"1s\"\n");
    let mut a = cluster.node(&scheduled, "a");
    let mut b = cluster.node(&scheduled, "b");
    let runs = || {
        cluster.store_rows(
            "SELECT id, node, started_ms, finished_ms, outcome FROM connector_space.imports \
         WHERE connector = 'sql-users' ORDER BY id",
        )
    };
    // The first import of node a or b that is running now (a run the seeding node left
    // unfinished when it stopped does not count): kill its node.
    let ours = [format!(":{}", a.scim.port()), format!(":{}", b.scim.port())];
    let mut running = None;
    wait_until(Duration::from_secs(60), "an import under way", || {
        running = runs().into_iter().find(|r| {
            r["finished_ms"].is_null()
                && ours.iter().any(|port| r["node"].as_str().unwrap_or("").ends_with(port))
        });
        running.is_some()
    });
    let running = running.unwrap();
    let leader = running["node"].as_str().unwrap().to_string();
    let (killed, survivor) = if leader.ends_with(&format!(":{}", a.scim.port())) {
        (&mut a, &mut b)
    } else {
        assert!(
            leader.ends_with(&format!(":{}", b.scim.port())),
            "the import runs on neither node: {running}"
        );
        (&mut b, &mut a)
    };
    killed.kill_hard();
    let survivor_name = format!(":{}", survivor.scim.port());
    wait_until(Duration::from_secs(90), "an import finished by the other node", || {
        runs().iter().any(|r| {
            r["id"].as_i64() > running["id"].as_i64()
                && r["node"].as_str().unwrap().ends_with(&survivor_name)
                && r["outcome"].as_str().is_some_and(|o| o.starts_with("ok"))
        })
    });
    let all = runs();
    let killed_run = all.iter().find(|r| r["id"] == running["id"]).unwrap();
    assert_eq!(killed_run["outcome"], "abandoned", "{all:?}");
    // No two runs at once: each starts once the one before has ended (or was abandoned).
    for pair in all.windows(2) {
        let (before, after) = (&pair[0], &pair[1]);
        let ended = before["finished_ms"].as_i64().expect("every run but the last has ended");
        assert!(after["started_ms"].as_i64().unwrap() >= ended, "overlapping imports: {before} / {after}");
    }
    let r = survivor.scim("GET", "/scim/demo/Users?filter=userName%20eq%20%22imported-19999%22", None);
    assert_eq!(r.json()["totalResults"], 1, "{}", r.body);
}

#[test]
fn postgresql_restarted_during_a_burst_loses_nothing_and_the_nodes_recover_alone() {
    // The store's server alone goes away: the targets keep taking writes, so that writes whose
    // export succeeded meet a store that cannot record it.
    let mut cluster = Cluster::apart("ha-pg-restart");
    let config = ha_config("");
    let a = cluster.node(&config, "a");
    let b = cluster.node(&config, "b");
    let nodes = [a.scim, b.scim];
    let admins = [a.admin, b.admin];
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let clients = burst(&nodes, "outage", 30, &done);
    wait_until(Duration::from_secs(60), "a third of the creates", || {
        done.load(std::sync::atomic::Ordering::SeqCst) >= 40
    });
    cluster.pg.stop();
    // While the database is away, every node says it is not ready, and stays up.
    for admin in admins {
        wait_until(Duration::from_secs(10), "/readyz 503 while the store is unreachable", || {
            try_request(admin, "GET", "/readyz", None, None).is_ok_and(|r| r.status == 503)
        });
    }
    let r = try_request(a.scim, "GET", "/scim/demo/Users?count=1", Some(TOKEN), None).unwrap();
    assert_eq!(r.status, 503, "no stale answer while the store is away: {}", r.body);
    assert!(r.header("retry-after").is_some());
    // Writes too, before the database comes back (the clients' own meet the outage meanwhile).
    let r = try_request(b.scim, "POST", "/scim/demo/Users", Some(TOKEN), Some(&user_body("during-outage")))
        .unwrap();
    assert_eq!(r.status, 503, "a write while the store is away: {}", r.body);
    assert!(r.header("retry-after").is_some());
    cluster.pg.restart();
    let mut names = Vec::new();
    for client in clients {
        names.extend(client.join().unwrap().0);
    }
    assert!(a.running() && b.running(), "a node died with the database");
    for admin in admins {
        wait_until(Duration::from_secs(30), "/readyz 200 again", || {
            try_request(admin, "GET", "/readyz", None, None).is_ok_and(|r| r.status == 200)
        });
    }
    wait_until(Duration::from_secs(30), "no pending record left", || {
        cluster.store_rows("SELECT id FROM connector_space.objects WHERE state = 'pending'").is_empty()
    });
    assert_each_once(&cluster, b.scim, &names);
}

#[test]
fn store_migrate_copies_a_connector_space_to_postgresql_and_back() {
    let dir = TempDir::new("store-migrate");
    let pg = Postgres::start();
    let store = pg.database();
    let mut s = Supervisor::start(&e2e::quickstart_config(), dir.path());
    let alice = s.scim("POST", "/scim/demo/Users", Some(&user_body("alice"))).json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    s.scim("POST", "/scim/demo/Users", Some(&user_body("bob")));
    let group = json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "ops",
                       "members": [{"value": alice}]});
    assert_eq!(s.scim("POST", "/scim/demo/Groups", Some(&group.to_string())).status, 201);
    assert!(s.stop().success());
    let migrate = |from: &str, to: &str, extra: &[&str]| {
        std::process::Command::new(e2e::binary("supervisor"))
            .args(["store", "migrate", "--from", from, "--to", to])
            .args(extra)
            .output()
            .unwrap()
    };
    let sqlite = dir.path().join("connector-space.db");
    let out = migrate(sqlite.to_str().unwrap(), &store, &[]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said}{}", String::from_utf8_lossy(&out.stderr));
    assert!(said.contains("demo User present: 2 in the source, 2 in the destination: ok"), "{said}");
    assert!(said.contains("demo Group present: 1 in the source, 1 in the destination: ok"), "{said}");
    // Into a store that holds records already: refused, nothing touched.
    let again = migrate(sqlite.to_str().unwrap(), &store, &[]);
    assert_eq!(again.status.code(), Some(69), "{}", String::from_utf8_lossy(&again.stderr));
    // The same data directory (the target is there), now on the PostgreSQL store: same ids.
    let config = format!("{}\n[store]\nurl = \"{store}\"\n", e2e::quickstart_config());
    std::fs::rename(&sqlite, dir.path().join("moved-away.db")).unwrap();
    let mut s = Supervisor::start(&config, dir.path());
    let r = s.scim("GET", &format!("/scim/demo/Users/{alice}"), None);
    assert_eq!((r.status, r.json()["userName"].as_str()), (200, Some("alice")), "{}", r.body);
    assert_eq!(s.connector("demo-users")["pending_writes"], 0);
    assert!(s.stop().success());
    // And back.
    let back = dir.path().join("back.db");
    let out = migrate(&store, back.to_str().unwrap(), &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let rows = e2e::sqlite_rows(&back, "SELECT user_name FROM objects ORDER BY user_name");
    assert_eq!(rows.len(), 3, "{rows:?}");
}

#[test]
fn a_store_from_a_newer_supervisor_is_refused_with_the_reason() {
    let dir = TempDir::new("store-newer");
    let pg = Postgres::start();
    let store = pg.database();
    let config = format!("{}\n[store]\nurl = \"{store}\"\n", e2e::quickstart_config());
    {
        let _first = Supervisor::start(&config, dir.path());
    }
    databases::execute(&store, "INSERT INTO connector_space.schema_version (version) VALUES (99)", &[]);
    let mut s = Supervisor::spawn(&config, dir.path());
    let status = s.wait_exit(Duration::from_secs(30));
    assert!(!status.success());
    assert!(s.log().contains("schema version 99, newer than this supervisor knows"), "{}", s.log());
}

#[test]
fn two_nodes_started_at_once_on_empty_databases_both_come_up() {
    // The store's schema and the target's tables are created by whichever node comes first;
    // the other must neither fail nor wait for an operator.
    let cluster = Cluster::new("ha-cold-start");
    let config = ha_config("");
    let spawn = |label: &str| {
        let data = cluster.dir.path().join(label);
        std::fs::create_dir_all(&data).unwrap();
        Supervisor::spawn_with_env(
            &config,
            &data,
            &[("STORE_URL", &cluster.store), ("DATABASE_URL", &cluster.target)],
        )
    };
    let (a, b) = (spawn("a"), spawn("b"));
    a.wait_ready(Duration::from_secs(60));
    b.wait_ready(Duration::from_secs(60));
    assert_eq!(a.scim("POST", "/scim/demo/Users", Some(&user_body("first"))).status, 201);
    let r = b.scim("GET", "/scim/demo/Users?filter=userName%20eq%20%22first%22", None);
    assert_eq!(r.json()["totalResults"], 1, "{}", r.body);
    // Each migration ran once (one row per version), not once per node.
    let versions = cluster.store_rows("SELECT version FROM connector_space.schema_version ORDER BY version");
    let versions: Vec<i64> = versions.iter().map(|v| v["version"].as_i64().unwrap()).collect();
    assert_eq!(
        versions,
        (1..=versions.len() as i64).collect::<Vec<_>>(),
        "the schema was migrated once: {versions:?}"
    );
    assert!(versions.len() >= 2, "the provisioning log's migration ran: {versions:?}");
}

#[test]
fn the_store_is_reached_over_tls_and_its_certificate_is_verified() {
    let dir = TempDir::new("store-tls");
    let pg = Postgres::start_tls();
    let plain = pg.database();
    let port = plain.rsplit_once(':').unwrap().1.split('/').next().unwrap().to_string();
    let name = plain.rsplit('/').next().unwrap().to_string();
    let url = |ca: &Path| {
        format!(
            "postgres://postgres@localhost:{port}/{name}?sslmode=verify-full&sslrootcert={}",
            ca.display()
        )
    };
    // With the server's CA: up, and every connection of the supervisor's is encrypted.
    let config = format!("{}\n[store]\nurl = {{ env = \"STORE_URL\" }}\n", e2e::quickstart_config());
    let verified = url(&pg.ca_file());
    {
        let s = Supervisor::spawn_with_env(&config, dir.path(), &[("STORE_URL", &verified)]);
        s.wait_ready(Duration::from_secs(30));
        assert_eq!(s.scim("POST", "/scim/demo/Users", Some(&user_body("over-tls"))).status, 201);
        let connections = databases::query(
            &plain,
            "SELECT count(*) FILTER (WHERE s.ssl) AS encrypted, count(*) AS total FROM pg_stat_activity a \
             JOIN pg_stat_ssl s USING (pid) WHERE a.application_name = 'ecma-supervisor'",
            &[],
        );
        assert!(connections[0]["total"].as_i64().unwrap() > 0, "{connections:?}");
        assert_eq!(connections[0]["encrypted"], connections[0]["total"], "{connections:?}");
    }
    // With another CA: refused at start, saying why, and the password-free URL is all it shows.
    let other = dir.path().join("other-ca.pem");
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    std::fs::write(&other, params.self_signed(&key).unwrap().pem()).unwrap();
    let second = dir.path().join("second");
    std::fs::create_dir_all(&second).unwrap();
    let mut s = Supervisor::spawn_with_env(&config, &second, &[("STORE_URL", &url(&other))]);
    assert!(!s.wait_exit(Duration::from_secs(30)).success());
    assert!(s.log().to_lowercase().contains("certificate"), "{}", s.log());
}

#[test]
fn an_import_into_the_shared_store_writes_new_objects_together_skips_a_taken_name_and_sweeps() {
    let cluster = Cluster::new("ha-import-batch");
    let s = cluster.node(&ha_config("[connectors.sql-users.import]\non_start = false\n"), "a");
    assert_eq!(s.scim("POST", "/scim/demo/Users", Some(&user_body("taken"))).status, 201);
    // Two new names, and one that differs from the SCIM user's only in case: the target's
    // unique index lets it in, the connector space's (case-folded) does not.
    databases::execute(
        &cluster.target,
        "INSERT INTO users (id, user_name, display_name, active, updated_at, deleted) VALUES \
         ('x1', 'fresh-1', 'Fresh One', true, now(), false), ('x2', 'fresh-2', 'Fresh Two', true, now(), false), \
         ('x3', 'TAKEN', 'Clash', true, now(), false)",
        &[],
    );
    let import = || {
        let r = e2e::request(s.admin, "POST", "/admin/connectors/sql-users/import?type=full", None, None);
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()
    };
    let counts = |report: &Value| {
        ["added", "updated", "unchanged", "skipped", "deleted"].map(|k| report[k].as_u64().unwrap_or(99))
    };
    let report = import();
    assert_eq!(counts(&report), [2, 0, 1, 1, 0], "{report}");
    let rows = cluster.store_rows(
        "SELECT user_name, anchor, reference FROM connector_space.objects WHERE state = 'present' ORDER BY user_name",
    );
    let got: Vec<(&str, &str)> =
        rows.iter().map(|r| (r["user_name"].as_str().unwrap(), r["anchor"].as_str().unwrap())).collect();
    assert_eq!(&got[..2], [("fresh-1", "x1"), ("fresh-2", "x2")], "{rows:?}");
    assert_eq!(got[2].0, "taken");
    assert!(!got[2].1.is_empty(), "the SCIM user's anchor is indexed too: {rows:?}");
    // Each new object's `import_add` log row went in with it; the skipped clash has none.
    let logged: Vec<Value> = cluster.store_rows(
        "SELECT name, anchor FROM connector_space.provisioning_log WHERE operation = 'import_add' ORDER BY name",
    );
    assert_eq!(
        logged,
        [json!({"name": "fresh-1", "anchor": "x1"}), json!({"name": "fresh-2", "anchor": "x2"})],
        "{logged:?}"
    );
    let user = s.scim("GET", "/scim/demo/Users?filter=userName+eq+%22fresh-1%22", None).json();
    assert_eq!(user["Resources"][0]["displayName"], "Fresh One", "{user}");
    // Again: what is stored is unchanged; the clash is skipped again, never stored.
    assert_eq!(counts(&import()), [0, 0, 3, 1, 0]);
    // Gone from the target: the sweep removes it, and only it.
    databases::execute(&cluster.target, "DELETE FROM users WHERE id = 'x1'", &[]);
    assert_eq!(counts(&import()), [0, 0, 2, 1, 1]);
    let names: Vec<Value> =
        cluster.store_rows("SELECT user_name FROM connector_space.objects ORDER BY user_name");
    assert_eq!(names, [json!({"user_name": "fresh-2"}), json!({"user_name": "taken"})]);
}
