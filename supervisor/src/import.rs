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

use crate::provision::{ProvisionError, Provisioner};
use crate::store::{Record, RecordState, anchor_text, entry_values};
use crate::supervision::{CallError, rfc3339};

/// Entries asked for per page.
const PAGE_SIZE: u32 = 500;

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
    let mut seen: HashSet<String> = HashSet::new();
    let mut known: HashMap<String, Record> = store
        .by_connector(connector)
        .await?
        .into_iter()
        .filter(|r| r.resource_type == binding.resource_type)
        .filter_map(|r| anchor_text(&r.target.anchors).map(|a| (a, r)))
        .collect();
    // References (group members, managers) resolve against the connector space, read once and
    // kept current with what this import adds or renames (not read again for every page).
    let mut ids =
        if shape.has_references() { store.reference_ids(&binding.app).await? } else { HashMap::new() };
    // The anchors this import added.
    let mut added: HashSet<String> = HashSet::new();
    // Records written with a reference to an object not known yet (a manager listed after its
    // report): resolved again once the whole import is in.
    let mut unresolved: Vec<String> = Vec::new();
    let learn = |ids: &mut HashMap<String, String>, record: &Record| {
        if shape.has_references()
            && let Some(text) = record.reference().as_ref().and_then(v1::Value::as_text)
        {
            ids.insert(text, record.id.clone());
        }
    };
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
    let mut next = Some(fetch(session.clone(), session_id.clone()));
    while let Some(fetching) = next.take() {
        let page = fetching
            .await
            .map_err(|e| CallError::Lost { detail: format!("an import page was lost: {e}") })??;
        if page.more_to_import {
            next = Some(fetch(session.clone(), session_id.clone()));
        }
        report.pages += 1;
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
            seen.insert(anchor.clone());
            let kind = ObjectModificationType::try_from(item.modification_type)
                .unwrap_or(ObjectModificationType::Add);
            if kind == ObjectModificationType::Delete {
                if let Some(record) = known.remove(&anchor)
                    && record.state == RecordState::Present
                {
                    let _guard = provisioner.lock(&[&record.app, &record.resource_type, &record.id]).await?;
                    store.delete(&record.app, &record.resource_type, &record.id).await?;
                    report.deleted += 1;
                    logged(provisioner, &record, "import_delete", vec![]).await;
                }
                continue;
            }
            if added.contains(&anchor) {
                // Listed twice by the same import (a list that shifted while it was read): the
                // first is in; the next import brings any newer values.
                report.unchanged += 1;
                continue;
            }
            let values = entry_values(&entry);
            match known.get(&anchor) {
                // A deprovisioned object kept in the target stays out of SCIM.
                Some(record) if record.state == RecordState::Deprovisioned => report.unchanged += 1,
                Some(record) => {
                    // First against the record as this import read it when it began: when the
                    // target gives what the record holds, there is nothing to write, nor to lock
                    // or read again (a record that a SCIM write changed since is left alone all
                    // the same, below). Most objects of most imports take only this path.
                    let mut seen_values = if kind == ObjectModificationType::Update {
                        record.target_values()
                    } else {
                        Default::default()
                    };
                    seen_values.extend(values.iter().map(|(k, v)| (k.clone(), v.clone())));
                    let mut resource = record.resource.clone();
                    target.mapping.from_target(&mut resource, &seen_values, &shape, &ids);
                    if resource == record.resource {
                        report.unchanged += 1;
                        continue;
                    }
                    let _guard = provisioner.lock(&[&record.app, &record.resource_type, &record.id]).await?;
                    // Re-read under the lock. A record that a SCIM write changed since this import
                    // began is left alone: the page may have been read before that write reached
                    // the target, and must not undo it (the next import sees the target as it is).
                    // Likewise one deleted or deprovisioned meanwhile stays as the client left it.
                    let Some(mut current) = store
                        .get(&record.app, &record.resource_type, &record.id)
                        .await?
                        .filter(|r| r.state == RecordState::Present && r.version == record.version)
                    else {
                        report.skipped += 1;
                        continue;
                    };
                    let mut merged = current.target_values();
                    if kind == ObjectModificationType::Update {
                        merged.extend(values);
                    } else {
                        merged = values;
                    }
                    let mut resource = current.resource.clone();
                    target.mapping.from_target(&mut resource, &merged, &shape, &ids);
                    let name = resource_name(&resource, binding);
                    if resource == current.resource && current.state == RecordState::Present {
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
                    let changed = changed_names(&current.target_values(), &merged);
                    current.set_target_values(&merged);
                    current.target.anchors = entry.anchors.clone();
                    current.target.dn = entry.dn.clone();
                    current.state = RecordState::Present;
                    current.version += 1;
                    current.modified = rfc3339(SystemTime::now());
                    match store.update_imported(&current).await {
                        Ok(()) => {
                            report.updated += 1;
                            logged(provisioner, &current, "import_update", changed).await;
                            learn(&mut ids, &current);
                            if shape.unresolved(&merged, &ids) {
                                unresolved.push(current.id.clone());
                            }
                        }
                        Err(crate::store::StoreError::Conflict) => report.skipped += 1,
                        Err(e) => return Err(e.into()),
                    }
                }
                None => {
                    let mut resource = json!({ "schemas": [binding.schema] });
                    target.mapping.from_target(&mut resource, &values, &shape, &ids);
                    let Some(name) = resource_name(&resource, binding) else {
                        report.skipped += 1;
                        continue;
                    };
                    let _guard = provisioner.lock(&[&binding.app, binding.resource_type, &name]).await?;
                    let at = rfc3339(SystemTime::now());
                    let mut record = Record {
                        app: binding.app.clone(),
                        resource_type: binding.resource_type.to_string(),
                        id: uuid::Uuid::new_v4().to_string(),
                        connector: connector.to_string(),
                        state: RecordState::Present,
                        user_name: name,
                        resource,
                        target: v1::Entry {
                            anchors: entry.anchors.clone(),
                            dn: entry.dn.clone(),
                            ..Default::default()
                        },
                        version: 1,
                        created: at.clone(),
                        modified: at,
                    };
                    record.set_target_values(&values);
                    match store.insert_imported(&record).await {
                        Ok(()) => {
                            report.added += 1;
                            let mut names: Vec<String> = values.keys().cloned().collect();
                            names.sort();
                            logged(provisioner, &record, "import_add", names).await;
                            learn(&mut ids, &record);
                            if shape.unresolved(&values, &ids) {
                                unresolved.push(record.id.clone());
                            }
                            // Only its anchor is kept (seen above): holding each new record
                            // for the rest of the import made memory grow with it (about
                            // 10 KB a record, 1 GB for 100,000).
                            added.insert(anchor);
                        }
                        // Another resource has this name (perhaps a pending write of it).
                        Err(crate::store::StoreError::Conflict) => report.skipped += 1,
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
        // A delta import commits each page's watermark once the page is stored; a full import
        // only the final one, so that an interrupted full import never passes for a base.
        if delta && !page.watermark.is_empty() {
            store.set_watermark(connector, &page.watermark).await?;
        }
        progress(&report);
    }
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
        let mut resource = current.resource.clone();
        target.mapping.from_target(&mut resource, &current.target_values(), &shape, &ids);
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
        // Objects gone from the target leave the connector space.
        for (anchor, record) in known {
            if seen.contains(&anchor) || record.state != RecordState::Present {
                continue;
            }
            let _guard = provisioner.lock(&[&record.app, &record.resource_type, &record.id]).await?;
            if let Some(current) = store.get(&record.app, &record.resource_type, &record.id).await?
                && current.state == RecordState::Present
                && current.version == record.version
                && anchor_text(&current.target.anchors).as_deref() == Some(anchor.as_str())
            {
                store.delete(&record.app, &record.resource_type, &record.id).await?;
                report.deleted += 1;
                logged(provisioner, &current, "import_delete", vec![]).await;
            }
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

/// Logs a change an import made to the connector space.
async fn logged(provisioner: &Provisioner, record: &Record, operation: &str, attributes: Vec<String>) {
    let row = crate::store::log::LogEntry {
        attributes,
        trace_id: crate::journal::current_trace_id(),
        ..crate::store::log::LogEntry::of(record, "import", operation, "applied")
    };
    provisioner.journal.record(row).await;
}

/// The names of the attributes whose values differ between two sets.
fn changed_names(before: &crate::mapping::TargetValues, after: &crate::mapping::TargetValues) -> Vec<String> {
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
