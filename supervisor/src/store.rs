//! The connector space: what the supervisor knows of each target object (its SCIM id, the
//! connector's anchors, the attribute values last exported, the SCIM resource and its version).
//!
//! SCIM reads and filters are answered from here, never from the target. The embedded store is
//! one SQLite file (WAL mode). A record is written `pending` before its export and made `present`
//! after, so that a write whose outcome is unknown can be reconciled instead of repeated.

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use ecma_proto::v1;
use prost::Message;
use serde_json::Value;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

use crate::mapping::TargetValues;

/// A store failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another resource of the app already has this userName.
    #[error("userName is already taken")]
    Conflict,
    #[error("connector space: {0}")]
    Database(#[from] sqlx::Error),
    #[error("connector space record is corrupt: {0}")]
    Corrupt(String),
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
    fn as_str(self) -> &'static str {
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
        let text = if self.target.dn.is_empty() {
            self.target.anchors.first()?.value.as_ref()?.as_text()?
        } else {
            self.target.dn.clone()
        };
        Some(v1::Value { kind: Some(v1::value::Kind::ReferenceValue(text)) })
    }
}

/// An entry's attribute values, by name.
pub fn entry_values(entry: &v1::Entry) -> TargetValues {
    entry.attributes.iter().map(|a| (a.name.clone(), a.values.clone())).collect()
}

/// The embedded connector space.
#[derive(Debug, Clone)]
pub struct Store {
    pool: SqlitePool,
    /// The database file (its size, with the WAL beside it, is a metric).
    path: std::path::PathBuf,
    cache: Arc<RwLock<Cache>>,
    /// Bumped around every write, so that a read that overlapped a write does not fill the
    /// cache with what it read.
    generation: Arc<AtomicU64>,
}

/// Records read by id or name, kept for the next read (SCIM reads are most of the traffic).
/// Filled on reads, emptied of what a write touches; the database stays the truth.
#[derive(Debug, Default)]
struct Cache {
    by_id: HashMap<(String, String, String), Arc<Record>>,
    /// (app, resource type, name folded like SQLite's NOCASE) → id.
    by_name: HashMap<(String, String, String), String>,
}

/// Beyond this many cached records the cache starts over (a bound, not an LRU).
const CACHE_LIMIT: usize = 250_000;

fn id_key(app: &str, resource_type: &str, id: &str) -> (String, String, String) {
    (app.to_string(), resource_type.to_string(), id.to_string())
}

