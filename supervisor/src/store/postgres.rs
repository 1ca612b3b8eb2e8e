//! The shared engine of the connector space: the schema `connector_space` of a PostgreSQL
//! database, used by every supervisor of an installation at once.
//!
//! Nothing is cached: each read is one indexed query, so a read on one node sees the write
//! another node made just before. Names are unique by the database's own index on the folded
//! name (two nodes creating one name at once: one insert wins, the other is a conflict). Writes
//! of one object are serialised across nodes by session advisory locks, held on a few lock
//! sessions of their own ([`LockSessions`]): each key always goes to the same session, which
//! takes it with `pg_try_advisory_lock` (polled while another node holds it: writes of one
//! object on two nodes at once are rare) and lets it go with `pg_advisory_unlock` after the write,
//! without the write waiting for that. A node that dies lets go of every lock it held, as
//! PostgreSQL ends its sessions. An import's lead is a session advisory lock too.
//!
//! A connection failure makes the store degraded (SCIM answers 503 with Retry-After, `/readyz`
//! is 503); a probe every second brings it back to ready once a write goes through again. The
//! pool and the lock sessions reconnect by themselves.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prost::Message;
use sqlx::Row;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};

use super::log::{self, LogEntry, LogFilter};
use super::{
    Engine, Health, Held, ImportRun, Known, Listed, Record, RecordState, StoreError, StoredRow, fold,
    lock_key,
};

/// Whether `text` is a PostgreSQL URL.
pub fn is_url(text: &str) -> bool {
    text.starts_with("postgres://") || text.starts_with("postgresql://")
}

/// `url` with its password (in the user part or a `password` parameter) replaced by `***`, for
/// messages and logs; a URL that cannot be parsed shows only that it is one.
pub fn redacted(url: &str) -> String {
    let Ok(mut parsed) = url::Url::parse(url) else {
        return "postgres://(a URL that cannot be parsed; not shown, it may hold a password)".into();
    };
    if parsed.password().is_some() {
        let _ = parsed.set_password(Some("***"));
    }
    if parsed.query_pairs().any(|(k, _)| k.eq_ignore_ascii_case("password")) {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(k, v)| {
                let v = if k.eq_ignore_ascii_case("password") { "***".to_string() } else { v.into_owned() };
                (k.into_owned(), v)
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    parsed.to_string()
}

/// How to reach the database.
#[derive(Clone)]
pub struct Settings {
    /// `postgres://user@host:port/database?sslmode=verify-full&sslrootcert=...`.
    pub url: String,
    /// The password, when not in the URL.
    pub password: Option<String>,
    /// Connections for queries.
    pub max_connections: u32,
    /// Sessions that hold the locks taken across writes.
    pub lock_connections: u32,
    /// How long a connection may take to open (and a query to wait for one).
    pub connect_timeout: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            url: String::new(),
            password: None,
            max_connections: 16,
            lock_connections: 4,
            connect_timeout: Duration::from_secs(5),
        }
    }
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("url", &redacted(&self.url))
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("max_connections", &self.max_connections)
            .field("lock_connections", &self.lock_connections)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

/// How long one statement may take before its connection is taken for lost (a server that no
/// longer answers at all, as a network that drops packets leaves it): longer than any scan of a
/// large connector space.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);

/// A statement bounded by [`STATEMENT_TIMEOUT`].
trait Bounded<T>: std::future::Future<Output = Result<T, sqlx::Error>> + Sized {
    async fn bounded(self) -> Result<T, sqlx::Error> {
        tokio::time::timeout(STATEMENT_TIMEOUT, self).await.unwrap_or_else(|_| {
            Err(sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("PostgreSQL did not answer within {STATEMENT_TIMEOUT:?}"),
            )))
        })
    }
}

impl<T, F: std::future::Future<Output = Result<T, sqlx::Error>>> Bounded<T> for F {}

/// How long a write waits for another supervisor to let go of the object's lock before it is
/// answered 503 (longer than any export with the default timeouts).
const LOCK_WAIT: Duration = Duration::from_secs(60);

/// The schema version this build knows.
const SCHEMA_VERSION: i32 = 3;

/// Each version's statements, in order (index 0 brings a new database to version 1).
const MIGRATIONS: &[&str] = &[
    "
    CREATE TABLE connector_space.objects (
        app TEXT NOT NULL,
        resource_type TEXT NOT NULL,
        id TEXT NOT NULL,
        connector TEXT NOT NULL,
        state TEXT NOT NULL,
        user_name TEXT NOT NULL,
        name_key TEXT NOT NULL,
        resource TEXT NOT NULL,
        target BYTEA NOT NULL,
        version BIGINT NOT NULL,
        created TEXT NOT NULL,
        modified TEXT NOT NULL,
        PRIMARY KEY (app, resource_type, id)
    );
    CREATE UNIQUE INDEX objects_by_name_key ON connector_space.objects (app, resource_type, name_key);
    CREATE INDEX objects_by_app_id ON connector_space.objects (app, id);
    CREATE INDEX objects_by_connector ON connector_space.objects (connector, state);
    CREATE TABLE connector_space.watermarks (connector TEXT PRIMARY KEY, watermark BYTEA NOT NULL);
    CREATE TABLE connector_space.imports (
        id BIGSERIAL PRIMARY KEY,
        connector TEXT NOT NULL,
        node TEXT NOT NULL,
        import_type TEXT NOT NULL,
        started_ms BIGINT NOT NULL,
        finished_ms BIGINT,
        outcome TEXT
    );
    CREATE INDEX imports_by_connector ON connector_space.imports (connector, id);
    CREATE TABLE connector_space.probe (node TEXT PRIMARY KEY, at_ms BIGINT NOT NULL);
",
    "
    CREATE TABLE connector_space.provisioning_log (
        seq BIGSERIAL PRIMARY KEY,
        at_ms BIGINT NOT NULL,
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
        duration_ms DOUBLE PRECISION NOT NULL,
        trace_id TEXT NOT NULL
    );
    CREATE INDEX provisioning_log_by_time ON connector_space.provisioning_log (at_ms);
    CREATE INDEX provisioning_log_by_id ON connector_space.provisioning_log (scim_id);
",
    // Each record's anchor and reference text, indexed: an import looks up a page's objects and
    // their references instead of reading the connector space (rows an earlier build writes
    // have none, until `fill_missing_keys`).
    "
    ALTER TABLE connector_space.objects ADD COLUMN anchor TEXT, ADD COLUMN reference TEXT;
    CREATE INDEX objects_by_anchor ON connector_space.objects (connector, anchor);
    CREATE INDEX objects_by_reference ON connector_space.objects (app, reference);
    CREATE INDEX objects_unkeyed ON connector_space.objects (connector) WHERE anchor IS NULL;
    CREATE TABLE connector_space.import_marks (connector TEXT PRIMARY KEY, mark TEXT NOT NULL);
",
];

