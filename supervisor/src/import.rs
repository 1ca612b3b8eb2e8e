//! The import path: a connector's import session, page by page, into the connector space.
//!
//! Target objects whose anchor the connector space knows update their records (only the mapped
//! attributes of the SCIM resource change); unknown ones become new resources, so that a SCIM
//! client matching by `userName` (or `displayName`) finds them before it creates a duplicate. A
//! full import ends by removing the records whose objects are no longer in the target. A delta
//! import starts from the stored watermark, and each page's watermark is committed only after
//! the page is stored.

use std::collections::{HashMap, HashSet};
use std::time::{Instant, SystemTime};

use ecma_proto::v1::{self, ImportType, ObjectModificationType};
use serde::Serialize;
use serde_json::{Value, json};

use crate::mapping::TargetValues;
use crate::provision::{ProvisionError, Provisioner};
use crate::store::{Known, Listed, Record, RecordState, anchor_text, entry_values};
use crate::supervision::{CallError, rfc3339};

/// Entries asked for per page.
const PAGE_SIZE: u32 = 500;

/// New objects written in one transaction at most. With random keys (UUID ids and anchors),
/// each insert dirties its own leaf page of each index until a transaction holds enough of
/// them to share pages: 500 a transaction wrote about 13 KB of WAL per object. The write holds
/// the SQLite store's write connection (SCIM writes wait for it) for some 20 ms.
const INSERT_BATCH: usize = 2000;

/// Records listed at a time by a full import's final sweep.
const SWEEP_BATCH: usize = 5000;

/// Where an import's objects go: the app and resource kind the connector serves.
#[derive(Debug, Clone)]
pub struct Binding {
    pub app: String,
    /// `User` or `Group`.
    pub resource_type: &'static str,
    /// The SCIM attribute that is unique (`userName`, `displayName`).
    pub unique: &'static str,
    /// The core schema of new resources.
    pub schema: &'static str,
}

/// What an import did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub connector: String,
    pub import_type: &'static str,
    pub added: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub deleted: u64,
    /// Entries of another object type or partition (never stored).
    pub rejected: u64,
    /// Entries whose name belongs to another resource, or that have no name or anchor.
    pub skipped: u64,
    /// Entries the connector reported as failed.
    pub errors: u64,
    pub pages: u64,
    pub duration_ms: u64,
    pub finished_at: String,
}

/// Why an import stopped.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("the connector is not ready: {0}")]
    Connector(#[from] CallError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Provision(#[from] ProvisionError),
}

