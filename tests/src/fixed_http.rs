//! A baseline for benchmarks: an HTTP server that does nothing but answer (201 to a POST, 200
//! otherwise, with a fixed JSON body), in a process of its own like the supervisor. Measured
//! with the same client, it is the floor of any HTTP service on this machine: what an HTTP
//! round trip costs before any work is done.
//!
//! A benchmark calls [`serve_if_asked`] first thing in `main`; [`FixedServer::start`] runs the
//! benchmark's own executable again as the server.

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

const ENV: &str = "BENCH_FIXED_SERVER";

/// When this process was started as the fixed server, serves `body` until killed and returns
/// true; otherwise returns false at once.
pub fn serve_if_asked(body: &'static str) -> bool {
    let Ok(addr) = std::env::var(ENV) else { return false };
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async move {
        // The request body is read (as any service reads it), and dropped.
        let app = axum::Router::new().fallback(
            move |method: axum::http::Method, _body: axum::body::Bytes| async move {
                let status = if method == axum::http::Method::POST {
                    axum::http::StatusCode::CREATED
                } else {
                    axum::http::StatusCode::OK
                };
                (status, [(axum::http::header::CONTENT_TYPE, "application/scim+json")], body)
            },
        );
        let listener = tokio::net::TcpListener::bind(&addr).await.expect("bind the fixed server");
        axum::serve(listener, app).await.expect("serve");
    });
    true
}

/// The fixed server, running; killed on drop.
pub struct FixedServer {
    pub addr: SocketAddr,
    child: std::process::Child,
}

impl FixedServer {
    /// Starts this executable as the fixed server on a free port; waits until it listens.
    pub fn start() -> Self {
        let addr = crate::free_addr();
        let child = std::process::Command::new(std::env::current_exe().expect("current exe"))
            .env(ENV, addr.to_string())
            .spawn()
            .expect("spawn the fixed server");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "the fixed server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { addr, child }
    }
}

impl Drop for FixedServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A created user as a SCIM server answers it (the fixed server's body for create benchmarks).
pub const CREATED_USER: &str = r#"{"active":true,"displayName":"User bench","emails":[{"primary":true,"type":"work","value":"bench@example.com"}],"id":"5f0e1d9a-6c1b-4f0e-9d0c-3a4b5c6d7e8f","meta":{"created":"2026-11-26T12:00:00Z","lastModified":"2026-11-26T12:00:00Z","location":"http://127.0.0.1:8080/scim/demo/Users/5f0e1d9a-6c1b-4f0e-9d0c-3a4b5c6d7e8f","resourceType":"User","version":"W/\"1\""},"name":{"familyName":"bench","givenName":"Bench"},"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"bench"}"#;

/// The bound that the HTTP floor puts on a create benchmark's ratio: where the machine's CPU is
/// the limit, a create through an HTTP service costs at least an HTTP round trip plus what the
/// direct write costs, so `ours / direct <= floor / (floor + direct)` even if everything else
/// were free. `floor` and `direct` are operations per second.
pub fn ratio_bound(floor: f64, direct: f64) -> f64 {
    floor / (floor + direct)
}

/// What a create benchmark compares: its direct writes (named), its connector (named), and how
/// many creates a round.
pub struct CreateBench<'a> {
    /// e.g. "direct sqlx inserts".
    pub direct_label: &'a str,
    /// The users' connector, e.g. "connector-sql".
    pub connector: &'a str,
    pub scim: SocketAddr,
    pub creates: usize,
    pub rounds: usize,
    pub concurrency: usize,
}

impl CreateBench<'_> {
    /// Warms both sides up (200 each), then runs `rounds` rounds of: `direct` writes, SCIM
    /// creates by `through` (CPU per create of supervisor and connector from `cpu`), and the
    /// HTTP floor by `through` against the fixed server; prints each round and the medians, and
    /// returns the medians.
    pub fn run(
        &self,
        mut direct: impl FnMut(&[String]) -> f64,
        through: impl Fn(SocketAddr, &[String]) -> f64,
        cpu: impl Fn() -> (f64, f64),
    ) -> CreateMedians {
        let names =
            |prefix: &str| -> Vec<String> { (0..self.creates).map(|i| format!("{prefix}{i}")).collect() };
        let warm = |prefix: &str| -> Vec<String> { (0..200).map(|i| format!("{prefix}{i}")).collect() };
        through(self.scim, &warm("warm-s"));
        direct(&warm("warm-d"));
        // The HTTP floor: a server that only answers 201, measured with the same client.
        let fixed = FixedServer::start();
        let machine = crate::MachineCpu::at_rest();
        let (mut ours, mut theirs, mut floors) = (vec![], vec![], vec![]);
        let (mut ours_cpu, mut floors_cpu) = (vec![], vec![]);
        for round in 0..self.rounds {
            let d = direct(&names(&format!("r{round}-d")));
            let before = cpu();
            let (o, o_cpu) =
                machine.per_operation(self.creates, || through(self.scim, &names(&format!("r{round}-s"))));
            let after = cpu();
            println!(
                "         CPU per create: supervisor {:.0} µs, {} {:.0} µs; the whole machine {o_cpu:.0} µs",
                (after.0 - before.0) * 1e6 / self.creates as f64,
                self.connector,
                (after.1 - before.1) * 1e6 / self.creates as f64
            );
            println!(
                "round {round}: {} {d:>8.0}/s   SCIM creates through the supervisor {o:>8.0}/s   ratio {:.2}",
                self.direct_label,
                o / d
            );
            let (f, f_cpu) =
                machine.per_operation(self.creates, || through(fixed.addr, &names(&format!("r{round}-f"))));
            println!(
                "         HTTP floor (a server that only answers 201) {f:>8.0}/s   bound on the ratio {:.2}, \
                 so this round's ratio is {:.2} of its bound; the whole machine {f_cpu:.0} µs a request",
                ratio_bound(f, d),
                o / d / ratio_bound(f, d)
            );
            theirs.push(d);
            ours.push(o);
            floors.push(f);
            ours_cpu.push(o_cpu);
            floors_cpu.push(f_cpu);
        }
        let (o, d, f) = (crate::median(ours), crate::median(theirs), crate::median(floors));
        println!(
            "HTTP floor median {f:.0}/s: even a supervisor and connector that cost nothing stay under {:.2} of direct",
            ratio_bound(f, d)
        );
        println!(
            "creates, concurrency {}, {} per round, median of {}: direct {d:.0}/s, through SCIM {o:.0}/s, ratio {:.2}, \
             {:.2} of the bound (#22's goal: at least 0.75 of the bound)",
            self.concurrency,
            self.creates,
            self.rounds,
            o / d,
            o / d / ratio_bound(f, d)
        );
        CreateMedians {
            scim: o,
            direct: d,
            http_floor: f,
            scim_cpu: crate::median(ours_cpu),
            http_floor_cpu: crate::median(floors_cpu),
            machine,
            creates: self.creates,
            rounds: self.rounds,
        }
    }
}

