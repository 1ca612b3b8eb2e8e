//! The export queue of one connector: entry changes from concurrent SCIM requests are gathered
//! into batches, each one PutExportEntries on an export session that stays open for the life of
//! the connector's incarnation (opened again after a failed call). One batch at a time, or up to
//! four at once for a connector that declares concurrent operation. Two changes of one object
//! are never in flight together: the provisioner holds the object's lock across its export.

use std::sync::Arc;

use ecma_proto::v1::{self, CsEntryChange, CsEntryChangeResult};
use tokio::sync::{mpsc, oneshot};

use crate::supervision::{CallError, ConnectorHandle};

struct Job {
    change: CsEntryChange,
    reply: oneshot::Sender<Result<CsEntryChangeResult, CallError>>,
    /// The span of the request that asked for it: the batch's span continues the first one's
    /// trace and links the others.
    span: tracing::Span,
}

/// The sending side of a connector's export queue.
#[derive(Clone)]
pub struct ExportQueue {
    jobs: mpsc::Sender<Job>,
}

impl ExportQueue {
    /// Starts the queue's worker for `handle`.
    pub fn start(handle: Arc<ConnectorHandle>) -> Self {
        let (jobs, receiver) = mpsc::channel(1024);
        tokio::spawn(worker(handle, receiver));
        Self { jobs }
    }

    /// Exports one change and waits for its result.
    pub async fn export(&self, change: CsEntryChange) -> Result<CsEntryChangeResult, CallError> {
        let (reply, result) = oneshot::channel();
        let gone = || CallError::Lost { detail: "the export queue stopped".into() };
        self.jobs.send(Job { change, reply, span: tracing::Span::current() }).await.map_err(|_| gone())?;
        result.await.map_err(|_| gone())?
    }
}

/// Batches in flight at once for a connector that declares concurrent operation (one for the
/// others): while one batch is in the target, the next one forms and goes too.
const CONCURRENT_BATCHES: usize = 4;

/// The export session of the current incarnation: one for all batches, opened on first use.
type OpenSession = Arc<tokio::sync::Mutex<Option<(u64, String)>>>;