/// Runs one import of `connector` into `binding`'s resources.
pub async fn run(
    provisioner: &Provisioner,
    connector: &str,
    binding: &Binding,
    requested: ImportType,
    progress: &(dyn Fn(&Report) + Sync),
) -> Result<Report, ImportError> {
    let started = Instant::now();
    let target = provisioner.target(connector);
    let handle = &target.handle;
    let session = handle.session()?;
    let store = &provisioner.store;
    // Delta only where the connector supports it and a watermark exists; full otherwise.
    let watermark = store.watermark(connector).await?;
    let delta = requested == ImportType::Delta && session.capabilities.delta_import && watermark.is_some();
    let import_type = if delta { ImportType::Delta } else { ImportType::Full };
    let mut report = Report {
        connector: connector.to_string(),
        import_type: if delta { "delta" } else { "full" },
        ..Default::default()
    };

    let open = v1::OpenImportConnectionRequest {
        config: Some(session.config.clone()),
        import_type: import_type as i32,
        object_type: handle.config.object_type.clone(),
        partition_id: handle.config.partition.clone(),
        page_size: PAGE_SIZE,
        watermark: if delta { watermark.unwrap_or_default() } else { vec![] },
    };
    let session_id = session
        .call("OpenImportConnection", session.client().open_import_connection(session.request(open)))
        .await?
        .session_id;

    let shape = target.shape();
    // An object the target gives with the values the connector space holds is unchanged without
    // being mapped again, once a full import has compared every object under this mapping
    // (after a change of the mapping, the next imports compare each object's resource until a
    // full import has gone through).
    let mark = mapping_mark(&handle.config.attributes, &shape);
    let mapped_alike = store.import_mark(connector).await?.as_deref() == Some(mark.as_str());
    // The connector's records as they stood when the import began. A page is read from the
    // target before its objects are looked up here, so a client's write that reached the target
    // in between would look like a change made in the target, and a delete like a new object:
    // the import leaves alone every record a client wrote since it began (it keeps the client's
    // values; the next import reads the target as it is), and does not bring back an object a
    // client deleted meanwhile. This is also what the final sweep of a full import may remove:
    // not a write whose outcome was unknown then (its export may land after the import read that
    // part of the target, and the record turns present without a new version), nor a record
    // created or changed since.
    let mut start = Start::default();
    {
        let mut listing = Listing::new(binding, connector);
        while let Some(batch) = listing.next(store).await? {
            for listed in batch.iter().filter(|l| l.state == RecordState::Present) {
                start.versions.insert((&listed.id, listed.version));
                if !listed.anchor.is_empty() {
                    start.anchors.insert(&listed.anchor);
                }
            }
        }
    }
    // The anchors a full import has seen, as 64-bit digests (some 18 bytes an object: flat
    // enough for millions; the records themselves are looked up a page at a time).
    let mut seen = Seen::default();
    // Records written with a reference to an object not known yet (a manager listed after its
    // report): resolved again once the whole import is in.
    let mut unresolved: Vec<String> = Vec::new();
    // The next page is asked for as soon as a page arrives, so that the connector (and its
    // target) read it while this one is stored.
    let fetch = |session: std::sync::Arc<crate::supervision::client::Session>, session_id: String| {
        tokio::spawn(async move {
            session
                .call(
                    "GetImportEntries",
                    session
                        .client()
                        .get_import_entries(session.request(v1::GetImportEntriesRequest { session_id })),
                )
                .await
        })
    };
    // New objects, written together once a few pages' worth have come (see `INSERT_BATCH`).
    // With each, whether a reference it holds named no object known when it was read.
    let mut new: Vec<(Record, bool)> = Vec::new();
    let mut writing: Option<Writing> = None;
    // A run that fails while a batch is being written waits for the batch (and counts it) before
    // it returns, so that no write of the run outlives it.
    let read = async {
        let mut next = Some(fetch(session.clone(), session_id.clone()));
        while let Some(fetching) = next.take() {
            let page = fetching
                .await
                .map_err(|e| CallError::Lost { detail: format!("an import page was lost: {e}") })??;
            if page.more_to_import {
                next = Some(fetch(session.clone(), session_id.clone()));
            }
            report.pages += 1;
            let mut entries = Vec::with_capacity(page.entries.len());
            for item in page.entries {
                if item.error.is_some() {
                    report.errors += 1;
                    continue;
                }
                let Some(entry) = item.entry else { continue };
                let config = &handle.config;
                let foreign = (!entry.object_type.is_empty() && entry.object_type != config.object_type)
                    || (!entry.partition_id.is_empty() && entry.partition_id != config.partition);
                if foreign {
                    handle.reject_entries(1, "GetImportEntries");
                    report.rejected += 1;
                    continue;
                }
                let Some(anchor) = anchor_text(&entry.anchors) else {
                    report.skipped += 1;
                    continue;
                };
                if !delta && !seen.insert(&anchor) {
                    // Listed twice by the same full import (a list that shifted while it was read):
                    // the first is in; the next import brings any newer values. (A delta import may
                    // list an object once per change: each is applied.)
                    report.unchanged += 1;
                    continue;
                }
                let kind = ObjectModificationType::try_from(item.modification_type)
                    .unwrap_or(ObjectModificationType::Add);
                entries.push((anchor, kind, entry));
            }
            // The page's objects as the connector space holds them, and the objects their
            // references name: two indexed reads a page.
            let anchors: Vec<String> = entries.iter().map(|(anchor, ..)| anchor.clone()).collect();
            let known: HashMap<String, Known> = store
                .by_anchors(connector, &anchors)
                .await?
                .into_iter()
                .filter(|k| k.resource_type == binding.resource_type)
                .map(|k| (k.anchor.clone(), k))
                .collect();
            let ids = if shape.has_references() {
                let texts: HashSet<String> = entries
                    .iter()
                    .flat_map(|(_, _, entry)| shape.reference_texts(&entry.attributes))
                    .collect();
                store.ids_of(&binding.app, &texts.into_iter().collect::<Vec<_>>()).await?
            } else {
                HashMap::new()
            };
            for (anchor, kind, entry) in entries {
                if kind == ObjectModificationType::Delete {
                    if let Some(k) = known.get(&anchor)
                        && k.state == RecordState::Present
                        && start.holds(&k.id, k.version)
                    {
                        let _guard = provisioner.lock(&[&binding.app, &k.resource_type, &k.id]).await?;
                        if let Some(current) = store
                            .get(&binding.app, &k.resource_type, &k.id)
                            .await?
                            .filter(|r| r.state == RecordState::Present && r.version == k.version)
                        {
                            store.delete(&current.app, &current.resource_type, &current.id).await?;
                            start.anchors.remove(&anchor);
                            report.deleted += 1;
                            logged(provisioner, &current, "import_delete", vec![]).await;
                        }
                    }
                    continue;
                }
                // The target gives what the connector space holds: nothing to map, lock or write.
                // Most objects of most imports take only this path. (References are mapped again:
                // the object a DN names may have come since.)
                if let Some(k) = known.get(&anchor)
                    && mapped_alike
                    && k.state == RecordState::Present
                    && kind != ObjectModificationType::Update
                    && k.target.dn == entry.dn
                    && same_attributes(&k.target.attributes, &entry.attributes)
                    && shape.reference_texts(&entry.attributes).is_empty()
                {
                    report.unchanged += 1;
                    continue;
                }
                let values = entry_values(&entry);
                match known.get(&anchor) {
                    // A deprovisioned object kept in the target stays out of SCIM.
                    Some(k) if k.state == RecordState::Deprovisioned => report.unchanged += 1,
                    // Written by a client since the import began: the client's values stand.
                    Some(k) if !start.holds(&k.id, k.version) => report.skipped += 1,
                    Some(k) => {
                        let stored = entry_values(&k.target);
                        let mut merged = if kind == ObjectModificationType::Update {
                            stored.clone()
                        } else {
                            Default::default()
                        };
                        merged.extend(values);
                        let _guard = provisioner.lock(&[&binding.app, &k.resource_type, &k.id]).await?;
                        // Read under the lock. A record that a SCIM write changed since this page
                        // was looked up is left alone: the page may have been read before that write
                        // reached the target, and must not undo it (the next import sees the target
                        // as it is). Likewise one deleted or deprovisioned meanwhile stays as the
                        // client left it.
                        let Some(mut current) = store
                            .get(&binding.app, &k.resource_type, &k.id)
                            .await?
                            .filter(|r| r.state == RecordState::Present && r.version == k.version)
                        else {
                            report.skipped += 1;
                            continue;
                        };
                        let mut resource = current.resource.clone();
                        target.mapping.from_target(&mut resource, &merged, &shape, &ids);
                        let name = resource_name(&resource, binding);
                        if resource == current.resource {
                            // Only what the mapping does not read moved (or the record was written
                            // by SCIM with fewer attributes than the target gives): kept, so that
                            // the next import finds it alike, without a new version for clients.
                            if !same_values(&stored, &merged) || current.target.dn != entry.dn {
                                current.set_target_values(&merged);
                                current.target.anchors = entry.anchors.clone();
                                current.target.dn = entry.dn.clone();
                                match store.update_imported(&current).await {
                                    Ok(()) | Err(crate::store::StoreError::Conflict) => {}
                                    Err(e) => return Err(e.into()),
                                }
                            }
                            report.unchanged += 1;
                            continue;
                        }
                        match name {
                            Some(name) => current.user_name = name,
                            None => {
                                report.skipped += 1;
                                continue;
                            }
                        }
                        current.resource = resource;
                        let changed = changed_names(&stored, &merged);
                        current.set_target_values(&merged);
                        current.target.anchors = entry.anchors.clone();
                        current.target.dn = entry.dn.clone();
                        current.version += 1;
                        current.modified = rfc3339(SystemTime::now());
                        match store.update_imported(&current).await {
                            Ok(()) => {
                                start.versions.insert((&current.id, current.version));
                                report.updated += 1;
                                logged(provisioner, &current, "import_update", changed).await;
                                if shape.unresolved(&merged, &ids) {
                                    unresolved.push(current.id.clone());
                                }
                            }
                            Err(crate::store::StoreError::Conflict) => report.skipped += 1,
                            Err(e) => return Err(e.into()),
                        }
                    }
                    // Deleted by a client since the import began (this page was read before).
                    None if start.anchors.contains(&anchor) => report.skipped += 1,
                    None => {
                        let mut resource = json!({ "schemas": [binding.schema] });
                        target.mapping.from_target(&mut resource, &values, &shape, &ids);
                        let Some(name) = resource_name(&resource, binding) else {
                            report.skipped += 1;
                            continue;
                        };
                        let at = rfc3339(SystemTime::now());
                        let mut record = Record {
                            app: binding.app.clone(),
                            resource_type: binding.resource_type.to_string(),
                            id: crate::store::new_id(),
                            connector: connector.to_string(),
                            state: RecordState::Present,
                            user_name: name,
                            resource,
                            target: v1::Entry { anchors: entry.anchors, dn: entry.dn, ..Default::default() },
                            version: 1,
                            created: at.clone(),
                            modified: at,
                        };
                        record.set_target_values(&values);
                        let unknown = shape.has_references() && shape.unresolved(&values, &ids);
                        start.versions.insert((&record.id, record.version));
                        new.push((record, unknown));
                    }
                }
            }
            // A delta import commits each page's watermark once the page is stored; a full import
            // only the final one, so that an interrupted full import never passes for a base.
            // A delta import writes each page's new objects before the next page (which may change
            // them again) is looked up.
            let watermark = delta && !page.watermark.is_empty();
            let last = next.is_none();
            if new.len() >= INSERT_BATCH || delta || last {
                // A full import reads and maps on while a batch is written; one batch is in flight
                // at most, counted before the next starts.
                if let Some(batch) = writing.take() {
                    counted(batch.await, &mut report, &mut unresolved)?;
                }
                if !new.is_empty() {
                    let batch = write_new(provisioner, std::mem::take(&mut new));
                    if delta || last {
                        counted(batch.await, &mut report, &mut unresolved)?;
                    } else {
                        writing = Some(batch);
                    }
                }
            }
            if watermark {
                store.set_watermark(connector, &page.watermark).await?;
            }
            progress(&report);
        }
        Ok::<(), ImportError>(())
    }
    .await;
    let settled = match writing.take() {
        Some(batch) => counted(batch.await, &mut report, &mut unresolved),
        None => Ok(()),
    };
    read?;
    settled?;
    let closed = session
        .call(
            "CloseImportConnection",
            session
                .client()
                .close_import_connection(session.request(v1::CloseImportConnectionRequest { session_id })),
        )
        .await?;
    if !closed.watermark.is_empty() {
        store.set_watermark(connector, &closed.watermark).await?;
    }
    // References to objects that came later in the same import, now known.
    for id in unresolved {
        let _guard = provisioner.lock(&[&binding.app, binding.resource_type, &id]).await?;
        let Some(mut current) = store
            .get(&binding.app, binding.resource_type, &id)
            .await?
            .filter(|r| r.state == RecordState::Present)
        else {
            continue;
        };
        let ids = store.ids_of(&binding.app, &shape.reference_texts(&current.target.attributes)).await?;
        let values = current.target_values();
        let mut resource = current.resource.clone();
        target.mapping.from_target(&mut resource, &values, &shape, &ids);
        if resource == current.resource {
            continue;
        }
        current.resource = resource;
        current.version += 1;
        current.modified = rfc3339(SystemTime::now());
        match store.update_imported(&current).await {
            Ok(()) | Err(crate::store::StoreError::Conflict) => {}
            Err(e) => return Err(e.into()),
        }
    }

    if !delta {
        // Objects gone from the target leave the connector space: the connector's records,
        // listed a bounded batch at a time, whose anchors this import did not see.
        let mut listing = Listing::new(binding, connector);
        while let Some(batch) = listing.next(store).await? {
            for listed in batch {
                if listed.state != RecordState::Present
                    || listed.anchor.is_empty()
                    || seen.contains(&listed.anchor)
                    || !start.holds(&listed.id, listed.version)
                {
                    continue;
                }
                let _guard = provisioner.lock(&[&binding.app, binding.resource_type, &listed.id]).await?;
                // Not one that a SCIM write changed since it was listed.
                if let Some(current) = store.get(&binding.app, binding.resource_type, &listed.id).await?
                    && current.state == RecordState::Present
                    && current.version == listed.version
                    && anchor_text(&current.target.anchors).as_deref() == Some(listed.anchor.as_str())
                {
                    store.delete(&current.app, &current.resource_type, &current.id).await?;
                    report.deleted += 1;
                    logged(provisioner, &current, "import_delete", vec![]).await;
                }
            }
        }
        // Every object was compared under this mapping.
        if !mapped_alike {
            store.set_import_mark(connector, &mark).await?;
        }
    }
    report.duration_ms = started.elapsed().as_millis() as u64;
    report.finished_at = rfc3339(SystemTime::now());
    metrics::counter!("import_objects_total", "connector" => connector.to_string(), "result" => "added")
        .increment(report.added);
    metrics::counter!("import_objects_total", "connector" => connector.to_string(), "result" => "updated")
        .increment(report.updated);
    metrics::counter!("import_objects_total", "connector" => connector.to_string(), "result" => "deleted")
        .increment(report.deleted);
    metrics::histogram!("import_duration_seconds", "connector" => connector.to_string())
        .record(started.elapsed().as_secs_f64());
    tracing::info!(
        connector,
        import = report.import_type,
        added = report.added,
        updated = report.updated,
        deleted = report.deleted,
        skipped = report.skipped,
        rejected = report.rejected,
        "import finished"
    );
    Ok(report)
}

