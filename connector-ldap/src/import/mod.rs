//! Imports. A full import streams a paged-results search; a delta import replays changes with
//! RFC 4533 content synchronisation (refreshOnly with the cookie kept as the watermark), or,
//! where the server has no sync provider, reads entries whose `modifyTimestamp` moved (deletes
//! are then seen only by full imports). Each run is a task feeding a bounded channel, so that a
//! large import streams without being held in memory; the task also contains the panics that
//! `ldap3`'s sync-control parsers raise on malformed server data.
//!
//! This module holds the run itself (its channel, the task, the choice of strategy by the
//! watermark and the server); the strategies are `full`, `sync`, `replay` (accesslog and retro
//! changelog) and `timestamp`.

mod full;
mod replay;
mod sync;
mod timestamp;

use std::sync::Arc;

use ecma_proto::v1::{self, ErrorKind};
use tokio::sync::mpsc;

use self::full::full;
use self::replay::{accesslog, changelog};
use self::sync::sync;
use self::timestamp::timestamp;
use crate::directory::OpError;
use crate::dn::dn_eq;
use crate::settings::DeltaMethod;
use crate::target::Target;

const SYNC_PREFIX: &[u8] = b"sync:";
const TIMESTAMP_PREFIX: &[u8] = b"ts:";
const LOG_PREFIX: &[u8] = b"log:";
const CHANGELOG_PREFIX: &[u8] = b"cl:";

/// What the import task sends.
pub enum Item {
    Entry(v1::ImportEntry),
    /// The run ended; its watermark (empty: keep the previous one).
    Done(Vec<u8>),
    Failed(OpError),
}

/// How a delta import reads changes.
#[derive(Debug, Clone, PartialEq)]
enum Watermark {
    Sync(Vec<u8>),
    Timestamp(String),
    /// The `reqStart` of the newest accesslog entry read.
    Log(String),
    /// The `changeNumber` of the newest retro changelog entry read.
    Changelog(u64),
    None,
}

impl Watermark {
    fn parse(bytes: &[u8]) -> Self {
        if let Some(cookie) = bytes.strip_prefix(SYNC_PREFIX) {
            Watermark::Sync(cookie.to_vec())
        } else if let Some(ts) = bytes.strip_prefix(TIMESTAMP_PREFIX) {
            Watermark::Timestamp(String::from_utf8_lossy(ts).into_owned())
        } else if let Some(ts) = bytes.strip_prefix(LOG_PREFIX) {
            Watermark::Log(String::from_utf8_lossy(ts).into_owned())
        } else if let Some(n) = bytes.strip_prefix(CHANGELOG_PREFIX).and_then(|n| std::str::from_utf8(n).ok())
        {
            n.parse().map(Watermark::Changelog).unwrap_or(Watermark::None)
        } else {
            Watermark::None
        }
    }

    fn encode(&self) -> Vec<u8> {
        match self {
            Watermark::Sync(c) => [SYNC_PREFIX, c].concat(),
            Watermark::Timestamp(t) => [TIMESTAMP_PREFIX, t.as_bytes()].concat(),
            Watermark::Log(t) => [LOG_PREFIX, t.as_bytes()].concat(),
            Watermark::Changelog(n) => [CHANGELOG_PREFIX, n.to_string().as_bytes()].concat(),
            Watermark::None => vec![],
        }
    }
}

/// How delta imports read changes on this server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Sync,
    Log,
    Changelog,
    Timestamp,
}

fn method(target: &Target) -> Method {
    let s = target.settings();
    match s.delta {
        DeltaMethod::Sync => Method::Sync,
        DeltaMethod::Accesslog => Method::Log,
        DeltaMethod::Changelog => Method::Changelog,
        DeltaMethod::Timestamp => Method::Timestamp,
        // 389 DS: its retro changelog (which its sync plug-in needs anyway) names deleted entries
        // by the configured anchor; its sync control names them by nsUniqueId only.
        DeltaMethod::Auto if target.features.changelog.is_some() => Method::Changelog,
        DeltaMethod::Auto if target.features.sync => Method::Sync,
        DeltaMethod::Auto
            if target.features.naming_contexts.iter().any(|nc| dn_eq(nc, &s.accesslog_base)) =>
        {
            Method::Log
        }
        DeltaMethod::Auto => Method::Timestamp,
    }
}

/// Starts an import run; its items arrive on the returned channel.
pub fn start(
    target: Arc<Target>,
    partition: String,
    delta: bool,
    watermark: Vec<u8>,
    page_size: usize,
) -> Result<mpsc::Receiver<Item>, OpError> {
    if delta && target.settings().delta == DeltaMethod::Sync && !target.features.sync {
        return Err(OpError::new(
            ErrorKind::Unsupported,
            "delta_method \"sync\": the server does not offer the RFC 4533 sync control (OpenLDAP: load the syncprov overlay)",
        ));
    }
    let (tx, rx) = mpsc::channel(page_size.max(1) * 2);
    let feeder = tx.clone();
    let task = tokio::spawn(async move {
        let result = if !delta {
            full(&target, &partition, &feeder).await
        } else {
            match Watermark::parse(&watermark) {
                Watermark::Sync(cookie) if method(&target) == Method::Sync => {
                    sync(&target, &partition, Some(cookie), &feeder).await
                }
                Watermark::Timestamp(ts) if method(&target) == Method::Timestamp => {
                    timestamp(&target, &partition, &ts, &feeder).await
                }
                Watermark::Log(since) if method(&target) == Method::Log => {
                    accesslog(&target, &partition, &since, &feeder).await
                }
                Watermark::Changelog(after) if method(&target) == Method::Changelog => {
                    changelog(&target, &partition, after, &feeder).await
                }
                // No usable watermark: a delta is a full run that yields one.
                _ => full(&target, &partition, &feeder).await,
            }
        };
        match result {
            Ok(watermark) => {
                let _ = feeder.send(Item::Done(watermark)).await;
            }
            Err(e) => {
                let _ = feeder.send(Item::Failed(e)).await;
            }
        }
    });
    // A panic in the task (a malformed control from the server) becomes a failed run.
    tokio::spawn(async move {
        if let Err(e) = task.await
            && e.is_panic()
        {
            let _ = tx
                .send(Item::Failed(OpError::new(
                    ErrorKind::Internal,
                    "the server sent a control the connector could not parse; run a full import",
                )))
                .await;
        }
    });
    Ok(rx)
}

#[cfg(test)]
mod tests {
    use super::Watermark;

    #[test]
    fn watermarks_round_trip() {
        for w in [
            Watermark::Sync(b"rid=000,csn=2026".to_vec()),
            Watermark::Timestamp("20261126140000Z".into()),
            Watermark::Log("20261126140000.123456Z".into()),
            Watermark::Changelog(42),
        ] {
            assert_eq!(Watermark::parse(&w.encode()), w);
        }
        assert_eq!(Watermark::parse(b""), Watermark::None);
        assert_eq!(Watermark::parse(b"garbage"), Watermark::None);
    }
}
