//! Imports. A full import streams a paged-results search; a delta import replays changes with
//! RFC 4533 content synchronisation (refreshOnly with the cookie kept as the watermark), or,
//! where the server has no sync provider, reads entries whose `modifyTimestamp` moved (deletes
//! are then seen only by full imports). Each run is a task feeding a bounded channel, so that a
//! large import streams without being held in memory; the task also contains the panics that
//! `ldap3`'s sync-control parsers raise on malformed server data.

use std::sync::Arc;

use ecma_proto::v1::{self, ErrorKind, ObjectModificationType};
use ldap3::adapters::{Adapter, EntriesOnly, PagedResults};
use ldap3::controls::{
    EntryState, MakeCritical, RefreshMode, SyncDone, SyncInfo, SyncRequest, SyncState, parse_syncinfo,
};
use ldap3::{Scope, SearchEntry, SearchStream};
use tokio::sync::mpsc;

use crate::directory::{OpError, client_error, first, missing_base};
use crate::settings::DeltaMethod;
use crate::target::{Target, uuid_text};

const SYNC_PREFIX: &[u8] = b"sync:";
const TIMESTAMP_PREFIX: &[u8] = b"ts:";
const LOG_PREFIX: &[u8] = b"log:";
const CHANGELOG_PREFIX: &[u8] = b"cl:";
const SYNC_STATE_OID: &str = "1.3.6.1.4.1.4203.1.9.1.2";
const SYNC_DONE_OID: &str = "1.3.6.1.4.1.4203.1.9.1.3";

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
            if target
                .features
                .naming_contexts
                .iter()
                .any(|nc| crate::export::dn_eq(nc, &s.accesslog_base)) =>
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

/// A full import: every object, paged. Returns the watermark for the next delta, taken before
/// the first page so that no change made during the run is missed.
async fn full(target: &Target, partition: &str, tx: &mpsc::Sender<Item>) -> Result<Vec<u8>, OpError> {
    let mark = match method(target) {
        Method::Sync => Watermark::Sync(sync_cookie(target, partition).await?),
        Method::Log => Watermark::Log(log_position(target).await?),
        Method::Changelog => Watermark::Changelog(changelog_position(target).await?),
        Method::Timestamp => Watermark::Timestamp(run_start()),
    };
    let base = target.search_base(partition);
    let filter = target.type_filter();
    paged(target, partition, &base, &filter, tx).await?;
    Ok(mark.encode())
}

/// A delta by `modifyTimestamp`: entries changed at or after the last run's newest change.
async fn timestamp(
    target: &Target,
    partition: &str,
    since: &str,
    tx: &mpsc::Sender<Item>,
) -> Result<Vec<u8>, OpError> {
    if !since.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'+' || b == b'-') {
        return Err(OpError::new(
            ErrorKind::InvalidAttributeValue,
            "the stored watermark is not a timestamp; run a full import",
        ));
    }
    let filter = format!("(&{}(modifyTimestamp>={since}))", target.type_filter());
    let mark = run_start();
    paged(target, partition, &target.search_base(partition), &filter, tx).await?;
    Ok(Watermark::Timestamp(mark).encode())
}

/// A subtree search of `base`, paged where the server offers it.
async fn open_paged(
    target: &Target,
    base: &str,
    filter: &str,
    attrs: Vec<String>,
) -> Result<SearchStream<'static, String, Vec<String>>, OpError> {
    let mut adapters: Vec<Box<dyn Adapter<'static, String, Vec<String>>>> =
        vec![Box::new(EntriesOnly::new())];
    if target.features.paged_results {
        adapters.push(Box::new(PagedResults::new(target.settings().page_size)));
    }
    let mut ldap = target.dir.ldap().await?;
    ldap.streaming_search_with(adapters, base, Scope::Subtree, filter, attrs)
        .await
        .map_err(|e| client_error(&format!("searching {base:?}"), &e))
}

/// Streams a paged search as import entries.
async fn paged(
    target: &Target,
    partition: &str,
    base: &str,
    filter: &str,
    tx: &mpsc::Sender<Item>,
) -> Result<(), OpError> {
    let mut stream = open_paged(target, base, filter, target.requested_attributes()).await?;
    while let Some(raw) = stream.next().await.map_err(|e| client_error("import search", &e))? {
        let entry = target.to_entry(&SearchEntry::construct(raw), partition);
        let item = v1::ImportEntry {
            modification_type: ObjectModificationType::Add as i32,
            entry: Some(entry),
            error: None,
        };
        if tx.send(Item::Entry(item)).await.is_err() {
            return Ok(()); // the session was closed
        }
    }
    let result = stream.finish().await;
    match result.rc {
        // 32: the container does not exist yet, so there is nothing to import.
        0 | 32 => Ok(()),
        _ => Err(crate::directory::result_error("import search", &result)),
    }
}

