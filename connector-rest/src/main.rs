//! `connector-rest`: provisions into REST (JSON) and SOAP web services, configured with request
//! templates instead of code (docs/rest-connector.md).
//!
//! Started by the supervisor, it serves `ecma.v1`. Run by hand as `connector-rest schema URL`,
//! it reads one sample object from the service and proposes the `attributes` declaration.

mod extract;
mod schema;
mod settings;
mod target;
mod template;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("schema") {
        return schema::main(&args[1..]);
    }
    ecma_connector_sdk::run_connector(target::RestConnector)
}
