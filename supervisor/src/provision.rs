//! The write path between SCIM and the connectors: a SCIM resource becomes a CSEntryChange, goes
//! through the connector's export queue, and its result is recorded in the connector space.
//!
//! A write whose outcome is unknown (the child died or overran its deadline during the call) is
//! never blindly repeated: the record stays `pending`, and before answering, the supervisor waits
//! for the connector to come back and looks the object up by its matching attribute. Found, the
//! write is confirmed; not found, it is sent again. A SCIM client's retry of a create meets the
//! pending record and goes through the same reconciliation, so it never creates a duplicate.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ecma_proto::v1::{self, CsEntryChange, ErrorKind, ObjectModificationType};
use serde_json::Value;
use tokio::sync::{Mutex, MutexGuard};

use crate::config::{DeprovisionAction, DeprovisionConfig};
use crate::export::ExportQueue;
use crate::journal::Journal;
use crate::mapping::{Mapping, Shape, TargetValues};
use crate::store::log::LogEntry;
use crate::store::{Held, Record, RecordState, Store, StoreError, lock_key};
use crate::supervision::{CallError, ConnectorHandle, rfc3339};

/// Why a write did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error("the connector is not available ({reason}); retry later")]
    Unavailable { retry_after: Duration, reason: String },
    #[error("userName is already taken")]
    Conflict,
    #[error("no such resource")]
    NotFound,
    /// The client's precondition (If-Match) does not hold for the current version.
    #[error("the resource has changed")]
    PreconditionFailed,
    #[error("{detail}")]
    Target { kind: ErrorKind, detail: String },
    #[error(transparent)]
    Store(StoreError),
    /// The resource changed between the read a change was computed from and its write.
    #[error("the resource changed meanwhile")]
    Changed,
    /// The task that ran the write ended without an outcome (a bug, or the runtime stopping).
    #[error("the write was cut short: {0}")]
    Aborted(String),
}

impl From<StoreError> for ProvisionError {
    fn from(e: StoreError) -> Self {
        match e {
            // A name clash found by the store's unique index is the client's 409, not a 500.
            StoreError::Conflict => ProvisionError::Conflict,
            other => ProvisionError::Store(other),
        }
    }
}

impl From<CallError> for ProvisionError {
    fn from(e: CallError) -> Self {
        match e {
            CallError::Unavailable { retry_after, reason } => {
                ProvisionError::Unavailable { retry_after, reason: reason.to_string() }
            }
            CallError::Lost { detail } => {
                ProvisionError::Unavailable { retry_after: Duration::from_secs(2), reason: detail }
            }
            CallError::Failed { kind, message } => ProvisionError::Target { kind, detail: message },
        }
    }
}

/// A client's condition on the current record (an `If-Match`), checked under the object's lock.
pub type Precondition<'a> = dyn Fn(&Record) -> bool + Send + Sync + 'a;

/// A [`Precondition`] that a write's own task can hold.
pub type SharedPrecondition = Arc<Precondition<'static>>;

/// A new version of a resource, computed from its current record.
pub struct Revision {
    pub resource: Value,
    /// Its userName (a group's displayName).
    pub name: String,
    pub password: Option<Password>,
}

/// How often a change computed from a record is computed again when concurrent writes keep
/// changing the record first.
const CHANGED_RETRIES: usize = 32;

/// The ADD of a record's object with `values`.
pub(crate) fn add_change(
    target: &Target,
    record: &Record,
    values: &TargetValues,
    password: Option<&Password>,
) -> CsEntryChange {
    let mut attribute_changes = Mapping::add_changes(values);
    // The initial password goes in the ADD itself, where the mapping names its attribute.
    if let (Some(password), Some(name)) = (password, target.mapping.password_target()) {
        attribute_changes.retain(|c| c.name != name);
        attribute_changes.push(v1::AttributeChange {
            name: name.to_string(),
            modification_type: v1::AttributeModificationType::Replace as i32,
            value_adds: vec![v1::Value::string(password.0.clone())],
            value_deletes: vec![],
        });
    }
    CsEntryChange {
        identifier: record.id.clone(),
        object_type: target.handle.config.object_type.clone(),
        modification_type: ObjectModificationType::Add as i32,
        anchors: vec![],
        dn: Mapping::dn(values).unwrap_or_default(),
        attribute_changes,
    }
}

/// The UPDATE or DELETE of a record's object (its anchors and DN as recorded).
pub(crate) fn change_of(
    target: &Target,
    record: &Record,
    kind: ObjectModificationType,
    attribute_changes: Vec<v1::AttributeChange>,
) -> CsEntryChange {
    CsEntryChange {
        identifier: record.id.clone(),
        object_type: target.handle.config.object_type.clone(),
        modification_type: kind as i32,
        anchors: record.target.anchors.clone(),
        dn: record.target.dn.clone(),
        attribute_changes,
    }
}

/// A password from a SCIM request: passed on to the connector, never stored or logged.
#[derive(Clone)]
pub struct Password(pub String);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// The DN a connector reports for the object it wrote (a DN it built itself when the mapping
/// gave none), as the confirmed attribute `dn`.
fn confirmed_dn(result: &v1::CsEntryChangeResult) -> Option<String> {
    result
        .confirmed_attributes
        .iter()
        .find(|a| a.name.eq_ignore_ascii_case(crate::mapping::DN_TARGET))
        .and_then(|a| a.values.first())
        .and_then(v1::Value::as_text)
        .filter(|dn| !dn.is_empty())
}