/// How far before a watermark time a delta reads again (changes committed out of order, and
/// clock differences between this host and the directory for `modifyTimestamp` marks).
const OVERLAP_SECONDS: i64 = 300;

/// The watermark of a `modifyTimestamp` run: taken before its first read, less the overlap, so
/// that a change made while the run reads (or committed out of order) is read by the next one.
fn run_start() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default();
    generalized(now - OVERLAP_SECONDS)
}

/// Seconds since the epoch as a GeneralizedTime (`YYYYMMDDHHMMSSZ`, UTC).
fn generalized(epoch: i64) -> String {
    let (days, secs) = (epoch.div_euclid(86_400), epoch.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}{month:02}{day:02}{:02}{:02}{:02}Z", secs / 3600, secs % 3600 / 60, secs % 60)
}

/// The seconds since the epoch of a GeneralizedTime (`YYYYMMDDHHMMSS[.fff]Z`).
fn epoch_of(time: &str) -> Option<i64> {
    let digits = time.get(..14)?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n = |r: std::ops::Range<usize>| digits[r].parse::<i64>().ok();
    let (year, month, day) = (n(0..4)?, n(4..6)?, n(6..8)?);
    let (y, m) = if month <= 2 { (year - 1, month + 9) } else { (year, month - 3) };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let doy = (153 * m + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + n(8..10)? * 3600 + n(10..12)? * 60 + n(12..14)?)
}

/// Where the accesslog stands: the time of its last write (its `contextCSN`), or the epoch.
async fn log_position(target: &Target) -> Result<String, OpError> {
    let base = &target.settings().accesslog_base;
    let entry = target.dir.read_entry(base, &["contextCSN"]).await?.ok_or_else(|| {
        OpError::new(
            ErrorKind::InvalidConfiguration,
            format!("accesslog_base: {base:?} cannot be read (is the accesslog overlay configured, and may bind_dn read it?)"),
        )
    })?;
    Ok(first(&entry, "contextCSN")
        .and_then(|csn| csn.split('#').next())
        .filter(|t| !t.is_empty())
        .unwrap_or("19700101000000Z")
        .to_string())
}

/// Whether `dn` is below `base`.
fn under(dn: &str, base: &str) -> bool {
    let (d, b) = (crate::export::split_dn(dn), crate::export::split_dn(base));
    d.len() > b.len() && crate::export::dn_eq(&d[d.len() - b.len()..].join(","), base)
}

/// A delta from OpenLDAP's accesslog: the successful writes logged since `since`, reduced to
/// the last state of each entry (read again by its entryUUID), deletes included.
async fn accesslog(
    target: &Target,
    partition: &str,
    since: &str,
    tx: &mpsc::Sender<Item>,
) -> Result<Vec<u8>, OpError> {
    if !since.bytes().all(|b| b.is_ascii_digit() || b == b'.' || b == b'Z') {
        return Err(OpError::new(
            ErrorKind::InvalidAttributeValue,
            "the stored watermark is not an accesslog time; run a full import",
        ));
    }
    let s = target.settings();
    // Read again from a while before the last run's newest entry: an operation is logged when
    // it ends but stamped with its start, so a slow one can appear behind a faster later one.
    // Entries read twice change nothing (each is read again by its entryUUID).
    let from = epoch_of(since).map(|t| generalized(t - OVERLAP_SECONDS)).unwrap_or_else(|| since.to_string());
    let filter = format!("(&(objectClass=auditWriteObject)(reqResult=0)(reqStart>={from}))");
    let attrs = ["reqStart", "reqType", "reqDN", "reqEntryUUID", "reqNewRDN", "reqNewSuperior"];
    let mut stream =
        open_paged(target, &s.accesslog_base, &filter, attrs.iter().map(|a| a.to_string()).collect()).await?;
    let mut changes = Vec::new();
    while let Some(raw) = stream.next().await.map_err(|e| client_error("accesslog search", &e))? {
        changes.push(SearchEntry::construct(raw));
    }
    let result = stream.finish().await;
    if result.rc == 32 {
        return Err(missing_base("accesslog search", &s.accesslog_base, "accesslog_base", &result));
    }
    if result.rc != 0 {
        return Err(crate::directory::result_error("accesslog search", &result));
    }
    let start = |e: &SearchEntry| first(e, "reqStart").unwrap_or("").to_string();
    changes.sort_by_key(start);
    let newest = changes.last().map(start).filter(|t| !t.is_empty()).unwrap_or_else(|| since.to_string());
    let logged = changes.iter().filter_map(|change| {
        Some(Logged {
            anchor: first(change, "reqEntryUUID")?.to_string(),
            kind: first(change, "reqType").unwrap_or("").to_ascii_lowercase(),
            dn: first(change, "reqDN").unwrap_or("").to_string(),
            new_rdn: first(change, "reqNewRDN").map(String::from),
            new_superior: first(change, "reqNewSuperior").map(String::from),
        })
    });
    if replay(target, partition, logged, tx).await? {
        Ok(Watermark::Log(newest).encode())
    } else {
        Ok(vec![])
    }
}