/// New objects written: the records, whether each holds a reference to an object not known yet,
/// and whether each went in.
type Written = Result<(Vec<Record>, Vec<bool>, Vec<bool>), crate::store::StoreError>;

/// New objects being written.
type Writing = tokio::task::JoinHandle<Written>;

/// Starts writing an import's new objects, with their `import_add` log rows, in one transaction
/// on the blocking pool, so that the import reads and maps the next pages meanwhile (the log rows
/// are written with the records rather than through the journal's queue: a transaction of their
/// own cost about as much as the records', docs/BENCHMARKS.md). No object lock is taken: a new
/// record has an id nobody knows yet, and its name is claimed by the store's unique index, so a
/// SCIM create of the same name either finds it or keeps its own (this one is skipped).
/// References to objects not known yet are resolved at the end of the import.
fn write_new(provisioner: &Provisioner, new: Vec<(Record, bool)>) -> Writing {
    let (records, unknown): (Vec<Record>, Vec<bool>) = new.into_iter().unzip();
    let (node, trace_id) = (provisioner.journal.node(), crate::journal::current_trace_id());
    let rows = records.iter().map(|record| add_row(record, node, &trace_id)).collect();
    let store = provisioner.store.clone();
    let runtime = tokio::runtime::Handle::current();
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || {
        let _entered = span.enter();
        let inserted = runtime.block_on(store.insert_imported_all(&records, rows))?;
        Ok((records, unknown, inserted))
    })
}

