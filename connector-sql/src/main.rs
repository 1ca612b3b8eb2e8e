//! `connector-sql`: provisions one object type into one table of a SQL database.
//!
//! This first slice speaks SQLite through sqlx (the embedded default behind the quickstart).
//! Every value is bound as a parameter; table and column names come only from the configuration
//! and the database's own catalog, are checked against it, and are quoted.

mod connector;
mod table;

fn main() -> anyhow::Result<()> {
    ecma_connector_sdk::run(connector::SqlConnector::default())
}
