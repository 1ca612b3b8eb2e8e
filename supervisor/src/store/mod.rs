//! The connector space: what the supervisor knows of each target object (its SCIM id, the
//! connector's anchors, the attribute values last exported, the SCIM resource and its version).
//!
//! SCIM reads and filters are answered from here, never from the target. A record is written
//! `pending` before its export and made `present` after, so that a write whose outcome is unknown
//! can be reconciled instead of repeated.
//!
//! [`Engine`] is the only door to the data, with two implementations: [`sqlite`], one file in the
//! data directory (the embedded default, for one machine), and [`postgres`], a PostgreSQL schema
//! that several active supervisors share. What one process guarantees with locks in memory, the
//! PostgreSQL engine also guarantees across processes: writes of one object serialised by
//! advisory locks ([`Engine::lock`]), one import of a connector at a time ([`Engine::lead`]),
//! names unique by the database's own index, and no cache that another node's write could make
//! stale.

pub mod log;
pub mod postgres;
pub mod sqlite;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use ecma_proto::v1;
use serde_json::Value;

use crate::mapping::TargetValues;

pub use sqlite::DEFAULT_CACHE_RECORDS;

/// A store failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another resource of the app already has this userName.
    #[error("userName is already taken")]
    Conflict,
    #[error("connector space: {0}")]
    Database(#[from] rusqlite::Error),
    #[error("connector space: {0}")]
    Postgres(#[from] sqlx::Error),
    #[error("connector space record is corrupt: {0}")]
    Corrupt(String),
    /// The store cannot take this write or read now (disk full, an I/O error, a lock held too
    /// long): transient; the store is reported degraded until a write goes through again.
    #[error("the connector space cannot be used now: {0}")]
    Unavailable(String),
    /// The store file is damaged (SQLite found a malformed page or no database at all): the store
    /// is reported failed; restore a backup or rebuild it (`supervisor store rebuild`).
    #[error("the connector space is damaged: {0}")]
    Damaged(String),
    /// The store was closed (the supervisor is stopping) or its writer thread is gone.
    #[error("the connector space is closed")]
    Closed,
}

/// The connector space's health, as `/readyz`, `/admin/connectors` and the metrics show it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "state", content = "reason", rename_all = "lowercase")]
pub enum Health {
    Ready,
    /// Writes fail for a reason that passes (disk full, I/O errors): SCIM answers 503 with
    /// `Retry-After`; back to ready at the first write (or probe) that goes through.
    Degraded(String),
    /// The file is damaged: nothing is served from it until an operator restores or rebuilds it.
    Failed(String),
}

impl Health {
    pub fn name(&self) -> &'static str {
        match self {
            Health::Ready => "ready",
            Health::Degraded(_) => "degraded",
            Health::Failed(_) => "failed",
        }
    }
}

impl Health {
    /// Notes what an operation's outcome says about the store: a transient failure makes it
    /// degraded, damage failed, and a write that went through (`wrote`) ready again.
    pub(crate) fn note<T>(health: &std::sync::Mutex<Health>, result: &Result<T, StoreError>, wrote: bool) {
        let mut health = health.lock().unwrap_or_else(|e| e.into_inner());
        match (result, &*health) {
            (Err(StoreError::Damaged(reason)), _) => {
                if !matches!(*health, Health::Failed(_)) {
                    tracing::error!(%reason, "the connector space is damaged; store failed");
                    metrics::counter!("connector_space_errors_total", "kind" => "damaged").increment(1);
                }
                *health = Health::Failed(reason.clone());
            }
            (Err(StoreError::Unavailable(reason)), Health::Ready | Health::Degraded(_)) => {
                if *health == Health::Ready {
                    tracing::warn!(%reason, "the connector space cannot be used now; store degraded");
                }
                metrics::counter!("connector_space_errors_total", "kind" => "unavailable").increment(1);
                *health = Health::Degraded(reason.clone());
            }
            (Ok(_), Health::Degraded(_)) if wrote => {
                tracing::info!("the connector space takes writes again; store ready");
                *health = Health::Ready;
            }
            _ => {}
        }
    }
}