/// Counts a written batch of new objects.
fn counted(
    batch: Result<Written, tokio::task::JoinError>,
    report: &mut Report,
    unresolved: &mut Vec<String>,
) -> Result<(), ImportError> {
    let (records, unknown, inserted) = batch.map_err(|e| {
        crate::store::StoreError::Unavailable(format!("writing an import's new objects failed: {e}"))
    })??;
    for ((record, unknown), inserted) in records.into_iter().zip(unknown).zip(inserted) {
        if !inserted {
            // Another resource has this name (perhaps a pending write of it).
            report.skipped += 1;
            continue;
        }
        report.added += 1;
        if unknown {
            unresolved.push(record.id);
        }
    }
    Ok(())
}

/// The `import_add` log row of a new object: the attributes it was imported with (a record's
/// stored attributes are sorted by name, a `TargetValues` map's order).
fn add_row(record: &Record, node: &str, trace_id: &str) -> crate::store::log::LogEntry {
    crate::store::log::LogEntry {
        node: node.to_string(),
        at_ms: crate::store::now_ms(),
        attributes: record.target.attributes.iter().map(|a| a.name.clone()).collect(),
        trace_id: trace_id.to_string(),
        ..crate::store::log::LogEntry::of(record, "import", "import_add", "applied")
    }
}