const COLUMNS: &str =
    "app, resource_type, id, connector, state, user_name, resource, target, version, created, modified";

const INSERT: &str = "INSERT INTO connector_space.objects (app, resource_type, id, connector, state, \
     user_name, resource, target, version, created, modified, name_key, anchor, reference) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)";

/// An import's new records, one array per column, in one statement; a record whose name (or
/// id) is taken is left out, and the ids of those that went in are returned.
const INSERT_ALL: &str = "INSERT INTO connector_space.objects (app, resource_type, id, connector, state, \
     user_name, resource, target, version, created, modified, name_key, anchor, reference) \
     SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
     $7::text[], $8::bytea[], $9::bigint[], $10::text[], $11::text[], $12::text[], $13::text[], $14::text[]) \
     ON CONFLICT DO NOTHING RETURNING id";

/// An upsert on the id: a clash on the name index fails instead of touching the other record.
const UPSERT: &str = "INSERT INTO connector_space.objects (app, resource_type, id, connector, state, \
     user_name, resource, target, version, created, modified, name_key, anchor, reference) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
     ON CONFLICT (app, resource_type, id) DO UPDATE SET connector = excluded.connector, \
     state = excluded.state, user_name = excluded.user_name, name_key = excluded.name_key, \
     resource = excluded.resource, target = excluded.target, version = excluded.version, \
     created = excluded.created, modified = excluded.modified, anchor = excluded.anchor, \
     reference = excluded.reference";

/// What a PostgreSQL error says about the store.
fn classify(error: sqlx::Error) -> StoreError {
    match &error {
        sqlx::Error::Database(e) => {
            let code = e.code().unwrap_or_default();
            if code == "23505" {
                StoreError::Conflict
            } else if
            // Connection exceptions, the server shutting down or not accepting connections yet,
            // out of resources (disk full, too many connections), system errors, a cancelled
            // statement, a read-only server (a primary demoted during a failover), a refused
            // login (a password being rotated), serialization failures and deadlocks, a lock
            // not available: all pass.
            code.starts_with("08")
                || code.starts_with("57P")
                || code.starts_with("53")
                || code.starts_with("58")
                || code == "57014"
                || code == "25006"
                || code == "28000"
                || code == "28P01"
                || code == "40001"
                || code == "40P01"
                || code == "55P03"
            {
                StoreError::Unavailable(format!("PostgreSQL: {e}"))
            } else {
                StoreError::Postgres(error)
            }
        }
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => StoreError::Unavailable(format!("PostgreSQL: {error}")),
        _ => StoreError::Postgres(error),
    }
}

impl super::StoredRow for PgRow {
    fn text(&self, column: &str) -> Result<String, StoreError> {
        Ok(self.try_get(column)?)
    }

    fn integer(&self, column: &str) -> Result<i64, StoreError> {
        Ok(self.try_get(column)?)
    }

    fn bytes(&self, column: &str) -> Result<Vec<u8>, StoreError> {
        Ok(self.try_get(column)?)
    }
}

