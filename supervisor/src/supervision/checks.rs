//! Checks a new incarnation before it serves: its declared parameters against the configured
//! ones, its target's reachability, and the one object type and one partition it must serve.

use ecma_proto::v1::{self, ConfigParameterType, ErrorKind};

use super::{CallError, ConnectorHandle, Session};

/// Why a new incarnation may not serve yet.
#[derive(Debug)]
pub enum NotReady {
    /// Its target is unreachable: keep the child, answer 503, check again later.
    Degraded(String),
    /// Its configuration is wrong (every problem listed): do not restart it until an operator resets it.
    BadConfig(String),
}

/// Sorts a failed call: a target that is down degrades; anything else is a configuration error.
/// Decided by the typed error kind, never by the message.
fn failed(operation: &str, error: CallError) -> NotReady {
    let reason = format!("{operation} failed: {error}");
    match error {
        CallError::Failed {
            kind: ErrorKind::ConnectionFailed | ErrorKind::Timeout | ErrorKind::Retryable,
            ..
        }
        | CallError::Lost { .. }
        | CallError::Unavailable { .. } => NotReady::Degraded(reason),
        CallError::Failed { .. } => NotReady::BadConfig(reason),
    }
}

/// The whole check of a new incarnation (and of a degraded one whose target came back).
pub async fn check(handle: &ConnectorHandle, session: &Session) -> Result<(), NotReady> {
    let name = &handle.name;
    let capabilities = &session.capabilities;
    if !capabilities.supports_export {
        return Err(NotReady::BadConfig(format!(
            "connectors.{name}: the connector does not support export (its capabilities say so), \
             and SCIM writes need it; use a connector that exports"
        )));
    }
    if !capabilities.supports_lookup {
        tracing::warn!(
            connector = %name,
            "the connector does not implement LookupEntries: a write whose outcome is unknown cannot be \
             reconciled, and is answered 503 until an import settles it"
        );
    }
    let declared = session
        .call(
            "GetConfigParameters",
            session.client().get_config_parameters(session.request(v1::GetConfigParametersRequest {})),
        )
        .await
        .map_err(|e| failed("GetConfigParameters", e))?;
    let problems = check_parameters(name, &declared.parameters, &session.config);
    if !problems.is_empty() {
        return Err(NotReady::BadConfig(problems.join("; ")));
    }

    // A target that is down cannot show its schema: stay degraded, and check the rest once it
    // answers (the lifecycle calls `check` again then).
    validate(session).await?;

    let config = Some(session.config.clone());
    let schema = session
        .call(
            "GetSchema",
            session.client().get_schema(session.request(v1::GetSchemaRequest { config: config.clone() })),
        )
        .await
        .map_err(|e| failed("GetSchema", e))?;
    let types = schema.schema.map(|s| s.types).unwrap_or_default();
    let wanted = &handle.config.object_type;
    let Some(object_type) = types.iter().find(|t| &t.name == wanted) else {
        return Err(NotReady::BadConfig(format!(
            "connectors.{name}.object_type: {wanted:?} is not offered by the connector; it offers {:?}",
            types.iter().map(|t| &t.name).collect::<Vec<_>>()
        )));
    };
    if let Err(reason) = (handle.schema_check)(object_type) {
        return Err(NotReady::BadConfig(format!("connectors.{name}.attributes: {reason}")));
    }

    let unknown: Vec<_> = handle
        .config
        .deprovision
        .set
        .keys()
        .filter(|t| !object_type.attributes.iter().any(|a| &a.name == *t))
        .collect();
    if !unknown.is_empty() {
        return Err(NotReady::BadConfig(format!(
            "connectors.{name}.deprovision.set: {unknown:?} are not attributes of {wanted:?}"
        )));
    }
    handle.set_schema(object_type.clone());

    let partitions = session
        .call(
            "GetPartitions",
            session.client().get_partitions(session.request(v1::GetPartitionsRequest { config })),
        )
        .await
        .map_err(|e| failed("GetPartitions", e))?
        .partitions;
    let wanted = &handle.config.partition;
    if !partitions.iter().any(|p| &p.id == wanted || &p.name == wanted) {
        return Err(NotReady::BadConfig(format!(
            "connectors.{name}.partition: {wanted:?} is not offered by the connector; it offers {:?}",
            partitions.iter().map(|p| &p.id).collect::<Vec<_>>()
        )));
    }
    Ok(())
}