/// Logs a change an import made to the connector space.
async fn logged(provisioner: &Provisioner, record: &Record, operation: &str, attributes: Vec<String>) {
    let row = crate::store::log::LogEntry {
        attributes,
        trace_id: crate::journal::current_trace_id(),
        ..crate::store::log::LogEntry::of(record, "import", operation, "applied")
    };
    provisioner.journal.record(row).await;
}

/// A connector's records, listed a bounded batch at a time.
struct Listing<'a> {
    binding: &'a Binding,
    connector: &'a str,
    after: String,
}

impl<'a> Listing<'a> {
    fn new(binding: &'a Binding, connector: &'a str) -> Self {
        Self { binding, connector, after: String::new() }
    }

    /// The next batch, or `None` after the last.
    async fn next(&mut self, store: &crate::store::Store) -> Result<Option<Vec<Listed>>, ImportError> {
        let b = self.binding;
        let batch = store.listed(&b.app, b.resource_type, self.connector, &self.after, SWEEP_BATCH).await?;
        let Some(last) = batch.last() else { return Ok(None) };
        self.after = last.id.clone();
        Ok(Some(batch))
    }
}

/// A set of keys (the anchors an import has seen; the records present when it began) kept as
/// 64-bit digests under a key of this run's own, some 18 bytes a member. Two keys that share a
/// digest (about one chance in 10^7 for a million objects) make the second look a member: an
/// anchor looks listed twice and waits for the next import, a record created during the import
/// and gone from the target by its end may be removed. The next import's key differs.
#[derive(Default)]
struct Seen {
    key: std::hash::RandomState,
    digests: HashSet<u64>,
}

