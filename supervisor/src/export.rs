//! The export queue of one connector: entry changes from concurrent SCIM requests are gathered
//! into batches, one batch at a time, each one PutExportEntries on an export session that stays
//! open for the life of the connector's incarnation (opened again after a failed call).

use std::sync::Arc;

use ecma_proto::v1::{self, CsEntryChange, CsEntryChangeResult};
use tokio::sync::{mpsc, oneshot};

use crate::supervision::{CallError, ConnectorHandle};

struct Job {
    change: CsEntryChange,
    reply: oneshot::Sender<Result<CsEntryChangeResult, CallError>>,
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
        self.jobs.send(Job { change, reply }).await.map_err(|_| gone())?;
        result.await.map_err(|_| gone())?
    }
}

async fn worker(handle: Arc<ConnectorHandle>, mut receiver: mpsc::Receiver<Job>) {
    // The export session stays open for the life of an incarnation: one PutExportEntries per
    // batch, not three calls (a new incarnation gets a new session).
    let mut open: Option<(u64, String)> = None;
    while let Some(first) = receiver.recv().await {
        let session = handle.session();
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
        let changes: Vec<CsEntryChange> = batch.iter().map(|j| j.change.clone()).collect();
        match put_batch(&handle, &session, &mut open, changes).await {
            Ok(mut results) => {
                for job in batch {
                    let result = results
                        .iter()
                        .position(|r| r.identifier == job.change.identifier)
                        .map(|i| results.swap_remove(i))
                        // The batch went through but says nothing of this entry: its outcome is
                        // unknown, to be reconciled, not taken for a failure.
                        .ok_or_else(|| CallError::Lost {
                            detail: "the connector returned no result for this entry".into(),
                        });
                    let _ = job.reply.send(result);
                }
            }
            Err(e) => {
                for job in batch {
                    let _ = job.reply.send(Err(e.clone()));
                }
            }
        }
    }
}

async fn put_batch(
    handle: &ConnectorHandle,
    session: &crate::supervision::Session,
    open: &mut Option<(u64, String)>,
    entries: Vec<CsEntryChange>,
) -> Result<Vec<CsEntryChangeResult>, CallError> {
    let session_id = match open {
        Some((incarnation, id)) if *incarnation == session.incarnation => id.clone(),
        _ => {
            let id = open_session(handle, session).await?;
            *open = Some((session.incarnation, id.clone()));
            id
        }
    };
    let put = v1::PutExportEntriesRequest { session_id, entries };
    let result =
        session.call("PutExportEntries", session.client().put_export_entries(session.request(put))).await;
    if result.is_err() {
        // After a failed call the session is not trusted: the next batch opens another.
        *open = None;
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
