//! `connector-shell`: drives any system a script can drive, with JSON in and out.
//!
//! This is the first slice: it negotiates the protocol, declares its parameters, checks that the
//! configured scripts exist and are executable, and offers the configured object type and
//! attributes. Running the scripts for import and export arrives with issue #7; until then those
//! calls answer UNIMPLEMENTED, which the supervisor reports as an unsupported operation.

use std::os::unix::fs::PermissionsExt;

use ecma_connector_sdk::{ConfigExt, negotiate, parameter};
use ecma_proto::v1::{self, ConfigParameterType as T, ErrorKind, connector_server::Connector};
use tonic::{Request, Response, Status};

const SCRIPTS: [&str; 2] = ["export_script", "import_script"];

#[derive(Default)]
struct ShellConnector;

/// Why `path` cannot be run, if it cannot.
fn not_executable(path: &str) -> Option<String> {
    match std::fs::metadata(path) {
        Err(e) => Some(format!("{path}: {e}")),
        Ok(m) if !m.is_file() => Some(format!("{path} is not a file")),
        Ok(m) if m.permissions().mode() & 0o111 == 0 => Some(format!("{path} is not executable (chmod +x)")),
        Ok(_) => None,
    }
}

#[tonic::async_trait]
impl Connector for ShellConnector {
    async fn hello(&self, request: Request<v1::HelloRequest>) -> Result<Response<v1::HelloResponse>, Status> {
        Ok(Response::new(v1::HelloResponse {
            protocol_version: negotiate(request.get_ref())?,
            connector_name: env!("CARGO_PKG_NAME").into(),
            connector_version: env!("CARGO_PKG_VERSION").into(),
            capabilities: Some(v1::Capabilities {
                distinguished_name_style: v1::DistinguishedNameStyle::None as i32,
                export_type: v1::ExportType::AttributeReplace as i32,
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
                parameter("export_script", T::File, true, false, "", "Executable run for exports"),
                parameter("import_script", T::File, false, false, "", "Executable run for imports"),
                parameter("object_type", T::String, false, false, "user", "Object type name"),
                parameter("attributes", T::Text, false, false, "", "Comma-separated attribute names"),
            ],
        }))
    }

    async fn validate_configuration(
        &self,
        request: Request<v1::ValidateConfigurationRequest>,
    ) -> Result<Response<v1::ValidateConfigurationResponse>, Status> {
        let config = request.into_inner().config;
        let problems = SCRIPTS
            .iter()
            .filter_map(|name| {
                let message = not_executable(config.get(name)?)?;
                Some(v1::ConfigProblem {
                    parameter: name.to_string(),
                    message,
                    kind: ErrorKind::InvalidConfiguration as i32,
                })
            })
            .collect();
        Ok(Response::new(v1::ValidateConfigurationResponse { problems }))
    }

    async fn get_schema(
        &self,
        request: Request<v1::GetSchemaRequest>,
    ) -> Result<Response<v1::GetSchemaResponse>, Status> {
        let config = request.into_inner().config;
        let attributes = config
            .get("attributes")
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(|name| v1::SchemaAttribute {
                name: name.into(),
                r#type: v1::AttributeType::String as i32,
                operation: v1::AttributeOperation::ImportExport as i32,
                ..Default::default()
            })
            .collect();
        Ok(Response::new(v1::GetSchemaResponse {
            schema: Some(v1::Schema {
                types: vec![v1::SchemaType {
                    name: config.get("object_type").unwrap_or("user").into(),
                    attributes,
                    anchor_attributes: vec!["id".into()],
                    locked: false,
                }],
            }),
        }))
    }

    async fn get_partitions(
        &self,
        _: Request<v1::GetPartitionsRequest>,
    ) -> Result<Response<v1::GetPartitionsResponse>, Status> {
        Ok(Response::new(v1::GetPartitionsResponse {
            partitions: vec![v1::Partition { id: "default".into(), name: "default".into() }],
        }))
    }
}

fn main() -> anyhow::Result<()> {
    ecma_connector_sdk::run(ShellConnector)
}

#[cfg(test)]
mod tests {
    use super::not_executable;

    #[test]
    fn scripts_must_be_executable_files() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("shell-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let script = dir.join("export.sh");
        std::fs::write(&script, "#!/bin/sh\n").unwrap();
        let path = script.to_str().unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(not_executable(path).unwrap().contains("not executable"));
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(not_executable(path), None);
        assert!(not_executable(dir.to_str().unwrap()).unwrap().contains("not a file"));
        assert!(not_executable("/no/such/script").is_some());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