impl Seen {
    /// Notes a key; false if it was a member already.
    fn insert(&mut self, key: impl std::hash::Hash) -> bool {
        use std::hash::BuildHasher;
        self.digests.insert(self.key.hash_one(key))
    }

    fn contains(&self, key: impl std::hash::Hash) -> bool {
        use std::hash::BuildHasher;
        self.digests.contains(&self.key.hash_one(key))
    }

    fn remove(&mut self, key: impl std::hash::Hash) {
        use std::hash::BuildHasher;
        self.digests.remove(&self.key.hash_one(key));
    }
}

/// The connector's records as an import found them when it began (present ones, by id and
/// version, and their anchors), and as the import itself left them since.
#[derive(Default)]
struct Start {
    versions: Seen,
    anchors: Seen,
}

impl Start {
    /// Whether a record is as the import began with it or left it: no one else wrote it since.
    fn holds(&self, id: &str, version: i64) -> bool {
        self.versions.contains((id, version))
    }
}

/// Whether two entries' attributes hold the same values, in any order of attributes (one
/// without values counts as absent); [`same_values`] without building either map.
fn same_attributes(a: &[v1::AttributeValues], b: &[v1::AttributeValues]) -> bool {
    fn sorted(attributes: &[v1::AttributeValues]) -> Vec<&v1::AttributeValues> {
        let mut present: Vec<&v1::AttributeValues> =
            attributes.iter().filter(|a| !a.values.is_empty()).collect();
        present.sort_unstable_by(|x, y| x.name.cmp(&y.name));
        present
    }
    let (a, b) = (sorted(a), sorted(b));
    a.len() == b.len() && a.iter().zip(&b).all(|(x, y)| x.name == y.name && x.values == y.values)
}

/// Whether two sets of values are the same (an attribute without values counts as absent).
fn same_values(a: &TargetValues, b: &TargetValues) -> bool {
    let present = |values: &TargetValues| values.iter().filter(|(_, v)| !v.is_empty()).count();
    present(a) == present(b) && a.iter().filter(|(_, v)| !v.is_empty()).all(|(k, v)| b.get(k) == Some(v))
}

