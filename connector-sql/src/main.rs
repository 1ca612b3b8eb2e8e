fn main() -> anyhow::Result<()> {
    ecma_connector_sdk::run_connector(connector_sql::SqlConnector)
}
