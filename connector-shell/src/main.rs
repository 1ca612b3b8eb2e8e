//! `connector-shell`: drives any system a script can drive, with JSON in and out
//! (docs/shell-connector.md).
//!
//! Each operation (schema, validate, import, export, password) runs the executable configured
//! for it, never through a shell: one JSON document on stdin (with the secrets, which never go
//! into arguments or the environment), JSON lines on stdout, stderr to the log, a timeout that
//! kills the script's process group.

mod protocol;
mod runner;
mod service;
mod settings;

fn main() -> anyhow::Result<()> {
    ecma_connector_sdk::run_connector(service::ShellConnector)
}