/// What names a mapping as imports compare with it: its attributes, the connector schema's view
/// of them, and the supervisor's version.
fn mapping_mark(
    attributes: &std::collections::BTreeMap<String, String>,
    shape: &crate::mapping::Shape,
) -> String {
    // The build too: a new release may map the same attributes otherwise.
    let text = format!("{}\n{attributes:?}\n{shape:?}", env!("CARGO_PKG_VERSION"));
    let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// The names of the attributes whose values differ between two sets.
fn changed_names(before: &TargetValues, after: &TargetValues) -> Vec<String> {
    let mut names: Vec<String> = before
        .keys()
        .chain(after.keys())
        .filter(|k| before.get(*k).filter(|v| !v.is_empty()) != after.get(*k).filter(|v| !v.is_empty()))
        .cloned()
        .collect();
    names.sort();
    names.dedup();
    names
}

fn resource_name(resource: &Value, binding: &Binding) -> Option<String> {
    crate::paths::get_ci(resource, binding.unique)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// Imports of every connector: one at a time per connector, and the last report of each.
pub struct Imports {
    provisioner: std::sync::Arc<Provisioner>,
    bindings: HashMap<String, Binding>,
    running: HashMap<String, tokio::sync::Mutex<()>>,
    reports: std::sync::Mutex<HashMap<String, Report>>,
    /// The report so far of imports running now (after each page).
    progress: std::sync::Mutex<HashMap<String, Report>>,
    /// Connectors that import when they start (the ones worth waiting for).
    on_start: HashSet<String>,
    /// This supervisor's name in the store's bookkeeping of import runs.
    node: String,
}

/// Why an import was not run.
#[derive(Debug, thiserror::Error)]
pub enum NotRun {
    #[error("no connector named {0:?}")]
    Unknown(String),
    #[error("connector {0:?} serves no app, so its objects have nowhere to go")]
    Unbound(String),
    /// Another supervisor on the same store runs an import of this connector now.
    #[error("an import of connector {0:?} is running on another supervisor (node) of this store")]
    Elsewhere(String),
    #[error(transparent)]
    Failed(#[from] ImportError),
}

impl Imports {
    /// `connectors`: every connector, and whether it imports when it starts.
    pub fn new(
        provisioner: std::sync::Arc<Provisioner>,
        bindings: HashMap<String, Binding>,
        connectors: &[(String, bool)],
        node: String,
    ) -> Self {
        let running = connectors.iter().map(|(c, _)| (c.clone(), tokio::sync::Mutex::new(()))).collect();
        let on_start = connectors.iter().filter(|(_, on)| *on).map(|(c, _)| c.clone()).collect();
        Self {
            provisioner,
            bindings,
            running,
            reports: std::sync::Mutex::new(HashMap::new()),
            progress: std::sync::Mutex::new(HashMap::new()),
            on_start,
            node,
        }
    }

    /// Runs an import of `connector` now (waiting for one already running to finish).
    pub async fn run(&self, connector: &str, requested: ImportType) -> Result<Report, NotRun> {
        let lock = self.running.get(connector).ok_or_else(|| NotRun::Unknown(connector.to_string()))?;
        let binding = self.bindings.get(connector).ok_or_else(|| NotRun::Unbound(connector.to_string()))?;
        let _one_at_a_time = lock.lock().await;
        // One import of a connector at a time across the supervisors that share the store.
        let store = &self.provisioner.store;
        let lead =
            store.lead(crate::store::lock_key(&["import", connector])).await.map_err(ImportError::from)?;
        let Some(_lead) = lead else {
            return Err(NotRun::Elsewhere(connector.to_string()));
        };
        let kind = if requested == ImportType::Delta { "delta" } else { "full" };
        let run_id = store.import_started(connector, &self.node, kind).await.map_err(ImportError::from)?;
        let progress = |report: &Report| {
            self.progress.lock().expect("progress lock").insert(connector.to_string(), report.clone());
        };
        let result = run(&self.provisioner, connector, binding, requested, &progress).await;
        self.progress.lock().expect("progress lock").remove(connector);
        let outcome = match &result {
            Ok(report) => format!("ok ({})", report.import_type),
            Err(e) => format!("failed: {e}"),
        };
        if let Err(e) = store.import_finished(run_id, &outcome).await {
            tracing::warn!(connector, error = %e, "the end of an import could not be recorded");
        }
        let report = result.map_err(|e| {
            tracing::warn!(connector, error = %e, "import failed");
            e
        })?;
        self.reports.lock().expect("reports lock").insert(connector.to_string(), report.clone());
        Ok(report)
    }

    /// The report so far of a connector's import running now.
    pub fn running(&self, connector: &str) -> Option<Report> {
        self.progress.lock().expect("progress lock").get(connector).cloned()
    }

    /// The last report of a connector's imports.
    pub fn last(&self, connector: &str) -> Option<Report> {
        self.reports.lock().expect("reports lock").get(connector).cloned()
    }

    /// Waits (up to `timeout`) until every other connector of `connector`'s app has finished an
    /// import: a groups connector (whose members reference users) imports after the users'
    /// connector, so that its references resolve to the SCIM ids they have by then. A users'
    /// connector with references (a manager) never waits: its references are users too, and
    /// two connectors waiting for each other would only delay both.
    pub async fn wait_for_peers(&self, connector: &str, timeout: std::time::Duration) {
        let Some(binding) = self.bindings.get(connector) else { return };
        if binding.resource_type != "Group" {
            return;
        }
        let app = binding.app.clone();
        let peers: Vec<String> = self
            .bindings
            .iter()
            .filter(|(c, b)| {
                b.app == app && *c != connector && b.resource_type != "Group" && self.on_start.contains(*c)
            })
            .map(|(c, _)| c.clone())
            .collect();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline && !peers.iter().all(|p| self.last(p).is_some()) {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attribute(name: &str, values: &[&str]) -> v1::AttributeValues {
        v1::AttributeValues {
            name: name.into(),
            values: values.iter().map(|v| v1::Value::string(*v)).collect(),
        }
    }

    #[test]
    fn entries_are_alike_whatever_the_order_of_their_attributes() {
        let stored = [attribute("cn", &["Ada"]), attribute("mail", &["a@x", "b@x"])];
        let given = [attribute("mail", &["a@x", "b@x"]), attribute("cn", &["Ada"]), attribute("sn", &[])];
        assert!(same_attributes(&stored, &given), "order, and an attribute without values, do not count");
        let as_maps = |a: &[v1::AttributeValues]| {
            entry_values(&v1::Entry { attributes: a.to_vec(), ..Default::default() })
        };
        assert!(same_values(&as_maps(&stored), &as_maps(&given)));
        for changed in [
            vec![attribute("cn", &["Ada"]), attribute("mail", &["b@x", "a@x"])],
            vec![attribute("cn", &["Ada"])],
            vec![attribute("cn", &["Ada"]), attribute("mail", &["a@x", "b@x"]), attribute("sn", &["L"])],
            vec![attribute("cn", &["Ada"]), attribute("email", &["a@x", "b@x"])],
        ] {
            assert!(!same_attributes(&stored, &changed), "{changed:?}");
            assert!(!same_values(&as_maps(&stored), &as_maps(&changed)), "{changed:?}");
        }
    }

    #[test]
    fn digests_remember_what_was_put_in() {
        let mut seen = Seen::default();
        assert!(seen.insert("a-1"));
        assert!(!seen.insert("a-1"), "a second time");
        assert!(seen.contains("a-1") && !seen.contains("a-2"));
        let mut present = Seen::default();
        present.insert(("id-1", 3i64));
        assert!(present.contains(("id-1", 3i64)));
        assert!(!present.contains(("id-1", 4i64)), "another version is another key");
    }

    #[test]
    fn the_mapping_mark_changes_with_the_mapping_only() {
        let shape = crate::mapping::Shape::default();
        let mapping = |path: &str| std::collections::BTreeMap::from([("cn".to_string(), path.to_string())]);
        assert_eq!(
            mapping_mark(&mapping("displayName"), &shape),
            mapping_mark(&mapping("displayName"), &shape)
        );
        assert_ne!(mapping_mark(&mapping("displayName"), &shape), mapping_mark(&mapping("nickName"), &shape));
    }
}
