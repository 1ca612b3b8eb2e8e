//! `connector-sql`: provisions one object type into one table of a SQL database.
//!
//! It speaks PostgreSQL, MySQL/MariaDB and SQLite (the embedded default behind the quickstart)
//! through sqlx's `Any` driver, in the dialect of the connection string. Every value is bound as
//! a parameter; table and column names come only from the configuration and the database's own
//! catalog, are checked against it, and are quoted.
//!
//! The library is what the binary serves; it is a library so that test connectors (the
//! fault-injection connector in `tests/`) can wrap it.

pub mod backend;
pub mod dialect;
pub mod model;
#[cfg(feature = "odbc")]
pub mod odbc;
pub mod service;
pub mod statements;
pub mod table;

pub use service::SqlConnector;