/// What an acknowledged write of the SQLite connector space survives (`[store] durability`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Durability {
    /// WAL with `synchronous = NORMAL`: a crash of the process loses no commit; a crash of the
    /// machine may lose the last ones (the file stays consistent).
    #[default]
    ProcessCrash,
    /// WAL with `synchronous = FULL`: each commit is synced to disk before it returns.
    PowerLoss,
}

/// Whether the target is known to hold the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordState {
    /// Written before an ADD whose outcome is not known yet.
    Pending,
    /// Confirmed by the connector.
    Present,
    /// Deleted from SCIM while its target object was kept (deprovisioned by setting values, or
    /// left alone): not served, and taken up again by a create with the same name.
    Deprovisioned,
}

impl RecordState {
    /// The state a stored name stands for.
    pub fn parse(text: &str) -> Result<Self, StoreError> {
        match text {
            "pending" => Ok(RecordState::Pending),
            "present" => Ok(RecordState::Present),
            "deprovisioned" => Ok(RecordState::Deprovisioned),
            other => Err(StoreError::Corrupt(format!("state {other:?}"))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RecordState::Pending => "pending",
            RecordState::Present => "present",
            RecordState::Deprovisioned => "deprovisioned",
        }
    }
}

/// One object of the connector space.
#[derive(Debug, Clone)]
pub struct Record {
    pub app: String,
    pub resource_type: String,
    pub id: String,
    pub connector: String,
    pub state: RecordState,
    /// Case-insensitively unique per app and resource type.
    pub user_name: String,
    /// The SCIM resource as stored (without `id` and `meta`, which are derived).
    pub resource: Value,
    /// The target object: anchors, DN and the attribute values last exported.
    pub target: v1::Entry,
    pub version: i64,
    pub created: String,
    pub modified: String,
}

impl Record {
    /// The attribute values last exported, by name.
    pub fn target_values(&self) -> TargetValues {
        entry_values(&self.target)
    }

    /// Records `values` as the exported attribute values.
    pub fn set_target_values(&mut self, values: &TargetValues) {
        self.target.attributes = values
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(name, v)| v1::AttributeValues { name: name.clone(), values: v.clone() })
            .collect();
    }

    /// What a reference to this object carries: its DN when it has one, else its anchor.
    pub fn reference(&self) -> Option<v1::Value> {
        Some(v1::Value { kind: Some(v1::value::Kind::ReferenceValue(reference_text(&self.target)?)) })
    }
}

/// What the store indexes a record by besides its id and name: the text of its first anchor
/// (imports find it by that) and its reference text (what a reference to it carries; imports
/// resolve references by that); empty when it has none.
pub(crate) fn index_keys(target: &v1::Entry) -> (String, String) {
    (anchor_text(&target.anchors).unwrap_or_default(), reference_text(target).unwrap_or_default())
}

/// What a reference to a target object carries: its DN when it has one, else its anchor.
pub fn reference_text(target: &v1::Entry) -> Option<String> {
    if target.dn.is_empty() { anchor_text(&target.anchors) } else { Some(target.dn.clone()) }
}

/// What an import compares of a known object: found by its anchor, read without its SCIM
/// resource (most imported objects are unchanged, and decoding resources was most of their cost).
#[derive(Debug, Clone)]
pub struct Known {
    pub resource_type: String,
    pub id: String,
    pub anchor: String,
    pub state: RecordState,
    pub version: i64,
    /// Anchors, DN and the attribute values last exported or imported.
    pub target: v1::Entry,
}

/// A record as a full import's final sweep lists it (to remove those the target no longer has).
#[derive(Debug, Clone)]
pub struct Listed {
    pub id: String,
    /// Empty for a record that has no anchor yet (a create whose outcome is not known).
    pub anchor: String,
    pub state: RecordState,
    pub version: i64,
}

/// The text of the first anchor (what imports and the provisioning log know an object by).
pub fn anchor_text(anchors: &[v1::Anchor]) -> Option<String> {
    anchors.first()?.value.as_ref()?.as_text()
}

/// An entry's attribute values, by name.
pub fn entry_values(entry: &v1::Entry) -> TargetValues {
    entry.attributes.iter().map(|a| (a.name.clone(), a.values.clone())).collect()
}