/// The PostgreSQL connector space.
#[derive(Debug, Clone)]
pub struct PgStore {
    queries: PgPool,
    locks: LockSessions,
    health: Arc<Mutex<Health>>,
    /// This process's row in the probe table.
    node: String,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl PgStore {
    /// Connects, creates or migrates the schema (refusing one newer than this build knows), and
    /// starts the health probe.
    pub async fn connect(settings: &Settings) -> Result<Self, StoreError> {
        let mut options = PgConnectOptions::from_str(&settings.url).map_err(|e| {
            StoreError::Unavailable(format!(
                "store.url ({}) is not a usable PostgreSQL URL: {e}",
                redacted(&settings.url)
            ))
        })?;
        if let Some(password) = &settings.password {
            options = options.password(password);
        }
        options = options.application_name("ecma-supervisor");
        let queries = PgPoolOptions::new()
            .max_connections(settings.max_connections.max(1))
            .acquire_timeout(settings.connect_timeout)
            // A broken connection fails its query (a 503 the client retries) and is dropped when
            // it goes back to the pool, which pings every connection it takes back.
            .test_before_acquire(false)
            .connect_with(options.clone())
            .await
            .map_err(|e| match classify(e) {
                StoreError::Unavailable(reason) => StoreError::Unavailable(format!(
                    "cannot reach the connector space at {}: {reason}",
                    redacted(&settings.url)
                )),
                other => other,
            })?;
        let locks = LockSessions::start(
            options,
            settings.lock_connections.max(1),
            settings.connect_timeout.max(Duration::from_secs(1)),
        );
        migrate(&queries).await?;
        fill_missing_keys(&queries).await?;
        let node = format!(
            "{}:{}:{}",
            nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_default(),
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        );
        let store = Self { queries, locks, health: Arc::new(Mutex::new(Health::Ready)), node };
        tokio::spawn(probe_loop(store.clone()));
        Ok(store)
    }

    /// Notes what an operation's outcome says about the store's health.
    fn note<T>(&self, result: Result<T, sqlx::Error>, wrote: bool) -> Result<T, StoreError> {
        // Every connection busy for connect_timeout is load, not an unreachable database: that
        // request is answered 503, the store stays ready.
        if let Err(sqlx::Error::PoolTimedOut) = result {
            metrics::counter!("connector_space_errors_total", "kind" => "busy").increment(1);
            return Err(StoreError::Unavailable("every connection to the connector space is busy".into()));
        }
        let result = result.map_err(classify);
        Health::note(&self.health, &result, wrote);
        result
    }

    /// A failure, noted (as [`PgStore::note`] does) and classified.
    fn failed(&self, error: sqlx::Error) -> StoreError {
        match self.note::<()>(Err(error), false) {
            Err(e) => e,
            Ok(()) => StoreError::Unavailable("an error that was no error".into()),
        }
    }

    async fn records(&self, sql: String, binds: &[&str]) -> Result<Vec<Record>, StoreError> {
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for bind in binds {
            query = query.bind(bind.to_string());
        }
        let rows = self.note(query.fetch_all(&self.queries).bounded().await, false)?;
        rows.iter().map(super::record_of).collect()
    }

    async fn one(&self, sql: String, binds: &[&str]) -> Result<Option<Record>, StoreError> {
        Ok(self.records(sql, binds).await?.into_iter().next())
    }

    async fn put(&self, r: &Record, upsert: bool) -> Result<(), StoreError> {
        use tracing::Instrument;
        let span = tracing::info_span!(
            "store",
            otel.name = "connector space write",
            otel.kind = "client",
            db.system.name = "postgresql",
            db.collection.name = "objects",
            ecma.record.state = r.state.as_str(),
        );
        let (anchor, reference) = super::index_keys(&r.target);
        let done = sqlx::query(if upsert { UPSERT } else { INSERT })
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
            .bind(fold(&r.user_name))
            .bind(anchor)
            .bind(reference)
            .execute(&self.queries)
            .bounded()
            .instrument(span)
            .await;
        self.note(done, true).map(|_| ())
    }

    /// Writes a probe row and takes a lock: whether the database takes writes and locks now.
    async fn probe(&self) -> Result<(), StoreError> {
        let key = lock_key(&["probe", &self.node]);
        if let Err(e) = self.locks.try_lock(key).await {
            return self.note(Err(e), false);
        }
        let done = sqlx::query(
            "INSERT INTO connector_space.probe (node, at_ms) VALUES ($1, $2) \
             ON CONFLICT (node) DO UPDATE SET at_ms = excluded.at_ms",
        )
        .bind(&self.node)
        .bind(super::now_ms())
        .execute(&self.queries)
        .bounded()
        .await;
        self.note(done, true).map(|_| ())
    }
}

/// What a lock session is asked to do.
enum LockOp {
    /// `pg_try_advisory_lock(key)`: the session's generation when taken, `None` when another
    /// session holds it.
    Try(i64, tokio::sync::oneshot::Sender<Result<Option<u64>, sqlx::Error>>),
    /// `pg_advisory_unlock(key)` of a lock taken in a generation, no answer awaited.
    Unlock(i64, u64),
    /// Ends the session (and with it every lock it holds).
    Close,
}

/// A few sessions that hold this process's advisory locks, each its own connection driven by a
/// task: a key always goes to the same session (so that its unlock and the next lock of it are
/// done in order), and a session that breaks is opened again at its next request (the locks it
/// held went with it: each connection is a new generation, and an unlock of an earlier one is
/// dropped, so that it can never let go of a lock taken since).
#[derive(Debug, Clone)]
struct LockSessions {
    sessions: Arc<Vec<tokio::sync::mpsc::UnboundedSender<LockOp>>>,
}

/// A lock held on a session, let go when dropped.
struct SessionLock {
    key: i64,
    generation: u64,
    session: tokio::sync::mpsc::UnboundedSender<LockOp>,
}

impl Drop for SessionLock {
    fn drop(&mut self) {
        // A closed session (the store closed, or the process stopping) holds nothing any more.
        let _ = self.session.send(LockOp::Unlock(self.key, self.generation));
    }
}

impl LockSessions {
    fn start(options: PgConnectOptions, count: u32, timeout: Duration) -> Self {
        let sessions = (0..count)
            .map(|_| {
                let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
                tokio::spawn(lock_session(options.clone(), timeout, rx));
                tx
            })
            .collect();
        Self { sessions: Arc::new(sessions) }
    }

    fn session(&self, key: i64) -> &tokio::sync::mpsc::UnboundedSender<LockOp> {
        &self.sessions[key.rem_euclid(self.sessions.len() as i64) as usize]
    }

