//! RFC 4533 refreshOnly deltas: the sync cookie as the watermark (and a fresh one for a full
//! import), deletes from syncIdSet messages and delete states, and 389 DS's sync UUIDs.

use ecma_proto::v1::{self, ErrorKind, ObjectModificationType};
use ldap3::Scope;
use ldap3::controls::{
    EntryState, MakeCritical, RefreshMode, SyncDone, SyncInfo, SyncRequest, SyncState, parse_syncinfo,
};
use tokio::sync::mpsc;

use super::{Item, Watermark};
use crate::directory::{OpError, client_error, first, missing_base};
use crate::dn::dn_eq;
use crate::target::{Target, uuid_text};

const SYNC_STATE_OID: &str = "1.3.6.1.4.1.4203.1.9.1.2";
const SYNC_DONE_OID: &str = "1.3.6.1.4.1.4203.1.9.1.3";

/// The server's current sync cookie.
///
/// OpenLDAP's cookie names a point in the server's change sequence, whatever the search that
/// got it: a refresh of a filter that matches nothing gets it cheaply. 389 DS ties a cookie to
/// the bind DN, base and filter of the search that got it, and answers a later refresh with
/// another search's cookie with "refresh required"; there the cookie comes from a refresh of the
/// delta's own base and filter, asking for no attributes (the entries' DNs stream by and are
/// dropped).
pub(super) async fn sync_cookie(target: &Target, partition: &str) -> Result<Vec<u8>, OpError> {
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
    if target.settings().container.as_deref().is_some_and(|c| dn_eq(c, base)) {
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
pub(super) async fn sync(
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
        let entry = target.dir.entry(raw)?;
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
                    entry: Some(target.to_entry(entry, partition)),
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
    use super::sync_uuid_text;

    #[test]
    fn sync_uuids_read_as_the_anchor_writes_them() {
        let bytes =
            [0x8b, 0x9d, 0x31, 0x3e, 0xe9, 0xd0, 0x11, 0xf1, 0x97, 0x49, 0xb1, 0x49, 0xf1, 0xf9, 0xfe, 0xf0];
        assert_eq!(sync_uuid_text("nsUniqueId", &bytes).unwrap(), "8b9d313e-e9d011f1-9749b149-f1f9fef0");
        assert_eq!(sync_uuid_text("entryUUID", &bytes).unwrap(), "8b9d313e-e9d0-11f1-9749-b149f1f9fef0");
        assert_eq!(sync_uuid_text("nsUniqueId", &bytes[..4]), None);
    }
}
