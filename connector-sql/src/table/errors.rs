//! Database errors as the protocol's error kinds (locked, full and out-of-resources databases
//! pass: `Timeout`/`Retryable`), and what a refused connection says to fix in
//! `connection_string` (never the password).

use ecma_connector_sdk::{ConnectorError, error_status};
use ecma_proto::v1::ErrorKind;
use tonic::Status;

use crate::dialect::Dialect;

/// Maps a database error to the protocol's error kinds, naming the constraint's column.
pub(crate) fn db_error(error: sqlx::Error) -> ConnectorError {
    match &error {
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            if let Some(kind) = passing_kind(db.as_ref(), &code) {
                return ConnectorError::new(kind, passing_detail(kind, db.message()));
            }
            let kind = match db.kind() {
                sqlx::error::ErrorKind::UniqueViolation => ErrorKind::AlreadyExists,
                sqlx::error::ErrorKind::NotNullViolation
                | sqlx::error::ErrorKind::ForeignKeyViolation
                | sqlx::error::ErrorKind::CheckViolation => ErrorKind::ConstraintViolation,
                // PostgreSQL: connection exceptions (08) and operator intervention (57P: the
                // server is shutting down or restarting).
                _ if code.starts_with("08") || code.starts_with("57P") => ErrorKind::ConnectionFailed,
                // PostgreSQL 42501, MySQL 1142/1143/1044/1045 (error numbers; the code sqlx
                // gives for MySQL is the SQLSTATE): permission denied.
                _ if code == "42501"
                    || matches!(mysql_number(db.as_ref()), Some(1142 | 1143 | 1044 | 1045)) =>
                {
                    ErrorKind::PermissionDenied
                }
                _ => ErrorKind::Internal,
            };
            let mut detail = db.message().to_string();
            // PostgreSQL names the column in its detail ("Key (user_name)=(...) already exists").
            if let Some(pg) = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
                if let Some(more) = pg.detail() {
                    detail = format!("{detail}: {more}");
                }
                if let Some(column) = pg.column() {
                    detail = format!("{detail} (column {column})");
                }
            }
            ConnectorError::new(kind, detail)
        }
        sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::PoolClosed => {
            ConnectorError::new(ErrorKind::ConnectionFailed, error.to_string())
        }
        _ => ConnectorError::new(ErrorKind::Internal, error.to_string()),
    }
}

/// A MySQL/MariaDB error's number.
pub(crate) fn mysql_number(db: &dyn sqlx::error::DatabaseError) -> Option<u16> {
    db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>().map(|e| e.number())
}

/// The error kind of a failure that says the database cannot take writes for now (rather than
/// that this write is wrong): the supervisor answers 503 with Retry-After and reports the
/// connector degraded until its health checks pass.
/// - SQLite (extended result codes; the primary code is the low byte): BUSY (5) and LOCKED (6)
///   after `busy_timeout`, a timeout; FULL (13), IOERR (10), NOMEM (7), retryable.
/// - PostgreSQL: serialization failure (40001), deadlock (40P01), lock not available (55P03),
///   insufficient resources (53xxx: disk full, out of memory, too many connections) retryable;
///   a statement timeout (57014) a timeout.
/// - MySQL/MariaDB: lock wait timeout (1205) a timeout; deadlock (1213), table or disk full
///   (1114, 1021), too many connections (1040) retryable.
pub(crate) fn passing_kind(db: &dyn sqlx::error::DatabaseError, code: &str) -> Option<ErrorKind> {
    if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
        return match code.parse::<u32>().ok()? & 0xff {
            5 | 6 => Some(ErrorKind::Timeout),
            7 | 10 | 13 => Some(ErrorKind::Retryable),
            _ => None,
        };
    }
    if db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>().is_some() {
        return match code {
            "57014" => Some(ErrorKind::Timeout),
            "40001" | "40P01" | "55P03" => Some(ErrorKind::Retryable),
            c if c.starts_with("53") => Some(ErrorKind::Retryable),
            _ => None,
        };
    }
    match mysql_number(db)? {
        1205 => Some(ErrorKind::Timeout),
        1213 | 1114 | 1021 | 1040 => Some(ErrorKind::Retryable),
        _ => None,
    }
}

/// The detail of a passing failure: what the database said, and what it means.
pub(crate) fn passing_detail(kind: ErrorKind, message: &str) -> String {
    match kind {
        ErrorKind::Timeout => format!(
            "{message} (the database kept the rows locked; the write was rolled back and can be retried)"
        ),
        _ => format!(
            "{message} (the database cannot take writes for now; the write was rolled back and can be retried)"
        ),
    }
}

/// A failed COMMIT. When the connection broke, whether the database committed is unknown: the
/// call fails without an error kind (gRPC UNAVAILABLE), which the supervisor takes as "outcome
/// unknown" and settles by looking the objects up, instead of as a failure that wrote nothing
/// (which a retry would turn into a duplicate).
pub(crate) fn commit_failed(error: sqlx::Error) -> Status {
    let e = db_error(error);
    if e.kind == ErrorKind::ConnectionFailed {
        Status::unavailable(format!(
            "the connection broke during COMMIT; its outcome is unknown: {}",
            e.detail
        ))
    } else {
        error_status(e.kind, e.detail)
    }
}

/// A whole-call failure from a database error.
pub fn db_status(error: sqlx::Error) -> Status {
    let e = db_error(error);
    error_status(e.kind, e.detail)
}

