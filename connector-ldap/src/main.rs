//! `connector-ldap`: provisions one object type into one naming context of an LDAP v3 directory.
//!
//! This is the first slice: it negotiates the protocol, declares its parameters, checks that the
//! directory's host answers, and offers the configured object class and base DN as its type and
//! partition. Import and export arrive with issue #5; until then those calls answer
//! UNIMPLEMENTED, which the supervisor reports as an unsupported operation.

use std::time::Duration;

use ecma_connector_sdk::{ConfigExt, error_status, negotiate, parameter};
use ecma_proto::v1::{self, ConfigParameterType as T, ErrorKind, connector_server::Connector};
use tonic::{Request, Response, Status};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Default)]
struct LdapConnector;

/// `host:port` of an `ldap://` or `ldaps://` URL.
fn host_port(url: &str) -> Result<String, String> {
    let (rest, default_port) = if let Some(rest) = url.strip_prefix("ldap://") {
        (rest, 389)
    } else if let Some(rest) = url.strip_prefix("ldaps://") {
        (rest, 636)
    } else {
        return Err(format!("url {url:?} must start with ldap:// or ldaps://"));
    };
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() {
        return Err(format!("url {url:?} names no host"));
    }
    if authority.rsplit_once(':').is_some_and(|(_, port)| port.parse::<u16>().is_ok()) {
        Ok(authority.to_string())
    } else {
        Ok(format!("{authority}:{default_port}"))
    }
}

#[tonic::async_trait]
impl Connector for LdapConnector {
    async fn hello(&self, request: Request<v1::HelloRequest>) -> Result<Response<v1::HelloResponse>, Status> {
        Ok(Response::new(v1::HelloResponse {
            protocol_version: negotiate(request.get_ref())?,
            connector_name: env!("CARGO_PKG_NAME").into(),
            connector_version: env!("CARGO_PKG_VERSION").into(),
            capabilities: Some(v1::Capabilities {
                distinguished_name_style: v1::DistinguishedNameStyle::Ldap as i32,
                object_rename: true,
                supports_partitions: true,
                export_type: v1::ExportType::AttributeUpdate as i32,
                ..Default::default()
            }),
        }))
    }

    async fn get_config_parameters(
        &self,
        _: Request<v1::GetConfigParametersRequest>,
    ) -> Result<Response<v1::GetConfigParametersResponse>, Status> {
        Ok(Response::new(v1::GetConfigParametersResponse {
            parameters: vec![
                parameter("url", T::String, true, false, "", "ldap://host[:port] or ldaps://host[:port]"),
                parameter("bind_dn", T::String, false, false, "", "DN to bind as; anonymous when empty"),
                parameter("bind_password", T::EncryptedString, false, true, "", "Password of bind_dn"),
                parameter(
                    "base_dn",
                    T::String,
                    true,
                    false,
                    "",
                    "Naming context to provision into (the partition)",
                ),
                parameter(
                    "object_class",
                    T::String,
                    false,
                    false,
                    "inetOrgPerson",
                    "Structural object class (the object type)",
                ),
            ],
        }))
    }

    async fn validate_configuration(
        &self,
        request: Request<v1::ValidateConfigurationRequest>,
    ) -> Result<Response<v1::ValidateConfigurationResponse>, Status> {
        let config = request.into_inner().config;
        let problem = |parameter: &str, kind: ErrorKind, message: String| v1::ConfigProblem {
            parameter: parameter.into(),
            message,
            kind: kind as i32,
        };
        let mut problems = Vec::new();
        match config.require("url").map(host_port) {
            Err(status) => {
                problems.push(problem("url", ErrorKind::InvalidConfiguration, status.message().into()))
            }
            Ok(Err(message)) => problems.push(problem("url", ErrorKind::InvalidConfiguration, message)),
            Ok(Ok(address)) => {
                match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(&address)).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => problems.push(problem(
                        "",
                        ErrorKind::ConnectionFailed,
                        format!("cannot reach {address}: {e}"),
                    )),
                    Err(_) => {
                        problems.push(problem("", ErrorKind::Timeout, format!("{address} did not answer")))
                    }
                }
            }
        }
        if config.get("base_dn").is_none() {
            problems.push(problem("base_dn", ErrorKind::InvalidConfiguration, "base_dn is required".into()));
        }
        Ok(Response::new(v1::ValidateConfigurationResponse { problems }))
    }

    async fn get_schema(
        &self,
        request: Request<v1::GetSchemaRequest>,
    ) -> Result<Response<v1::GetSchemaResponse>, Status> {
        let config = request.into_inner().config;
        let class = config.get("object_class").unwrap_or("inetOrgPerson").to_string();
        let attribute = |name: &str| v1::SchemaAttribute {
            name: name.into(),
            r#type: v1::AttributeType::String as i32,
            multi_valued: false,
            operation: v1::AttributeOperation::ImportExport as i32,
            required: false,
        };
        Ok(Response::new(v1::GetSchemaResponse {
            schema: Some(v1::Schema {
                types: vec![v1::SchemaType {
                    name: class,
                    attributes: ["entryUUID", "uid", "cn", "sn", "givenName", "displayName", "mail"]
                        .into_iter()
                        .map(attribute)
                        .collect(),
                    anchor_attributes: vec!["entryUUID".into()],
                    locked: false,
                }],
            }),
        }))
    }

    async fn get_partitions(
        &self,
        request: Request<v1::GetPartitionsRequest>,
    ) -> Result<Response<v1::GetPartitionsResponse>, Status> {
        let config = request.into_inner().config;
        let base = config.require("base_dn")?.to_string();
        Ok(Response::new(v1::GetPartitionsResponse {
            partitions: vec![v1::Partition { id: base.clone(), name: base }],
        }))
    }

    async fn put_export_entries(
        &self,
        _: Request<v1::PutExportEntriesRequest>,
    ) -> Result<Response<v1::PutExportEntriesResponse>, Status> {
        Err(error_status(ErrorKind::Unsupported, "connector-ldap does not export yet (issue #5)"))
    }
}

fn main() -> anyhow::Result<()> {
    ecma_connector_sdk::run(LdapConnector)
}

#[cfg(test)]
mod tests {
    use super::host_port;

    #[test]
    fn urls_give_host_and_port() {
        assert_eq!(host_port("ldap://dir.example.com").unwrap(), "dir.example.com:389");
        assert_eq!(host_port("ldaps://dir.example.com/").unwrap(), "dir.example.com:636");
        assert_eq!(host_port("ldap://127.0.0.1:3890").unwrap(), "127.0.0.1:3890");
        assert!(host_port("http://x").is_err());
        assert!(host_port("ldap://").is_err());
    }
}