    /// Takes `key` if no other session (no other node) holds it.
    async fn try_lock(&self, key: i64) -> Result<Option<SessionLock>, sqlx::Error> {
        let session = self.session(key);
        let (tx, rx) = tokio::sync::oneshot::channel();
        session.send(LockOp::Try(key, tx)).map_err(|_| sqlx::Error::PoolClosed)?;
        let taken = rx.await.map_err(|_| sqlx::Error::PoolClosed)??;
        Ok(taken.map(|generation| SessionLock { key, generation, session: session.clone() }))
    }

    fn close(&self) {
        for session in self.sessions.iter() {
            let _ = session.send(LockOp::Close);
        }
    }
}

/// Whether an error says the connection itself is broken (not merely the statement refused).
fn is_connection_error(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(e) => {
            let code = e.code().unwrap_or_default();
            code.starts_with("08") || code.starts_with("57P")
        }
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        _ => false,
    }
}

/// After a failed connect, requests fail at once for this long (rather than each waiting for a
/// connect of its own).
const RECONNECT_PAUSE: Duration = Duration::from_secs(1);

/// One lock session: requests in order on one connection, opened (again) when needed; each
/// statement bounded by `timeout` (a connection that does not answer is taken for broken).
async fn lock_session(
    options: PgConnectOptions,
    timeout: Duration,
    mut requests: tokio::sync::mpsc::UnboundedReceiver<LockOp>,
) {
    use sqlx::Connection;
    let mut connection: Option<sqlx::PgConnection> = None;
    let mut generation = 0u64;
    let mut down: Option<(std::time::Instant, String)> = None;
    let unreachable = |reason: &str| sqlx::Error::Io(std::io::Error::other(reason.to_string()));
    while let Some(op) = requests.recv().await {
        let (key, reply) = match op {
            LockOp::Close => return,
            // The locks of a broken session, or of an earlier connection, went with it.
            LockOp::Unlock(key, taken_in) => {
                if taken_in != generation {
                    continue;
                }
                let Some(open) = connection.as_mut() else { continue };
                let unlocked = tokio::time::timeout(
                    timeout,
                    sqlx::query("SELECT pg_advisory_unlock($1)").bind(key).execute(&mut *open),
                )
                .await;
                if !matches!(unlocked, Ok(Ok(_))) {
                    connection = None;
                }
                continue;
            }
            LockOp::Try(key, reply) => (key, reply),
        };
        if connection.is_none() {
            if let Some((since, reason)) = &down
                && since.elapsed() < RECONNECT_PAUSE
            {
                let _ = reply.send(Err(unreachable(reason)));
                continue;
            }
            match tokio::time::timeout(timeout, sqlx::PgConnection::connect_with(&options)).await {
                Ok(Ok(opened)) => {
                    connection = Some(opened);
                    generation += 1;
                    down = None;
                }
                failed => {
                    let reason = match failed {
                        Ok(Err(e)) => format!("the lock session cannot reach PostgreSQL: {e}"),
                        _ => format!("the lock session cannot reach PostgreSQL within {timeout:?}"),
                    };
                    let _ = reply.send(Err(unreachable(&reason)));
                    down = Some((std::time::Instant::now(), reason));
                    continue;
                }
            }
        }
        let Some(open) = connection.as_mut() else { continue };
        let taken = tokio::time::timeout(
            timeout,
            sqlx::query_scalar::<_, bool>("SELECT pg_try_advisory_lock($1)").bind(key).fetch_one(&mut *open),
        )
        .await
        .unwrap_or_else(|_| Err(unreachable("PostgreSQL did not answer the lock session in time")));
        let broken = taken.as_ref().err().is_some_and(is_connection_error);
        let answer = taken.map(|taken| taken.then_some(generation));
        if let Err(Ok(Some(_))) = reply.send(answer) {
            // Whoever asked is gone (its request was dropped): nobody will let go of it.
            let _ = tokio::time::timeout(
                timeout,
                sqlx::query("SELECT pg_advisory_unlock($1)").bind(key).execute(&mut *open),
            )
            .await;
        }
        if broken {
            // The database restarted, the network cut: whatever it held is gone with it.
            connection = None;
        }
    }
}

/// Creates the schema or brings it to [`SCHEMA_VERSION`], one node at a time (a transaction
/// advisory lock); refuses a schema written by a newer build.
async fn migrate(pool: &PgPool) -> Result<(), StoreError> {
    let mut transaction = pool.begin().await.map_err(classify)?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(lock_key(&["connector_space", "migrations"]))
        .execute(&mut *transaction)
        .await
        .map_err(classify)?;
    sqlx::query("CREATE SCHEMA IF NOT EXISTS connector_space")
        .execute(&mut *transaction)
        .await
        .map_err(classify)?;
    sqlx::query("CREATE TABLE IF NOT EXISTS connector_space.schema_version (version INTEGER NOT NULL)")
        .execute(&mut *transaction)
        .await
        .map_err(classify)?;
    let version: Option<i32> = sqlx::query_scalar("SELECT max(version) FROM connector_space.schema_version")
        .fetch_one(&mut *transaction)
        .await
        .map_err(classify)?;
    let version = version.unwrap_or(0);
    if version > SCHEMA_VERSION {
        return Err(StoreError::Corrupt(format!(
            "the connector space has schema version {version}, newer than this supervisor knows \
             ({SCHEMA_VERSION}): run the newer supervisor on every node, or restore a backup made for \
             this one"
        )));
    }
    for (i, statements) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        sqlx::raw_sql(sqlx::AssertSqlSafe(*statements)).execute(&mut *transaction).await.map_err(classify)?;
        sqlx::query("INSERT INTO connector_space.schema_version (version) VALUES ($1)")
            .bind(i as i32 + 1)
            .execute(&mut *transaction)
            .await
            .map_err(classify)?;
        tracing::info!(version = i + 1, "connector space schema migrated");
    }
    transaction.commit().await.map_err(classify)
}

