//! The connector's parameters: the script of each operation (with its arguments and timeout),
//! the values and secrets handed to scripts, and the schema when no schema script gives it.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use ecma_connector_sdk::declared::{Declared, parse_declaration};
use ecma_connector_sdk::{ConfigExt, Parameter, error_status};
use ecma_proto::v1::{
    self, ConfigParameterDefinition, ConfigParameterType as T, ConfigParameters, ErrorKind,
};
use serde_json::{Map, Value as Json};
use tonic::Status;

use crate::runner::Script;

/// The operations a script can serve, with their default timeouts.
pub const OPERATIONS: [(&str, &str, u64); 5] = [
    ("schema", "Prints the object type and its attributes (default: the `attributes` parameter)", 30),
    ("validate", "Checks that the target is reachable and the settings work", 30),
    ("import", "Prints one page of objects (full or delta) and whether more remain", 300),
    ("export", "Applies a batch of entry changes, printing one result per entry", 60),
    ("password", "Sets or changes a password (the password arrives on stdin only)", 30),
];

/// The parameters this connector declares.
pub fn definitions() -> Vec<ConfigParameterDefinition> {
    let mut out = Vec::new();
    for (op, help, timeout) in OPERATIONS {
        out.push(
            Parameter::new(format!("{op}_script"), T::File, help).required_if(op == "export").definition(),
        );
        out.push(
            Parameter::new(
                format!("{op}_args"),
                T::Text,
                "Its arguments, a JSON array of strings (passed as they are: no shell)",
            )
            .default("[]")
            .definition(),
        );
        out.push(
            Parameter::new(format!("{op}_timeout"), T::String, "Its timeout")
                .default(format!("{timeout}s"))
                .definition(),
        );
    }
    out.extend([
        Parameter::new("working_dir", T::String, "Working directory of every script").definition(),
        Parameter::new("environment", T::Text, "Extra environment variables, a JSON object").default("{}").definition(),
        Parameter::new("parameters", T::Text, "Values handed to every script, a JSON object").default("{}").definition(),
        Parameter::new("secrets", T::EncryptedString, "Secrets handed to scripts on stdin only: a JSON object, or one string (as \"secret\")").secret().definition(),
        Parameter::new("object_type", T::String, "Object type name (without a schema script)").default("user").definition(),
        Parameter::new("attributes", T::Text, "Without a schema script: comma-separated `name[:string|integer|boolean|binary|reference][*]` (* = multi-valued)").definition(),
        Parameter::new("anchor_attribute", T::String, "The attribute that identifies an object").default("id").definition(),
        Parameter::new("partition", T::String, "The one partition's name").default("default").definition(),
    ]);
    out
}

/// Settings read from one configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub scripts: BTreeMap<String, Script>,
    pub parameters: Json,
    pub secrets: Json,
    pub object_type: String,
    pub anchor: String,
    /// From the `attributes` parameter (the schema script's answer replaces it).
    pub attributes: Vec<Declared>,
    pub partition: String,
}

fn invalid(message: String) -> Status {
    error_status(ErrorKind::InvalidConfiguration, message)
}

/// A JSON parameter (its declared default when it is not set).
fn json_parameter(config: &impl ConfigExt, key: &str) -> Result<Json, Status> {
    let text = config.text(key);
    serde_json::from_str(text).map_err(|e| invalid(format!("{key} is not valid JSON ({e})")))
}

/// Why `path` cannot be run, if it cannot.
pub fn not_executable(path: &std::path::Path) -> Option<String> {
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(if path.is_relative() {
            format!(
                "{} does not exist (a relative path is taken from the connector's working directory: set working_dir, or give an absolute path)",
                path.display()
            )
        } else {
            format!("{} does not exist", path.display())
        }),
        Err(e) => Some(format!("{}: {e}", path.display())),
        Ok(m) if !m.is_file() => Some(format!("{} is not a file", path.display())),
        Ok(m) if m.permissions().mode() & 0o111 == 0 => {
            Some(format!("{} is not executable (chmod +x)", path.display()))
        }
        Ok(_) => None,
    }
}