/// Whether a resource is active (`active` absent means active).
pub(crate) fn is_active(resource: &Value) -> bool {
    crate::paths::get_ci(resource, "active") != Some(&Value::Bool(false))
}

/// The connector attribute values of the `set` deprovisioning action.
pub(crate) fn set_values(policy: &DeprovisionConfig) -> TargetValues {
    policy
        .set
        .iter()
        .map(|(name, value)| {
            let value = match value {
                toml::Value::Boolean(b) => v1::Value::boolean(*b),
                toml::Value::Integer(i) => v1::Value::integer(*i),
                toml::Value::String(s) => v1::Value::string(s.clone()),
                other => v1::Value::string(other.to_string()),
            };
            (name.clone(), vec![value])
        })
        .collect()
}

/// One connector as the write path uses it: its supervision handle, its export queue, and the
/// SCIM attribute mapping (which supervision never sees: it checks the connector's schema with
/// [`Target::handle_for`]'s check, and exposes the schema).
#[derive(Clone)]
pub struct Target {
    pub handle: Arc<ConnectorHandle>,
    pub queue: ExportQueue,
    pub mapping: Arc<Mapping>,
    /// The mapping's view of the connector's schema, and the schema it was computed from.
    shape: Arc<std::sync::RwLock<(Arc<v1::SchemaType>, Shape)>>,
}

impl Target {
    /// A connector's supervision handle, which checks at each start that the connector's schema
    /// has every attribute `config`'s mapping writes; and the mapping.
    pub fn handle_for(
        name: &str,
        config: crate::config::ConnectorConfig,
    ) -> anyhow::Result<(Arc<ConnectorHandle>, Arc<Mapping>)> {
        let mapping = Arc::new(
            Mapping::new(&config.attributes)
                .map_err(|e| anyhow::anyhow!("connectors.{name}.attributes: {e}"))?,
        );
        let checked = mapping.clone();
        let check = Box::new(move |schema: &v1::SchemaType| {
            let unknown: Vec<_> =
                checked.targets().filter(|t| !schema.attributes.iter().any(|a| a.name == *t)).collect();
            if unknown.is_empty() {
                return Ok(());
            }
            Err(format!(
                "{unknown:?} are not attributes of {:?}; it has {:?}",
                schema.name,
                schema.attributes.iter().map(|a| &a.name).collect::<Vec<_>>()
            ))
        });
        Ok((Arc::new(ConnectorHandle::new(name.to_string(), config, check)), mapping))
    }

    /// The write path's side of a connector: its export queue starts here.
    pub fn new(handle: Arc<ConnectorHandle>, mapping: Arc<Mapping>) -> Self {
        let schema = handle.schema();
        let shape = Shape::of(&schema);
        Self {
            queue: ExportQueue::start(handle.clone()),
            handle,
            mapping,
            shape: Arc::new(std::sync::RwLock::new((schema, shape))),
        }
    }

    /// How the connector declares the mapped attributes (multi-valued, references), as of its
    /// last start.
    pub fn shape(&self) -> Shape {
        let schema = self.handle.schema();
        {
            let cached = self.shape.read().unwrap_or_else(|e| e.into_inner());
            if Arc::ptr_eq(&cached.0, &schema) {
                return cached.1.clone();
            }
        }
        let shape = Shape::of(&schema);
        *self.shape.write().unwrap_or_else(|e| e.into_inner()) = (schema, shape.clone());
        shape
    }
}

/// Serialises writes to the same object (by a hash of app, type and key) without one global lock.
struct Stripes(Vec<Mutex<()>>);

impl Stripes {
    /// The stripe of a store lock key (so that two names that fold alike, one lock in the
    /// store, are one stripe here too).
    fn of(&self, key: i64) -> &Mutex<()> {
        &self.0[key.rem_euclid(self.0.len() as i64) as usize]
    }

    /// Locks two keys (an object and a name it takes), in stripe order so that two callers never
    /// wait for each other, and once when both fall on the same stripe.
    async fn lock_both(&self, a: i64, b: i64) -> (MutexGuard<'_, ()>, Option<MutexGuard<'_, ()>>) {
        let len = self.0.len() as i64;
        let (i, j) = (a.rem_euclid(len) as usize, b.rem_euclid(len) as usize);
        let first = self.0[i.min(j)].lock().await;
        let second = if i != j { Some(self.0[i.max(j)].lock().await) } else { None };
        (first, second)
    }
}

/// The lock of an object (or of an object and the name it takes): this process's stripes, then,
/// on a store that other supervisors share, the store's lock of the same keys. Released on drop.
pub(crate) struct ObjectLock<'a> {
    // Dropped in this order: the store's lock is let go (its unlock queued) before another
    // writer in this process can take the stripe and ask for the same key.
    _store: Held,
    _local: (MutexGuard<'a, ()>, Option<MutexGuard<'a, ()>>),
}

/// The write path.
pub struct Provisioner {
    pub store: Store,
    targets: HashMap<String, Target>,
    stripes: Stripes,
    /// The provisioning log.
    pub journal: Journal,
}

tokio::task_local! {
    /// What started the writes of a task, for the provisioning log: `scim` unless set
    /// (`reconcile` while pending writes are settled).
    static SOURCE: &'static str;
}

/// Runs `work` with its writes logged as coming from `source`.
pub async fn with_source<T>(source: &'static str, work: impl std::future::Future<Output = T>) -> T {
    SOURCE.scope(source, work).await
}