/// `host:port` of a database server URL, without its user name or password (`None` for
/// SQLite, whose URL names a file).
pub(crate) fn server_of(dialect: Dialect, url: &str) -> Option<String> {
    let default_port = match dialect {
        Dialect::Postgres => 5432,
        Dialect::MySql => 3306,
        Dialect::Sqlite | Dialect::Odbc => return None,
    };
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    let host = if host.is_empty() { "localhost" } else { host };
    let has_port = host[host.rfind(']').map_or(0, |i| i + 1)..].contains(':');
    Some(if has_port { host.to_string() } else { format!("{host}:{default_port}") })
}

/// What the admin can change when the database refused a connection with this error code
/// (SQLSTATE; MySQL's error number; SQLite's result code).
pub(crate) fn refusal_hint(dialect: Dialect, code: &str, mysql_number: Option<u16>) -> &'static str {
    const CREDENTIALS: &str =
        "; the database refused the user name or password: check them in connection_string";
    const DATABASE: &str = "; check the database name in connection_string (the path after the host)";
    match (dialect, code, mysql_number) {
        (Dialect::Postgres, "28P01", _) | (Dialect::MySql, _, Some(1045)) => CREDENTIALS,
        (Dialect::Postgres, "28000", _) => {
            "; the server refused this user from this host: check the user name in connection_string (and the server's pg_hba.conf)"
        }
        (Dialect::Postgres, "3D000", _) | (Dialect::MySql, _, Some(1049)) => DATABASE,
        (Dialect::MySql, _, Some(1044)) => {
            "; the user may not use this database: check the database name in connection_string, or grant the user access"
        }
        (Dialect::Sqlite, code, _) => match code.parse::<i32>().map(|c| c & 0xff) {
            // SQLITE_CANTOPEN
            Ok(14) => {
                "; check the file path in connection_string: its directory must exist, and the file too unless create_table = true"
            }
            // SQLITE_NOTADB
            Ok(26) => "; the file in connection_string is not a SQLite database",
            _ => "",
        },
        _ => "",
    }
}

/// A hint to append to a failed connection's message, naming the part of connection_string to
/// fix (never its password).
pub(crate) fn connect_hint(dialect: Dialect, url: &str, error: &sqlx::Error) -> String {
    let server = || server_of(dialect, url).map(|s| format!(" at {s}")).unwrap_or_default();
    match error {
        sqlx::Error::PoolTimedOut if dialect != Dialect::Sqlite => format!(
            "; the database server{} did not accept a connection within 5 s (refused, or no answer): check the host and port in connection_string, and that the server is running",
            server()
        ),
        sqlx::Error::Io(_) if dialect != Dialect::Sqlite => format!(
            "; the database server{} is not reachable: check the host and port in connection_string, and that the server is running",
            server()
        ),
        sqlx::Error::Tls(_) => {
            "; check the TLS options in connection_string (e.g. sslmode, sslrootcert)".into()
        }
        sqlx::Error::Database(db) => {
            let number = db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>().map(|e| e.number());
            refusal_hint(dialect, db.code().as_deref().unwrap_or(""), number).to_string()
        }
        _ => String::new(),
    }
}

/// Removes the connection string (and its password) from an error message, in case the driver
/// quoted it.
pub(crate) fn redact(message: &str, url: &str) -> String {
    let mut out =
        if url.is_empty() { message.to_string() } else { message.replace(url, "<connection_string>") };
    if let Some(password) = url_password(url)
        && !password.is_empty()
    {
        out = out.replace(&password, "<password>");
    }
    out
}

/// The password in a `scheme://user:password@host/...` URL.
pub(crate) fn url_password(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?']).next()?;
    let userinfo = authority.rsplit_once('@')?.0;
    Some(userinfo.split_once(':')?.1.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_connections_name_what_to_fix_in_connection_string() {
        let url = "postgres://app:s3cr3t@db.example/app";
        let refused = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        let hint = connect_hint(Dialect::Postgres, url, &refused);
        assert!(hint.contains("at db.example:5432 is not reachable"), "{hint}");
        assert!(hint.contains("host and port in connection_string") && !hint.contains("s3cr3t"), "{hint}");
        let hint = connect_hint(Dialect::MySql, "mysql://u:pw@[::1]:3307/db", &sqlx::Error::PoolTimedOut);
        assert!(hint.contains("at [::1]:3307 did not accept a connection"), "{hint}");
        assert_eq!(server_of(Dialect::Sqlite, "sqlite:///tmp/x.db"), None);
        assert_eq!(server_of(Dialect::Postgres, "postgres:///app").as_deref(), Some("localhost:5432"));
        assert_eq!(server_of(Dialect::Postgres, "postgres://u:p@ss@db:5433/x").as_deref(), Some("db:5433"));
        assert!(refusal_hint(Dialect::Postgres, "28P01", None).contains("user name or password"));
        assert!(refusal_hint(Dialect::MySql, "28000", Some(1045)).contains("user name or password"));
        assert!(
            refusal_hint(Dialect::Postgres, "3D000", None).contains("database name in connection_string")
        );
        assert!(
            refusal_hint(Dialect::MySql, "42000", Some(1049)).contains("database name in connection_string")
        );
        assert!(refusal_hint(Dialect::Sqlite, "14", None).contains("file path in connection_string"));
        assert_eq!(refusal_hint(Dialect::Postgres, "23505", None), "");
    }

    #[test]
    fn secrets_are_redacted() {
        assert_eq!(redact("failed: sqlite://secret@x", "sqlite://secret@x"), "failed: <connection_string>");
        let url = "postgres://app:s3cr%21t@db.example/app";
        assert_eq!(redact("password s3cr%21t rejected", url), "password <password> rejected");
        assert_eq!(url_password("mysql://u@h/db"), None);
    }
}
