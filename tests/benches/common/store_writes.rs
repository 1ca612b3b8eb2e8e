//! The connector space's share of a SCIM create, measured in the bench process (with the
//! supervisor's allocator): the two writes the write protocol makes of each create, without
//! HTTP, mapping or connector. Shared by the LDAP and PostgreSQL benches.

use std::path::Path;

use e2e::{MachineCpu, TempDir};
use ecma_proto::v1;
use supervisor::store::{Record, RecordState, Store};

/// Up to `count` records of `connector` from the supervisor's store file at `path` (those its
/// SCIM creates wrote), as templates.
fn templates(
    runtime: &tokio::runtime::Runtime,
    path: &Path,
    (app, resource_type, connector): (&str, &str, &str),
    count: usize,
) -> Vec<Record> {
    runtime.block_on(async {
        let live = Store::open(path).await.expect("open the supervisor's connector space");
        let mut records = vec![];
        let listed = live.listed(app, resource_type, connector, "", count).await.unwrap();
        for listed in listed.iter().filter(|l| l.state == RecordState::Present && !l.anchor.is_empty()) {
            records.push(live.get(app, resource_type, &listed.id).await.unwrap().expect("a listed record"));
        }
        live.close().await;
        records
    })
}

/// Writes `creates` creates into a fresh connector space as the supervisor writes a SCIM create
/// (the record `pending` with no anchor before the ADD, then `present` with the target's
/// anchor), from `concurrency` tasks, each create's values taken from the records of `of`
/// (app, resource type, connector) that the SCIM creates left in the supervisor's data
/// directory `supervisor_dir`. Prints and returns the machine's CPU per create in µs.
pub fn create_writes(
    runtime: &tokio::runtime::Runtime,
    machine: &MachineCpu,
    supervisor_dir: &Path,
    of: (&str, &str, &str),
    creates: usize,
    concurrency: usize,
) -> f64 {
    let templates = templates(runtime, &supervisor_dir.join("connector-space.db"), of, 500);
    assert!(!templates.is_empty(), "the SCIM creates left records to copy");
    let dir = TempDir::new("bench-store-writes");
    let store = runtime.block_on(Store::open(&dir.path().join("writes.db"))).unwrap();
    let started = std::time::Instant::now();
    let ((), cpu) = machine.per_operation(creates, || {
        runtime.block_on(async {
            let mut tasks = tokio::task::JoinSet::new();
            for task in 0..concurrency {
                let (store, templates) = (store.clone(), templates.to_vec());
                tasks.spawn(async move {
                    for i in (task..creates).step_by(concurrency) {
                        let template = &templates[i % templates.len()];
                        let mut record = Record {
                            id: supervisor::store::new_id(),
                            user_name: format!("writes-{i}"),
                            state: RecordState::Pending,
                            target: v1::Entry::default(),
                            version: 1,
                            ..template.clone()
                        };
                        store.insert(&record).await.unwrap();
                        let name =
                            template.target.anchors.first().map(|a| a.name.clone()).unwrap_or_default();
                        record.target = v1::Entry {
                            anchors: vec![v1::Anchor {
                                name,
                                value: Some(v1::Value::string(format!("writes-{i}"))),
                            }],
                            ..template.target.clone()
                        };
                        record.state = RecordState::Present;
                        store.update(&record).await.unwrap();
                    }
                });
            }
            while let Some(done) = tasks.join_next().await {
                done.unwrap();
            }
        })
    });
    println!(
        "the store's writes alone (pending, then present), {creates} creates from {concurrency} tasks: {:.0}/s, \
         the whole machine {cpu:.0} µs a create",
        creates as f64 / started.elapsed().as_secs_f64()
    );
    runtime.block_on(store.close());
    cpu
}