/// What started the current task's writes (`scim` unless [`with_source`] says otherwise); a
/// task that spawns a write passes it on.
pub fn source() -> &'static str {
    SOURCE.try_with(|s| *s).unwrap_or("scim")
}

/// An error kind's name, as the log and the console show it (`ALREADY_EXISTS`).
pub fn kind_name(kind: ErrorKind) -> &'static str {
    kind.as_str_name().trim_start_matches("ERROR_KIND_")
}

fn now() -> String {
    rfc3339(SystemTime::now())
}

impl Provisioner {
    pub fn new(store: Store, targets: HashMap<String, Target>, journal: Journal) -> Self {
        Self { store, targets, stripes: Stripes((0..64).map(|_| Mutex::new(())).collect()), journal }
    }

    /// Every connector's write-path side, by name.
    pub fn targets(&self) -> &HashMap<String, Target> {
        &self.targets
    }

    /// A provisioning log row for `record`, with its operation and outcome.
    fn log_row(record: &Record, operation: &str, outcome: &str) -> LogEntry {
        LogEntry {
            trace_id: crate::journal::current_trace_id(),
            ..LogEntry::of(record, source(), operation, outcome)
        }
    }

    /// Sends a change through the connector's export queue and logs it with its outcome.
    async fn export(
        &self,
        target: &Target,
        record: &Record,
        change: CsEntryChange,
    ) -> Result<v1::CsEntryChangeResult, CallError> {
        let mut row = Self::log_row(record, crate::journal::operation_of(&change), "applied");
        row.attributes = crate::journal::attribute_names(&change);
        if !change.dn.is_empty() {
            row.dn = change.dn.clone();
        }
        let started = std::time::Instant::now();
        let result = target.queue.export(change).await;
        row.duration_ms = started.elapsed().as_secs_f64() * 1000.0;
        match &result {
            Ok(r) if r.error_kind == ErrorKind::None as i32 => {
                if let Some(anchor) = crate::store::anchor_text(&r.anchors) {
                    row.anchor = anchor;
                }
                if let Some(dn) = confirmed_dn(r) {
                    row.dn = dn;
                }
            }
            Ok(r) => {
                row.outcome = "refused".into();
                row.error_kind =
                    kind_name(ErrorKind::try_from(r.error_kind).unwrap_or(ErrorKind::Internal)).into();
                row.detail = r.error_detail.clone();
            }
            Err(CallError::Unavailable { reason, .. }) => {
                row.outcome = "unavailable".into();
                row.detail = reason.to_string();
            }
            Err(CallError::Failed { kind, message }) => {
                row.outcome = "refused".into();
                row.error_kind = kind_name(*kind).into();
                row.detail = message.clone();
            }
            Err(CallError::Lost { detail }) => {
                row.outcome = "unknown".into();
                row.detail = detail.clone();
            }
        }
        self.journal.record(row).await;
        result
    }

    /// Whether the connector can take writes now (503 with Retry-After otherwise).
    pub fn ready(&self, connector: &str) -> Result<(), ProvisionError> {
        self.target(connector).handle.session().map(|_| ()).map_err(ProvisionError::from)
    }