/// Sets `anchor` and `reference` where they are missing (rows written by an earlier build; a
/// partial index holds only those, so a node's start reads no more than them).
async fn fill_missing_keys(pool: &PgPool) -> Result<(), StoreError> {
    let rows = sqlx::query(
        "SELECT app, resource_type, id, target FROM connector_space.objects WHERE anchor IS NULL",
    )
    .fetch_all(pool)
    .await
    .map_err(classify)?;
    for row in rows {
        let target: Vec<u8> = row.try_get("target").map_err(classify)?;
        let target = ecma_proto::v1::Entry::decode(target.as_slice())
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let (anchor, reference) = super::index_keys(&target);
        sqlx::query(
            "UPDATE connector_space.objects SET anchor = $1, reference = $2 \
             WHERE app = $3 AND resource_type = $4 AND id = $5",
        )
        .bind(anchor)
        .bind(reference)
        .bind(row.try_get::<String, _>("app").map_err(classify)?)
        .bind(row.try_get::<String, _>("resource_type").map_err(classify)?)
        .bind(row.try_get::<String, _>("id").map_err(classify)?)
        .execute(pool)
        .await
        .map_err(classify)?;
    }
    Ok(())
}

/// Every second: a read while ready (so that `/readyz` tells when the database went away even
/// without traffic), a write while degraded (so that the store is ready again once writes go
/// through). Ends when the store's pools are closed.
async fn probe_loop(store: PgStore) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if store.queries.is_closed() {
            return;
        }
        if matches!(store.health(), Health::Ready) {
            let _ = store.note(sqlx::query("SELECT 1").execute(&store.queries).bounded().await, false);
        } else {
            let _ = store.probe().await;
        }
    }
}