async fn worker(handle: Arc<ConnectorHandle>, mut receiver: mpsc::Receiver<Job>) {
    let open: OpenSession = Arc::default();
    let in_flight = Arc::new(tokio::sync::Semaphore::new(CONCURRENT_BATCHES));
    while let Some(first) = receiver.recv().await {
        let session = handle.session();
        let concurrent = session.as_ref().is_ok_and(|s| s.capabilities.concurrent_operation);
        // Without concurrent operation, the next batch waits for the whole of this one.
        let permits = if concurrent { 1 } else { CONCURRENT_BATCHES as u32 };
        let Ok(permit) = in_flight.clone().acquire_many_owned(permits).await else { return };
        let limit = match &session {
            Ok(s) if s.capabilities.export_batch_size > 0 => {
                (s.capabilities.export_batch_size as usize).min(handle.config.export_batch_size)
            }
            _ => handle.config.export_batch_size,
        };
        let mut batch = vec![first];
        while batch.len() < limit {
            match receiver.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let session = match session {
            Ok(s) => s,
            Err(e) => {
                for job in batch {
                    let _ = job.reply.send(Err(e.clone()));
                }
                continue;
            }
        };
        let (handle, open) = (handle.clone(), open.clone());
        let span = tracing::info_span!(
            parent: &batch[0].span,
            "export",
            otel.name = "export batch",
            ecma.connector = %handle.name,
            ecma.batch.size = batch.len(),
        );
        for job in &batch[1..] {
            span.follows_from(&job.span);
        }
        use tracing::Instrument;
        tokio::spawn(async move {
            let changes: Vec<CsEntryChange> = batch.iter().map(|j| j.change.clone()).collect();
            match put_batch(&handle, &session, &open, changes).instrument(span).await {
                Ok(mut results) => {
                    for result in &results {
                        let kind =
                            v1::ErrorKind::try_from(result.error_kind).unwrap_or(v1::ErrorKind::Internal);
                        match kind {
                            v1::ErrorKind::None => handle.note_write(None),
                            kind if passing(kind) => handle.note_write(Some((
                                kind == v1::ErrorKind::ConnectionFailed,
                                format!("{kind:?}: {}", result.error_detail),
                            ))),
                            _ => {}
                        }
                        metrics::counter!(
                            "export_results_total",
                            "connector" => handle.name.clone(),
                            "kind" => format!("{kind:?}")
                        )
                        .increment(1);
                    }
                    for job in batch {
                        let result = results
                            .iter()
                            .position(|r| r.identifier == job.change.identifier)
                            .map(|i| results.swap_remove(i))
                            // The batch went through but says nothing of this entry: its outcome
                            // is unknown, to be reconciled, not taken for a failure.
                            .ok_or_else(|| CallError::Lost {
                                detail: "the connector returned no result for this entry".into(),
                            });
                        let _ = job.reply.send(result);
                    }
                }
                Err(e) => {
                    if let CallError::Failed { kind, message } = &e
                        && passing(*kind)
                    {
                        handle.note_write(Some((
                            *kind == v1::ErrorKind::ConnectionFailed,
                            format!("{kind:?}: {message}"),
                        )));
                    }
                    for job in batch {
                        let _ = job.reply.send(Err(e.clone()));
                    }
                }
            }
            drop(permit);
        });
    }
}

/// Error kinds that say the target cannot take writes for now (rather than that this write is
/// wrong): the connector is reported degraded until a health check passes (see
/// [`ConnectorHandle::note_write`]).
fn passing(kind: v1::ErrorKind) -> bool {
    matches!(kind, v1::ErrorKind::ConnectionFailed | v1::ErrorKind::Retryable | v1::ErrorKind::Timeout)
}

async fn put_batch(
    handle: &ConnectorHandle,
    session: &crate::supervision::Session,
    open: &OpenSession,
    entries: Vec<CsEntryChange>,
) -> Result<Vec<CsEntryChangeResult>, CallError> {
    let session_id = {
        let mut open = open.lock().await;
        match open.as_ref() {
            Some((incarnation, id)) if *incarnation == session.incarnation => id.clone(),
            _ => {
                let id = open_session(handle, session).await?;
                *open = Some((session.incarnation, id.clone()));
                id
            }
        }
    };
    let put = v1::PutExportEntriesRequest { session_id: session_id.clone(), entries };
    let result =
        session.call("PutExportEntries", session.client().put_export_entries(session.request(put))).await;
    if result.is_err() {
        // After a failed call the session is not trusted: the next batch opens another.
        let mut open = open.lock().await;
        if open.as_ref().is_some_and(|(_, id)| *id == session_id) {
            *open = None;
        }
    }
    Ok(result?.results)
}

/// Opens an export session on the current incarnation.
async fn open_session(
    handle: &ConnectorHandle,
    session: &crate::supervision::Session,
) -> Result<String, CallError> {
    let open = v1::OpenExportConnectionRequest {
        config: Some(session.config.clone()),
        object_type: handle.config.object_type.clone(),
        partition_id: handle.config.partition.clone(),
        export_type: session.capabilities.export_type,
    };
    let opened = session
        .call("OpenExportConnection", session.client().open_export_connection(session.request(open)))
        .await;
    // Nothing was written if the session could not be opened; report it as such, unless the
    // transport broke (then the connector may be restarting: still nothing written).
    match opened {
        Ok(o) => Ok(o.session_id),
        Err(CallError::Lost { .. }) => Err(CallError::Unavailable {
            retry_after: std::time::Duration::from_secs(2),
            reason: "the connector went away before the export started",
        }),
        Err(e) => Err(e),
    }
}
