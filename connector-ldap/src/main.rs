//! `connector-ldap`: provisions one object type (a structural class plus auxiliary classes) into
//! one naming context of an LDAP v3 directory (OpenLDAP, 389 DS, AD LDS).
//!
//! - `settings`: the declared parameters and their parsing;
//! - `directory`: the connection (StartTLS, ldaps, SASL EXTERNAL, reconnect) and result codes;
//! - `schema`: object classes and attribute types from the subschema entry;
//! - `target`: one configured directory, its features, and entry conversions;
//! - `dn`: DNs: parsing, escaping, comparison (RFC 4514);
//! - `export`: add, modify, rename/move, delete, passwords;
//! - `import`: paged full imports; RFC 4533 (`import::sync`), accesslog and retro changelog
//!   (`import::replay`) or `modifyTimestamp` (`import::timestamp`) deltas;
//! - `service`: the `ecma.v1` gRPC service.

mod directory;
mod dn;
mod export;
mod import;
mod schema;
mod service;
mod settings;
mod target;

fn main() -> anyhow::Result<()> {
    ecma_connector_sdk::run_connector(service::LdapConnector)
}