#[async_trait::async_trait]
impl Engine for PgStore {
    fn kind(&self) -> &'static str {
        "postgresql"
    }

    fn health(&self) -> Health {
        lock(&self.health).clone()
    }

    async fn find(&self, app: &str, id: &str) -> Result<Option<Record>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM connector_space.objects WHERE app = $1 AND id = $2 AND state = 'present' LIMIT 1"
        );
        self.one(sql, &[app, id]).await
    }

    async fn get(&self, app: &str, resource_type: &str, id: &str) -> Result<Option<Record>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM connector_space.objects WHERE app = $1 AND resource_type = $2 AND id = $3"
        );
        self.one(sql, &[app, resource_type, id]).await
    }

    async fn by_user_name(
        &self,
        app: &str,
        resource_type: &str,
        name: &str,
    ) -> Result<Option<Record>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM connector_space.objects WHERE app = $1 AND resource_type = $2 AND name_key = $3"
        );
        self.one(sql, &[app, resource_type, &fold(name)]).await
    }

    async fn list(&self, app: &str, resource_type: &str) -> Result<Vec<Record>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM connector_space.objects WHERE app = $1 AND resource_type = $2 \
             AND state = 'present' ORDER BY created COLLATE \"C\", id COLLATE \"C\""
        );
        self.records(sql, &[app, resource_type]).await
    }

    async fn present(&self, app: &str) -> Result<Vec<Record>, StoreError> {
        let sql =
            format!("SELECT {COLUMNS} FROM connector_space.objects WHERE app = $1 AND state = 'present'");
        self.records(sql, &[app]).await
    }

    async fn all(&self) -> Result<Vec<Record>, StoreError> {
        self.records(format!("SELECT {COLUMNS} FROM connector_space.objects ORDER BY created COLLATE \"C\", id COLLATE \"C\""), &[]).await
    }

    async fn insert(&self, record: &Record) -> Result<(), StoreError> {
        self.put(record, false).await
    }

    async fn update(&self, record: &Record) -> Result<(), StoreError> {
        self.put(record, true).await
    }

    async fn delete(&self, app: &str, resource_type: &str, id: &str) -> Result<(), StoreError> {
        let done = sqlx::query(
            "DELETE FROM connector_space.objects WHERE app = $1 AND resource_type = $2 AND id = $3",
        )
        .bind(app)
        .bind(resource_type)
        .bind(id)
        .execute(&self.queries)
        .bounded()
        .await;
        self.note(done, true).map(|_| ())
    }

    async fn count(&self) -> Result<i64, StoreError> {
        self.note(
            sqlx::query_scalar("SELECT count(*) FROM connector_space.objects")
                .fetch_one(&self.queries)
                .bounded()
                .await,
            false,
        )
    }

    async fn search(
        &self,
        app: &str,
        resource_type: &str,
        part: &str,
        limit: usize,
    ) -> Result<Vec<Record>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM connector_space.objects WHERE app = $1 AND resource_type = $2 \
             AND ($3 = '' OR id = $3 OR strpos(lower(user_name), lower($3)) > 0) ORDER BY user_name LIMIT {}",
            limit.min(10_000)
        );
        self.records(sql, &[app, resource_type, part]).await
    }

    async fn by_anchors(&self, connector: &str, anchors: &[String]) -> Result<Vec<Known>, StoreError> {
        let rows = sqlx::query(
            "SELECT resource_type, id, anchor, state, version, target FROM connector_space.objects \
             WHERE connector = $1 AND anchor = ANY($2)",
        )
        .bind(connector)
        .bind(anchors)
        .fetch_all(&self.queries)
        .bounded()
        .await;
        let rows = self.note(rows, false)?;
        rows.iter()
            .map(|row| {
                Ok(Known {
                    resource_type: row.text("resource_type")?,
                    id: row.text("id")?,
                    anchor: row.text("anchor")?,
                    state: RecordState::parse(&row.text("state")?)?,
                    version: row.integer("version")?,
                    target: ecma_proto::v1::Entry::decode(row.bytes("target")?.as_slice())
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                })
            })
            .collect()
    }

    async fn ids_of(&self, app: &str, texts: &[String]) -> Result<HashMap<String, String>, StoreError> {
        if texts.is_empty() {
            return Ok(HashMap::new());
        }
        let rows = sqlx::query(
            "SELECT reference, id FROM connector_space.objects WHERE app = $1 AND state = 'present' \
             AND reference = ANY($2)",
        )
        .bind(app)
        .bind(texts)
        .fetch_all(&self.queries)
        .bounded()
        .await;
        let rows = self.note(rows, false)?;
        rows.iter().map(|row| Ok((row.text("reference")?, row.text("id")?))).collect()
    }

    async fn insert_imported_all(
        &self,
        records: &[Record],
        log: Vec<LogEntry>,
    ) -> Result<Vec<bool>, StoreError> {
        use tracing::Instrument;
        if records.is_empty() {
            return Ok(vec![]);
        }
        let span = tracing::info_span!(
            "store",
            otel.name = "connector space import write",
            otel.kind = "client",
            db.system.name = "postgresql",
            db.collection.name = "objects",
            ecma.records = records.len(),
        );
        let column = |f: &dyn Fn(&Record) -> String| records.iter().map(f).collect::<Vec<String>>();
        let keys: Vec<(String, String)> = records.iter().map(|r| super::index_keys(&r.target)).collect();
        let insert = sqlx::query_scalar::<_, String>(INSERT_ALL)
            .bind(column(&|r| r.app.clone()))
            .bind(column(&|r| r.resource_type.clone()))
            .bind(column(&|r| r.id.clone()))
            .bind(column(&|r| r.connector.clone()))
            .bind(column(&|r| r.state.as_str().to_string()))
            .bind(column(&|r| r.user_name.clone()))
            .bind(column(&|r| r.resource.to_string()))
            .bind(records.iter().map(|r| r.target.encode_to_vec()).collect::<Vec<Vec<u8>>>())
            .bind(records.iter().map(|r| r.version).collect::<Vec<i64>>())
            .bind(column(&|r| r.created.clone()))
            .bind(column(&|r| r.modified.clone()))
            .bind(column(&|r| fold(&r.user_name)))
            .bind(keys.iter().map(|k| k.0.clone()).collect::<Vec<String>>())
            .bind(keys.iter().map(|k| k.1.clone()).collect::<Vec<String>>());
        // The records and the log rows of those that went in, in one transaction.
        let written = async {
            let mut transaction = self.queries.begin().await?;
            let inserted: std::collections::HashSet<String> =
                insert.fetch_all(&mut *transaction).await?.into_iter().collect();
            let rows: Vec<LogEntry> = log.into_iter().filter(|row| inserted.contains(&row.scim_id)).collect();
            if !rows.is_empty() {
                log_insert(&rows).execute(&mut *transaction).await?;
            }
            transaction.commit().await?;
            Ok::<_, sqlx::Error>(inserted)
        }
        .bounded()
        .instrument(span)
        .await;
        let inserted = self.note(written, true)?;
        Ok(records.iter().map(|r| inserted.contains(&r.id)).collect())
    }

    async fn listed(
        &self,
        app: &str,
        resource_type: &str,
        connector: &str,
        after: &str,
        limit: usize,
    ) -> Result<Vec<Listed>, StoreError> {
        // A row an earlier build wrote (another node, during an upgrade) has no anchor column:
        // its anchor comes from its target entry.
        let rows = sqlx::query(
            "SELECT id, anchor, state, version, CASE WHEN anchor IS NULL THEN target END AS target \
             FROM connector_space.objects WHERE app = $1 AND resource_type = $2 AND connector = $3 \
             AND id > $4 ORDER BY id LIMIT $5",
        )
        .bind(app)
        .bind(resource_type)
        .bind(connector)
        .bind(after)
        .bind(limit as i64)
        .fetch_all(&self.queries)
        .bounded()
        .await;
        let rows = self.note(rows, false)?;
        rows.iter()
            .map(|row| {
                let anchor = match row.try_get::<Option<String>, _>("anchor").map_err(classify)? {
                    Some(anchor) => anchor,
                    None => {
                        let target = ecma_proto::v1::Entry::decode(row.bytes("target")?.as_slice())
                            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                        super::index_keys(&target).0
                    }
                };
                Ok(Listed {
                    id: row.text("id")?,
                    anchor,
                    state: RecordState::parse(&row.text("state")?)?,
                    version: row.integer("version")?,
                })
            })
            .collect()
    }

    async fn import_mark(&self, connector: &str) -> Result<Option<String>, StoreError> {
        let mark = sqlx::query_scalar("SELECT mark FROM connector_space.import_marks WHERE connector = $1")
            .bind(connector)
            .fetch_optional(&self.queries)
            .bounded()
            .await;
        self.note(mark, false)
    }

    async fn set_import_mark(&self, connector: &str, mark: &str) -> Result<(), StoreError> {
        let done = sqlx::query(
            "INSERT INTO connector_space.import_marks (connector, mark) VALUES ($1, $2) \
             ON CONFLICT (connector) DO UPDATE SET mark = excluded.mark",
        )
        .bind(connector)
        .bind(mark)
        .execute(&self.queries)
        .bounded()
        .await;
        self.note(done, true).map(|_| ())
    }

    async fn pending(&self, connector: &str) -> Result<Vec<Record>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM connector_space.objects WHERE connector = $1 AND state = 'pending' ORDER BY created COLLATE \"C\""
        );
        self.records(sql, &[connector]).await
    }

    async fn count_pending(&self, connector: &str) -> Result<i64, StoreError> {
        let count = sqlx::query_scalar(
            "SELECT count(*) FROM connector_space.objects WHERE connector = $1 AND state = 'pending'",
        )
        .bind(connector)
        .fetch_one(&self.queries)
        .bounded()
        .await;
        self.note(count, false)
    }

    async fn watermark(&self, connector: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let found =
            sqlx::query_scalar("SELECT watermark FROM connector_space.watermarks WHERE connector = $1")
                .bind(connector)
                .fetch_optional(&self.queries)
                .bounded()
                .await;
        self.note(found, false)
    }

    async fn set_watermark(&self, connector: &str, watermark: &[u8]) -> Result<(), StoreError> {
        let done = sqlx::query(
            "INSERT INTO connector_space.watermarks (connector, watermark) VALUES ($1, $2) \
             ON CONFLICT (connector) DO UPDATE SET watermark = excluded.watermark",
        )
        .bind(connector)
        .bind(watermark)
        .execute(&self.queries)
        .bounded()
        .await;
        self.note(done, true).map(|_| ())
    }

    async fn watermarks(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let rows =
            sqlx::query_as("SELECT connector, watermark FROM connector_space.watermarks ORDER BY connector")
                .fetch_all(&self.queries)
                .bounded()
                .await;
        self.note(rows, false)
    }

    async fn lock(&self, keys: &[i64]) -> Result<Held, StoreError> {
        let deadline = std::time::Instant::now() + LOCK_WAIT;
        let mut held = Vec::with_capacity(keys.len());
        for &key in keys {
            let mut wait = Duration::from_millis(1);
            loop {
                match self.locks.try_lock(key).await {
                    Ok(Some(lock)) => break held.push(lock),
                    // Another node writes this object: its write is short.
                    Ok(None) if std::time::Instant::now() < deadline => {
                        tokio::time::sleep(wait).await;
                        wait = (wait * 2).min(Duration::from_millis(25));
                    }
                    Ok(None) => {
                        return Err(StoreError::Unavailable(format!(
                            "another supervisor has held this object's lock for over {LOCK_WAIT:?}"
                        )));
                    }
                    Err(e) => return Err(self.failed(e)),
                }
            }
        }
        Ok(Held::new(held))
    }

    async fn lead(&self, key: i64) -> Result<Option<Held>, StoreError> {
        match self.locks.try_lock(key).await {
            Ok(lock) => Ok(lock.map(Held::new)),
            Err(e) => Err(self.failed(e)),
        }
    }

    async fn import_started(
        &self,
        connector: &str,
        node: &str,
        import_type: &str,
    ) -> Result<i64, StoreError> {
        let now = super::now_ms();
        let abandoned = sqlx::query(
            "UPDATE connector_space.imports SET finished_ms = $2, outcome = 'abandoned' \
             WHERE connector = $1 AND finished_ms IS NULL",
        )
        .bind(connector)
        .bind(now)
        .execute(&self.queries)
        .bounded()
        .await;
        self.note(abandoned, true)?;
        let id = sqlx::query_scalar(
            "INSERT INTO connector_space.imports (connector, node, import_type, started_ms) \
             VALUES ($1, $2, $3, $4) RETURNING id",
        )
        .bind(connector)
        .bind(node)
        .bind(import_type)
        .bind(now)
        .fetch_one(&self.queries)
        .bounded()
        .await;
        self.note(id, true)
    }

    async fn log_append(&self, entries: Vec<LogEntry>) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let inserted = log_insert(&entries).execute(&self.queries).bounded().await;
        self.note(inserted, true).map(|_| ())
    }

    async fn log_query(&self, filter: &LogFilter) -> Result<Vec<LogEntry>, StoreError> {
        let (clauses, params) = filter.sql(log::Dialect::Postgres);
        let sql = format!("SELECT {} FROM connector_space.provisioning_log{clauses}", log::COLUMNS);
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for param in params {
            query = match param {
                log::Param::Text(t) => query.bind(t),
                log::Param::Integer(i) => query.bind(i),
            };
        }
        let rows = query.fetch_all(&self.queries).bounded().await;
        let rows = self.note(rows, false)?;
        rows.iter()
            .map(|row| {
                Ok(LogEntry {
                    seq: row.try_get(0)?,
                    at_ms: row.try_get(1)?,
                    node: row.try_get(2)?,
                    source: row.try_get(3)?,
                    app: row.try_get(4)?,
                    resource_type: row.try_get(5)?,
                    connector: row.try_get(6)?,
                    operation: row.try_get(7)?,
                    scim_id: row.try_get(8)?,
                    name: row.try_get(9)?,
                    anchor: row.try_get(10)?,
                    dn: row.try_get(11)?,
                    attributes: log::attributes_of(&row.try_get::<String, _>(12)?),
                    outcome: row.try_get(13)?,
                    error_kind: row.try_get(14)?,
                    detail: row.try_get(15)?,
                    duration_ms: row.try_get(16)?,
                    trace_id: row.try_get(17)?,
                })
            })
            .collect()
    }

    async fn log_prune(&self, before_ms: Option<i64>, keep_rows: Option<i64>) -> Result<u64, StoreError> {
        let mut removed = 0;
        if let Some(before) = before_ms {
            let done = sqlx::query("DELETE FROM connector_space.provisioning_log WHERE at_ms < $1")
                .bind(before)
                .execute(&self.queries)
                .bounded()
                .await;
            removed += self.note(done, true)?.rows_affected();
        }
        if let Some(keep) = keep_rows {
            let done = sqlx::query(
                "DELETE FROM connector_space.provisioning_log \
                 WHERE seq <= (SELECT max(seq) FROM connector_space.provisioning_log) - $1",
            )
            .bind(keep)
            .execute(&self.queries)
            .bounded()
            .await;
            removed += self.note(done, true)?.rows_affected();
        }
        Ok(removed)
    }

    async fn import_finished(&self, run: i64, outcome: &str) -> Result<(), StoreError> {
        let done =
            sqlx::query("UPDATE connector_space.imports SET finished_ms = $2, outcome = $3 WHERE id = $1")
                .bind(run)
                .bind(super::now_ms())
                .bind(outcome)
                .execute(&self.queries)
                .bounded()
                .await;
        self.note(done, true).map(|_| ())
    }

    async fn imports(&self, connector: &str) -> Result<Vec<ImportRun>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, connector, node, import_type, started_ms, finished_ms, outcome \
             FROM connector_space.imports WHERE connector = $1 ORDER BY id",
        )
        .bind(connector)
        .fetch_all(&self.queries)
        .bounded()
        .await;
        let rows = self.note(rows, false)?;
        rows.iter()
            .map(|row| {
                Ok(ImportRun {
                    id: row.try_get(0)?,
                    connector: row.try_get(1)?,
                    node: row.try_get(2)?,
                    import_type: row.try_get(3)?,
                    started_ms: row.try_get(4)?,
                    finished_ms: row.try_get(5)?,
                    outcome: row.try_get(6)?,
                })
            })
            .collect()
    }

    async fn close(&self) {
        self.locks.close();
        self.queries.close().await;
    }
}

