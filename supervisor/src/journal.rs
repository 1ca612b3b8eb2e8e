//! The provisioning log's writer: every write sent to a connector and every change an import
//! makes is handed here and stored in batches by a task of its own, so that a SCIM request never
//! waits for its log row (a row is in the store within a few milliseconds; `flush` waits for
//! it). Old rows are pruned by age and by count (`[log]` in the configuration).

use std::sync::Arc;
use std::time::Duration;

use ecma_proto::v1;
use tokio::sync::{mpsc, oneshot};

use crate::store::Store;
use crate::store::log::LogEntry;

/// Rows stored in one transaction at most (the transaction holds the SQLite store's one write
/// connection, which SCIM writes wait for: small enough to keep that wait short).
const BATCH: usize = 128;
/// How long the writer lets rows gather after the first of a batch before it stores them. Each
/// batch is a transaction on the store's one write connection, with its own log pages written
/// out; under load, without the pause, batches held one or two rows. The writer sleeps through
/// it, so rows sent meanwhile wake nobody.
const GATHER: Duration = Duration::from_millis(5);
/// Rows waiting for the writer at most; a writer that falls behind slows the writes down.
const QUEUE: usize = 8192;
/// How often old rows are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(600);

enum Message {
    Entry(Box<LogEntry>),
    Flush(oneshot::Sender<()>),
}

/// How long rows are kept: rows older than `max_age`, and beyond the newest `max_rows`, go.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub max_age: Option<Duration>,
    pub max_rows: Option<u64>,
}

/// The handle writes and imports record through (cheap to clone).
#[derive(Clone)]
pub struct Journal {
    sender: mpsc::Sender<Message>,
    node: Arc<str>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal").field("node", &self.node).finish()
    }
}

impl Journal {
    /// Starts the writer (and the pruning) on `store`.
    pub fn start(store: Store, node: String, retention: Retention) -> Self {
        let (sender, receiver) = mpsc::channel(QUEUE);
        tokio::spawn(writer(store.clone(), receiver));
        if retention.max_age.is_some() || retention.max_rows.is_some() {
            tokio::spawn(prune(store, retention));
        }
        Self { sender, node: node.into() }
    }

    /// This supervisor's node name.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Records a row (its node and, if unset, its time filled in here).
    pub async fn record(&self, mut entry: LogEntry) {
        entry.node = self.node.to_string();
        if entry.at_ms == 0 {
            entry.at_ms = crate::store::now_ms();
        }
        if self.sender.send(Message::Entry(Box::new(entry))).await.is_err() {
            tracing::debug!("the provisioning log writer has stopped; row dropped");
        }
    }

    /// Waits until every row recorded before this call is stored (or could not be).
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.sender.send(Message::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }
}

async fn writer(store: Store, mut receiver: mpsc::Receiver<Message>) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut flushes = Vec::new();
    while let Some(first) = receiver.recv().await {
        take(Some(first), &mut receiver, &mut batch, &mut flushes);
        // A batch that is full, or that someone waits for, goes now; another gathers first.
        if batch.len() < BATCH && flushes.is_empty() {
            tokio::time::sleep(GATHER).await;
            let next = receiver.try_recv().ok();
            take(next, &mut receiver, &mut batch, &mut flushes);
        }
        if !batch.is_empty() {
            let rows = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
            let count = rows.len();
            if let Err(error) = store.log_append(rows).await {
                // The log must never stop a write: the rows are counted and reported.
                metrics::counter!("provisioning_log_dropped_total").increment(count as u64);
                tracing::warn!(%error, rows = count, "provisioning log rows could not be stored");
            }
        }
        for done in flushes.drain(..) {
            let _ = done.send(());
        }
    }
}

/// Adds `next`, and whatever else is queued until the batch is full, to the batch and the
/// flushes waiting for it.
fn take(
    mut next: Option<Message>,
    receiver: &mut mpsc::Receiver<Message>,
    batch: &mut Vec<LogEntry>,
    flushes: &mut Vec<oneshot::Sender<()>>,
) {
    while let Some(message) = next.take() {
        match message {
            Message::Entry(entry) => batch.push(*entry),
            Message::Flush(done) => flushes.push(done),
        }
        if batch.len() < BATCH {
            next = receiver.try_recv().ok();
        }
    }
}

async fn prune(store: Store, retention: Retention) {
    loop {
        let before = retention
            .max_age
            .map(|age| crate::store::now_ms() - age.as_millis().min(i64::MAX as u128) as i64);
        let keep = retention.max_rows.map(|rows| rows.min(i64::MAX as u64) as i64);
        match store.log_prune(before, keep).await {
            Ok(0) => {}
            Ok(removed) => tracing::info!(removed, "old provisioning log rows pruned"),
            Err(error) => tracing::warn!(%error, "the provisioning log could not be pruned"),
        }
        tokio::time::sleep(PRUNE_EVERY).await;
    }
}

/// The trace id of the current span, when tracing is on.
pub fn current_trace_id() -> String {
    ecma_telemetry::trace_id(&tracing::Span::current()).unwrap_or_default()
}

/// A row's time (Unix milliseconds), as RFC 3339.
pub fn time_of_ms(ms: i64) -> String {
    crate::supervision::rfc3339(std::time::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64))
}

/// The log's name of a change's operation.
pub fn operation_of(change: &v1::CsEntryChange) -> &'static str {
    match v1::ObjectModificationType::try_from(change.modification_type) {
        Ok(v1::ObjectModificationType::Add) => "add",
        Ok(v1::ObjectModificationType::Delete) => "delete",
        Ok(v1::ObjectModificationType::Replace) => "replace",
        _ => "update",
    }
}

/// The names of the attributes a change carries, sorted, each once.
pub fn attribute_names(change: &v1::CsEntryChange) -> Vec<String> {
    let mut names: Vec<String> = change.attribute_changes.iter().map(|c| c.name.clone()).collect();
    names.sort();
    names.dedup();
    names
}