impl Settings {
    /// Reads a configuration against the declared parameters (a default is the one
    /// [`definitions`] declares).
    pub fn read(config: &Option<ConfigParameters>) -> Result<Self, Status> {
        let declared = definitions();
        let config = &ecma_connector_sdk::Settings::new(&declared, config);
        let working_dir = config.get("working_dir").map(PathBuf::from);
        let env = match json_parameter(config, "environment")? {
            Json::Object(map) => map
                .into_iter()
                .map(|(k, v)| match v {
                    Json::String(s) => Ok((k, s)),
                    other => Ok((k, other.to_string())),
                })
                .collect::<Result<Vec<_>, Status>>()?,
            _ => return Err(invalid("environment must be a JSON object".into())),
        };
        let mut scripts = BTreeMap::new();
        for (op, _, _) in OPERATIONS {
            let Some(path) = config.get(&format!("{op}_script")) else { continue };
            let args_key = format!("{op}_args");
            let args = match json_parameter(config, &args_key)? {
                Json::Array(items) => items
                    .into_iter()
                    .map(|i| match i {
                        Json::String(s) => Ok(s),
                        other => Err(invalid(format!("{args_key}: {other} is not a string"))),
                    })
                    .collect::<Result<Vec<_>, _>>()?,
                _ => return Err(invalid(format!("{args_key} must be a JSON array of strings"))),
            };
            let timeout_key = format!("{op}_timeout");
            let text = config.text(&timeout_key);
            let timeout = humantime::parse_duration(text)
                .map_err(|e| invalid(format!("{timeout_key} {text:?} is not a duration like 30s ({e})")))?;
            let mut path = PathBuf::from(path);
            if path.is_relative()
                && let Some(dir) = &working_dir
            {
                path = dir.join(path);
            }
            scripts.insert(
                op.to_string(),
                Script {
                    operation: op.to_string(),
                    path,
                    args,
                    timeout,
                    working_dir: working_dir.clone(),
                    env: env.clone(),
                },
            );
        }
        if !scripts.contains_key("export") {
            return Err(invalid("export_script is required".into()));
        }
        let secrets = match config.get("secrets") {
            None => Json::Object(Map::new()),
            Some(text) => match serde_json::from_str::<Json>(text) {
                Ok(Json::Object(map)) => Json::Object(map),
                _ => serde_json::json!({ "secret": text }),
            },
        };
        let attributes =
            parse_declaration("attributes", config.text("attributes")).map_err(|e| invalid(e.detail))?;
        Ok(Self {
            scripts,
            parameters: json_parameter(config, "parameters")?,
            secrets,
            object_type: config.text("object_type").to_string(),
            anchor: config.text("anchor_attribute").to_string(),
            attributes,
            partition: config.text("partition").to_string(),
        })
    }

    /// Problems with the scripts themselves (missing, not executable).
    pub fn problems(&self) -> Vec<v1::ConfigProblem> {
        self.scripts
            .values()
            .filter_map(|s| {
                not_executable(&s.path).map(|message| v1::ConfigProblem {
                    parameter: format!("{}_script", s.operation),
                    message,
                    kind: ErrorKind::InvalidConfiguration as i32,
                })
            })
            .collect()
    }

    /// The JSON every script reads first.
    pub fn envelope(&self, operation: &str) -> Map<String, Json> {
        let mut m = Map::new();
        m.insert("protocol".into(), Json::from(crate::protocol::PROTOCOL));
        m.insert("operation".into(), Json::from(operation));
        m.insert("object_type".into(), Json::from(self.object_type.clone()));
        m.insert("partition".into(), Json::from(self.partition.clone()));
        m.insert("anchor_attribute".into(), Json::from(self.anchor.clone()));
        m.insert("parameters".into(), self.parameters.clone());
        m.insert("secrets".into(), self.secrets.clone());
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ecma_proto::v1::AttributeType;
    use std::time::Duration;

    fn config(pairs: &[(&str, &str)]) -> Option<ConfigParameters> {
        Some(ConfigParameters { values: pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect() })
    }

    #[test]
    fn scripts_must_be_executable_files() {
        let dir = std::env::temp_dir().join(format!("shell-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let script = dir.join("export.sh");
        std::fs::write(&script, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(not_executable(&script).unwrap().contains("not executable"));
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(not_executable(&script), None);
        assert!(not_executable(&dir).unwrap().contains("not a file"));
        assert_eq!(
            not_executable(std::path::Path::new("/no/such/script")).unwrap(),
            "/no/such/script does not exist"
        );
        assert!(not_executable(std::path::Path::new("no/such/script")).unwrap().contains("set working_dir"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn settings_are_read_with_their_defaults_and_checked() {
        let s = Settings::read(&config(&[
            ("export_script", "export.py"),
            ("export_args", r#"["--mode", "a b"]"#),
            ("export_timeout", "2s"),
            ("working_dir", "/srv/scripts"),
            ("secrets", "plain-secret"),
            ("attributes", "userName, active:boolean, groups*"),
        ]))
        .unwrap();
        let export = &s.scripts["export"];
        assert_eq!(export.path, PathBuf::from("/srv/scripts/export.py"));
        assert_eq!(export.args, ["--mode", "a b"]);
        assert_eq!(export.timeout, Duration::from_secs(2));
        assert_eq!(s.secrets, serde_json::json!({"secret": "plain-secret"}));
        assert_eq!(
            s.attributes.iter().map(|a| (a.name.as_str(), a.kind, a.multi)).collect::<Vec<_>>(),
            [
                ("userName", AttributeType::String, false),
                ("active", AttributeType::Boolean, false),
                ("groups", AttributeType::String, true)
            ]
        );
        let e = |pairs: &[(&str, &str)]| Settings::read(&config(pairs)).unwrap_err().message().to_string();
        assert!(e(&[]).contains("export_script is required"));
        assert!(
            e(&[("export_script", "x"), ("export_args", "--mode")]).contains("export_args is not valid JSON")
        );
        assert!(e(&[("export_script", "x"), ("export_timeout", "soon")]).contains("export_timeout"));
        assert!(e(&[("export_script", "x"), ("attributes", "a:date")]).contains("\"date\""));
    }
}
