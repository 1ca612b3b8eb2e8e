//! The supervisor: terminates SCIM 2.0, keeps the connector space, and supervises connector
//! child processes that speak the `ecma.v1` protocol. See ARCHITECTURE.md for the codemap.

pub mod activity;
pub mod admin;
pub mod cli;
pub mod config;
pub mod export;
pub mod expression;
pub mod import;
pub mod journal;
pub mod mapping;
pub mod operator;
pub mod paths;
pub mod provision;
pub mod scim;
pub mod server;
pub mod store;
pub mod supervision;
pub mod telemetry;
pub mod transport;