/// A name as uniqueness compares it: Unicode default case folding (full folding, Unicode's
/// CaseFolding.txt, status C and F; `ß` and `ss` are one name, `É` and `é` too), no normalisation.
pub fn fold(name: &str) -> String {
    caseless::default_case_fold_str(name)
}

/// A row of the objects table, as each engine reads its columns.
pub(crate) trait StoredRow {
    fn text(&self, column: &str) -> Result<String, StoreError>;
    fn integer(&self, column: &str) -> Result<i64, StoreError>;
    fn bytes(&self, column: &str) -> Result<Vec<u8>, StoreError>;
}

/// The record a row holds (the state by name, the resource as JSON text, the target entry as
/// protobuf).
pub(crate) fn record_of(row: &impl StoredRow) -> Result<Record, StoreError> {
    use prost::Message;
    let state = RecordState::parse(&row.text("state")?)?;
    let resource =
        serde_json::from_str(&row.text("resource")?).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let target =
        v1::Entry::decode(row.bytes("target")?.as_slice()).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    Ok(Record {
        app: row.text("app")?,
        resource_type: row.text("resource_type")?,
        id: row.text("id")?,
        connector: row.text("connector")?,
        state,
        user_name: row.text("user_name")?,
        resource,
        target,
        version: row.integer("version")?,
        created: row.text("created")?,
        modified: row.text("modified")?,
    })
}

/// Something held until dropped: an object's lock, or an import's lead.
pub struct Held(#[allow(dead_code)] Option<Box<dyn Send + Sync>>);

impl Held {
    /// Nothing to hold: the process's own locks suffice (one process per store).
    pub fn local() -> Self {
        Held(None)
    }

    pub(crate) fn new(inner: impl Send + Sync + 'static) -> Self {
        Held(Some(Box::new(inner)))
    }
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "Held(store)" } else { "Held(local)" })
    }
}

/// One import run, as the store's bookkeeping holds it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ImportRun {
    pub id: i64,
    pub connector: String,
    pub node: String,
    pub import_type: String,
    /// Unix time in milliseconds.
    pub started_ms: i64,
    pub finished_ms: Option<i64>,
    /// `ok`, `failed: <reason>`, `abandoned` (its node died), or none while it runs.
    pub outcome: Option<String>,
}

/// The key of a lock: a stable 64-bit digest of its parts (the same on every node and every
/// build), names folded as uniqueness compares them.
pub fn lock_key(parts: &[&str]) -> i64 {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    for part in parts {
        context.update(fold(part).as_bytes());
        context.update(&[0]);
    }
    let digest = context.finish();
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest.as_ref()[..8]);
    i64::from_be_bytes(bytes)
}