/// One statement for a batch of provisioning log rows: each column as an array, unnested into
/// rows.
fn log_insert(
    entries: &[LogEntry],
) -> sqlx::query::Query<'static, sqlx::Postgres, sqlx::postgres::PgArguments> {
    let column = |f: &dyn Fn(&LogEntry) -> String| entries.iter().map(f).collect::<Vec<String>>();
    sqlx::query(
        "INSERT INTO connector_space.provisioning_log (at_ms, node, source, app, resource_type, \
         connector, operation, scim_id, name, anchor, dn, attributes, outcome, error_kind, detail, \
         duration_ms, trace_id) \
         SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
         $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[], \
         $14::text[], $15::text[], $16::float8[], $17::text[])",
    )
    .bind(entries.iter().map(|e| e.at_ms).collect::<Vec<i64>>())
    .bind(column(&|e| e.node.clone()))
    .bind(column(&|e| e.source.clone()))
    .bind(column(&|e| e.app.clone()))
    .bind(column(&|e| e.resource_type.clone()))
    .bind(column(&|e| e.connector.clone()))
    .bind(column(&|e| e.operation.clone()))
    .bind(column(&|e| e.scim_id.clone()))
    .bind(column(&|e| e.name.clone()))
    .bind(column(&|e| e.anchor.clone()))
    .bind(column(&|e| e.dn.clone()))
    .bind(column(&|e| log::attributes_text(&e.attributes)))
    .bind(column(&|e| e.outcome.clone()))
    .bind(column(&|e| e.error_kind.clone()))
    .bind(column(&|e| e.detail.clone()))
    .bind(entries.iter().map(|e| e.duration_ms).collect::<Vec<f64>>())
    .bind(column(&|e| e.trace_id.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_a_message() {
        assert_eq!(
            redacted("postgres://u:s3cret@db:5432/x?sslmode=require"),
            "postgres://u:***@db:5432/x?sslmode=require"
        );
        assert_eq!(redacted("postgres://u@db/x"), "postgres://u@db/x");
        assert_eq!(redacted("postgresql://db/x"), "postgresql://db/x");
        for leaky in [
            "postgres://u:Zq%409@db/x",
            "postgres://u:Zq/9@db/x",
            "postgres://u:Zq?9@db/x",
            "postgres://u@db/x?sslmode=require&password=Zq9",
            "postgres://u:Zq 9@db/x",
        ] {
            let shown = redacted(leaky);
            assert!(!shown.contains("Zq"), "{leaky} shown as {shown}");
        }
        let settings = Settings {
            url: "postgres://u:s3cret@db/x".into(),
            password: Some("other".into()),
            ..Settings::default()
        };
        let shown = format!("{settings:?}");
        assert!(!shown.contains("s3cret") && !shown.contains("other"), "{shown}");
    }

    #[test]
    fn lock_keys_are_stable_and_fold_names() {
        assert_eq!(lock_key(&["demo", "User", "Alice"]), lock_key(&["demo", "User", "ALICE"]));
        assert_ne!(lock_key(&["demo", "User", "alice"]), lock_key(&["demo", "Group", "alice"]));
        assert_ne!(lock_key(&["ab", "c"]), lock_key(&["a", "bc"]), "parts are delimited");
        // The same on every node and every build: SHA-256 of the folded parts, each ended by a
        // NUL, its first 8 bytes big-endian (never the process's hasher, which may change).
        assert_eq!(lock_key(&["import", "demo-users"]), 301_549_547_545_082_609);
    }
}