/// One logged write (an accesslog or changelog entry), as far as a delta needs it.
struct Logged {
    /// The anchor of the written entry.
    anchor: String,
    /// `add`, `modify`, `delete`, `modrdn` (lower case).
    kind: String,
    dn: String,
    new_rdn: Option<String>,
    new_superior: Option<String>,
}

impl Logged {
    /// The entry's DN after a rename (empty for other writes).
    fn new_dn(&self) -> String {
        match (&self.new_rdn, &self.new_superior) {
            (Some(rdn), Some(sup)) => format!("{rdn},{sup}"),
            (Some(rdn), None) => {
                let parts = crate::export::split_dn(&self.dn);
                format!("{rdn},{}", parts[1.min(parts.len())..].join(","))
            }
            _ => String::new(),
        }
    }
}

/// Replays logged writes, oldest first, as import entries: the writes under the partition's
/// search base are reduced to the last one of each entry, which is then read again by its
/// anchor (a delete, or an entry no longer found there, is reported deleted). `false` when the
/// receiver went away.
async fn replay(
    target: &Target,
    partition: &str,
    logged: impl Iterator<Item = Logged>,
    tx: &mpsc::Sender<Item>,
) -> Result<bool, OpError> {
    let scope = target.search_base(partition);
    // The last operation on each entry (by anchor), in order of first appearance.
    let mut order: Vec<String> = Vec::new();
    let mut last: std::collections::HashMap<String, String> = std::collections::HashMap::new();
    for change in logged {
        if !under(&change.dn, &scope) && !under(&change.new_dn(), &scope) {
            continue;
        }
        if !last.contains_key(&change.anchor) {
            order.push(change.anchor.clone());
        }
        last.insert(change.anchor, change.kind);
    }
    let anchor_name = target.type_schema.anchor_attributes[0].clone();
    for uuid in order {
        let found = if last.get(&uuid).is_some_and(|t| t == "delete") {
            vec![]
        } else {
            let filter = format!("(&{}{})", target.type_filter(), target.anchor_filter(&uuid)?);
            target.search(partition, &filter).await?
        };
        let item = match found.first() {
            Some(entry) => v1::ImportEntry {
                modification_type: ObjectModificationType::Replace as i32,
                entry: Some(target.to_entry(entry, partition)),
                error: None,
            },
            // Deleted, moved out of the container, or no longer of this type.
            None => v1::ImportEntry {
                modification_type: ObjectModificationType::Delete as i32,
                entry: Some(v1::Entry {
                    object_type: target.type_schema.name.clone(),
                    anchors: vec![v1::Anchor {
                        name: anchor_name.clone(),
                        value: Some(v1::Value::string(uuid)),
                    }],
                    partition_id: partition.to_string(),
                    ..Default::default()
                }),
                error: None,
            },
        };
        if tx.send(Item::Entry(item)).await.is_err() {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Where 389 DS's retro changelog stands: the root DSE's `lastchangenumber` (0 while the
/// changelog is empty). Fails when the changelog cannot be read.
async fn changelog_position(target: &Target) -> Result<u64, OpError> {
    let s = target.settings();
    if target.dir.read_entry(&s.changelog_base, &["1.1"]).await?.is_none() {
        return Err(OpError::new(
            ErrorKind::InvalidConfiguration,
            format!(
                "changelog_base: {:?} cannot be read (is the Retro Changelog plug-in enabled, and may bind_dn read it?)",
                s.changelog_base
            ),
        ));
    }
    let dse = target.dir.read_entry("", &["lastchangenumber"]).await?;
    Ok(dse.as_ref().and_then(|e| first(e, "lastchangenumber")).and_then(|n| n.parse().ok()).unwrap_or(0))
}

/// A delta from 389 DS's retro changelog: the changes numbered after `after`, reduced to the
/// last state of each entry (read again by its anchor), deletes and renames included.
async fn changelog(
    target: &Target,
    partition: &str,
    after: u64,
    tx: &mpsc::Sender<Item>,
) -> Result<Vec<u8>, OpError> {
    let s = target.settings();
    // A changelog trimmed past the last run's position has lost changes this run would need.
    let dse = target.dir.read_entry("", &["firstchangenumber"]).await?;
    let oldest = dse.as_ref().and_then(|e| first(e, "firstchangenumber")).and_then(|n| n.parse::<u64>().ok());
    if let Some(oldest) = oldest.filter(|&oldest| oldest > after + 1) {
        return Err(OpError::new(
            ErrorKind::Retryable,
            format!(
                "the retro changelog starts at change {oldest}, after the last delta's {after}: changes were trimmed; run a full import"
            ),
        ));
    }
    let filter = format!("(&(objectClass=changelogEntry)(changeNumber>={}))", after + 1);
    let attrs =
        ["changeNumber", "changeType", "targetDn", "newRDN", "newSuperior", s.changelog_anchor.as_str()];
    let mut stream =
        open_paged(target, &s.changelog_base, &filter, attrs.iter().map(|a| a.to_string()).collect()).await?;
    let mut changes = Vec::new();
    while let Some(raw) = stream.next().await.map_err(|e| client_error("changelog search", &e))? {
        let entry = SearchEntry::construct(raw);
        let Some(number) = first(&entry, "changeNumber").and_then(|n| n.parse::<u64>().ok()) else {
            continue;
        };
        changes.push((number, entry));
    }
    let result = stream.finish().await;
    if result.rc == 32 {
        return Err(missing_base("changelog search", &s.changelog_base, "changelog_base", &result));
    }
    if result.rc != 0 {
        return Err(crate::directory::result_error("changelog search", &result));
    }
    changes.sort_by_key(|(number, _)| *number);
    let newest = changes.last().map(|(number, _)| *number).unwrap_or(after);
    let mut unnamed = 0usize;
    let logged: Vec<Logged> = changes
        .iter()
        .filter_map(|(_, change)| {
            let anchor = first(change, &s.changelog_anchor).map(String::from);
            if anchor.is_none() {
                unnamed += 1;
            }
            Some(Logged {
                anchor: anchor?,
                kind: first(change, "changeType").unwrap_or("").to_ascii_lowercase(),
                dn: first(change, "targetDn").unwrap_or("").to_string(),
                new_rdn: first(change, "newRDN").map(String::from),
                new_superior: first(change, "newSuperior").map(String::from),
            })
        })
        .collect();
    if unnamed > 0 && logged.is_empty() {
        // Every change lacks the anchor: the plug-in does not copy it, and a delta cannot name
        // the entries it changed.
        return Err(OpError::new(
            ErrorKind::InvalidConfiguration,
            format!(
                "the retro changelog's entries carry no {:?}: add `nsslapd-attribute: {}:{}` to cn=Retro Changelog Plugin,cn=plugins,cn=config (or set changelog_anchor_attribute)",
                s.changelog_anchor,
                s.anchor.to_ascii_lowercase(),
                s.changelog_anchor
            ),
        ));
    }
    if unnamed > 0 {
        tracing::warn!(unnamed, "retro changelog entries without {} were skipped", s.changelog_anchor);
    }
    if replay(target, partition, logged.into_iter(), tx).await? {
        Ok(Watermark::Changelog(newest).encode())
    } else {
        Ok(vec![])
    }
}

/// The server's current sync cookie.
///
/// OpenLDAP's cookie names a point in the server's change sequence, whatever the search that
/// got it: a refresh of a filter that matches nothing gets it cheaply. 389 DS ties a cookie to
/// the bind DN, base and filter of the search that got it, and answers a later refresh with
/// another search's cookie with "refresh required"; there the cookie comes from a refresh of the
/// delta's own base and filter, asking for no attributes (the entries' DNs stream by and are
/// dropped).
async fn sync_cookie(target: &Target, partition: &str) -> Result<Vec<u8>, OpError> {
    let per_search = target.features.vendor.starts_with("389");
    let (base, scope, filter) = if per_search {
        (target.search_base(partition), Scope::Subtree, target.type_filter())
    } else {
        (partition.to_string(), Scope::Base, "(&(objectClass=*)(!(objectClass=*)))".to_string())
    };
    let mut ldap = target.dir.ldap().await?;
    let request = SyncRequest { mode: RefreshMode::RefreshOnly, cookie: None, reload_hint: false };
    let mut stream = ldap
        .with_controls(request.critical())
        .streaming_search(&base, scope, &filter, vec!["1.1"])
        .await
        .map_err(|e| client_error("reading the sync cookie", &e))?;
    let mut cookie = None;
    while let Some(raw) = stream.next().await.map_err(|e| client_error("reading the sync cookie", &e))? {
        if raw.is_intermediate()
            && let SyncInfo::NewCookie(c) = parse_syncinfo(raw)
        {
            cookie = Some(c);
        }
    }
    let result = stream.finish().await;
    if result.rc == 32 {
        return Err(missing_base("reading the sync cookie", &base, base_setting(target, &base), &result));
    }
    let done = result.ctrls.iter().find(|c| c.1.ctype == SYNC_DONE_OID).map(|c| c.1.parse::<SyncDone>());
    match done.and_then(|d| d.cookie).or(cookie) {
        Some(cookie) if result.rc == 0 => Ok(cookie),
        _ => Err(OpError::new(
            ErrorKind::Unsupported,
            format!(
                "the server gave no sync cookie (rc {}): is the syncprov overlay (OpenLDAP) or the Content Synchronization plug-in (389 DS) configured on {partition:?}?",
                result.rc
            ),
        )),
    }
}

/// The setting a search base comes from, for messages.
fn base_setting(target: &Target, base: &str) -> &'static str {
    if target.settings().container.as_deref().is_some_and(|c| crate::export::dn_eq(c, base)) {
        "container (create_containers = true creates it on the first add)"
    } else {
        "the connector's partition (its entry must exist in the directory)"
    }
}

/// The text of an RFC 4533 entry UUID as the anchor attribute writes it: 389 DS's sync UUIDs
/// are its entries' nsUniqueId (four groups of eight hex digits), OpenLDAP's their entryUUID.
fn sync_uuid_text(anchor: &str, bytes: &[u8]) -> Option<String> {
    if anchor.eq_ignore_ascii_case("nsUniqueId") {
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        (hex.len() == 32).then(|| format!("{}-{}-{}-{}", &hex[..8], &hex[8..16], &hex[16..24], &hex[24..]))
    } else {
        uuid_text(bytes)
    }
}

/// A delta by RFC 4533 refreshOnly: changed entries, deletes and renames since `cookie`.
async fn sync(
    target: &Target,
    partition: &str,
    cookie: Option<Vec<u8>>,
    tx: &mpsc::Sender<Item>,
) -> Result<Vec<u8>, OpError> {
    let anchor_name = target.type_schema.anchor_attributes[0].clone();
    let deleted = |uuid: &[u8]| -> Option<v1::ImportEntry> {
        Some(v1::ImportEntry {
            modification_type: ObjectModificationType::Delete as i32,
            entry: Some(v1::Entry {
                object_type: target.type_schema.name.clone(),
                anchors: vec![v1::Anchor {
                    name: anchor_name.clone(),
                    value: Some(v1::Value::string(sync_uuid_text(&anchor_name, uuid)?)),
                }],
                partition_id: partition.to_string(),
                ..Default::default()
            }),
            error: None,
        })
    };
    let mut ldap = target.dir.ldap().await?;
    let request = SyncRequest { mode: RefreshMode::RefreshOnly, cookie, reload_hint: false };
    let mut stream = ldap
        .with_controls(request.critical())
        .streaming_search(
            &target.search_base(partition),
            Scope::Subtree,
            &target.type_filter(),
            target.requested_attributes(),
        )
        .await
        .map_err(|e| client_error("sync search", &e))?;
    let mut new_cookie = None;
    let mut present_phase = false;
    while let Some(raw) = stream.next().await.map_err(|e| client_error("sync search", &e))? {
        if raw.is_intermediate() {
            match parse_syncinfo(raw) {
                SyncInfo::NewCookie(c) => new_cookie = Some(c),
                SyncInfo::RefreshDelete { cookie, .. } => new_cookie = cookie.or(new_cookie),
                SyncInfo::RefreshPresent { cookie, .. } => {
                    present_phase = true;
                    new_cookie = cookie.or(new_cookie);
                }
                SyncInfo::SyncIdSet { cookie, refresh_deletes, sync_uuids } => {
                    new_cookie = cookie.or(new_cookie);
                    if refresh_deletes {
                        for uuid in sync_uuids {
                            if let Some(item) = deleted(&uuid)
                                && tx.send(Item::Entry(item)).await.is_err()
                            {
                                return Ok(vec![]);
                            }
                        }
                    } else {
                        present_phase = true;
                    }
                }
            }
            continue;
        }
        if raw.is_ref() {
            continue;
        }
        let state = raw.1.iter().find(|c| c.1.ctype == SYNC_STATE_OID).map(|c| c.1.parse::<SyncState>());
        let entry = SearchEntry::construct(raw);
        let item = match state {
            Some(SyncState { state: EntryState::Delete, entry_uuid, .. }) => deleted(&entry_uuid),
            Some(SyncState { state: EntryState::Present, .. }) => {
                present_phase = true;
                None
            }
            _ => {
                // 389 DS sends a changed entry's user attributes only, whatever was asked for:
                // without its anchor (an operational attribute) it is read again.
                let entry = if first(&entry, &anchor_name).is_none() {
                    let attrs = target.requested_attributes();
                    let attrs: Vec<&str> = attrs.iter().map(String::as_str).collect();
                    target.dir.read_entry(&entry.dn, &attrs).await?.unwrap_or(entry)
                } else {
                    entry
                };
                Some(v1::ImportEntry {
                    modification_type: ObjectModificationType::Replace as i32,
                    entry: Some(target.to_entry(&entry, partition)),
                    error: None,
                })
            }
        };
        if let Some(item) = item
            && tx.send(Item::Entry(item)).await.is_err()
        {
            return Ok(vec![]);
        }
    }
    let result = stream.finish().await;
    if result.rc == 4096 {
        // e-syncRefreshRequired: the cookie is too old for the server's session log.
        return Err(OpError::new(
            ErrorKind::Retryable,
            "the directory asks for a full reload (the sync cookie expired): run a full import",
        ));
    }
    if result.rc == 32 {
        let base = target.search_base(partition);
        return Err(missing_base("sync search", &base, base_setting(target, &base), &result));
    }
    if result.rc != 0 {
        return Err(crate::directory::result_error("sync search", &result));
    }
    if let Some(done) =
        result.ctrls.iter().find(|c| c.1.ctype == SYNC_DONE_OID).map(|c| c.1.parse::<SyncDone>())
    {
        new_cookie = done.cookie.or(new_cookie);
    }
    if present_phase {
        // Entries not named present were deleted, and this run cannot tell which: the cookie
        // must not move past them. A full import sees them (and yields a new cookie).
        return Err(OpError::new(
            ErrorKind::Retryable,
            "the directory answered the delta with a present phase (its sync session log does not reach back to \
             the last cookie): run a full import; a larger olcSpSessionlog avoids this",
        ));
    }
    Ok(new_cookie.map(|c| Watermark::Sync(c).encode()).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::{Watermark, epoch_of, generalized, sync_uuid_text};

    #[test]
    fn generalized_times_round_trip() {
        assert_eq!(generalized(0), "19700101000000Z");
        assert_eq!(generalized(1_795_651_200), "20261126000000Z");
        assert_eq!(generalized(951_782_400), "20000229000000Z");
        for t in [0, 951_782_400, 1_795_708_800 + 86_399, 4_102_444_800] {
            assert_eq!(epoch_of(&generalized(t)), Some(t));
        }
        assert_eq!(epoch_of("20261126154218.123456Z"), Some(1_795_651_200 + 15 * 3600 + 42 * 60 + 18));
        assert_eq!(epoch_of("garbage"), None);
    }

    #[test]
    fn sync_uuids_read_as_the_anchor_writes_them() {
        let bytes =
            [0x8b, 0x9d, 0x31, 0x3e, 0xe9, 0xd0, 0x11, 0xf1, 0x97, 0x49, 0xb1, 0x49, 0xf1, 0xf9, 0xfe, 0xf0];
        assert_eq!(sync_uuid_text("nsUniqueId", &bytes).unwrap(), "8b9d313e-e9d011f1-9749b149-f1f9fef0");
        assert_eq!(sync_uuid_text("entryUUID", &bytes).unwrap(), "8b9d313e-e9d0-11f1-9749-b149f1f9fef0");
        assert_eq!(sync_uuid_text("nsUniqueId", &bytes[..4]), None);
    }

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
