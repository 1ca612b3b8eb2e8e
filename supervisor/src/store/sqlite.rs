//! The embedded engine of the connector space: one SQLite file in the data directory (WAL
//! mode), for one supervisor on one machine.
//!
//! One connection, behind a mutex, does every write and every point read (by id, by name) on the
//! calling thread: each is an indexed statement of a few microseconds, less than a hand-off to
//! another thread, and a connection that made the last write keeps its page cache, where a
//! second connection would drop its own at every read after another connection's write (SQLite
//! checks the WAL at each transaction). No write waits on SQLite's busy lock. Writes are group
//! committed without a thread of their own (flat combining): a write is queued, and run at once
//! by its caller when the connection is free; a caller that finds it taken does not block its
//! thread but awaits its outcome, and whoever holds the connection runs the writes queued
//! meanwhile when it lets go, all in one transaction, each still its own statement (a
//! unique-name clash fails that write alone). Scans (lists, a connector's records, counts) run
//! on tokio's blocking pool on read connections of their own, so that a long scan never holds
//! up the writes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use prost::Message;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use super::log::{self, LogEntry, LogFilter};
use super::{Engine, Health, ImportRun, Known, Listed, Record, RecordState, StoreError, fold};

/// What a SQLite error says about the store: transient trouble, damage, or neither (a bug or a
/// constraint, left as it is).
fn classify(error: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode as C;
    match error.sqlite_error_code() {
        Some(C::DiskFull) => StoreError::Unavailable(format!("the disk is full ({error})")),
        Some(
            C::SystemIoFailure
            | C::DatabaseBusy
            | C::DatabaseLocked
            | C::OutOfMemory
            | C::CannotOpen
            | C::ReadOnly,
        ) => StoreError::Unavailable(error.to_string()),
        Some(C::DatabaseCorrupt | C::NotADatabase) => StoreError::Damaged(format!(
            "{error}: restore connector-space.db from a backup, or rebuild it from the targets with \
             `supervisor store rebuild` (see docs/operations.md)"
        )),
        _ => StoreError::Database(error),
    }
}

/// The embedded connector space.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// The database file (its size, with the WAL beside it, is a metric).
    path: PathBuf,
    /// The connection for writes and point reads; `None` once closed.
    main: Mutex<Option<Connection>>,
    /// Idle read connections for scans.
    readers: Mutex<Vec<Connection>>,
    cache: RwLock<Cache>,
    /// Bumped around every write, so that a read that overlapped a write does not fill the cache
    /// with what it read.
    generation: AtomicU64,
    health: Mutex<Health>,
    /// The largest the WAL file was seen at (bytes), for the metrics and the soak benchmark.
    wal_peak: AtomicU64,
    /// Writes waiting for the main connection: run by whoever holds it when it lets go.
    queue: Mutex<Vec<Queued>>,
    /// Writes committed in a group of several so far.
    grouped: AtomicU64,
}

/// A write waiting for the main connection, and where its outcome goes.
struct Queued {
    op: Op,
    done: tokio::sync::oneshot::Sender<Result<(), StoreError>>,
}

impl std::fmt::Debug for Queued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Queued")
    }
}

/// The main connection, held. Letting it go runs the writes queued meanwhile (their callers
/// await them rather than block their threads on the mutex).
struct Main<'a> {
    inner: &'a Inner,
    guard: Option<std::sync::MutexGuard<'a, Option<Connection>>>,
}

impl std::ops::Deref for Main<'_> {
    type Target = Option<Connection>;

    fn deref(&self) -> &Option<Connection> {
        self.guard.as_deref().unwrap_or(&None)
    }
}

impl Drop for Main<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        if !lock(&self.inner.queue).is_empty() {
            self.inner.run_queued();
        }
    }
}

impl Inner {
    /// The main connection, waiting for it.
    fn main(&self) -> Main<'_> {
        Main { inner: self, guard: Some(lock(&self.main)) }
    }

    /// The main connection if no one holds it.
    fn try_main(&self) -> Option<Main<'_>> {
        let guard = match self.main.try_lock() {
            Ok(guard) => guard,
            Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return None,
        };
        Some(Main { inner: self, guard: Some(guard) })
    }

    /// Runs the queued writes while the main connection is free. Returns when the queue is
    /// empty or someone else holds the connection: every holder looks at the queue after
    /// letting the connection go, and a write is queued before its caller tries for the
    /// connection, so no queued write is left behind.
    fn run_queued(&self) {
        loop {
            let guard = match self.main.try_lock() {
                Ok(guard) => guard,
                Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) => return,
            };
            let batch = std::mem::take(&mut *lock(&self.queue));
            if !batch.is_empty() {
                self.run(guard.as_ref(), batch);
            }
            drop(guard);
            if lock(&self.queue).is_empty() {
                return;
            }
        }
    }

    /// Runs queued writes on the main connection (one transaction for several), tells the
    /// cache, and sends each its outcome.
    fn run(&self, connection: Option<&Connection>, batch: Vec<Queued>) {
        let Some(connection) = connection else {
            for queued in batch {
                let _ = queued.done.send(Err(StoreError::Closed));
            }
            return;
        };
        self.generation.fetch_add(1, Ordering::SeqCst);
        let together = if batch.len() > 1 { together(connection, &batch) } else { None };
        if together.is_some() {
            self.grouped.fetch_add(batch.len() as u64, Ordering::Relaxed);
        }
        let results =
            together.unwrap_or_else(|| batch.iter().map(|queued| apply(connection, &queued.op)).collect());
        {
            let mut cache = write(&self.cache);
            for (queued, result) in batch.iter().zip(&results) {
                match (&queued.op, result) {
                    (Op::Put { record, cached, .. }, Ok(())) => {
                        cache.forget(&record.app, &record.resource_type, &record.id, Some(&record.user_name));
                        if *cached {
                            cache.put(record);
                        }
                    }
                    (Op::Put { record, .. }, Err(_)) => {
                        cache.forget(&record.app, &record.resource_type, &record.id, Some(&record.user_name))
                    }
                    (Op::Delete { app, resource_type, id }, _) => cache.forget(app, resource_type, id, None),
                    (Op::Watermark { .. }, _) => {}
                }
            }
        }
        self.generation.fetch_add(1, Ordering::SeqCst);
        for (queued, result) in batch.into_iter().zip(results) {
            let _ = queued.done.send(self.note(result, true));
        }
    }

    /// Notes what an operation's outcome says about the store's health: a transient failure
    /// makes it degraded, damage failed, and a write that went through ready again.
    fn note<T>(&self, result: Result<T, StoreError>, wrote: bool) -> Result<T, StoreError> {
        let result = result.map_err(|e| match e {
            StoreError::Database(e) => classify(e),
            other => other,
        });
        Health::note(&self.health, &result, wrote);
        result
    }
}

/// Read connections kept open beyond this many are closed after use.
const IDLE_READERS: usize = 8;

/// One write.
enum Op {
    /// Inserts a record (`upsert`: or replaces the one with its id).
    Put {
        record: Box<Record>,
        upsert: bool,
        /// Whether the read cache keeps it (not for an import's writes).
        cached: bool,
    },
    Delete {
        app: String,
        resource_type: String,
        id: String,
    },
    Watermark {
        connector: String,
        watermark: Vec<u8>,
    },
}

/// Records read by id or name, kept for the next read (SCIM reads are most of the traffic).
/// Filled on reads and by successful writes, emptied of what a failed write or a delete touches;
/// the database stays the truth.
#[derive(Debug, Default)]
struct Cache {
    by_id: HashMap<(String, String, String), Arc<Record>>,
    /// (app, resource type, name folded by [`fold`]) → id.
    by_name: HashMap<(String, String, String), String>,
    /// Beyond this many cached records the cache starts over (a bound, not an LRU).
    limit: usize,
}

// The store's locks guard one map operation or one statement at a time, so a panic elsewhere
// cannot leave their contents half-changed: a poisoned lock is taken as it is, rather than
// failing every later request.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

/// The read cache's bound by default, in records (`server.store_cache_records`). A record takes
/// about 4.5 KiB there (the soak benchmark: heap per user): some 450 MB at most, whatever the
/// size of the connector space. A read the cache misses is one indexed point read: the
/// 100,000-user read benchmark answers 63-66% of its HTTP ceiling with every user cached, 46-47%
/// with half of them.
pub const DEFAULT_CACHE_RECORDS: usize = 100_000;

fn id_key(app: &str, resource_type: &str, id: &str) -> (String, String, String) {
    (app.to_string(), resource_type.to_string(), id.to_string())
}

fn name_key(app: &str, resource_type: &str, name: &str) -> (String, String, String) {
    (app.to_string(), resource_type.to_string(), fold(name))
}

impl Cache {
    fn get(&self, app: &str, resource_type: &str, id: &str) -> Option<Record> {
        self.by_id.get(&id_key(app, resource_type, id)).map(|r| Record::clone(r))
    }

    fn by_name(&self, app: &str, resource_type: &str, name: &str) -> Option<Record> {
        let id = self.by_name.get(&name_key(app, resource_type, name))?;
        self.get(app, resource_type, id)
    }

    fn put(&mut self, record: &Record) {
        if self.by_id.len() >= self.limit.max(1) {
            self.by_id.clear();
            self.by_name.clear();
        }
        self.by_name
            .insert(name_key(&record.app, &record.resource_type, &record.user_name), record.id.clone());
        self.by_id.insert(id_key(&record.app, &record.resource_type, &record.id), Arc::new(record.clone()));
    }

