//! Full imports: every object of the type from a paged subtree search, with the watermark for
//! the next delta taken before the first page. Owns the paged search the other strategies reuse.

use ecma_proto::v1::{self, ObjectModificationType};
use ldap3::adapters::{Adapter, EntriesOnly, PagedResults};
use ldap3::{Scope, SearchStream};
use tokio::sync::mpsc;

use super::replay::{changelog_position, log_position};
use super::sync::sync_cookie;
use super::timestamp::run_start;
use super::{Item, Method, Watermark, method};
use crate::directory::{OpError, client_error};
use crate::target::Target;

/// A full import: every object, paged. Returns the watermark for the next delta, taken before
/// the first page so that no change made during the run is missed.
pub(super) async fn full(
    target: &Target,
    partition: &str,
    tx: &mpsc::Sender<Item>,
) -> Result<Vec<u8>, OpError> {
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

/// A subtree search of `base`, paged where the server offers it.
pub(super) async fn open_paged(
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
pub(super) async fn paged(
    target: &Target,
    partition: &str,
    base: &str,
    filter: &str,
    tx: &mpsc::Sender<Item>,
) -> Result<(), OpError> {
    let mut stream = open_paged(target, base, filter, target.requested_attributes()).await?;
    while let Some(raw) = stream.next().await.map_err(|e| client_error("import search", &e))? {
        // A continuation reference names another server's entries, which are not imported here.
        if raw.is_ref() || raw.is_intermediate() {
            continue;
        }
        let entry = target.to_entry(target.dir.entry(raw)?, partition);
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