    /// Takes the lock that serialises writes to one object (by app, resource type, and id or
    /// name), in this process and across the processes that share the store.
    pub(crate) async fn lock(&self, parts: &[&str]) -> Result<ObjectLock<'_>, StoreError> {
        let key = lock_key(parts);
        let local = self.stripes.of(key).lock().await;
        let store = self.store.lock(&[key]).await?;
        Ok(ObjectLock { _local: (local, None), _store: store })
    }

    /// Takes the locks of two keys (an object and a name it takes), in one order everywhere.
    async fn lock_both(&self, a: &[&str], b: &[&str]) -> Result<ObjectLock<'_>, StoreError> {
        let mut keys = vec![lock_key(a), lock_key(b)];
        let local = self.stripes.lock_both(keys[0], keys[1]).await;
        keys.sort_unstable();
        keys.dedup();
        let store = self.store.lock(&keys).await?;
        Ok(ObjectLock { _local: local, _store: store })
    }

    pub(crate) fn target(&self, connector: &str) -> &Target {
        self.targets.get(connector).expect("apps name only configured connectors (checked at load)")
    }

    /// How long an unknown outcome may wait for the connector to come back before answering
    /// (503 with Retry-After past it; the pending record is settled later).
    fn reconcile_wait(handle: &ConnectorHandle) -> Duration {
        handle.config.reconcile_wait
    }

    /// Creates a resource. `resource` is validated SCIM JSON without `id` and `meta`.
    #[tracing::instrument(
        name = "provision",
        skip_all,
        fields(otel.name = "provision create", ecma.connector = %connector, ecma.object_type = tracing::field::Empty)
    )]
    pub async fn create(
        &self,
        app: &str,
        resource_type: &str,
        connector: &str,
        user_name: &str,
        resource: Value,
        password: Option<Password>,
    ) -> Result<Record, ProvisionError> {
        let target = self.target(connector);
        tracing::Span::current().record("ecma.object_type", target.handle.config.object_type.as_str());
        let _guard = self.lock(&[app, resource_type, user_name]).await?;
        // Nothing is recorded while the connector is down: answer 503 at once.
        target.handle.session()?;
        let values = self.target_values(target, app, &resource).await?;
        let at = now();
        let fresh = Record {
            app: app.into(),
            resource_type: resource_type.into(),
            id: crate::store::new_id(),
            connector: connector.into(),
            state: RecordState::Pending,
            user_name: user_name.into(),
            resource: resource.clone(),
            target: v1::Entry::default(),
            version: 1,
            created: at.clone(),
            modified: at,
        };
        // The name is free as a rule: the pending record is written at once (the store's unique
        // index says when it is not), and only a clash reads what holds the name.
        let mut record = match self.store.insert(&fresh).await {
            Ok(()) => fresh,
            Err(StoreError::Conflict) => {
                match self.store.by_user_name(app, resource_type, user_name).await? {
                    Some(r) if r.state == RecordState::Present => return Err(ProvisionError::Conflict),
                    Some(mut pending) => {
                        // An earlier attempt's outcome is unknown, or the name belongs to a
                        // deprovisioned object that was kept in the target: find it before writing
                        // again.
                        tracing::info!(app, id = %pending.id, state = ?pending.state, "looking for an earlier object with this name");
                        if pending.state == RecordState::Deprovisioned {
                            pending.version += 1;
                        }
                        pending.resource = resource;
                        pending.user_name = user_name.to_string();
                        pending.modified = now();
                        if let Some(record) = self.reconcile_create(target, &mut pending, &values).await? {
                            if let Some(password) = &password {
                                self.set_password(target, &record, password).await?;
                            }
                            return Ok(record);
                        }
                        pending
                    }
                    // Freed between the two (a delete of the resource that held it).
                    None => {
                        self.store.insert(&fresh).await?;
                        fresh
                    }
                }
            }
            Err(e) => return Err(e.into()),
        };
        record.set_target_values(&values);
        let record = self.add(target, record, &values, true, password.as_ref()).await?;
        // Without an attribute for it in the mapping, the password is set on its own.
        if let Some(password) = &password
            && target.mapping.password_target().is_none()
        {
            self.set_password(target, &record, password).await?;
        }
        Ok(record)
    }

    /// Sets a password: by SetPassword where the connector offers it, else as a replace of the
    /// attribute the mapping names for it. Without either, the password is not kept anywhere.
    async fn set_password(
        &self,
        target: &Target,
        record: &Record,
        password: &Password,
    ) -> Result<(), ProvisionError> {
        let handle = &target.handle;
        let session = handle.session()?;
        if session.capabilities.supports_password {
            let request = v1::SetPasswordRequest {
                config: Some(session.config.clone()),
                anchors: record.target.anchors.clone(),
                dn: record.target.dn.clone(),
                new_password: password.0.clone(),
                unlock_account: false,
                force_change_at_logon: false,
            };
            let started = std::time::Instant::now();
            let mut row = Self::log_row(record, "set_password", "applied");
            row.attributes = vec!["password".into()];
            let response =
                session.call("SetPassword", session.client().set_password(session.request(request))).await;
            row.duration_ms = started.elapsed().as_secs_f64() * 1000.0;
            let outcome = match response {
                Ok(v1::PasswordResponse { error: None, .. }) => Ok(()),
                Ok(v1::PasswordResponse { error: Some(e), .. }) => Err(ProvisionError::Target {
                    kind: ErrorKind::try_from(e.kind).unwrap_or(ErrorKind::Internal),
                    detail: e.message,
                }),
                Err(e) => Err(ProvisionError::from(e)),
            };
            match &outcome {
                Ok(()) => {}
                Err(ProvisionError::Target { kind, detail }) => {
                    row.outcome = "refused".into();
                    row.error_kind = kind_name(*kind).into();
                    row.detail = detail.clone();
                }
                Err(e) => {
                    row.outcome = "unavailable".into();
                    row.detail = e.to_string();
                }
            }
            self.journal.record(row).await;
            return outcome;
        }
        let Some(name) = target.mapping.password_target() else {
            tracing::debug!(id = %record.id, "a password was sent, but the connector has no way to set it");
            return Ok(());
        };
        let change = v1::AttributeChange {
            name: name.to_string(),
            modification_type: v1::AttributeModificationType::Replace as i32,
            value_adds: vec![v1::Value::string(password.0.clone())],
            value_deletes: vec![],
        };
        self.export_update(target, record, vec![change]).await.map(|_| ())
    }

    /// Sends the ADD for a pending record and records its outcome.
    async fn add(
        &self,
        target: &Target,
        mut record: Record,
        values: &TargetValues,
        may_retry: bool,
        password: Option<&Password>,
    ) -> Result<Record, ProvisionError> {
        let change = add_change(target, &record, values, password);
        match self.export(target, &record, change).await {
            Ok(result) if result.error_kind == ErrorKind::None as i32 => {
                record.target.dn = confirmed_dn(&result).or_else(|| Mapping::dn(values)).unwrap_or_default();
                record.target.anchors = result.anchors;
                record.state = RecordState::Present;
                self.store.update(&record).await?;
                Ok(record)
            }
            Ok(result) => {
                // A definite failure: nothing was written.
                self.store.delete(&record.app, &record.resource_type, &record.id).await?;
                // AlreadyExists included: a 409 whose detail says what the target found.
                let kind = ErrorKind::try_from(result.error_kind).unwrap_or(ErrorKind::Internal);
                Err(ProvisionError::Target { kind, detail: result.error_detail })
            }
            Err(CallError::Unavailable { retry_after, reason }) => {
                // Not sent: forget the pending record.
                self.store.delete(&record.app, &record.resource_type, &record.id).await?;
                Err(ProvisionError::Unavailable { retry_after, reason: reason.into() })
            }
            Err(CallError::Failed { kind, message }) => {
                self.store.delete(&record.app, &record.resource_type, &record.id).await?;
                Err(ProvisionError::Target { kind, detail: message })
            }
            Err(CallError::Lost { detail }) if may_retry => {
                tracing::warn!(id = %record.id, %detail, "create outcome unknown; reconciling once the connector is back");
                if let Some(done) = self.reconcile_create(target, &mut record, values).await? {
                    if let Some(password) = password {
                        self.set_password(target, &done, password).await?;
                    }
                    return Ok(done);
                }
                Box::pin(self.add(target, record, values, false, password)).await
            }
            Err(e @ CallError::Lost { .. }) => Err(e.into()),
        }
    }

    /// The target objects whose matching attribute has the value in `values` (of this
    /// connector's object type and partition; others are counted as rejected).
    pub(crate) async fn lookup(
        target: &Target,
        session: &crate::supervision::client::Session,
        values: &TargetValues,
    ) -> Result<Vec<v1::Entry>, ProvisionError> {
        let handle = &target.handle;
        let attribute = handle.config.match_attribute().expect("checked at load");
        let Some(key) = values.get(attribute).and_then(|v| v.first()) else {
            return Err(ProvisionError::Target {
                kind: ErrorKind::InvalidAttributeValue,
                detail: format!("the matching attribute {attribute} has no value"),
            });
        };
        let lookup = v1::LookupEntriesRequest {
            config: Some(session.config.clone()),
            object_type: handle.config.object_type.clone(),
            partition_id: handle.config.partition.clone(),
            by: Some(v1::lookup_entries_request::By::Attribute(v1::AttributeValues {
                name: attribute.to_string(),
                values: vec![key.clone()],
            })),
        };
        // A lookup that fails leaves the write's outcome unknown: the record stays pending, and
        // the client is told to come back (a 503 with Retry-After), not that the write failed.
        let found = session
            .call("LookupEntries", session.client().lookup_entries(session.request(lookup)))
            .await
            .map_err(|e| ProvisionError::Unavailable {
                retry_after: Duration::from_secs(5),
                reason: format!("the outcome of the write is not known yet, and looking it up failed: {e}"),
            })?;
        let config = &handle.config;
        let (entries, others): (Vec<_>, Vec<_>) = found.entries.into_iter().partition(|e| {
            (e.object_type.is_empty() || e.object_type == config.object_type)
                && (e.partition_id.is_empty() || e.partition_id == config.partition)
        });
        handle.reject_entries(others.len(), "LookupEntries");
        Ok(entries)
    }

    /// Looks a pending object up in the target. `Some`: it is there, and the record is now
    /// present (updated to `values` if the target differs). `None`: it is not there.
    async fn reconcile_create(
        &self,
        target: &Target,
        record: &mut Record,
        values: &TargetValues,
    ) -> Result<Option<Record>, ProvisionError> {
        let handle = &target.handle;
        let session = handle.wait_ready(Self::reconcile_wait(handle)).await?;
        if !session.capabilities.supports_lookup {
            return Err(ProvisionError::Unavailable {
                retry_after: Duration::from_secs(60),
                reason:
                    "the outcome of an earlier write is unknown and this connector cannot look objects up"
                        .into(),
            });
        }
        let attribute = handle.config.match_attribute().expect("checked at load");
        let entries = Self::lookup(target, &session, values).await?;
        let mut row = Self::log_row(record, "lookup", "absent");
        row.attributes = vec![attribute.to_string()];
        let Some(entry) = entries.into_iter().next() else {
            row.detail = "the earlier write is not in the target".into();
            self.journal.record(row).await;
            return Ok(None);
        };
        row.outcome = "found".into();
        row.anchor = crate::store::anchor_text(&entry.anchors).unwrap_or_default();
        row.dn = entry.dn.clone();
        row.detail = "the earlier write had reached the target; confirmed".into();
        self.journal.record(row).await;
        tracing::info!(id = %record.id, "the earlier create had reached the target; confirming it");
        let actual = crate::store::entry_values(&entry);
        record.target.anchors = entry.anchors;
        record.target.dn = entry.dn;
        record.state = RecordState::Present;
        record.set_target_values(&actual);
        let changes = Mapping::update_changes(&actual, values, &target.shape());
        if !changes.is_empty()
            && let Some(dn) = self.export_update(target, record, changes).await?
        {
            record.target.dn = dn;
        }
        record.set_target_values(values);
        self.store.update(record).await?;
        Ok(Some(record.clone()))
    }

    /// The connector attribute values of `resource`, its references resolved through the
    /// connector space (a reference to an unknown id is refused: nothing is half-written).
    #[tracing::instrument(name = "mapping", skip_all, fields(otel.name = "map SCIM resource to connector attributes"))]
    pub(crate) async fn target_values(
        &self,
        target: &Target,
        app: &str,
        resource: &Value,
    ) -> Result<TargetValues, ProvisionError> {
        let shape = target.shape();
        let mut resolved = HashMap::new();
        for id in target.mapping.referenced_ids(resource, &shape) {
            if resolved.contains_key(&id) {
                continue;
            }
            if let Some(reference) = self.store.find(app, &id).await?.and_then(|r| r.reference()) {
                resolved.insert(id, reference);
            }
        }
        target.mapping.to_target(resource, &shape, &resolved).map_err(|e| ProvisionError::Target {
            kind: ErrorKind::InvalidAttributeValue,
            detail: e.to_string(),
        })
    }

    /// Settles every pending record of `connector` (writes whose outcome is unknown, left by a
    /// crash of the connector or of the supervisor itself): found in the target, the record is
    /// confirmed; not found, it is dropped (the client never got a success for it). Runs when the
    /// connector becomes ready, so that the connector space converges without client retries.
    pub async fn reconcile_pending(&self, connector: &str) -> Result<usize, ProvisionError> {
        let target = self.target(connector);
        let mut settled = 0;
        for pending in self.store.pending(connector).await? {
            match self.settle(target, connector, &pending).await {
                Ok(true) => settled += 1,
                Ok(false) => {}
                // The connector or the store is away: the others would fail alike.
                Err(
                    e @ (ProvisionError::Unavailable { .. }
                    | ProvisionError::Store(StoreError::Unavailable(_))),
                ) => {
                    return Err(e);
                }
                // This one cannot be settled now; the others may.
                Err(e) => {
                    tracing::warn!(connector, id = %pending.id, error = %e, "a pending write could not be settled; tried again later")
                }
            }
        }
        Ok(settled)
    }

    /// Settles one pending record; `false` when it was no longer pending.
    async fn settle(
        &self,
        target: &Target,
        connector: &str,
        pending: &Record,
    ) -> Result<bool, ProvisionError> {
        let _guard = self.lock(&[&pending.app, &pending.resource_type, &pending.user_name]).await?;
        // Re-read under the lock: the request that wrote it (on this supervisor or another) may
        // have settled it meanwhile.
        let Some(mut record) = self
            .store
            .get(&pending.app, &pending.resource_type, &pending.id)
            .await?
            .filter(|r| r.state == RecordState::Pending)
        else {
            return Ok(false);
        };
        let resource = record.resource.clone();
        let values = match self.target_values(target, &record.app, &resource).await {
            Ok(values) => values,
            Err(e) => {
                tracing::warn!(connector, id = %record.id, error = %e, "pending write cannot be mapped; dropped");
                self.store.delete(&record.app, &record.resource_type, &record.id).await?;
                return Ok(true);
            }
        };
        match self.reconcile_create(target, &mut record, &values).await? {
            Some(_) => {
                tracing::info!(connector, id = %record.id, "pending write found in the target; confirmed")
            }
            None => {
                tracing::info!(connector, id = %record.id, "pending write not in the target; dropped");
                self.store.delete(&record.app, &record.resource_type, &record.id).await?;
            }
        }
        Ok(true)
    }

    /// The present record `id` of an app's resource type.
    pub async fn present(&self, app: &str, resource_type: &str, id: &str) -> Result<Record, ProvisionError> {
        self.store
            .get(app, resource_type, id)
            .await?
            .filter(|r| r.state == RecordState::Present)
            .ok_or(ProvisionError::NotFound)
    }

    /// Writes a new version of a present resource, computed from its current record by
    /// `compute` (a PUT's body, a PATCH applied to a copy); computes it again when a concurrent
    /// write (on this supervisor or another that shares the store) changed the record meanwhile,
    /// so that no update is lost. Each write runs in a task of its own, so that it finishes even
    /// if the client hangs up midway.
    pub async fn update<E: From<ProvisionError>>(
        self: &Arc<Self>,
        app: &str,
        resource_type: &str,
        id: &str,
        precondition: SharedPrecondition,
        compute: impl Fn(&Record) -> Result<Revision, E>,
    ) -> Result<Record, E> {
        use tracing::Instrument;
        for _ in 0..CHANGED_RETRIES {
            let existing = self.present(app, resource_type, id).await?;
            let Revision { resource, name, password } = compute(&existing)?;
            let (provisioner, precondition) = (self.clone(), precondition.clone());
            let write = tokio::spawn(
                with_source(source(), async move {
                    provisioner.replace(existing, &name, resource, password, &*precondition).await
                })
                .in_current_span(),
            );
            match write.await.map_err(|e| ProvisionError::Aborted(e.to_string()))? {
                Err(ProvisionError::Changed) => {
                    // Let the writer that won go first; a little jitter keeps the losers apart.
                    let pause = rand::random_range(1..5u64);
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                }
                result => return Ok(result?),
            }
        }
        Err(ProvisionError::Changed.into())
    }

    /// Deletes a present resource, which first leaves every group of the app that lists it as a
    /// member (`groups`: the app's group resource type, when it has one; `membership` computes a
    /// group with the resource in its members or not). The groups are left once the resource's
    /// own connector can take the delete, so that the delete rarely fails after them; if it
    /// does, the memberships are put back.
    pub async fn delete_member<E: From<ProvisionError> + std::fmt::Debug>(
        self: &Arc<Self>,
        existing: Record,
        precondition: SharedPrecondition,
        groups: Option<&str>,
        membership: impl Fn(&Record, bool) -> Result<Revision, E>,
    ) -> Result<(), E> {
        use tracing::Instrument;
        if !precondition(&existing) {
            return Err(ProvisionError::PreconditionFailed.into());
        }
        self.ready(&existing.connector)?;
        let (app, member) = (existing.app.clone(), existing.id.clone());
        let mut left = Vec::new();
        if let Some(groups) = groups {
            let is_member = |m: &Value| m.get("value").and_then(Value::as_str) == Some(member.as_str());
            for group in self.store.list(&app, groups).await.map_err(ProvisionError::from)? {
                let Some(Value::Array(members)) = group.resource.get("members") else { continue };
                if !members.iter().any(is_member) {
                    continue;
                }
                tracing::info!(group = %group.id, %member, "removing a deleted member from its group");
                self.update(&app, groups, &group.id, Arc::new(|_: &Record| true), |g| membership(g, false))
                    .await?;
                left.push(group.id);
            }
        }
        let provisioner = self.clone();
        let write = tokio::spawn(
            with_source(source(), async move { provisioner.delete(existing, &*precondition).await })
                .in_current_span(),
        );
        let deleted = write.await.map_err(|e| ProvisionError::Aborted(e.to_string()))?;
        if let (Err(error), Some(groups)) = (&deleted, groups) {
            for group in left {
                let rejoin =
                    self.update(&app, groups, &group, Arc::new(|_: &Record| true), |g| membership(g, true));
                if let Err(e) = rejoin.await {
                    tracing::warn!(group, %member, %error, rejoin = ?e, "could not put a membership back after a failed delete");
                }
            }
        }
        Ok(deleted?)
    }

    /// Replaces a present resource's content (PUT, or PATCH after the patch was applied).
    #[tracing::instrument(name = "provision", skip_all, fields(otel.name = "provision replace", ecma.connector = %existing.connector))]
    pub async fn replace(
        &self,
        existing: Record,
        user_name: &str,
        resource: Value,
        password: Option<Password>,
        precondition: &Precondition<'_>,
    ) -> Result<Record, ProvisionError> {
        let target = self.target(&existing.connector);
        // The object, and the name it takes: a create of that name waits (and then meets it).
        let _guards = self
            .lock_both(
                &[&existing.app, &existing.resource_type, &existing.id],
                &[&existing.app, &existing.resource_type, user_name],
            )
            .await?;
        // Re-read under the lock: a concurrent write may have changed it.
        let mut record = self
            .store
            .get(&existing.app, &existing.resource_type, &existing.id)
            .await?
            .filter(|r| r.state == RecordState::Present)
            .ok_or(ProvisionError::NotFound)?;
        if !precondition(&record) {
            return Err(ProvisionError::PreconditionFailed);
        }
        // The new content was computed from `existing`; if another write came between, the
        // caller computes it again from the current record (no lost update).
        if record.version != existing.version {
            return Err(ProvisionError::Changed);
        }
        if let Some(other) = self.store.by_user_name(&record.app, &record.resource_type, user_name).await?
            && other.id != record.id
        {
            return Err(ProvisionError::Conflict);
        }
        let before = record.target_values();
        let mut after = self.target_values(target, &record.app, &resource).await?;
        let policy = &target.handle.config.deprovision;
        let active = is_active(&resource);
        match policy.on_disable {
            DeprovisionAction::Set if !active => after.extend(set_values(policy)),
            DeprovisionAction::Delete if !active => {
                // Disabled: the target object goes; the SCIM resource stays, without anchors.
                if !record.target.anchors.is_empty() {
                    target.handle.session()?;
                    self.export_delete(target, &record).await?;
                    record.target = v1::Entry::default();
                }
                return self.store_replaced(record, user_name, resource).await;
            }
            DeprovisionAction::Delete if record.target.anchors.is_empty() => {
                // Enabled again after a delete-on-disable: the object comes back.
                target.handle.session()?;
                record.resource = resource;
                let added = self.add_again(target, record, &after).await?;
                let resource = added.resource.clone();
                return self.store_replaced(added, user_name, resource).await;
            }
            _ => {}
        }
        let changes = Mapping::update_changes(&before, &after, &target.shape());
        // A new DN (a changed naming attribute) is a rename: it goes with the update, even alone.
        let renamed = Mapping::dn(&after).filter(|dn| *dn != record.target.dn);
        if !changes.is_empty() || renamed.is_some() {
            target.handle.session()?;
            if let Some(dn) = renamed {
                record.target.dn = dn;
            }
            match self.export_update(target, &record, changes).await {
                // Deleted on disable, but the record never learnt it (the supervisor died between
                // the two): the resource is active, so the object comes back.
                Err(ProvisionError::NotFound) if policy.on_disable == DeprovisionAction::Delete => {
                    record.target = v1::Entry::default();
                    record.resource = resource;
                    let added = self.add_again(target, record, &after).await?;
                    let resource = added.resource.clone();
                    return self.store_replaced(added, user_name, resource).await;
                }
                // The target lost the object: so does the connector space.
                Err(ProvisionError::NotFound) => {
                    self.store.delete(&record.app, &record.resource_type, &record.id).await?;
                    return Err(ProvisionError::NotFound);
                }
                // The connector may have renamed the object itself (a new naming value).
                Ok(Some(dn)) => record.target.dn = dn,
                other => {
                    other?;
                }
            }
        }
        if let Some(password) = &password
            && !record.target.anchors.is_empty()
        {
            self.set_password(target, &record, password).await?;
        }
        record.set_target_values(&after);
        self.store_replaced(record, user_name, resource).await
    }

    /// Records a replaced resource as the new version.
    async fn store_replaced(
        &self,
        mut record: Record,
        user_name: &str,
        resource: Value,
    ) -> Result<Record, ProvisionError> {
        record.state = RecordState::Present;
        record.resource = resource;
        record.user_name = user_name.to_string();
        record.version += 1;
        record.modified = now();
        self.store.update(&record).await?;
        Ok(record)
    }

    /// Sends an UPDATE. Attribute changes are absolute (replace/delete), so resending one whose
    /// outcome is unknown is safe; it is resent once the connector is back.
    async fn export_update(
        &self,
        target: &Target,
        record: &Record,
        changes: Vec<v1::AttributeChange>,
    ) -> Result<Option<String>, ProvisionError> {
        let change = change_of(target, record, ObjectModificationType::Update, changes);
        let result = self.export_idempotent(target, record, change).await?;
        match ErrorKind::try_from(result.error_kind).unwrap_or(ErrorKind::Internal) {
            ErrorKind::None => Ok(confirmed_dn(&result)),
            // The target lost the object; the caller decides what the record becomes.
            ErrorKind::NoSuchObject => Err(ProvisionError::NotFound),
            // AlreadyExists too: a 409 whose detail says what the target found (the column,
            // the DN).
            kind => Err(ProvisionError::Target { kind, detail: result.error_detail }),
        }
    }

    /// Deletes a present resource from the target and the connector space.
    #[tracing::instrument(name = "provision", skip_all, fields(otel.name = "provision delete", ecma.connector = %existing.connector))]
    pub async fn delete(
        &self,
        existing: Record,
        precondition: &Precondition<'_>,
    ) -> Result<(), ProvisionError> {
        let target = self.target(&existing.connector);
        let _guard = self.lock(&[&existing.app, &existing.resource_type, &existing.id]).await?;
        let existing = self
            .store
            .get(&existing.app, &existing.resource_type, &existing.id)
            .await?
            .filter(|r| r.state == RecordState::Present)
            .ok_or(ProvisionError::NotFound)?;
        if !precondition(&existing) {
            return Err(ProvisionError::PreconditionFailed);
        }
        let policy = &target.handle.config.deprovision;
        // A resource whose object was already removed on disable has nothing left to remove.
        if existing.target.anchors.is_empty() {
            self.store.delete(&existing.app, &existing.resource_type, &existing.id).await?;
            return Ok(());
        }
        match policy.on_delete {
            DeprovisionAction::Delete => {
                target.handle.session()?;
                self.export_delete(target, &existing).await?;
                self.store.delete(&existing.app, &existing.resource_type, &existing.id).await?;
            }
            DeprovisionAction::Set | DeprovisionAction::None => {
                let mut kept = existing;
                if policy.on_delete == DeprovisionAction::Set {
                    target.handle.session()?;
                    let before = kept.target_values();
                    let mut after = before.clone();
                    after.extend(set_values(policy));
                    let changes = Mapping::update_changes(&before, &after, &target.shape());
                    match self.export_update(target, &kept, changes).await {
                        // Gone from the target already: nothing to keep.
                        Err(ProvisionError::NotFound) => {
                            self.store.delete(&kept.app, &kept.resource_type, &kept.id).await?;
                            return Ok(());
                        }
                        other => {
                            other?;
                        }
                    }
                    kept.set_target_values(&after);
                }
                kept.state = RecordState::Deprovisioned;
                kept.modified = now();
                self.store.update(&kept).await?;
            }
        }
        Ok(())
    }

    /// Sends a DELETE; an object that is already gone is what was wanted.
    async fn export_delete(&self, target: &Target, record: &Record) -> Result<(), ProvisionError> {
        let change = change_of(target, record, ObjectModificationType::Delete, vec![]);
        let result = self.export_idempotent(target, record, change).await?;
        match ErrorKind::try_from(result.error_kind).unwrap_or(ErrorKind::Internal) {
            ErrorKind::None | ErrorKind::NoSuchObject => Ok(()),
            kind => Err(ProvisionError::Target { kind, detail: result.error_detail }),
        }
    }

    /// Adds the object of an existing record again (re-enabled after a delete-on-disable). An
    /// unknown outcome is reconciled, never blindly repeated.
    async fn add_again(
        &self,
        target: &Target,
        mut record: Record,
        values: &TargetValues,
    ) -> Result<Record, ProvisionError> {
        let change = add_change(target, &record, values, None);
        let result = match self.export(target, &record, change.clone()).await {
            Err(CallError::Lost { .. }) => {
                if let Some(found) = self.reconcile_create(target, &mut record, values).await? {
                    return Ok(found);
                }
                self.export(target, &record, change).await?
            }
            other => other?,
        };
        match ErrorKind::try_from(result.error_kind).unwrap_or(ErrorKind::Internal) {
            ErrorKind::None => {
                record.target.dn = confirmed_dn(&result).or_else(|| Mapping::dn(values)).unwrap_or_default();
                record.target.anchors = result.anchors;
                record.set_target_values(values);
                Ok(record)
            }
            kind => Err(ProvisionError::Target { kind, detail: result.error_detail }),
        }
    }

    /// Exports a change that is safe to resend; resends it once after an unknown outcome.
    async fn export_idempotent(
        &self,
        target: &Target,
        record: &Record,
        change: CsEntryChange,
    ) -> Result<v1::CsEntryChangeResult, ProvisionError> {
        match self.export(target, record, change.clone()).await {
            Err(CallError::Lost { detail }) => {
                tracing::warn!(id = %change.identifier, %detail, "outcome unknown; resending once the connector is back");
                target.handle.wait_ready(Self::reconcile_wait(&target.handle)).await?;
                Ok(self.export(target, record, change).await?)
            }
            other => Ok(other?),
        }
    }
}