    /// Forgets the record with this id, and whatever a name maps to.
    fn forget(&mut self, app: &str, resource_type: &str, id: &str, name: Option<&str>) {
        if let Some(old) = self.by_id.remove(&id_key(app, resource_type, id)) {
            self.by_name.remove(&name_key(app, resource_type, &old.user_name));
        }
        if let Some(name) = name {
            self.by_name.remove(&name_key(app, resource_type, name));
        }
    }
}

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS objects (
        app TEXT NOT NULL,
        resource_type TEXT NOT NULL,
        id TEXT NOT NULL,
        connector TEXT NOT NULL,
        state TEXT NOT NULL,
        user_name TEXT NOT NULL COLLATE NOCASE,
        resource TEXT NOT NULL,
        target BLOB NOT NULL,
        version INTEGER NOT NULL,
        created TEXT NOT NULL,
        modified TEXT NOT NULL,
        PRIMARY KEY (app, resource_type, id)
    );
    CREATE TABLE IF NOT EXISTS watermarks (connector TEXT PRIMARY KEY, watermark BLOB NOT NULL);
    CREATE TABLE IF NOT EXISTS import_marks (connector TEXT PRIMARY KEY, mark TEXT NOT NULL);
    CREATE TABLE IF NOT EXISTS probe (id INTEGER PRIMARY KEY, at TEXT NOT NULL);
    CREATE TABLE IF NOT EXISTS imports (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        connector TEXT NOT NULL,
        node TEXT NOT NULL,
        import_type TEXT NOT NULL,
        started_ms INTEGER NOT NULL,
        finished_ms INTEGER,
        outcome TEXT
    );
    CREATE TABLE IF NOT EXISTS provisioning_log (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        at_ms INTEGER NOT NULL,
        node TEXT NOT NULL,
        source TEXT NOT NULL,
        app TEXT NOT NULL,
        resource_type TEXT NOT NULL,
        connector TEXT NOT NULL,
        operation TEXT NOT NULL,
        scim_id TEXT NOT NULL,
        name TEXT NOT NULL,
        anchor TEXT NOT NULL,
        dn TEXT NOT NULL,
        attributes TEXT NOT NULL,
        outcome TEXT NOT NULL,
        error_kind TEXT NOT NULL,
        detail TEXT NOT NULL,
        duration_ms REAL NOT NULL,
        trace_id TEXT NOT NULL
    );
    CREATE INDEX IF NOT EXISTS provisioning_log_by_time ON provisioning_log (at_ms);
    CREATE INDEX IF NOT EXISTS provisioning_log_by_id ON provisioning_log (scim_id);
";

/// The schema version this build knows ([`migrate`] brings older files to it).
const SCHEMA_VERSION: i64 = 2;

/// The indexes an import looks a page's objects (and their references) up by: only the rows that
/// have an anchor, and a reference text. (A query must say `anchor <> ''` for SQLite to use them.)
const ANCHOR_INDEXES: &str = "
    CREATE INDEX IF NOT EXISTS objects_anchored ON objects (connector, anchor) WHERE anchor <> '';
    CREATE INDEX IF NOT EXISTS objects_referenced ON objects (app, reference) WHERE reference <> '';";

/// An import's lookup of a page's objects by anchor (through `objects_anchored`).
const BY_ANCHORS: &str = "SELECT resource_type, id, anchor, state, version, target FROM objects \
    WHERE connector = ?1 AND anchor <> '' AND anchor IN (SELECT value FROM json_each(?2))";

/// An import's lookup of the objects a page's references name (through `objects_referenced`).
const IDS_OF: &str = "SELECT reference, id FROM objects WHERE app = ?1 AND state = 'present' \
    AND reference <> '' AND reference IN (SELECT value FROM json_each(?2))";

/// Brings the store file to [`SCHEMA_VERSION`]; refuses a file written by a newer build.
fn migrate(connection: &Connection) -> Result<(), StoreError> {
    let version: i64 = connection.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::Corrupt(format!(
            "the connector space has schema version {version}, newer than this supervisor knows \
             ({SCHEMA_VERSION}): run the newer supervisor, or restore a backup made for this one"
        )));
    }
    if version < 1 {
        // Version 1: names unique under Unicode case folding (was ASCII-only, SQLite's NOCASE).
        let transaction = connection.unchecked_transaction()?;
        let has_key = transaction
            .prepare("SELECT 1 FROM pragma_table_info('objects') WHERE name = 'name_key'")?
            .exists([])?;
        // Nullable: a row written by an earlier build (after a rollback to it) has none, clashes
        // with nothing in the unique index, and is folded at the next open (below).
        if !has_key {
            transaction.execute_batch("ALTER TABLE objects ADD COLUMN name_key TEXT")?;
        }
        fold_missing_names(&transaction)?;
        transaction.execute_batch("DROP INDEX IF EXISTS objects_by_name")?;
        if let Err(e) = transaction.execute_batch(
            "CREATE UNIQUE INDEX objects_by_name_key ON objects (app, resource_type, name_key)",
        ) {
            return Err(StoreError::Corrupt(format!(
                "names that differ only in case (under Unicode case folding) are in the connector \
                 space twice ({e}); rename one of each pair in the target and run a full import with \
                 the previous version, then start this one"
            )));
        }
        transaction.execute_batch("PRAGMA user_version = 1")?;
        transaction.commit()?;
    }
    if version < 2 {
        // Version 2: each record's anchor and reference text, indexed, so that an import looks
        // up a page's objects (and their references) rather than reading the connector space.
        let transaction = connection.unchecked_transaction()?;
        let has_anchor = transaction
            .prepare("SELECT 1 FROM pragma_table_info('objects') WHERE name = 'anchor'")?
            .exists([])?;
        if !has_anchor {
            transaction.execute_batch(
                "ALTER TABLE objects ADD COLUMN anchor TEXT; ALTER TABLE objects ADD COLUMN reference TEXT;",
            )?;
        }
        transaction.execute_batch("PRAGMA user_version = 2;")?;
        transaction.commit()?;
    }
    // The two indexes as version 2 first made them held every row, a pending create's too (its
    // anchor and reference are empty until the target answers): now they hold only the rows that
    // have them, so that each of a create's two writes touches two B-trees fewer. (Under new
    // names: a build that knows only version 2 makes its own again, and this one drops them.)
    connection.execute_batch(&format!(
        "DROP INDEX IF EXISTS objects_by_anchor; DROP INDEX IF EXISTS objects_by_reference; {ANCHOR_INDEXES}"
    ))?;
    // Rows an earlier build wrote since (it does not know the columns), found through partial
    // indexes that hold only those rows: no scan of the table at every start.
    connection.execute_batch(
        "CREATE INDEX IF NOT EXISTS objects_unfolded ON objects (app) WHERE name_key IS NULL;
         CREATE INDEX IF NOT EXISTS objects_unkeyed ON objects (connector) WHERE anchor IS NULL;",
    )?;
    fold_missing_names(connection)?;
    fill_missing_keys(connection)?;
    Ok(())
}

/// Sets `anchor` and `reference` where they are missing.
fn fill_missing_keys(connection: &Connection) -> Result<(), StoreError> {
    let rows: Vec<(i64, Vec<u8>)> = connection
        .prepare("SELECT rowid, target FROM objects WHERE anchor IS NULL")?
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<Result<_, _>>()?;
    for (rowid, target) in rows {
        let target = ecma_proto::v1::Entry::decode(target.as_slice())
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let (anchor, reference) = super::index_keys(&target);
        connection
            .prepare_cached("UPDATE objects SET anchor = ?1, reference = ?2 WHERE rowid = ?3")?
            .execute(params![anchor, reference, rowid])?;
    }
    Ok(())
}

/// Sets `name_key` where it is missing.
fn fold_missing_names(connection: &Connection) -> Result<(), StoreError> {
    let names: Vec<(i64, String)> = connection
        .prepare("SELECT rowid, user_name FROM objects WHERE name_key IS NULL")?
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<Result<_, _>>()?;
    for (rowid, name) in names {
        let updated = connection
            .execute("UPDATE objects SET name_key = ?1 WHERE rowid = ?2", params![fold(&name), rowid]);
        if let Err(e) = updated {
            return Err(StoreError::Damaged(format!(
                "names that differ only in case (under Unicode case folding) are in the connector \
                 space twice ({e}, at {name:?}); rename one of each pair in the target and rebuild \
                 the connector space (supervisor store rebuild)"
            )));
        }
    }
    Ok(())
}

const COLUMNS: &str =
    "app, resource_type, id, connector, state, user_name, resource, target, version, created, modified";

const INSERT: &str = "INSERT INTO objects (app, resource_type, id, connector, state, user_name, resource, \
     target, version, created, modified, name_key, anchor, reference) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)";

/// An upsert on the id: unlike `REPLACE`, a clash on the name index fails instead of deleting the
/// other record.
const UPSERT: &str = "INSERT INTO objects (app, resource_type, id, connector, state, user_name, resource, \
     target, version, created, modified, name_key, anchor, reference) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14) \
     ON CONFLICT (app, resource_type, id) DO UPDATE SET connector = excluded.connector, \
     state = excluded.state, user_name = excluded.user_name, name_key = excluded.name_key, \
     resource = excluded.resource, \
     target = excluded.target, version = excluded.version, created = excluded.created, \
     modified = excluded.modified, anchor = excluded.anchor, reference = excluded.reference";

/// How a connection waits for a lock another holds (the checkpointer's, while a restarting
/// checkpoint copies the WAL): it tries again every 100 µs for the first 20 ms, then every
/// millisecond, and gives up after about 5 s. SQLite's own handler (`busy_timeout`) sleeps 1,
/// 2, 5, 10, 15, 20 ms and more between tries, so a write that met a checkpoint of 3 ms slept
/// on for 15 ms after it ended, with every other write queued behind it: a stall of the whole
/// supervisor twice a second under load.
fn busy_wait(tries: i32) -> bool {
    let wait = if tries < 200 {
        Duration::from_micros(100)
    } else if tries < 5_000 {
        Duration::from_millis(1)
    } else {
        return false;
    };
    std::thread::sleep(wait);
    true
}

/// Opens a connection with the store's settings.
fn connect(path: &Path, flags: OpenFlags) -> rusqlite::Result<Connection> {
    let connection = Connection::open_with_flags(path, flags)?;
    connection.busy_handler(Some(busy_wait))?;
    // WAL + NORMAL survives a crash of the process (not of the machine) without losing a commit;
    // the pending/present protocol covers the rest.
    connection.pragma_update(None, "synchronous", "NORMAL")?;
    // Pages read through a memory map (cheaper to refill than read() into the page cache).
    connection.pragma_update(None, "mmap_size", 1i64 << 30)?;
    connection.set_prepared_statement_cache_capacity(32);
    Ok(connection)
}

fn is_unique_violation(error: &rusqlite::Error) -> bool {
    matches!(
        error,
        rusqlite::Error::SqliteFailure(e, _)
            if e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                || e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
    )
}

impl super::StoredRow for rusqlite::Row<'_> {
    fn text(&self, column: &str) -> Result<String, StoreError> {
        Ok(self.get(column)?)
    }

    fn integer(&self, column: &str) -> Result<i64, StoreError> {
        Ok(self.get(column)?)
    }

    fn bytes(&self, column: &str) -> Result<Vec<u8>, StoreError> {
        Ok(self.get(column)?)
    }
}

/// Every record `sql` selects (its columns are [`COLUMNS`]).
fn records(connection: &Connection, sql: &str, params: &[&str]) -> Result<Vec<Record>, StoreError> {
    let mut statement = connection.prepare_cached(sql)?;
    let mut rows = statement.query(rusqlite::params_from_iter(params))?;
    let mut found = Vec::new();
    while let Some(row) = rows.next()? {
        found.push(super::record_of(row)?);
    }
    Ok(found)
}

