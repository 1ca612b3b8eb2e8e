//! Benchmark: time from `kill -9` of a connector to the next successful SCIM write, over 20
//! kills, against a baseline measured alternately in the same run: the bare cost of starting a
//! `connector-sql` process and getting its `Hello` answered (no supervisor), which is the floor
//! of any restart.
//!
//! Run: `cargo build --release --workspace --bins && cargo bench -p e2e --bench restart`

use std::time::{Duration, Instant};

use e2e::direct_connector::DirectConnector;
use e2e::{Supervisor, TempDir, quickstart_config, signal, user_body};
use nix::sys::signal::Signal;

const KILLS: usize = 20;

/// Spawns connector-sql directly and times spawn → Hello answered.
fn baseline(runtime: &tokio::runtime::Runtime, dir: &std::path::Path) -> Duration {
    let started = Instant::now();
    let connector = runtime.block_on(DirectConnector::start("connector-sql", dir));
    let elapsed = started.elapsed();
    drop(connector);
    elapsed
}

/// Kills the connector and times kill → next 201 for a client retrying every 2 ms.
fn kill_to_write(s: &Supervisor, i: usize) -> Duration {
    // Let the incarnation outlive reset_after, so that every kill starts from the first backoff.
    let c = s.wait_connector("demo-users", Duration::from_secs(30), |c| c["state"] == "ready");
    std::thread::sleep(Duration::from_millis(1100));
    signal(c["pid"].as_u64().unwrap() as u32, Signal::SIGKILL);
    let started = Instant::now();
    let body = user_body(&format!("bench-{i}"));
    loop {
        if let Ok(r) = e2e::try_request(s.scim, "POST", "/scim/demo/Users", Some(e2e::TOKEN), Some(&body)) {
            match r.status {
                201 => return started.elapsed(),
                503 => {}
                other => panic!("unexpected {other}: {}", r.body),
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn summary(name: &str, samples: &mut [Duration]) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{name:<44} median {:>7.1} ms   p90 {:>7.1} ms   worst {:>7.1} ms   best {:>7.1} ms   (n={})",
        ms(samples[samples.len() / 2]),
        ms(samples[samples.len() * 9 / 10]),
        ms(samples[samples.len() - 1]),
        ms(samples[0]),
        samples.len()
    );
}

fn main() {
    let dir = TempDir::new("bench-restart");
    let config = format!("{}\n[connectors.demo-users.restart]\nreset_after = \"1s\"\n", quickstart_config());
    let s = Supervisor::start(&config, dir.path());
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (mut ours, mut floor) = (Vec::new(), Vec::new());
    for i in 0..KILLS {
        floor.push(baseline(&runtime, dir.path()));
        ours.push(kill_to_write(&s, i));
    }
    println!("restart benchmark: {KILLS} kills, alternating with the baseline");
    summary("baseline: spawn connector-sql -> Hello", &mut floor);
    summary("supervisor: kill -9 -> next SCIM 201", &mut ours);
    let c = s.connector("demo-users");
    assert_eq!(c["restarts"].as_u64(), Some(KILLS as u64), "{c}");
}