/// ValidateConfiguration: configuration problems are errors, connectivity problems degrade.
pub async fn validate(session: &Session) -> Result<(), NotReady> {
    let request = v1::ValidateConfigurationRequest { config: Some(session.config.clone()) };
    let problems = session
        .call("ValidateConfiguration", session.client().validate_configuration(session.request(request)))
        .await
        .map_err(|e| failed("ValidateConfiguration", e))?
        .problems;
    let describe = |p: &v1::ConfigProblem| {
        if p.parameter.is_empty() {
            p.message.clone()
        } else {
            format!("parameters.{}: {}", p.parameter, p.message)
        }
    };
    let (config, target): (Vec<_>, Vec<_>) = problems.iter().partition(|p| {
        !matches!(
            ErrorKind::try_from(p.kind).unwrap_or(ErrorKind::Unspecified),
            ErrorKind::ConnectionFailed
                | ErrorKind::Timeout
                | ErrorKind::Retryable
                | ErrorKind::PermissionDenied
        )
    });
    if !config.is_empty() {
        return Err(NotReady::BadConfig(config.into_iter().map(describe).collect::<Vec<_>>().join("; ")));
    }
    if !target.is_empty() {
        return Err(NotReady::Degraded(target.into_iter().map(describe).collect::<Vec<_>>().join("; ")));
    }
    Ok(())
}

/// Every problem with the configured parameters against the connector's declarations. Values
/// of secret parameters never appear in a message.
pub fn check_parameters(
    connector: &str,
    declared: &[v1::ConfigParameterDefinition],
    config: &v1::ConfigParameters,
) -> Vec<String> {
    let mut problems = Vec::new();
    let key = |p: &str| format!("connectors.{connector}.parameters.{p}");
    for (name, value) in &config.values {
        let Some(definition) = declared.iter().find(|d| &d.name == name) else {
            problems.push(format!(
                "{}: the connector has no such parameter; it takes {:?}",
                key(name),
                declared.iter().map(|d| &d.name).collect::<Vec<_>>()
            ));
            continue;
        };
        let shown = if definition.secret { "(secret)".to_string() } else { format!("{value:?}") };
        match ConfigParameterType::try_from(definition.r#type).unwrap_or(ConfigParameterType::Unspecified) {
            ConfigParameterType::Integer if value.parse::<i64>().is_err() => {
                problems.push(format!("{}: {shown} is not an integer", key(name)))
            }
            ConfigParameterType::Boolean
                if !matches!(
                    value.to_ascii_lowercase().as_str(),
                    "true" | "false" | "yes" | "no" | "1" | "0"
                ) =>
            {
                problems.push(format!("{}: {shown} is not true or false", key(name)))
            }
            ConfigParameterType::Dropdown if !definition.allowed_values.contains(value) => {
                problems.push(format!("{}: {shown} is not one of {:?}", key(name), definition.allowed_values))
            }
            _ => {}
        }
    }
    for definition in declared.iter().filter(|d| d.required && d.default_value.is_empty()) {
        if config.values.get(&definition.name).is_none_or(|v| v.is_empty()) {
            problems.push(format!("{}: required by the connector but not set", key(&definition.name)));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn definition(
        name: &str,
        kind: ConfigParameterType,
        required: bool,
        secret: bool,
    ) -> v1::ConfigParameterDefinition {
        v1::ConfigParameterDefinition {
            name: name.into(),
            r#type: kind as i32,
            required,
            secret,
            ..Default::default()
        }
    }

    #[test]
    fn every_parameter_problem_is_reported_and_secrets_stay_hidden() {
        let declared = [
            definition("url", ConfigParameterType::EncryptedString, true, true),
            definition("table", ConfigParameterType::String, true, false),
            definition("port", ConfigParameterType::Integer, false, true),
            definition("create", ConfigParameterType::Boolean, false, false),
        ];
        let config = v1::ConfigParameters {
            values: [("port", "hunter2"), ("create", "maybe"), ("tabel", "x")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        let problems = check_parameters("people", &declared, &config);
        assert_eq!(problems.len(), 5, "{problems:#?}");
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with("connectors.people.parameters.tabel: the connector has no such"))
        );
        assert!(problems.iter().any(|p| p.contains("parameters.create: \"maybe\" is not true or false")));
        assert!(problems.iter().any(|p| p.contains("parameters.port: (secret) is not an integer")));
        assert!(problems.iter().any(|p| p.contains("parameters.url: required")));
        assert!(problems.iter().any(|p| p.contains("parameters.table: required")));
        assert!(!problems.iter().any(|p| p.contains("hunter2")), "a secret value leaked");
    }
}