/// SQLite's integrity check of the store (`quick_check`: every page and b-tree well formed, in
/// time linear in the file; `full`: `integrity_check`, which also checks every index against its
/// table). `Ok(())`, or the problems found (at most 20).
pub fn check_integrity(connection: &Connection, full: bool) -> Result<(), StoreError> {
    let pragma = if full { "PRAGMA integrity_check(20)" } else { "PRAGMA quick_check(20)" };
    let found: Vec<String> = connection
        .prepare(pragma)
        .and_then(|mut s| s.query_map([], |row| row.get::<_, String>(0))?.collect())
        .map_err(classify)?;
    if found.len() == 1 && found[0] == "ok" {
        return Ok(());
    }
    Err(StoreError::Damaged(format!(
        "{}; restore connector-space.db from a backup, or rebuild it from the targets with \
         `supervisor store rebuild` (see docs/operations.md)",
        found.join("; ")
    )))
}

/// Opens the store file for the main connection: WAL mode, the schema migrated, and (unless
/// `check` is false) SQLite's quick integrity check passed.
fn open_main(path: &Path, check: bool) -> Result<Connection, StoreError> {
    let connection = connect(path, OpenFlags::default()).map_err(classify)?;
    connection.pragma_update(None, "journal_mode", "WAL").map_err(classify)?;
    if check {
        check_integrity(&connection, false)?;
    }
    connection.execute_batch(SCHEMA).map_err(classify)?;
    migrate(&connection)?;
    // The WAL is folded into the database by the checkpointer thread, not by the write that
    // happens to cross the threshold: a checkpoint syncs the disk, and writes run on the
    // runtime's threads.
    connection.pragma_update(None, "wal_autocheckpoint", 0)?;
    // A writer that restarts the WAL leaves the file as it is: the checkpointer empties it when
    // nothing writes (cutting it back under load made the file system discard its blocks).
    connection.pragma_update(None, "journal_size_limit", -1i64)?;
    Ok(connection)
}

impl SqliteStore {
    /// Opens (and creates) the store file; refuses a damaged one (SQLite's `quick_check`).
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with(path, DEFAULT_CACHE_RECORDS).await
    }

    /// [`Store::open`], with a read cache of at most `cache_records` records.
    pub async fn open_with(path: &Path, cache_records: usize) -> Result<Self, StoreError> {
        let path = path.to_path_buf();
        let opened = path.clone();
        let main = tokio::task::spawn_blocking(move || open_main(&opened, true))
            .await
            .map_err(|e| StoreError::Corrupt(format!("opening the store failed: {e}")))??;
        let checkpoints = connect(&path, OpenFlags::default())?;
        let inner = Arc::new(Inner {
            path,
            main: Mutex::new(Some(main)),
            readers: Mutex::new(Vec::new()),
            cache: RwLock::new(Cache { limit: cache_records, ..Cache::default() }),
            generation: AtomicU64::new(0),
            health: Mutex::new(Health::Ready),
            wal_peak: AtomicU64::new(0),
            queue: Mutex::new(Vec::new()),
            grouped: AtomicU64::new(0),
        });
        let store = Arc::downgrade(&inner);
        std::thread::Builder::new()
            .name("connector-space-checkpoints".into())
            .spawn(move || checkpoint_loop(checkpoints, store))
            .map_err(|e| StoreError::Corrupt(format!("cannot start the store's checkpointer: {e}")))?;
        Ok(Self { inner })
    }

    /// Checks a store file's integrity (`full`: every index against its table too) without
    /// serving it; for `supervisor store check`.
    pub fn check_file(path: &Path, full: bool) -> Result<(), StoreError> {
        let connection = connect(path, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(classify)?;
        check_integrity(&connection, full)
    }

    /// Notes what an operation's outcome says about the store's health: a transient failure
    /// makes it degraded, damage failed, and a write that went through ready again.
    fn note<T>(&self, result: Result<T, StoreError>, wrote: bool) -> Result<T, StoreError> {
        self.inner.note(result, wrote)
    }

    /// Runs `work` on the main connection, on this thread.
    fn with_main<T>(&self, work: impl FnOnce(&Connection) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let main = self.inner.main();
        let result = work(main.as_ref().ok_or(StoreError::Closed)?);
        drop(main);
        self.note(result, false)
    }

    /// Runs `read` on an idle read connection (opening one if none is idle).
    fn with_reader<T>(
        &self,
        read: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let idle = lock(&self.inner.readers).pop();
        let connection = match idle {
            Some(connection) => connection,
            None => match connect(
                &self.inner.path,
                OpenFlags::SQLITE_OPEN_READ_ONLY
                    | OpenFlags::SQLITE_OPEN_NO_MUTEX
                    | OpenFlags::SQLITE_OPEN_URI,
            ) {
                Ok(connection) => connection,
                Err(e) => return self.note(Err(classify(e)), false),
            },
        };
        let result = read(&connection);
        let mut readers = lock(&self.inner.readers);
        if readers.len() < IDLE_READERS {
            readers.push(connection);
        }
        drop(readers);
        self.note(result, false)
    }

    /// Runs `read` on the main connection if it is free (its page cache holds what the last
    /// writes left), else on a read connection, on the calling thread: a lookup that must not
    /// wait for a long write (an import's batch of new objects, written as the import reads on).
    fn with_main_or_reader<T>(
        &self,
        read: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let Some(main) = self.inner.try_main() else { return self.with_reader(read) };
        let result = read(main.as_ref().ok_or(StoreError::Closed)?);
        drop(main);
        self.note(result, false)
    }

    /// Runs `read` on a read connection on tokio's blocking pool (for reads that scan).
    async fn off_thread<T: Send + 'static>(
        &self,
        read: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.with_reader(read))
            .await
            .map_err(|e| StoreError::Corrupt(format!("a store read failed: {e}")))?
    }

    /// The records `sql` selects, read on the blocking pool.
    async fn scan(&self, sql: String, params: Vec<String>) -> Result<Vec<Record>, StoreError> {
        self.off_thread(move |c| {
            let params: Vec<&str> = params.iter().map(String::as_str).collect();
            records(c, &sql, &params)
        })
        .await
    }

    /// The record of an app's resource type for which `condition` (on `?3`) holds.
    fn one(
        &self,
        condition: &str,
        app: &str,
        resource_type: &str,
        key: &str,
    ) -> Result<Option<Record>, StoreError> {
        let sql =
            format!("SELECT {COLUMNS} FROM objects WHERE app = ?1 AND resource_type = ?2 AND {condition}");
        Ok(self.with_main(|c| records(c, &sql, &[app, resource_type, key]))?.into_iter().next())
    }

    /// Caches what a read found, unless a write happened meanwhile.
    fn remember(&self, record: &Option<Record>, generation: u64) {
        if let Some(record) = record {
            let mut cache = write(&self.inner.cache);
            if self.inner.generation.load(Ordering::SeqCst) == generation {
                cache.put(record);
            }
        }
    }

    /// Runs a write on the main connection and tells the cache. It is queued first and runs to
    /// its end whatever becomes of this future: here, at once, when the connection is free; else
    /// on the thread that holds it, when that lets it go. So it happens (and the cache learns of
    /// it) even if the request that asked for it is dropped while it waits (a client that hangs
    /// up).
    async fn write(&self, op: Op) -> Result<(), StoreError> {
        let (name, state) = match &op {
            Op::Put { record, .. } => ("connector space write", record.state.as_str()),
            Op::Delete { .. } => ("connector space delete", ""),
            Op::Watermark { .. } => ("connector space watermark", ""),
        };
        let span = tracing::info_span!(
            "store",
            otel.name = name,
            otel.kind = "client",
            db.system.name = "sqlite",
            db.collection.name = "objects",
            ecma.record.state = state,
        );
        let (done, outcome) = tokio::sync::oneshot::channel();
        lock(&self.inner.queue).push(Queued { op, done });
        span.in_scope(|| self.inner.run_queued());
        use tracing::Instrument;
        outcome.instrument(span).await.unwrap_or(Err(StoreError::Closed))
    }
}

