//! Deltas by `modifyTimestamp` (servers with neither a sync provider nor a change log; deletes
//! are then seen by full imports only), and the GeneralizedTime arithmetic of time watermarks.

use ecma_proto::v1::ErrorKind;
use tokio::sync::mpsc;

use super::full::paged;
use super::{Item, Watermark};
use crate::directory::OpError;
use crate::target::Target;

/// A delta by `modifyTimestamp`: entries changed at or after the last run's newest change.
pub(super) async fn timestamp(
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

/// How far before a watermark time a delta reads again (changes committed out of order, and
/// clock differences between this host and the directory for `modifyTimestamp` marks).
pub(super) const OVERLAP_SECONDS: i64 = 300;

/// The watermark of a `modifyTimestamp` run: taken before its first read, less the overlap, so
/// that a change made while the run reads (or committed out of order) is read by the next one.
pub(super) fn run_start() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default();
    generalized(now - OVERLAP_SECONDS)
}

/// Seconds since the epoch as a GeneralizedTime (`YYYYMMDDHHMMSSZ`, UTC).
pub(super) fn generalized(epoch: i64) -> String {
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
pub(super) fn epoch_of(time: &str) -> Option<i64> {
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

#[cfg(test)]
mod tests {
    use super::{epoch_of, generalized};

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
}