/// The medians of a [`CreateBench`] run, in creates per second.
#[derive(Clone, Copy, Debug)]
pub struct CreateMedians {
    pub scim: f64,
    pub direct: f64,
    pub http_floor: f64,
    /// The whole machine's CPU per SCIM create and per HTTP floor request, in µs.
    pub scim_cpu: f64,
    pub http_floor_cpu: f64,
    pub machine: crate::MachineCpu,
    /// Creates per round, and rounds.
    pub creates: usize,
    pub rounds: usize,
}

impl CreateMedians {
    /// The connector's own share: as many rounds of as many direct writes as the run, alternating with
    /// the same creates sent to the connector by `alone` (the bench acting as the supervisor,
    /// see [`crate::direct_connector`]); prints each round with the connector's CPU per create
    /// (from `connector_pid`) and the whole machine's. Then what a supervisor that cost nothing
    /// past the HTTP floor and its gRPC call would reach: by throughput (per create, the floor's
    /// request and the connector's trip, each at its measured rate), and by CPU (the machine's
    /// CPU per create of the floor, of the connector's trip and of `store` (the store's writes a
    /// create needs, µs), with both cores busy all the time), against the HTTP floor's bound.
    pub fn against_connector_alone(
        &self,
        connector: &str,
        connector_pid: u32,
        store: f64,
        mut direct: impl FnMut(&[String]) -> f64,
        mut alone: impl FnMut(&[String]) -> f64,
    ) {
        let (creates, rounds) = (self.creates, self.rounds);
        let (mut directs, mut alones, mut alones_cpu) = (vec![], vec![], vec![]);
        for round in 0..rounds {
            let names =
                |kind: &str| -> Vec<String> { (0..creates).map(|i| format!("a{round}-{kind}{i}")).collect() };
            let d = direct(&names("d"));
            let before = crate::cpu_seconds(connector_pid);
            let (c, c_cpu) = self.machine.per_operation(creates, || alone(&names("c")));
            println!(
                "round {round}: direct {d:>8.0}/s   {connector} alone (over gRPC, no supervisor) {c:>8.0}/s, \
                 {connector} CPU per create {:.0} µs, the whole machine {c_cpu:.0} µs",
                (crate::cpu_seconds(connector_pid) - before) * 1e6 / creates as f64
            );
            directs.push(d);
            alones.push(c);
            alones_cpu.push(c_cpu);
        }
        let (d, c, f) = (crate::median(directs), crate::median(alones), self.http_floor);
        let bound = ratio_bound(f, d);
        let by_rate = 1.0 / (1.0 / f + 1.0 / c) / d;
        println!(
            "{connector} alone median {c:.0}/s (direct {d:.0}/s): a supervisor that cost nothing past the HTTP \
             floor and its gRPC call would reach {by_rate:.2} of direct, {:.2} of the HTTP floor's bound {bound:.2} \
             (#22's goal: 0.75 of the bound; through SCIM: {:.2} of it)",
            by_rate / bound,
            self.scim / self.direct / ratio_bound(f, self.direct)
        );
        let c_cpu = crate::median(alones_cpu);
        let least = self.http_floor_cpu + c_cpu + store;
        let most = 2e6 / least / d;
        println!(
            "machine CPU per create: through SCIM {:.0} µs; at least the HTTP floor's {:.0} + {connector}'s trip {c_cpu:.0} + the store's \
             writes {store:.0} = {least:.0} µs, so on two cores at most {:.0}/s, {most:.2} of direct, {:.2} of the bound",
            self.scim_cpu,
            self.http_floor_cpu,
            2e6 / least,
            most / bound
        );
    }
}

/// The SCIM user a create benchmark sends: name, display name, given and family name, a work
/// email, active.
pub fn bench_user(name: &str) -> String {
    serde_json::json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": name, "displayName": format!("User {name}"), "active": true,
        "name": {"givenName": "Bench", "familyName": name},
        "emails": [{"type": "work", "value": format!("{name}@example.com"), "primary": true}]
    })
    .to_string()
}
