//! The connection pool of a table's database: its options per dialect, and a pool that hands out
//! no connection whose transaction state is in doubt.

use std::time::Duration;

use ecma_connector_sdk::error_status;
use ecma_proto::v1::ErrorKind;
use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;
use tonic::Status;

use super::errors::*;
use crate::dialect::Dialect;

/// `sqlite_synchronous`: SQLite's `synchronous` pragma for a SQLite target (`FULL` or `NORMAL`);
/// the setting must not be changed for another database.
pub(crate) fn synchronous(dialect: Dialect, value: &str) -> Result<&'static str, Status> {
    let chosen = match value.trim().to_ascii_lowercase().as_str() {
        "" | "full" => "FULL",
        "normal" => "NORMAL",
        other => {
            return Err(error_status(
                ErrorKind::InvalidConfiguration,
                format!("sqlite_synchronous is {other:?}: set it to full (the default) or normal"),
            ));
        }
    };
    if chosen != "FULL" && dialect != Dialect::Sqlite {
        return Err(error_status(
            ErrorKind::InvalidConfiguration,
            "sqlite_synchronous applies to SQLite targets only (sqlite:// connection strings): \
             remove it, and set the database server's own commit settings instead",
        ));
    }
    Ok(chosen)
}

pub(crate) async fn connect(
    dialect: Dialect,
    url: &str,
    create: bool,
    synchronous: &'static str,
) -> Result<AnyPool, Status> {
    sqlx::any::install_default_drivers();
    let mut url = url.to_string();
    if dialect == Dialect::Sqlite && create && !url.contains("mode=") {
        url.push_str(if url.contains('?') { "&mode=rwc" } else { "?mode=rwc" });
    }
    let options = AnyPoolOptions::new()
        .max_connections(if dialect == Dialect::Sqlite { 4 } else { 8 })
        .acquire_timeout(Duration::from_secs(5))
        // A connection whose transaction bookkeeping cannot be trusted is dropped, never handed
        // out again. A COMMIT or ROLLBACK that fails (SQLite's automatic rollback after a full
        // disk, an I/O error) leaves sqlx counting one transaction too many: its next BEGIN
        // becomes a SAVEPOINT, a later ROLLBACK only rolls back to it, and the connection then
        // sits inside a transaction that its COMMITs (RELEASE SAVEPOINTs) never end: writes
        // acknowledged and never committed, and every other connection "database is locked".
        .before_acquire(move |conn, _| {
            Box::pin(async move {
                use sqlx::Connection;
                if conn.is_in_transaction() {
                    tracing::warn!("dropping a database connection left inside a transaction");
                    return Ok(false);
                }
                // SQLite's own view (sqlx cannot show it through the Any driver): a BEGIN fails
                // inside a transaction. In-process, this costs microseconds.
                if dialect == Dialect::Sqlite
                    && sqlx::raw_sql("BEGIN; ROLLBACK").execute(&mut *conn).await.is_err()
                {
                    tracing::warn!("dropping a SQLite connection that SQLite says is inside a transaction");
                    return Ok(false);
                }
                Ok(true)
            })
        })
        .after_connect(move |conn, _| {
            Box::pin(async move {
                if dialect == Dialect::Sqlite {
                    // `synchronous` is one of the two names `synchronous()` gives, never user text.
                    let pragmas = format!(
                        "PRAGMA busy_timeout = 5000; PRAGMA journal_mode = WAL; PRAGMA synchronous = {synchronous}"
                    );
                    sqlx::raw_sql(sqlx::AssertSqlSafe(pragmas)).execute(conn).await?;
                }
                Ok(())
            })
        });
    // Switching a SQLite database to WAL takes an exclusive lock, and SQLite answers "database is
    // locked" at once (busy_timeout does not cover it) when another process, such as a second
    // connector on the same file starting at the same moment, holds it: try again briefly.
    let mut attempts = 0;
    loop {
        match options.clone().connect(&url).await {
            Ok(pool) => return Ok(pool),
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("5") && attempts < 50 => {
                attempts += 1;
                tokio::time::sleep(Duration::from_millis(20 + 10 * attempts)).await;
            }
            Err(e) => {
                // A URL the driver cannot use is the configuration's fault; anything else
                // (refused, unreachable, refused credentials, a file that cannot be opened) is
                // the target's, and is retried by the supervisor's health checks.
                let kind = match e {
                    sqlx::Error::Configuration(_) => ErrorKind::InvalidConfiguration,
                    _ => ErrorKind::ConnectionFailed,
                };
                let hint = connect_hint(dialect, &url, &e);
                let detail = db_error(e).detail;
                return Err(error_status(
                    kind,
                    format!("cannot connect to the database: {}{hint}", redact(&detail, &url)),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn synchronous_of(setting: &str) -> i64 {
        let dir = std::env::temp_dir().join(format!("connector-sql-sync-{}-{setting}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}/target.db", dir.display());
        let pool = connect(Dialect::Sqlite, &url, true, synchronous(Dialect::Sqlite, setting).unwrap())
            .await
            .unwrap();
        let row = sqlx::query("PRAGMA synchronous").fetch_one(&pool).await.unwrap();
        pool.close().await;
        let _ = std::fs::remove_dir_all(&dir);
        sqlx::Row::try_get::<i64, _>(&row, 0).unwrap()
    }

    #[tokio::test]
    async fn a_sqlite_target_syncs_each_commit_unless_told_normal() {
        // SQLite's values: 2 is FULL, 1 is NORMAL.
        assert_eq!(synchronous_of("full").await, 2);
        assert_eq!(synchronous_of("").await, 2);
        assert_eq!(synchronous_of("Normal").await, 1);
    }

    #[test]
    fn sqlite_synchronous_is_checked_and_kept_to_sqlite() {
        let wrong = synchronous(Dialect::Sqlite, "sometimes").unwrap_err();
        assert!(wrong.message().contains("sqlite_synchronous") && wrong.message().contains("full"));
        let elsewhere = synchronous(Dialect::Postgres, "normal").unwrap_err();
        assert!(elsewhere.message().contains("SQLite targets only"), "{}", elsewhere.message());
        assert_eq!(synchronous(Dialect::Postgres, "full").unwrap(), "FULL");
    }
}
