fn main() -> anyhow::Result<()> {
    ecma_connector_sdk::run(connector_sql::SqlConnector::default())
}