/// A new SCIM id: a UUID of version 7, whose first 48 bits are the time in milliseconds, so
/// that new records (and their provisioning log rows) go to the end of the indexes on the id
/// rather than to a random page of each (version 4): a full import of 100,000 new objects took
/// 26 instead of 40 µs of supervisor CPU an object (docs/BENCHMARKS.md). An id tells when its
/// resource was created, as `meta.created` does to any client that may read it.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The connector space's operations: records, names, states, watermarks, import bookkeeping
/// and the locks that serialise writes.
#[async_trait::async_trait]
pub trait Engine: Send + Sync + std::fmt::Debug + 'static {
    /// `sqlite` or `postgresql`.
    fn kind(&self) -> &'static str;
    /// The store's health.
    fn health(&self) -> Health;
    /// The largest the write-ahead log has been seen at, in bytes (SQLite only).
    fn wal_peak_bytes(&self) -> u64 {
        0
    }
    /// Bytes of the store on disk (SQLite only).
    fn file_bytes(&self) -> Option<u64> {
        None
    }

    /// The present record with this id in any resource type of the app (for references).
    async fn find(&self, app: &str, id: &str) -> Result<Option<Record>, StoreError>;
    /// The record with this id, whatever its state.
    async fn get(&self, app: &str, resource_type: &str, id: &str) -> Result<Option<Record>, StoreError>;
    /// The record with this userName or displayName (compared as [`fold`] does), whatever its
    /// state.
    async fn by_user_name(
        &self,
        app: &str,
        resource_type: &str,
        name: &str,
    ) -> Result<Option<Record>, StoreError>;
    /// Every present record of an app's resource type, in creation order.
    async fn list(&self, app: &str, resource_type: &str) -> Result<Vec<Record>, StoreError>;
    /// Every present record of an app.
    async fn present(&self, app: &str) -> Result<Vec<Record>, StoreError>;
    /// Every record, whatever its app and state (for `store migrate`).
    async fn all(&self) -> Result<Vec<Record>, StoreError>;
    /// Inserts a new record; [`StoreError::Conflict`] when its name is taken.
    async fn insert(&self, record: &Record) -> Result<(), StoreError>;
    /// Replaces a record (or inserts it); [`StoreError::Conflict`] when its new name belongs to
    /// another record.
    async fn update(&self, record: &Record) -> Result<(), StoreError>;
    /// [`Engine::insert`] for an import: the record is not put in a read cache (an import writes
    /// every object once, and keeping them all held the connector space in memory).
    async fn insert_imported(&self, record: &Record) -> Result<(), StoreError> {
        self.insert(record).await
    }
    /// [`Engine::update`] for an import, likewise.
    async fn update_imported(&self, record: &Record) -> Result<(), StoreError> {
        self.update(record).await
    }
    /// Removes a record.
    async fn delete(&self, app: &str, resource_type: &str, id: &str) -> Result<(), StoreError>;
    /// Number of records.
    async fn count(&self) -> Result<i64, StoreError>;
    /// The records of a connector with these anchors (an import's page), whatever their state.
    async fn by_anchors(&self, connector: &str, anchors: &[String]) -> Result<Vec<Known>, StoreError>;
    /// Reference text (DN or anchor) → SCIM id, for the present records of an app that
    /// `texts` name.
    async fn ids_of(&self, app: &str, texts: &[String]) -> Result<HashMap<String, String>, StoreError>;
    /// Inserts an import's new records in one transaction (none kept in a read cache), with
    /// their provisioning log rows (`log`: empty, or one row per record, stored only for a record
    /// that went in); for each record, whether it went in (`false`: its name is taken, by a SCIM
    /// write perhaps).
    async fn insert_imported_all(
        &self,
        records: &[Record],
        log: Vec<log::LogEntry>,
    ) -> Result<Vec<bool>, StoreError>;
    /// Up to `limit` records of a connector's app and resource type whose id sorts after
    /// `after`, by id (a full import's sweep, in bounded memory).
    async fn listed(
        &self,
        app: &str,
        resource_type: &str,
        connector: &str,
        after: &str,
        limit: usize,
    ) -> Result<Vec<Listed>, StoreError>;
    /// The mark of the mapping that a connector's last full import compared every object with.
    async fn import_mark(&self, connector: &str) -> Result<Option<String>, StoreError>;
    /// Records that mark.
    async fn set_import_mark(&self, connector: &str, mark: &str) -> Result<(), StoreError>;
    /// Up to `limit` records of an app's resource type, whatever their state, whose id is
    /// `part` or whose name holds it (case-insensitively; every record when it is empty), by
    /// name: the console's connector-space browser.
    async fn search(
        &self,
        app: &str,
        resource_type: &str,
        part: &str,
        limit: usize,
    ) -> Result<Vec<Record>, StoreError>;
    /// The pending records of a connector: writes whose outcome is not known yet.
    async fn pending(&self, connector: &str) -> Result<Vec<Record>, StoreError>;
    /// How many writes of a connector have an unknown outcome.
    async fn count_pending(&self, connector: &str) -> Result<i64, StoreError>;

    /// The import watermark last committed for a connector.
    async fn watermark(&self, connector: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Commits an import watermark (call only once the entries it covers are stored).
    async fn set_watermark(&self, connector: &str, watermark: &[u8]) -> Result<(), StoreError>;
    /// Every committed watermark (for `store migrate`).
    async fn watermarks(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError>;

    /// Takes the locks of `keys` (see [`lock_key`]) for this process, waiting for any other
    /// process that holds one; released when the returned value is dropped. The caller holds the
    /// process's own lock of each key already, and passes the keys sorted.
    async fn lock(&self, keys: &[i64]) -> Result<Held, StoreError> {
        let _ = keys;
        Ok(Held::local())
    }
    /// Takes the lead of `key` if no other process has it (`None` if one has), until dropped.
    async fn lead(&self, key: i64) -> Result<Option<Held>, StoreError> {
        let _ = key;
        Ok(Some(Held::local()))
    }

    /// Records that an import of `connector` starts on `node` (runs of it that never finished
    /// are marked abandoned first: the caller holds the connector's lead); returns its id.
    async fn import_started(&self, connector: &str, node: &str, import_type: &str)
    -> Result<i64, StoreError>;
    /// Records how an import ended.
    async fn import_finished(&self, run: i64, outcome: &str) -> Result<(), StoreError>;
    /// A connector's import runs, oldest first.
    async fn imports(&self, connector: &str) -> Result<Vec<ImportRun>, StoreError>;

    /// Sets what an acknowledged write survives (SQLite; PostgreSQL's is the server's).
    fn set_durability(&self, durability: Durability) -> Result<(), StoreError> {
        let _ = durability;
        Ok(())
    }

    /// Appends provisioning log rows (their `seq` is assigned), in one transaction.
    async fn log_append(&self, entries: Vec<log::LogEntry>) -> Result<(), StoreError>;
    /// The provisioning log rows `filter` selects.
    async fn log_query(&self, filter: &log::LogFilter) -> Result<Vec<log::LogEntry>, StoreError>;
    /// Removes the rows older than `before_ms`, then all but the newest `keep_rows`; returns
    /// how many went.
    async fn log_prune(&self, before_ms: Option<i64>, keep_rows: Option<i64>) -> Result<u64, StoreError>;

    /// Closes the store (the supervisor is stopping).
    async fn close(&self);
}

/// The connector space, as the rest of the supervisor holds it: a cheap handle on one
/// [`Engine`].
#[derive(Debug, Clone)]
pub struct Store {
    engine: Arc<dyn Engine>,
}

impl std::ops::Deref for Store {
    type Target = dyn Engine;

    fn deref(&self) -> &Self::Target {
        &*self.engine
    }
}

/// Where the connector space is.
#[derive(Debug, Clone)]
pub enum Location {
    /// A SQLite file.
    Sqlite(std::path::PathBuf),
    /// A PostgreSQL database.
    Postgres(postgres::Settings),
}

impl Location {
    /// A path or a `postgres://` URL, as `store migrate` takes them (the password of a URL
    /// without one from `STORE_PASSWORD`).
    pub fn parse(text: &str) -> Self {
        if postgres::is_url(text) {
            Location::Postgres(postgres::Settings {
                url: text.to_string(),
                password: std::env::var("STORE_PASSWORD").ok(),
                ..postgres::Settings::default()
            })
        } else {
            Location::Sqlite(text.into())
        }
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Sqlite(path) => write!(f, "{}", path.display()),
            Location::Postgres(settings) => f.write_str(&postgres::redacted(&settings.url)),
        }
    }
}

impl Store {
    /// Wraps an engine.
    pub fn new(engine: impl Engine) -> Self {
        Self { engine: Arc::new(engine) }
    }

    /// Opens (and creates) a SQLite store file; refuses a damaged one (SQLite's `quick_check`).
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        Ok(Self::new(sqlite::SqliteStore::open(path).await?))
    }

    /// [`Store::open`], with a read cache of at most `cache_records` records.
    pub async fn open_with(path: &Path, cache_records: usize) -> Result<Self, StoreError> {
        Ok(Self::new(sqlite::SqliteStore::open_with(path, cache_records).await?))
    }

    /// Opens the store at `location` (PostgreSQL: connects, and creates or migrates its schema).
    pub async fn at(location: &Location, cache_records: usize) -> Result<Self, StoreError> {
        match location {
            Location::Sqlite(path) => Self::open_with(path, cache_records).await,
            Location::Postgres(settings) => Ok(Self::new(postgres::PgStore::connect(settings).await?)),
        }
    }

    /// Checks a SQLite store file's integrity without serving it; for `supervisor store check`.
    pub fn check_file(path: &Path, full: bool) -> Result<(), StoreError> {
        sqlite::SqliteStore::check_file(path, full)
    }
}
