//! Deltas from a log of writes: OpenLDAP's accesslog (since a `reqStart`) and 389 DS's retro
//! changelog (after a `changeNumber`), both reduced by `replay` to each entry's last state.

use ecma_proto::v1::{self, ErrorKind, ObjectModificationType};
use ldap3::SearchEntry;
use tokio::sync::mpsc;

use super::full::open_paged;
use super::timestamp::{OVERLAP_SECONDS, epoch_of, generalized};
use super::{Item, Watermark};
use crate::directory::{OpError, client_error, first, missing_base};
use crate::dn::{dn_eq, split_dn};
use crate::target::Target;

/// Where the accesslog stands: the time of its last write (its `contextCSN`), or the epoch.
pub(super) async fn log_position(target: &Target) -> Result<String, OpError> {
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
    let (d, b) = (split_dn(dn), split_dn(base));
    d.len() > b.len() && dn_eq(&d[d.len() - b.len()..].join(","), base)
}

/// A delta from OpenLDAP's accesslog: the successful writes logged since `since`, reduced to
/// the last state of each entry (read again by its entryUUID), deletes included.
pub(super) async fn accesslog(
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
        if raw.is_ref() || raw.is_intermediate() {
            continue;
        }
        changes.push(target.dir.entry(raw)?);
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
                let parts = split_dn(&self.dn);
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
        let item = match found.into_iter().next() {
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
pub(super) async fn changelog_position(target: &Target) -> Result<u64, OpError> {
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
pub(super) async fn changelog(
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
        if raw.is_ref() || raw.is_intermediate() {
            continue;
        }
        let entry = target.dir.entry(raw)?;
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