#[async_trait::async_trait]
impl Engine for SqliteStore {
    fn kind(&self) -> &'static str {
        "sqlite"
    }

    async fn present(&self, app: &str) -> Result<Vec<Record>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM objects WHERE app = ?1 AND state = 'present'");
        self.scan(sql, vec![app.to_string()]).await
    }

    async fn all(&self) -> Result<Vec<Record>, StoreError> {
        self.scan(format!("SELECT {COLUMNS} FROM objects ORDER BY created, id"), vec![]).await
    }

    async fn watermarks(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.off_thread(|c| {
            Ok(c.prepare("SELECT connector, watermark FROM watermarks ORDER BY connector")?
                .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
                .collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn import_started(
        &self,
        connector: &str,
        node: &str,
        import_type: &str,
    ) -> Result<i64, StoreError> {
        let now = super::now_ms();
        self.with_main(|c| {
            c.prepare_cached(
                "UPDATE imports SET finished_ms = ?2, outcome = 'abandoned' WHERE connector = ?1 AND finished_ms IS NULL",
            )?
            .execute(params![connector, now])?;
            c.prepare_cached(
                "INSERT INTO imports (connector, node, import_type, started_ms) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![connector, node, import_type, now])?;
            Ok(c.last_insert_rowid())
        })
    }

    fn set_durability(&self, durability: super::Durability) -> Result<(), StoreError> {
        let mode = match durability {
            super::Durability::ProcessCrash => "NORMAL",
            super::Durability::PowerLoss => "FULL",
        };
        self.with_main(|c| Ok(c.pragma_update(None, "synchronous", mode)?))
    }

    async fn log_append(&self, entries: Vec<LogEntry>) -> Result<(), StoreError> {
        let store = self.clone();
        let written = tokio::task::spawn_blocking(move || {
            store.with_main(|c| {
                let transaction = c.unchecked_transaction()?;
                insert_log_rows(&transaction, &entries)?;
                transaction.commit()?;
                Ok(())
            })
        })
        .await;
        written.map_err(|e| StoreError::Unavailable(format!("a provisioning log write failed: {e}")))?
    }

    async fn log_query(&self, filter: &LogFilter) -> Result<Vec<LogEntry>, StoreError> {
        let (clauses, params) = filter.sql(log::Dialect::Sqlite);
        let sql = format!("SELECT {} FROM provisioning_log{clauses}", log::COLUMNS);
        self.off_thread(move |c| {
            let params: Vec<Box<dyn rusqlite::ToSql>> = params
                .into_iter()
                .map(|p| -> Box<dyn rusqlite::ToSql> {
                    match p {
                        log::Param::Text(t) => Box::new(t),
                        log::Param::Integer(i) => Box::new(i),
                    }
                })
                .collect();
            let mut statement = c.prepare(&sql)?;
            let rows = statement.query_map(rusqlite::params_from_iter(params.iter()), |row| {
                Ok(LogEntry {
                    seq: row.get(0)?,
                    at_ms: row.get(1)?,
                    node: row.get(2)?,
                    source: row.get(3)?,
                    app: row.get(4)?,
                    resource_type: row.get(5)?,
                    connector: row.get(6)?,
                    operation: row.get(7)?,
                    scim_id: row.get(8)?,
                    name: row.get(9)?,
                    anchor: row.get(10)?,
                    dn: row.get(11)?,
                    attributes: log::attributes_of(&row.get::<_, String>(12)?),
                    outcome: row.get(13)?,
                    error_kind: row.get(14)?,
                    detail: row.get(15)?,
                    duration_ms: row.get(16)?,
                    trace_id: row.get(17)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn log_prune(&self, before_ms: Option<i64>, keep_rows: Option<i64>) -> Result<u64, StoreError> {
        let store = self.clone();
        let pruned = tokio::task::spawn_blocking(move || {
            store.with_main(|c| {
                let mut removed = 0;
                if let Some(before) = before_ms {
                    removed += c.execute("DELETE FROM provisioning_log WHERE at_ms < ?1", [before])?;
                }
                if let Some(keep) = keep_rows {
                    removed += c.execute(
                        "DELETE FROM provisioning_log WHERE seq <= (SELECT max(seq) FROM provisioning_log) - ?1",
                        [keep],
                    )?;
                }
                Ok(removed as u64)
            })
        })
        .await;
        pruned.map_err(|e| StoreError::Unavailable(format!("pruning the provisioning log failed: {e}")))?
    }

    async fn import_finished(&self, run: i64, outcome: &str) -> Result<(), StoreError> {
        self.with_main(|c| {
            c.prepare_cached("UPDATE imports SET finished_ms = ?2, outcome = ?3 WHERE id = ?1")?
                .execute(params![run, super::now_ms(), outcome])?;
            Ok(())
        })
    }

    async fn imports(&self, connector: &str) -> Result<Vec<ImportRun>, StoreError> {
        let connector = connector.to_string();
        self.off_thread(move |c| {
            Ok(c.prepare(
                "SELECT id, connector, node, import_type, started_ms, finished_ms, outcome FROM imports \
                 WHERE connector = ?1 ORDER BY id",
            )?
            .query_map([connector], |row| {
                Ok(ImportRun {
                    id: row.get(0)?,
                    connector: row.get(1)?,
                    node: row.get(2)?,
                    import_type: row.get(3)?,
                    started_ms: row.get(4)?,
                    finished_ms: row.get(5)?,
                    outcome: row.get(6)?,
                })
            })?
            .collect::<Result<_, _>>()?)
        })
        .await
    }

    /// The present record with this id in any resource type of the app (for references).
    async fn find(&self, app: &str, id: &str) -> Result<Option<Record>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM objects WHERE app = ?1 AND id = ?2 AND state = 'present'");
        Ok(self.with_main(|c| records(c, &sql, &[app, id]))?.into_iter().next())
    }

    /// The record with this id, pending or present.
    async fn get(&self, app: &str, resource_type: &str, id: &str) -> Result<Option<Record>, StoreError> {
        if let Some(record) = read(&self.inner.cache).get(app, resource_type, id) {
            return Ok(Some(record));
        }
        let generation = self.inner.generation.load(Ordering::SeqCst);
        let record = self.one("id = ?3", app, resource_type, id)?;
        self.remember(&record, generation);
        Ok(record)
    }

    /// The record with this userName (case-insensitive), pending or present.
    async fn by_user_name(
        &self,
        app: &str,
        resource_type: &str,
        name: &str,
    ) -> Result<Option<Record>, StoreError> {
        if let Some(record) = read(&self.inner.cache).by_name(app, resource_type, name) {
            return Ok(Some(record));
        }
        let generation = self.inner.generation.load(Ordering::SeqCst);
        let record = self.one("name_key = ?3", app, resource_type, &fold(name))?;
        self.remember(&record, generation);
        Ok(record)
    }

    /// Every present record of an app's resource type, in creation order.
    async fn list(&self, app: &str, resource_type: &str) -> Result<Vec<Record>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM objects WHERE app = ?1 AND resource_type = ?2 AND state = 'present' \
             ORDER BY created, id"
        );
        self.scan(sql, vec![app.to_string(), resource_type.to_string()]).await
    }

    /// Inserts a new record; [`StoreError::Conflict`] when the userName is taken.
    async fn insert(&self, record: &Record) -> Result<(), StoreError> {
        self.write(Op::Put { record: Box::new(record.clone()), upsert: false, cached: true }).await
    }

    async fn insert_imported(&self, record: &Record) -> Result<(), StoreError> {
        self.write(Op::Put { record: Box::new(record.clone()), upsert: false, cached: false }).await
    }

    async fn update_imported(&self, record: &Record) -> Result<(), StoreError> {
        self.write(Op::Put { record: Box::new(record.clone()), upsert: true, cached: false }).await
    }

    /// Replaces a record (same app, type and id); [`StoreError::Conflict`] when its new userName
    /// belongs to another record.
    async fn update(&self, record: &Record) -> Result<(), StoreError> {
        self.write(Op::Put { record: Box::new(record.clone()), upsert: true, cached: true }).await
    }

    /// Removes a record.
    async fn delete(&self, app: &str, resource_type: &str, id: &str) -> Result<(), StoreError> {
        self.write(Op::Delete {
            app: app.to_string(),
            resource_type: resource_type.to_string(),
            id: id.to_string(),
        })
        .await
    }

    /// Number of records.
    async fn count(&self) -> Result<i64, StoreError> {
        self.off_thread(|c| Ok(c.query_row("SELECT COUNT(*) FROM objects", [], |row| row.get(0))?)).await
    }

    /// The console's connector-space browser (see [`Engine::search`]).
    async fn search(
        &self,
        app: &str,
        resource_type: &str,
        part: &str,
        limit: usize,
    ) -> Result<Vec<Record>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM objects WHERE app = ?1 AND resource_type = ?2 \
             AND (?3 = '' OR id = ?3 OR instr(lower(user_name), lower(?3)) > 0) ORDER BY user_name LIMIT {}",
            limit.min(10_000)
        );
        self.scan(sql, vec![app.to_string(), resource_type.to_string(), part.to_string()]).await
    }

    async fn by_anchors(&self, connector: &str, anchors: &[String]) -> Result<Vec<Known>, StoreError> {
        let anchors = serde_json::to_string(anchors).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        // On the main connection, like point reads: its page cache holds what the last page's
        // writes left (a read connection would read it all again from the WAL at every page);
        // on a read connection while an import's batch is being written.
        self.with_main_or_reader(|c| {
            let mut statement = c.prepare_cached(BY_ANCHORS)?;
            let mut rows = statement.query(params![connector, anchors])?;
            let mut found = Vec::new();
            while let Some(row) = rows.next()? {
                // The state and the target are read in place, without a copy.
                let state = row.get_ref(3)?.as_str().map_err(|e| StoreError::Corrupt(e.to_string()))?;
                let target = row.get_ref(5)?.as_blob().map_err(|e| StoreError::Corrupt(e.to_string()))?;
                found.push(Known {
                    resource_type: row.get(0)?,
                    id: row.get(1)?,
                    anchor: row.get(2)?,
                    state: RecordState::parse(state)?,
                    version: row.get(4)?,
                    target: ecma_proto::v1::Entry::decode(target)
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                });
            }
            Ok(found)
        })
    }

    async fn ids_of(&self, app: &str, texts: &[String]) -> Result<HashMap<String, String>, StoreError> {
        if texts.is_empty() {
            return Ok(HashMap::new());
        }
        let texts = serde_json::to_string(texts).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.with_main_or_reader(|c| {
            let mut statement = c.prepare_cached(IDS_OF)?;
            let found = statement
                .query_map(params![app, texts], |row| Ok((row.get(0)?, row.get(1)?)))?
                .collect::<Result<_, _>>()?;
            Ok(found)
        })
    }

    async fn insert_imported_all(
        &self,
        records: &[Record],
        log: Vec<LogEntry>,
    ) -> Result<Vec<bool>, StoreError> {
        let _span = tracing::info_span!(
            "store",
            otel.name = "connector space import write",
            otel.kind = "client",
            db.system.name = "sqlite",
            db.collection.name = "objects",
            ecma.records = records.len(),
        )
        .entered();
        let main = self.inner.main();
        let connection = main.as_ref().ok_or(StoreError::Closed)?;
        self.inner.generation.fetch_add(1, Ordering::SeqCst);
        // One transaction: a name clash fails its own statement only (SQLite rolls back the
        // statement, not the transaction).
        let result = (|| {
            let transaction = connection.unchecked_transaction()?;
            let mut inserted = Vec::with_capacity(records.len());
            for record in records {
                match put(&transaction, record, false) {
                    Ok(_) => inserted.push(true),
                    Err(e) if is_unique_violation(&e) => inserted.push(false),
                    Err(e) => return Err(e),
                }
            }
            let rows: Vec<&LogEntry> =
                log.iter().zip(&inserted).filter(|(_, i)| **i).map(|(row, _)| row).collect();
            insert_log_rows(&transaction, &rows)?;
            transaction.commit()?;
            Ok(inserted)
        })()
        .map_err(classify);
        if result.is_err() && !connection.is_autocommit() {
            let _ = connection.execute_batch("ROLLBACK");
        }
        {
            let mut cache = write(&self.inner.cache);
            for r in records {
                cache.forget(&r.app, &r.resource_type, &r.id, Some(&r.user_name));
            }
        }
        self.inner.generation.fetch_add(1, Ordering::SeqCst);
        drop(main);
        self.note(result, true)
    }

    async fn listed(
        &self,
        app: &str,
        resource_type: &str,
        connector: &str,
        after: &str,
        limit: usize,
    ) -> Result<Vec<Listed>, StoreError> {
        let keys = [app, resource_type, connector, after].map(str::to_string);
        self.off_thread(move |c| {
            let mut statement = c.prepare_cached(
                "SELECT id, coalesce(anchor, ''), state, version FROM objects \
                 WHERE app = ?1 AND resource_type = ?2 AND connector = ?3 AND id > ?4 ORDER BY id LIMIT ?5",
            )?;
            let mut rows = statement.query(params![keys[0], keys[1], keys[2], keys[3], limit as i64])?;
            let mut found = Vec::new();
            while let Some(row) = rows.next()? {
                found.push(Listed {
                    id: row.get(0)?,
                    anchor: row.get(1)?,
                    state: RecordState::parse(&row.get::<_, String>(2)?)?,
                    version: row.get(3)?,
                });
            }
            Ok(found)
        })
        .await
    }

    async fn import_mark(&self, connector: &str) -> Result<Option<String>, StoreError> {
        self.with_main(|c| {
            Ok(c.prepare_cached("SELECT mark FROM import_marks WHERE connector = ?1")?
                .query_row([connector], |row| row.get(0))
                .optional()?)
        })
    }

    async fn set_import_mark(&self, connector: &str, mark: &str) -> Result<(), StoreError> {
        let result = self.with_main(|c| {
            c.prepare_cached("REPLACE INTO import_marks (connector, mark) VALUES (?1, ?2)")?
                .execute(params![connector, mark])?;
            Ok(())
        });
        self.note(result, true)
    }

    /// The import watermark last committed for a connector.
    async fn watermark(&self, connector: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.with_main(|c| {
            Ok(c.prepare_cached("SELECT watermark FROM watermarks WHERE connector = ?1")?
                .query_row([connector], |row| row.get(0))
                .optional()?)
        })
    }

    /// Commits an import watermark (call only once the entries it covers are stored).
    async fn set_watermark(&self, connector: &str, watermark: &[u8]) -> Result<(), StoreError> {
        self.write(Op::Watermark { connector: connector.to_string(), watermark: watermark.to_vec() }).await
    }

    /// The pending records of a connector: writes whose outcome is not known yet.
    async fn pending(&self, connector: &str) -> Result<Vec<Record>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM objects WHERE connector = ?1 AND state = 'pending' ORDER BY created"
        );
        self.scan(sql, vec![connector.to_string()]).await
    }

    /// How many writes of a connector have an unknown outcome.
    async fn count_pending(&self, connector: &str) -> Result<i64, StoreError> {
        let connector = connector.to_string();
        self.off_thread(move |c| {
            Ok(c.prepare_cached("SELECT COUNT(*) FROM objects WHERE connector = ?1 AND state = 'pending'")?
                .query_row([connector], |row| row.get(0))?)
        })
        .await
    }

    /// Folds the WAL into the database file and closes every connection: a stopped supervisor
    /// leaves one file behind.
    async fn close(&self) {
        lock(&self.inner.readers).clear();
        let main = lock(&self.inner.main).take();
        // Writes queued from now on are told the store is closed.
        self.inner.run_queued();
        if let Some(main) = main
            && let Err(e) = main.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        {
            tracing::warn!(error = %e, "the connector space's last checkpoint failed");
        }
    }

    /// The store's health.
    fn health(&self) -> Health {
        lock(&self.inner.health).clone()
    }

    /// The largest the write-ahead log has been seen at since the store was opened, in bytes.
    fn wal_peak_bytes(&self) -> u64 {
        self.inner.wal_peak.load(Ordering::Relaxed)
    }

    /// Bytes of the store on disk (the database file and its write-ahead log).
    fn file_bytes(&self) -> Option<u64> {
        let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).ok();
        let mut wal = self.inner.path.clone().into_os_string();
        wal.push("-wal");
        Some(size(&self.inner.path)? + size(Path::new(&wal)).unwrap_or(0))
    }
}

/// How often the checkpointer folds the WAL into the database.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(500);

/// What the WAL may hold since it was last restarted before the checkpointer restarts it,
/// waiting up to [`RESTART_WAIT`] for its turn, once the round's passive checkpoint has copied
/// every frame (else a reader still reads an older snapshot, and waiting for it would hold the
/// writes up: the restart only waits [`RESTART_TURN`], until [`WAL_HARD_LIMIT`]).
const WAL_LIMIT: u64 = 32 << 20;

/// What the WAL may hold before the checkpointer restarts it whatever it takes.
const WAL_HARD_LIMIT: u64 = 4 * WAL_LIMIT;

/// What the WAL may hold since it was last restarted before the checkpointer restarts it, at a
/// round (see [`RESTART_TURN`]).
const WAL_SOFT_LIMIT: u64 = 1 << 20;

/// How long a checkpoint that must restart or empty the WAL may wait for readers and the writer
/// (writes wait meanwhile).
const RESTART_WAIT: Duration = Duration::from_millis(200);

/// How long a restarting checkpoint below [`WAL_LIMIT`] waits for its turn: long enough to find
/// a gap between two groups of writes under load (else the log grows to the limit, where
/// restarting it costs more), short enough to give up soon when a scan is reading (it holds the
/// write lock while it waits for readers, and writes wait meanwhile).
const RESTART_TURN: Duration = Duration::from_millis(5);

/// Folds the WAL into the database file every [`CHECKPOINT_INTERVAL`], passively first (never
/// waiting for readers or the writer, and never holding up either; with nothing new in the WAL
/// it copies nothing), until the store is closed or dropped. Passive checkpoints never restart
/// the log while readers and writers keep coming, so past [`WAL_SOFT_LIMIT`] logged since the
/// last restart a `RESTART` checkpoint waits up to [`RESTART_TURN`] for its turn, and past
/// [`WAL_LIMIT`] up to [`RESTART_WAIT`]: it holds the write lock only to copy what came since the
/// passive one and to reset the log, which is then written again from its start.
///
/// The file is not cut back while writes come: truncating it made the file system give its
/// blocks back each time (a discard on this kind of disk: 9-11 ms with the write lock held, twice
/// a second under load). A file past [`WAL_SOFT_LIMIT`] is emptied (`TRUNCATE`) at a round that
/// finds nothing written since the last one, and any file, waiting up to [`RESTART_WAIT`], while
/// the store is degraded (a full disk
/// gets the space back). While degraded, each round also tries a one-row write, so that the store
/// becomes ready again once the condition clears even if no client writes.
fn checkpoint_loop(connection: Connection, store: std::sync::Weak<Inner>) {
    let mut wal = store.upgrade().map(|inner| inner.path.clone().into_os_string()).unwrap_or_default();
    wal.push("-wal");
    let wal = PathBuf::from(wal);
    let page_size =
        connection.query_row("PRAGMA page_size", [], |row| row.get::<_, i64>(0)).unwrap_or(4096).max(512)
            as u64;
    // Frames in the log at the last round: the same count again, all copied, means no writes.
    let mut last_logged = -1;
    loop {
        std::thread::sleep(CHECKPOINT_INTERVAL);
        let inner = match store.upgrade() {
            Some(inner) if inner.main().is_some() => inner,
            _ => return,
        };
        let size = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
        inner.wal_peak.fetch_max(size, Ordering::Relaxed);
        // While writes fail (a full disk), emptying the WAL gives its space back.
        let degraded = matches!(*lock(&inner.health), Health::Degraded(_));
        let _ = connection.busy_timeout(Duration::ZERO);
        // (busy, frames in the log since its last restart, frames copied)
        let (logged, copied) = connection
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
                Ok((row.get::<_, i64>(1)?, row.get::<_, i64>(2)?))
            })
            .unwrap_or((-1, -1));
        // Every frame copied: no reader holds an older snapshot that a restart would wait for.
        let all_copied = logged >= 0 && logged == copied;
        let idle = all_copied && logged == last_logged;
        last_logged = logged;
        let logged = logged.max(0) as u64 * page_size;
        // (A `RESTART` leaves the log's frames counted until the next write starts it over, so
        // an idle store is recognised before the log's size is looked at.)
        let (mode, wait) = if degraded && size > 0 {
            ("TRUNCATE", RESTART_WAIT)
        } else if idle {
            (if size > WAL_SOFT_LIMIT { "TRUNCATE" } else { "" }, Duration::ZERO)
        } else if logged > WAL_HARD_LIMIT || (logged > WAL_LIMIT && all_copied) {
            ("RESTART", RESTART_WAIT)
        } else if logged > WAL_SOFT_LIMIT {
            ("RESTART", RESTART_TURN)
        } else {
            ("", Duration::ZERO)
        };
        if !mode.is_empty() {
            let _ = connection.busy_timeout(wait);
            match connection
                .query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |row| row.get::<_, i64>(0))
            {
                Ok(1) if wait == RESTART_WAIT => {
                    tracing::debug!(wal_bytes = size, "the WAL could not be restarted yet (busy); next round")
                }
                Ok(_) => {}
                Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy) => {}
                Err(e) => tracing::warn!(error = %e, "connector space checkpoint failed"),
            }
        }
        if degraded {
            let _ = connection.busy_timeout(Duration::from_secs(1));
            let probe = connection
                .execute(
                    "REPLACE INTO probe (id, at) VALUES (1, ?1)",
                    [std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_secs())
                        .unwrap_or(0)
                        .to_string()],
                )
                .map(|_| ())
                .map_err(StoreError::from);
            let store = SqliteStore { inner: inner.clone() };
            let _ = store.note(probe, true);
        }
    }
}