fn name_key(app: &str, resource_type: &str, name: &str) -> (String, String, String) {
    (app.to_string(), resource_type.to_string(), name.to_ascii_lowercase())
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
        if self.by_id.len() >= CACHE_LIMIT {
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

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS objects (
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
    )",
    "CREATE UNIQUE INDEX IF NOT EXISTS objects_by_name ON objects (app, resource_type, user_name)",
    "CREATE TABLE IF NOT EXISTS watermarks (connector TEXT PRIMARY KEY, watermark BLOB NOT NULL)",
];

const COLUMNS: &str =
    "app, resource_type, id, connector, state, user_name, resource, target, version, created, modified";

impl Store {
    /// Opens (and creates) the store file.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str("sqlite://")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // WAL + NORMAL survives a crash of the process (not of the machine) without losing a
            // commit; the pending/present protocol covers the rest.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new().max_connections(8).connect_with(options).await?;
        for statement in SCHEMA {
            sqlx::query(*statement).execute(&pool).await?;
        }
        Ok(Self { pool, path: path.to_path_buf(), cache: Arc::default(), generation: Arc::default() })
    }

    fn record(row: &sqlx::sqlite::SqliteRow) -> Result<Record, StoreError> {
        let state = match row.get::<String, _>("state").as_str() {
            "pending" => RecordState::Pending,
            "present" => RecordState::Present,
            "deprovisioned" => RecordState::Deprovisioned,
            other => return Err(StoreError::Corrupt(format!("state {other:?}"))),
        };
        let resource = serde_json::from_str(&row.get::<String, _>("resource"))
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let target = v1::Entry::decode(row.get::<Vec<u8>, _>("target").as_slice())
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        Ok(Record {
            app: row.get("app"),
            resource_type: row.get("resource_type"),
            id: row.get("id"),
            connector: row.get("connector"),
            state,
            user_name: row.get("user_name"),
            resource,
            target,
            version: row.get("version"),
            created: row.get("created"),
            modified: row.get("modified"),
        })
    }

    /// The record of an app's resource type for which `condition` (on `?3`) holds.
    async fn one(
        &self,
        condition: &'static str,
        app: &str,
        resource_type: &str,
        key: &str,
    ) -> Result<Option<Record>, StoreError> {
        let sql =
            format!("SELECT {COLUMNS} FROM objects WHERE app = ?1 AND resource_type = ?2 AND {condition}");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(app)
            .bind(resource_type)
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(Self::record).transpose()
    }

    /// The present record with this id in any resource type of the app (for references).
    pub async fn find(&self, app: &str, id: &str) -> Result<Option<Record>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM objects WHERE app = ?1 AND id = ?2 AND state = 'present'");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(app).bind(id).fetch_optional(&self.pool).await?;
        row.as_ref().map(Self::record).transpose()
    }

    /// The record with this id, pending or present.
    pub async fn get(&self, app: &str, resource_type: &str, id: &str) -> Result<Option<Record>, StoreError> {
        if let Some(record) = self.cache.read().expect("cache lock").get(app, resource_type, id) {
            return Ok(Some(record));
        }
        let generation = self.generation.load(Ordering::SeqCst);
        let record = self.one("id = ?3", app, resource_type, id).await?;
        self.remember(&record, generation);
        Ok(record)
    }

    /// Caches what a read found, unless a write happened meanwhile.
    fn remember(&self, record: &Option<Record>, generation: u64) {
        if let Some(record) = record {
            let mut cache = self.cache.write().expect("cache lock");
            if self.generation.load(Ordering::SeqCst) == generation {
                cache.put(record);
            }
        }
    }

    /// Writes a record (`sql` inserts or upserts it) or deletes one (`sql` is `None`), keeping the
    /// cache honest: what the write touches is forgotten, and reads that overlap it do not cache.
    /// The write runs in a task of its own, so that it finishes, and the cache learns of it, even
    /// if the request that asked for it is dropped midway (a client that hangs up).
    async fn write(&self, record: &Record, sql: Option<String>) -> Result<(), StoreError> {
        use tracing::Instrument;
        let store = self.clone();
        let record = record.clone();
        let span = tracing::info_span!(
            "store",
            otel.name = if sql.is_some() { "connector space write" } else { "connector space delete" },
            otel.kind = "client",
            db.system.name = "sqlite",
            db.collection.name = "objects",
            ecma.record.state = record.state.as_str(),
        );
        let task = tokio::spawn(
            async move {
                store.generation.fetch_add(1, Ordering::SeqCst);
                let result = match &sql {
                    Some(sql) => store.bind_all(sql, &record).await,
                    None => {
                        sqlx::query("DELETE FROM objects WHERE app = ?1 AND resource_type = ?2 AND id = ?3")
                            .bind(&record.app)
                            .bind(&record.resource_type)
                            .bind(&record.id)
                            .execute(&store.pool)
                            .await
                            .map(|_| ())
                            .map_err(StoreError::from)
                    }
                };
                let mut cache = store.cache.write().expect("cache lock");
                let name = sql.as_ref().map(|_| record.user_name.as_str());
                cache.forget(&record.app, &record.resource_type, &record.id, name);
                store.generation.fetch_add(1, Ordering::SeqCst);
                result
            }
            .instrument(span),
        );
        task.await.unwrap_or_else(|e| Err(StoreError::Corrupt(format!("a store write failed: {e}"))))
    }

    /// The record with this userName (case-insensitive), pending or present.
    pub async fn by_user_name(
        &self,
        app: &str,
        resource_type: &str,
        name: &str,
    ) -> Result<Option<Record>, StoreError> {
        if let Some(record) = self.cache.read().expect("cache lock").by_name(app, resource_type, name) {
            return Ok(Some(record));
        }
        let generation = self.generation.load(Ordering::SeqCst);
        let record = self.one("user_name = ?3", app, resource_type, name).await?;
        self.remember(&record, generation);
        Ok(record)
    }

    /// Every present record of an app's resource type, in creation order.
    pub async fn list(&self, app: &str, resource_type: &str) -> Result<Vec<Record>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM objects WHERE app = ?1 AND resource_type = ?2 AND state = 'present' \
             ORDER BY created, id"
        );
        let rows =
            sqlx::query(sqlx::AssertSqlSafe(sql)).bind(app).bind(resource_type).fetch_all(&self.pool).await?;
        rows.iter().map(Self::record).collect()
    }

    /// Inserts a new record; [`StoreError::Conflict`] when the userName is taken.
    pub async fn insert(&self, record: &Record) -> Result<(), StoreError> {
        let sql =
            format!("INSERT INTO objects ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)");
        self.write(record, Some(sql)).await
    }

    /// Replaces a record (same app, type and id); [`StoreError::Conflict`] when its new userName
    /// belongs to another record. (An upsert on the id: unlike `REPLACE`, a clash on the name
    /// index fails instead of deleting the other record.)
    pub async fn update(&self, record: &Record) -> Result<(), StoreError> {
        let sql = format!(
            "INSERT INTO objects ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) \
             ON CONFLICT (app, resource_type, id) DO UPDATE SET connector = excluded.connector, \
             state = excluded.state, user_name = excluded.user_name, resource = excluded.resource, \
             target = excluded.target, version = excluded.version, created = excluded.created, \
             modified = excluded.modified"
        );
        self.write(record, Some(sql)).await
    }

    async fn bind_all(&self, sql: &str, r: &Record) -> Result<(), StoreError> {
        let result = sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
            .bind(&r.app)
            .bind(&r.resource_type)
            .bind(&r.id)
            .bind(&r.connector)
            .bind(r.state.as_str())
            .bind(&r.user_name)
            .bind(r.resource.to_string())
            .bind(r.target.encode_to_vec())
            .bind(r.version)
            .bind(&r.created)
            .bind(&r.modified)
            .execute(&self.pool)
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(StoreError::Conflict),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes a record.
    pub async fn delete(&self, app: &str, resource_type: &str, id: &str) -> Result<(), StoreError> {
        let key = Record {
            app: app.to_string(),
            resource_type: resource_type.to_string(),
            id: id.to_string(),
            connector: String::new(),
            state: RecordState::Pending,
            user_name: String::new(),
            resource: Value::Null,
            target: v1::Entry::default(),
            version: 0,
            created: String::new(),
            modified: String::new(),
        };
        self.write(&key, None).await
    }

    /// Bytes of the store on disk (the database file and its write-ahead log).
    pub fn file_bytes(&self) -> Option<u64> {
        let size = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len()).ok();
        let mut wal = self.path.clone().into_os_string();
        wal.push("-wal");
        Some(size(&self.path)? + size(std::path::Path::new(&wal)).unwrap_or(0))
    }

    /// Number of records.
    pub async fn count(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query("SELECT COUNT(*) FROM objects").fetch_one(&self.pool).await?.get(0))
    }

    /// Every record of a connector, whatever its state (for imports).
    pub async fn by_connector(&self, connector: &str) -> Result<Vec<Record>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM objects WHERE connector = ?1");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(connector).fetch_all(&self.pool).await?;
        rows.iter().map(Self::record).collect()
    }

    /// Reference text (DN or anchor) → SCIM id, for every present record of an app.
    pub async fn reference_ids(
        &self,
        app: &str,
    ) -> Result<std::collections::HashMap<String, String>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM objects WHERE app = ?1 AND state = 'present'");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(app).fetch_all(&self.pool).await?;
        let mut ids = std::collections::HashMap::new();
        for row in &rows {
            let record = Self::record(row)?;
            if let Some(text) = record.reference().as_ref().and_then(v1::Value::as_text) {
                ids.insert(text, record.id);
            }
        }
        Ok(ids)
    }

    /// The import watermark last committed for a connector.
    pub async fn watermark(&self, connector: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(sqlx::query("SELECT watermark FROM watermarks WHERE connector = ?1")
            .bind(connector)
            .fetch_optional(&self.pool)
            .await?
            .map(|row| row.get(0)))
    }

    /// Commits an import watermark (call only once the entries it covers are stored).
    pub async fn set_watermark(&self, connector: &str, watermark: &[u8]) -> Result<(), StoreError> {
        sqlx::query("REPLACE INTO watermarks (connector, watermark) VALUES (?1, ?2)")
            .bind(connector)
            .bind(watermark)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The pending records of a connector: writes whose outcome is not known yet.
    pub async fn pending(&self, connector: &str) -> Result<Vec<Record>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM objects WHERE connector = ?1 AND state = 'pending' ORDER BY created"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(connector).fetch_all(&self.pool).await?;
        rows.iter().map(Self::record).collect()
    }

    /// How many writes of a connector have an unknown outcome.
    pub async fn count_pending(&self, connector: &str) -> Result<i64, StoreError> {
        Ok(sqlx::query("SELECT COUNT(*) FROM objects WHERE connector = ?1 AND state = 'pending'")
            .bind(connector)
            .fetch_one(&self.pool)
            .await?
            .get(0))
    }

    /// Closes the pool, flushing the WAL.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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

    #[tokio::test]
    async fn records_round_trip_and_names_are_unique() {
        let dir = std::env::temp_dir().join(format!("store-test-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let store = Store::open(&dir.join("space.db")).await.unwrap();
        store.insert(&record("1", "Alice")).await.unwrap();
        assert!(matches!(store.insert(&record("2", "alice")).await, Err(StoreError::Conflict)));
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
        std::fs::remove_dir_all(dir).unwrap();
    }
}
