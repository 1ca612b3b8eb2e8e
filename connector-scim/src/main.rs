//! `connector-scim`: relays provisioning to a SCIM 2.0 service inside the private network
//! (docs/scim-connector.md): one resource type of one downstream service, discovered from its
//! `/ServiceProviderConfig`, `/ResourceTypes` and `/Schemas`, written with RFC-strict requests
//! whatever dialect the supervisor's client spoke.

mod discovery;
mod resource;
mod target;

fn main() -> anyhow::Result<()> {
    ecma_connector_sdk::run_connector(target::ScimConnector)
}