/// Provisioning log rows stored in a statement at most: one statement, and one update of the
/// table's AUTOINCREMENT counter, for this many rows (17 parameters each).
const LOG_ROWS_PER_STATEMENT: usize = 32;

/// `INSERT INTO provisioning_log` of `rows` rows.
fn log_insert_sql(rows: usize) -> String {
    let row = format!("({})", vec!["?"; 17].join(", "));
    format!(
        "INSERT INTO provisioning_log (at_ms, node, source, app, resource_type, connector, operation, \
         scim_id, name, anchor, dn, attributes, outcome, error_kind, detail, duration_ms, trace_id) VALUES {}",
        vec![row; rows].join(", ")
    )
}

/// Inserts provisioning log rows inside the caller's transaction, [`LOG_ROWS_PER_STATEMENT`] to
/// a statement (the rest one by one), binding each value in place.
fn insert_log_rows<E: std::borrow::Borrow<LogEntry>>(c: &Connection, entries: &[E]) -> rusqlite::Result<()> {
    static FULL: std::sync::LazyLock<String> =
        std::sync::LazyLock::new(|| log_insert_sql(LOG_ROWS_PER_STATEMENT));
    static ONE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| log_insert_sql(1));
    let mut full = entries.chunks_exact(LOG_ROWS_PER_STATEMENT);
    if full.len() > 0 {
        let mut statement = c.prepare_cached(&FULL)?;
        for chunk in &mut full {
            for (row, e) in chunk.iter().enumerate() {
                bind_log_row(&mut statement, row * 17, e.borrow())?;
            }
            statement.raw_execute()?;
        }
    }
    let mut statement = c.prepare_cached(&ONE)?;
    for e in full.remainder() {
        bind_log_row(&mut statement, 0, e.borrow())?;
        statement.raw_execute()?;
    }
    Ok(())
}

/// Binds one log row's 17 values after the `offset` parameters already bound.
fn bind_log_row(
    statement: &mut rusqlite::Statement<'_>,
    offset: usize,
    e: &LogEntry,
) -> rusqlite::Result<()> {
    let text = [
        (2, &e.node),
        (3, &e.source),
        (4, &e.app),
        (5, &e.resource_type),
        (6, &e.connector),
        (7, &e.operation),
        (8, &e.scim_id),
        (9, &e.name),
        (10, &e.anchor),
        (11, &e.dn),
        (13, &e.outcome),
        (14, &e.error_kind),
        (15, &e.detail),
        (17, &e.trace_id),
    ];
    statement.raw_bind_parameter(offset + 1, e.at_ms)?;
    for (index, value) in text {
        statement.raw_bind_parameter(offset + index, value.as_str())?;
    }
    statement.raw_bind_parameter(offset + 12, log::attributes_text(&e.attributes))?;
    statement.raw_bind_parameter(offset + 16, e.duration_ms)?;
    Ok(())
}

/// Writes one record (`upsert`: or replaces the one with its id).
fn put(connection: &Connection, r: &Record, upsert: bool) -> rusqlite::Result<usize> {
    let (anchor, reference) = super::index_keys(&r.target);
    connection.prepare_cached(if upsert { UPSERT } else { INSERT })?.execute(params![
        r.app,
        r.resource_type,
        r.id,
        r.connector,
        r.state.as_str(),
        r.user_name,
        r.resource.to_string(),
        r.target.encode_to_vec(),
        r.version,
        r.created,
        r.modified,
        fold(&r.user_name),
        anchor,
        reference,
    ])
}

/// One write's statement.
fn statement(connection: &Connection, op: &Op) -> rusqlite::Result<usize> {
    match op {
        Op::Put { record: r, upsert, .. } => put(connection, r, *upsert),
        Op::Delete { app, resource_type, id } => connection
            .prepare_cached("DELETE FROM objects WHERE app = ?1 AND resource_type = ?2 AND id = ?3")?
            .execute(params![app, resource_type, id]),
        Op::Watermark { connector, watermark } => connection
            .prepare_cached("REPLACE INTO watermarks (connector, watermark) VALUES (?1, ?2)")?
            .execute(params![connector, watermark]),
    }
}

/// One write, as one autocommitted statement.
fn apply(connection: &Connection, op: &Op) -> Result<(), StoreError> {
    let result = statement(connection, op);
    // A statement that failed inside SQLite's automatic rollback (a full disk, an I/O error)
    // must not leave the connection in a transaction, where later writes would never commit.
    if result.is_err() && !connection.is_autocommit() {
        tracing::warn!("a failed write left the connector space's connection in a transaction; rolling back");
        let _ = connection.execute_batch("ROLLBACK");
    }
    match result {
        Ok(_) => Ok(()),
        Err(e) if is_unique_violation(&e) => Err(StoreError::Conflict),
        Err(e) => Err(classify(e)),
    }
}

/// Several writes in one transaction (one commit, and each page they share written to the WAL
/// once), each its own statement: a name clash fails its own statement only (SQLite rolls back
/// the statement, not the transaction). `None` when anything else failed (a full disk, an I/O
/// error, a busy file): the transaction is rolled back, nothing of it was written, and the
/// caller runs the writes one at a time so that each gets its own outcome.
fn together(connection: &Connection, batch: &[Queued]) -> Option<Vec<Result<(), StoreError>>> {
    connection.execute_batch("BEGIN").ok()?;
    let mut results = Vec::with_capacity(batch.len());
    for queued in batch {
        match statement(connection, &queued.op) {
            Ok(_) => results.push(Ok(())),
            Err(e) if is_unique_violation(&e) => results.push(Err(StoreError::Conflict)),
            Err(_) => break,
        }
    }
    if results.len() == batch.len() && connection.execute_batch("COMMIT").is_ok() {
        metrics::histogram!("connector_space_write_group_size").record(batch.len() as f64);
        return Some(results);
    }
    if !connection.is_autocommit() {
        let _ = connection.execute_batch("ROLLBACK");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::RecordState;
    use ecma_proto::v1;
    use serde_json::json;

    fn record(id: &str, name: &str) -> Record {
        Record {
            app: "demo".into(),
            resource_type: "User".into(),
            id: id.into(),
            connector: "people".into(),
            state: RecordState::Pending,
            user_name: name.into(),
            resource: json!({"userName": name}),
            target: v1::Entry {
                anchors: vec![v1::Anchor { name: "id".into(), value: Some(v1::Value::string("a-1")) }],
                ..Default::default()
            },
            version: 1,
            created: "2026-01-01T00:00:00Z".into(),
            modified: "2026-01-01T00:00:00Z".into(),
        }
    }

    /// Writes started while the main connection is held: each caller queues its write and
    /// awaits it without blocking its thread (the runtime here has one), and the holder runs
    /// them all when it lets go.
    async fn queued_behind_a_holder(
        store: &SqliteStore,
        records: Vec<Record>,
    ) -> Vec<Result<(), StoreError>> {
        let (holding, held) = std::sync::mpsc::channel();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let holder = {
            let store = store.clone();
            std::thread::spawn(move || {
                let main = store.inner.main();
                holding.send(()).unwrap();
                released.recv().unwrap();
                drop(main);
            })
        };
        held.recv().unwrap();
        let n = records.len();
        let writes: Vec<_> = records
            .into_iter()
            .map(|r| {
                let store = store.clone();
                tokio::spawn(async move { store.insert(&r).await })
            })
            .collect();
        while lock(&store.inner.queue).len() < n {
            tokio::task::yield_now().await;
        }
        release.send(()).unwrap();
        let mut outcomes = Vec::new();
        for write in writes {
            outcomes.push(write.await.unwrap());
        }
        holder.join().unwrap();
        outcomes
    }

    #[tokio::test]
    async fn writes_that_meet_the_connection_taken_are_committed_together_each_with_its_own_outcome() {
        let dir = temp_dir();
        let store = SqliteStore::open(&dir.join("cs.db")).await.unwrap();
        store.insert(&record("0", "taken")).await.unwrap();
        let mut records: Vec<Record> =
            (1..=20).map(|i| record(&i.to_string(), &format!("user{i}"))).collect();
        records.push(record("21", "TAKEN"));
        records.push(record("22", "user7"));
        let outcomes = queued_behind_a_holder(&store, records).await;
        assert!(outcomes[..20].iter().all(Result::is_ok), "{outcomes:?}");
        assert!(matches!(outcomes[20], Err(StoreError::Conflict)), "{outcomes:?}");
        assert!(matches!(outcomes[21], Err(StoreError::Conflict)), "{outcomes:?}");
        assert_eq!(store.inner.grouped.load(Ordering::Relaxed), 22);
        assert_eq!(store.count().await.unwrap(), 21);
        // The records read back are the ones written, from the cache and from the file.
        assert_eq!(store.by_user_name("demo", "User", "USER7").await.unwrap().unwrap().id, "7");
        assert!(store.get("demo", "User", "22").await.unwrap().is_none());
        drop(store);
        let reopened = SqliteStore::open(&dir.join("cs.db")).await.unwrap();
        assert_eq!(reopened.count().await.unwrap(), 21);
        assert_eq!(reopened.by_user_name("demo", "User", "user20").await.unwrap().unwrap().id, "20");
    }

    #[tokio::test]
    async fn a_group_that_fails_as_a_whole_is_rolled_back_and_its_writes_run_one_by_one() {
        let dir = temp_dir();
        let store = SqliteStore::open(&dir.join("cs.db")).await.unwrap();
        // A write that rolls back the whole transaction it is in, as a full disk does.
        store
            .with_main(|c| {
                Ok(c.execute_batch(
                    "CREATE TRIGGER boom BEFORE INSERT ON objects WHEN NEW.user_name = 'boom' \
                     BEGIN SELECT RAISE(ROLLBACK, 'no room'); END",
                )?)
            })
            .unwrap();
        let records = vec![record("1", "first"), record("2", "boom"), record("3", "third")];
        let outcomes = queued_behind_a_holder(&store, records).await;
        assert!(outcomes[0].is_ok() && outcomes[2].is_ok(), "{outcomes:?}");
        assert!(matches!(&outcomes[1], Err(e) if e.to_string().contains("no room")), "{outcomes:?}");
        assert_eq!(store.inner.grouped.load(Ordering::Relaxed), 0);
        let names: Vec<String> = store.all().await.unwrap().into_iter().map(|r| r.user_name).collect();
        assert_eq!(names.len(), 2);
        assert!(names.contains(&"first".to_string()) && names.contains(&"third".to_string()));
        // The connection is out of any transaction: the next write commits.
        store.insert(&record("4", "fourth")).await.unwrap();
        assert_eq!(store.count().await.unwrap(), 3);
    }

    #[tokio::test]
    async fn a_write_that_meets_another_connections_lock_waits_for_it_and_goes_through() {
        let dir = temp_dir();
        let store = SqliteStore::open(&dir.join("cs.db")).await.unwrap();
        // Another connection (as the checkpointer's restarting checkpoint does) holds the write
        // lock for a while.
        let other = Connection::open(dir.join("cs.db")).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        let (locked, release) = (std::time::Instant::now(), Duration::from_millis(60));
        let holder = std::thread::spawn(move || {
            std::thread::sleep(release);
            other.execute_batch("COMMIT").unwrap();
        });
        store.insert(&record("1", "waited")).await.unwrap();
        assert!(locked.elapsed() >= release, "the write went through while the lock was held");
        holder.join().unwrap();
        assert_eq!(store.by_user_name("demo", "User", "waited").await.unwrap().unwrap().id, "1");
    }

    #[tokio::test]
    async fn a_large_wal_is_emptied_once_nothing_writes() {
        let dir = temp_dir();
        let store = SqliteStore::open(&dir.join("cs.db")).await.unwrap();
        let wal = dir.join("cs.db-wal");
        for i in 0..3000 {
            store.insert(&record(&i.to_string(), &format!("user{i}"))).await.unwrap();
        }
        let written = std::fs::metadata(&wal).unwrap().len();
        assert!(written > WAL_SOFT_LIMIT, "the writes left {written} bytes of WAL");
        // The checkpointer sees two rounds without a write, then empties the file.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0) > 0 {
            assert!(std::time::Instant::now() < deadline, "the idle store's WAL was not emptied");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Nothing was lost on the way.
        assert_eq!(store.count().await.unwrap(), 3000);
        assert_eq!(store.by_user_name("demo", "User", "user2999").await.unwrap().unwrap().id, "2999");
    }

    #[tokio::test]
    async fn records_round_trip_and_names_are_unique() {
        let dir = std::env::temp_dir().join(format!("store-test-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let store = SqliteStore::open(&dir.join("space.db")).await.unwrap();
        store.insert(&record("1", "Alice")).await.unwrap();
        assert!(matches!(store.insert(&record("2", "alice")).await, Err(StoreError::Conflict)));
        // Unicode case folding, not ASCII only: one name, whichever case it is written in.
        store.insert(&record("3", "CRAB🦀ÉZ-Straße")).await.unwrap();
        assert!(matches!(store.insert(&record("4", "crab🦀éz-STRASSE")).await, Err(StoreError::Conflict)));
        assert_eq!(store.by_user_name("demo", "User", "crab🦀éz-strasse").await.unwrap().unwrap().id, "3");
        store.delete("demo", "User", "3").await.unwrap();
        assert!(store.list("demo", "User").await.unwrap().is_empty(), "pending records are not listed");

        let mut r = store.by_user_name("demo", "User", "ALICE").await.unwrap().unwrap();
        assert_eq!(r.id, "1");
        assert_eq!(r.target.anchors[0].value, Some(v1::Value::string("a-1")));
        r.state = RecordState::Present;
        store.update(&r).await.unwrap();
        assert_eq!(store.list("demo", "User").await.unwrap().len(), 1);

        store.insert(&record("2", "bob")).await.unwrap();
        let mut bob = store.get("demo", "User", "2").await.unwrap().unwrap();
        bob.user_name = "alice".into();
        assert!(matches!(store.update(&bob).await, Err(StoreError::Conflict)), "rename onto a taken name");
        assert_eq!(store.count().await.unwrap(), 2);

        // Reads are cached; writes and deletes are seen at once all the same.
        assert_eq!(store.get("demo", "User", "2").await.unwrap().unwrap().user_name, "bob");
        bob.user_name = "robert".into();
        store.update(&bob).await.unwrap();
        assert_eq!(store.get("demo", "User", "2").await.unwrap().unwrap().user_name, "robert");
        assert!(
            store.by_user_name("demo", "User", "bob").await.unwrap().is_none(),
            "the old name is forgotten"
        );
        assert_eq!(store.by_user_name("demo", "User", "ROBERT").await.unwrap().unwrap().id, "2");
        store.delete("demo", "User", "1").await.unwrap();
        assert!(store.get("demo", "User", "1").await.unwrap().is_none());
        assert!(store.by_user_name("demo", "User", "alice").await.unwrap().is_none());
        // Closed, the store is one file: the WAL was folded into it and emptied.
        store.close().await;
        let wal = std::fs::metadata(dir.join("space.db-wal")).map(|m| m.len()).unwrap_or(0);
        assert_eq!(wal, 0, "the WAL is empty after close");
        assert!(matches!(store.insert(&record("3", "carol")).await, Err(StoreError::Closed)));
        let reopened = SqliteStore::open(&dir.join("space.db")).await.unwrap();
        assert_eq!(reopened.get("demo", "User", "2").await.unwrap().unwrap().user_name, "robert");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn durability_sets_how_commits_are_synced() {
        let dir = temp_dir();
        let store = SqliteStore::open(&dir.join("sync.db")).await.unwrap();
        let synchronous = |store: &SqliteStore| {
            store.with_main(|c| Ok(c.query_row("PRAGMA synchronous", [], |r| r.get::<_, i64>(0))?)).unwrap()
        };
        assert_eq!(synchronous(&store), 1, "NORMAL by default");
        store.set_durability(crate::store::Durability::PowerLoss).unwrap();
        assert_eq!(synchronous(&store), 2, "FULL for power-loss");
        let config: crate::config::StoreConfig = toml::from_str("durability = \"power-loss\"").unwrap();
        assert_eq!(config.durability, crate::store::Durability::PowerLoss);
        assert!(toml::from_str::<crate::config::StoreConfig>("durability = \"fsync\"").is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn provisioning_log_rows_are_filtered_paged_and_pruned() {
        use crate::store::log::{LogEntry, LogFilter};
        let dir = temp_dir();
        let store = SqliteStore::open(&dir.join("log.db")).await.unwrap();
        let row = |i: i64, app: &str, outcome: &str, name: &str| LogEntry {
            at_ms: 1_000 + i,
            node: "n1".into(),
            source: "scim".into(),
            app: app.into(),
            resource_type: "User".into(),
            connector: format!("{app}-users"),
            operation: "add".into(),
            scim_id: format!("id-{i}"),
            name: name.into(),
            attributes: vec!["mail".into(), "sn".into()],
            outcome: outcome.into(),
            duration_ms: 1.5,
            ..Default::default()
        };
        let rows: Vec<LogEntry> = (0..10)
            .map(|i| {
                row(
                    i,
                    if i % 2 == 0 { "hr" } else { "it" },
                    if i == 3 { "refused" } else { "applied" },
                    &format!("User{i}@Example.com"),
                )
            })
            .collect();
        store.log_append(rows).await.unwrap();
        let all = store.log_query(&LogFilter::default()).await.unwrap();
        assert_eq!(all.len(), 10);
        assert_eq!(all[9], LogEntry { seq: all[9].seq, ..row(0, "hr", "applied", "User0@Example.com") });
        assert_eq!(all[0].scim_id, "id-9", "newest first");
        assert_eq!(all[0].attributes, vec!["mail".to_string(), "sn".into()]);
        let hr = store.log_query(&LogFilter { app: Some("hr".into()), ..Default::default() }).await.unwrap();
        assert!(hr.len() == 5 && hr.iter().all(|e| e.app == "hr"));
        let refused = store
            .log_query(&LogFilter { outcome: Some("refused".into()), ..Default::default() })
            .await
            .unwrap();
        assert_eq!(refused.iter().map(|e| e.scim_id.as_str()).collect::<Vec<_>>(), vec!["id-3"]);
        // Part of a name, case-insensitively; or an id exactly.
        let named = store
            .log_query(&LogFilter { q: Some("user7@example".into()), ..Default::default() })
            .await
            .unwrap();
        assert_eq!(named.len(), 1);
        let by_id =
            store.log_query(&LogFilter { q: Some("id-4".into()), ..Default::default() }).await.unwrap();
        assert_eq!(by_id.len(), 1);
        // Paging back, and following on.
        let page = store.log_query(&LogFilter { limit: Some(3), ..Default::default() }).await.unwrap();
        let next = store
            .log_query(&LogFilter { limit: Some(3), before: Some(page[2].seq), ..Default::default() })
            .await
            .unwrap();
        assert_eq!(next[0].seq, page[2].seq - 1);
        let after =
            store.log_query(&LogFilter { after: Some(all[1].seq), ..Default::default() }).await.unwrap();
        assert_eq!(after.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![all[0].seq]);
        // Pruning: by age, then by count.
        assert_eq!(store.log_prune(Some(1_002), None).await.unwrap(), 2);
        assert_eq!(store.log_prune(None, Some(5)).await.unwrap(), 3);
        let left = store.log_query(&LogFilter::default()).await.unwrap();
        assert_eq!(
            left.iter().map(|e| e.scim_id.as_str()).collect::<Vec<_>>(),
            vec!["id-9", "id-8", "id-7", "id-6", "id-5"]
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn an_imports_writes_are_not_kept_in_the_read_cache_and_never_leave_it_stale() {
        let dir = temp_dir();
        let store = SqliteStore::open(&dir.join("space.db")).await.unwrap();
        let cached = |store: &SqliteStore| read(&store.inner.cache).by_id.len();
        store.insert(&record("1", "alice")).await.unwrap();
        assert_eq!(cached(&store), 1, "a SCIM write is kept for the next read");
        store.insert_imported(&record("2", "bob")).await.unwrap();
        assert_eq!(cached(&store), 1, "an import's write is not");
        assert_eq!(store.get("demo", "User", "2").await.unwrap().unwrap().user_name, "bob");
        assert_eq!(cached(&store), 2, "a read fills it as usual");
        // An import's update of a cached record drops the cached copy: the next read sees it.
        let mut bob = store.get("demo", "User", "2").await.unwrap().unwrap();
        bob.user_name = "robert".into();
        store.update_imported(&bob).await.unwrap();
        assert_eq!(cached(&store), 1);
        assert_eq!(store.get("demo", "User", "2").await.unwrap().unwrap().user_name, "robert");
        assert!(
            store.by_user_name("demo", "User", "bob").await.unwrap().is_none(),
            "the old name is forgotten"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn log_rows_are_stored_many_to_a_statement_with_every_value_in_its_place() {
        use crate::store::log::{LogEntry, LogFilter};
        let dir = temp_dir();
        let store = SqliteStore::open(&dir.join("log.db")).await.unwrap();
        // Two full statements and the rest one by one; every column differs from row to row.
        let count = 2 * LOG_ROWS_PER_STATEMENT + 5;
        let rows: Vec<LogEntry> = (0..count as i64)
            .map(|i| LogEntry {
                seq: 0,
                at_ms: 5_000 + i,
                node: format!("node-{i}"),
                source: format!("source-{i}"),
                app: format!("app-{i}"),
                resource_type: format!("type-{i}"),
                connector: format!("connector-{i}"),
                operation: format!("operation-{i}"),
                scim_id: format!("id-{i}"),
                name: format!("name-{i}"),
                anchor: format!("anchor-{i}"),
                dn: format!("uid={i},ou=People"),
                attributes: vec![format!("attribute-{i}")],
                outcome: format!("outcome-{i}"),
                error_kind: format!("kind-{i}"),
                detail: format!("detail-{i}"),
                duration_ms: i as f64 / 4.0,
                trace_id: format!("trace-{i}"),
            })
            .collect();
        store.log_append(rows.clone()).await.unwrap();
        let mut stored =
            store.log_query(&LogFilter { limit: Some(1000), ..Default::default() }).await.unwrap();
        stored.reverse();
        assert_eq!(stored.len(), count);
        assert!(stored.windows(2).all(|w| w[0].seq < w[1].seq), "in the order given");
        for (stored, given) in stored.iter().zip(&rows) {
            assert_eq!(stored, &LogEntry { seq: stored.seq, ..given.clone() });
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// A present record with its own anchor and DN.
    fn anchored(id: &str, name: &str, anchor: &str) -> Record {
        let mut r = record(id, name);
        r.state = RecordState::Present;
        r.target.anchors = vec![v1::Anchor { name: "id".into(), value: Some(v1::Value::string(anchor)) }];
        r.target.dn = format!("uid={name},ou=People");
        r
    }

    #[tokio::test]
    async fn imports_find_a_pages_objects_and_references_by_index_and_write_them_in_one_go() {
        let dir = temp_dir();
        let store = SqliteStore::open(&dir.join("space.db")).await.unwrap();
        store.insert(&anchored("1", "alice", "a-1")).await.unwrap();
        // A page of three new objects, one of whose names is taken: the other two go in.
        let page =
            [anchored("2", "bob", "a-2"), anchored("3", "ALICE", "a-3"), anchored("4", "carol", "a-4")];
        let rows = page
            .iter()
            .map(|r| crate::store::log::LogEntry::of(r, "import", "import_add", "applied"))
            .collect();
        assert_eq!(store.insert_imported_all(&page, rows).await.unwrap(), vec![true, false, true]);
        assert_eq!(store.count().await.unwrap(), 3);
        // The log rows of the records that went in, and only those, in the same transaction.
        let logged = store.log_query(&Default::default()).await.unwrap();
        assert_eq!(logged.iter().map(|e| e.scim_id.as_str()).collect::<Vec<_>>(), ["4", "2"]);
        assert!(logged.iter().all(|e| e.operation == "import_add" && e.anchor.starts_with("a-")));
        assert!(!read(&store.inner.cache).by_id.contains_key(&id_key("demo", "User", "2")), "not cached");
        // Found by anchor (of this connector only), with their state, version and target.
        let anchors: Vec<String> = ["a-1", "a-3", "a-4", "a-9"].map(String::from).to_vec();
        let mut found = store.by_anchors("people", &anchors).await.unwrap();
        found.sort_by(|a, b| a.id.cmp(&b.id));
        assert_eq!(
            found.iter().map(|k| (k.id.as_str(), k.anchor.as_str())).collect::<Vec<_>>(),
            [("1", "a-1"), ("4", "a-4")]
        );
        assert_eq!(found[1].target.dn, "uid=carol,ou=People");
        assert_eq!(found[1].state, RecordState::Present);
        assert!(store.by_anchors("others", &anchors).await.unwrap().is_empty());
        // While a write holds the main connection (an import's batch), a page's lookup reads on
        // a read connection instead of waiting for it.
        let held = lock(&store.inner.main);
        let reader = store.clone();
        let lookup = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap()
                .block_on(reader.by_anchors("people", &["a-4".to_string()]))
        });
        let found = lookup.join().unwrap().unwrap();
        drop(held);
        assert_eq!(found.iter().map(|k| k.id.as_str()).collect::<Vec<_>>(), ["4"]);
        // References resolve by DN, for present records only.
        let mut pending = anchored("5", "dave", "a-5");
        pending.state = RecordState::Pending;
        store.insert(&pending).await.unwrap();
        let texts: Vec<String> =
            ["uid=bob,ou=People", "uid=dave,ou=People", "uid=nobody,ou=People"].map(String::from).to_vec();
        let ids = store.ids_of("demo", &texts).await.unwrap();
        assert_eq!(ids.len(), 1);
        assert_eq!(ids["uid=bob,ou=People"], "2");
        // Listed in id order, a bounded batch at a time.
        let first = store.listed("demo", "User", "people", "", 2).await.unwrap();
        assert_eq!(first.iter().map(|l| l.id.as_str()).collect::<Vec<_>>(), ["1", "2"]);
        let rest = store.listed("demo", "User", "people", "2", 2).await.unwrap();
        assert_eq!(rest.iter().map(|l| l.id.as_str()).collect::<Vec<_>>(), ["4", "5"]);
        assert_eq!(rest[1].state, RecordState::Pending);
        assert!(store.listed("demo", "User", "people", "5", 2).await.unwrap().is_empty());
        // The mapping mark.
        assert_eq!(store.import_mark("people").await.unwrap(), None);
        store.set_import_mark("people", "m1").await.unwrap();
        store.set_import_mark("people", "m2").await.unwrap();
        assert_eq!(store.import_mark("people").await.unwrap().as_deref(), Some("m2"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn a_file_of_schema_version_1_gets_its_anchors_and_references_indexed() {
        // As the previous build left it: no such columns, version 1.
        let (dir, store) = alice_in_a_file_made_older(
            "DROP INDEX objects_anchored; DROP INDEX objects_referenced; DROP INDEX objects_unkeyed;
             ALTER TABLE objects DROP COLUMN anchor; ALTER TABLE objects DROP COLUMN reference;
             PRAGMA user_version = 1;",
        )
        .await;
        let found = store.by_anchors("people", &["a-1".to_string()]).await.unwrap();
        assert_eq!(found.len(), 1, "the anchor was filled from the stored target entry");
        let ids = store.ids_of("demo", &["uid=alice,ou=People".to_string()]).await.unwrap();
        assert_eq!(ids.get("uid=alice,ou=People").map(String::as_str), Some("1"));
        let version: i64 =
            store.with_main(|c| Ok(c.query_row("PRAGMA user_version", [], |r| r.get(0))?)).unwrap();
        assert_eq!(version, 2);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn anchors_and_references_are_indexed_only_where_set_and_imports_look_them_up_by_index() {
        // As a build of schema version 2 left it: every row in both indexes, under their old names.
        let (dir, store) = alice_in_a_file_made_older(
            "DROP INDEX objects_anchored; DROP INDEX objects_referenced;
             CREATE INDEX objects_by_anchor ON objects (connector, anchor);
             CREATE INDEX objects_by_reference ON objects (app, reference);",
        )
        .await;
        // A pending create: no anchor and no reference yet.
        let mut pending = record("2", "bob");
        pending.target = v1::Entry::default();
        store.insert(&pending).await.unwrap();
        let (indexes, partial) = store
            .with_main(|c| {
                let names: Vec<String> = c
                    .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND name LIKE 'objects_%' ORDER BY name")?
                    .query_map([], |row| row.get(0))?
                    .collect::<Result<_, _>>()?;
                let partial: i64 = c.query_row(
                    "SELECT count(*) FROM pragma_index_list('objects') \
                     WHERE name IN ('objects_anchored', 'objects_referenced') AND partial = 1",
                    [],
                    |row| row.get(0),
                )?;
                Ok((names, partial))
            })
            .unwrap();
        assert!(
            indexes.iter().any(|n| n == "objects_anchored")
                && !indexes.iter().any(|n| n == "objects_by_anchor"),
            "{indexes:?}"
        );
        assert_eq!(partial, 2, "both indexes leave out rows without a key: {indexes:?}");
        // The lookups find what they found, and SQLite plans them on the indexes, not a scan.
        assert_eq!(store.by_anchors("people", &["a-1".to_string()]).await.unwrap().len(), 1);
        let ids = store.ids_of("demo", &["uid=alice,ou=People".to_string()]).await.unwrap();
        assert_eq!(ids.get("uid=alice,ou=People").map(String::as_str), Some("1"));
        for (sql, index) in [(BY_ANCHORS, "objects_anchored"), (IDS_OF, "objects_referenced")] {
            let plan: Vec<String> = store
                .with_main(|c| {
                    Ok(c.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?
                        .query_map(params!["people", "[]"], |row| row.get(3))?
                        .collect::<Result<_, _>>()?)
                })
                .unwrap();
            assert!(plan.iter().any(|step| step.contains(index)), "{sql}: {plan:?}");
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// A store file holding alice (anchored), changed by `older` as an earlier build would have
    /// left it, then opened again (migrated); with its directory.
    async fn alice_in_a_file_made_older(older: &str) -> (PathBuf, SqliteStore) {
        let dir = temp_dir();
        let path = dir.join("space.db");
        let store = SqliteStore::open(&path).await.unwrap();
        store.insert(&anchored("1", "alice", "a-1")).await.unwrap();
        store.close().await;
        Connection::open(&path).unwrap().execute_batch(older).unwrap();
        (dir, SqliteStore::open(&path).await.unwrap())
    }

    fn temp_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("store-test-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Overwrites `len` bytes of `path` at `offset` with noise (a damaged disk block).
    fn damage(path: &Path, offset: u64, len: usize) {
        use std::io::{Seek, SeekFrom, Write};
        let mut file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        file.seek(SeekFrom::Start(offset)).unwrap();
        let noise: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(151).wrapping_add(7)).collect();
        file.write_all(&noise).unwrap();
    }

    async fn filled(dir: &Path, n: usize) -> SqliteStore {
        let store = SqliteStore::open(&dir.join("space.db")).await.unwrap();
        for i in 0..n {
            let mut r = record(&i.to_string(), &format!("user-{i}"));
            r.state = RecordState::Present;
            r.resource = json!({"userName": format!("user-{i}"), "padding": "x".repeat(200)});
            store.insert(&r).await.unwrap();
        }
        store
    }

    #[tokio::test]
    async fn a_damaged_file_is_refused_at_open_with_what_to_do() {
        let dir = temp_dir();
        let store = filled(&dir, 300).await;
        store.close().await;
        SqliteStore::check_file(&dir.join("space.db"), true).expect("sound before the damage");
        damage(&dir.join("space.db"), 4096, 4096);
        let e = SqliteStore::open(&dir.join("space.db")).await.unwrap_err();
        assert!(matches!(e, StoreError::Damaged(_)), "{e:?}");
        assert!(e.to_string().contains("store rebuild"), "{e}");
        assert!(matches!(SqliteStore::check_file(&dir.join("space.db"), true), Err(StoreError::Damaged(_))));
        // The file header itself: not a database at all.
        let dir = temp_dir();
        filled(&dir, 3).await.close().await;
        damage(&dir.join("space.db"), 0, 100);
        assert!(matches!(SqliteStore::open(&dir.join("space.db")).await, Err(StoreError::Damaged(_))));
    }

    #[tokio::test]
    async fn damage_met_while_running_fails_the_store() {
        let dir = temp_dir();
        let store = filled(&dir, 300).await;
        assert_eq!(store.health(), Health::Ready);
        // Folded into the file, then damaged under the running store: a scan on a fresh read
        // connection meets it.
        store.with_main(|c| Ok(c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?)).unwrap();
        damage(&dir.join("space.db"), 4096, 8192);
        let error = store.list("demo", "User").await.unwrap_err();
        assert!(matches!(error, StoreError::Damaged(_)), "{error:?}");
        assert!(matches!(store.health(), Health::Failed(_)), "{:?}", store.health());
    }

    #[tokio::test]
    async fn transient_failures_degrade_and_a_write_that_goes_through_restores() {
        let dir = temp_dir();
        let store = filled(&dir, 1).await;
        let busy =
            rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL), None);
        let e = store.note::<()>(Err(StoreError::Database(busy)), true).unwrap_err();
        assert!(matches!(e, StoreError::Unavailable(ref r) if r.contains("disk is full")), "{e:?}");
        assert!(matches!(store.health(), Health::Degraded(_)));
        // A read that works says nothing about writes; a write that works does.
        store.get("demo", "User", "0").await.unwrap();
        assert!(matches!(store.health(), Health::Degraded(_)));
        store.insert(&record("9", "nine")).await.unwrap();
        assert_eq!(store.health(), Health::Ready);
    }
}
