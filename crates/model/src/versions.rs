//! Versions, aliases, concurrency and asynchronous-invocation settings, with Lambda's rules
//! (docs/lambda-contract.md §2.2, §3, §5.1, §6).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{ErrorCode, LambdaError};

/// What a qualifier names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Qualifier {
    Latest,
    Version(u64),
    Alias(String),
}

impl Qualifier {
    /// `None` (no qualifier) is `$LATEST`.
    pub fn parse(q: Option<&str>) -> Self {
        match q {
            None | Some(crate::LATEST) => Self::Latest,
            Some(s) if !s.is_empty() && s.chars().all(|c| c.is_ascii_digit()) => {
                s.parse().map(Self::Version).unwrap_or_else(|_| Self::Alias(s.to_string()))
            }
            Some(s) => Self::Alias(s.to_string()),
        }
    }

    /// The version string for `$LATEST` and numbered versions.
    pub fn version(&self) -> Option<String> {
        match self {
            Self::Latest => Some(crate::LATEST.to_string()),
            Self::Version(n) => Some(n.to_string()),
            Self::Alias(_) => None,
        }
    }
}

/// An alias: a name for a version, optionally splitting traffic with a second version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AliasConfig {
    pub name: String,
    /// The primary version (`$LATEST` or a number).
    pub function_version: String,
    pub description: String,
    /// Additional version → share of traffic (0.0–1.0); at most one entry.
    pub routing: BTreeMap<String, f64>,
    pub revision_id: String,
}

impl AliasConfig {
    /// The version one invocation runs: the additional version with its weight's
    /// probability, else the primary. `draw` is uniform in [0, 1).
    pub fn pick(&self, draw: f64) -> &str {
        let mut acc = 0.0;
        for (version, weight) in &self.routing {
            acc += weight;
            if draw < acc {
                return version;
            }
        }
        &self.function_version
    }
}

/// Checks an alias name (`(?!^[0-9]+$)([a-zA-Z0-9-_]+)`, 1–128).
pub fn validate_alias_name(name: &str) -> Result<(), LambdaError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && !name.chars().all(|c| c.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(LambdaError::validation(
            name,
            "name",
            "Member must satisfy regular expression pattern: (?!^[0-9]+$)([a-zA-Z0-9-_]+)",
        ))
    }
}

/// Checks a version reference (`$LATEST` or digits).
pub fn validate_version(v: &str) -> Result<(), LambdaError> {
    if v == crate::LATEST || (!v.is_empty() && v.len() <= 1024 && v.chars().all(|c| c.is_ascii_digit())) {
        Ok(())
    } else {
        Err(LambdaError::validation(
            v,
            "functionVersion",
            r"Member must satisfy regular expression pattern: (\$LATEST|[0-9]+)",
        ))
    }
}

/// Checks a routing configuration against its alias's primary version.
pub fn validate_routing(primary: &str, routing: &BTreeMap<String, f64>) -> Result<(), LambdaError> {
    if routing.len() > 1 {
        return Err(LambdaError::invalid_parameter(
            "Number of items in AdditionalVersionWeights cannot be greater than 1",
        ));
    }
    for (version, weight) in routing {
        if !version.chars().all(|c| c.is_ascii_digit()) || version.is_empty() {
            return Err(LambdaError::validation(
                version,
                "routingConfig.additionalVersionWeights",
                "Map keys must satisfy constraint: [Member must satisfy regular expression pattern: [0-9]+]",
            ));
        }
        if !(0.0..=1.0).contains(weight) {
            return Err(LambdaError::validation(
                &weight.to_string(),
                "routingConfig.additionalVersionWeights",
                "Map value must satisfy constraint: [Member must have value less than or equal to 1.0, Member must have value greater than or equal to 0.0]",
            ));
        }
        if version == primary {
            return Err(LambdaError::invalid_parameter(format!(
                "Invalid function version {version}. Function version {version} is already included in routing configuration."
            )));
        }
        if primary == crate::LATEST {
            return Err(LambdaError::invalid_parameter(
                "$LATEST is not supported for an alias pointing to more than 1 version",
            ));
        }
    }
    Ok(())
}

/// Per-qualifier settings of asynchronous invocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct EventInvokeConfig {
    /// 0–2; `None` means Lambda's default (2).
    pub max_retries: Option<u32>,
    /// 60–21,600 seconds; `None` means the default (21,600).
    pub max_age_s: Option<u32>,
    pub on_success: Option<String>,
    pub on_failure: Option<String>,
    pub last_modified_ms: i64,
}

pub const DEFAULT_MAX_RETRIES: u32 = 2;
pub const DEFAULT_MAX_EVENT_AGE_S: u32 = 21_600;

impl EventInvokeConfig {
    pub fn retries(&self) -> u32 {
        self.max_retries.unwrap_or(DEFAULT_MAX_RETRIES)
    }

    pub fn max_age_s(&self) -> u32 {
        self.max_age_s.unwrap_or(DEFAULT_MAX_EVENT_AGE_S)
    }

    /// Checks ranges and destinations (`self_arn` may not be its own destination).
    pub fn validate(&self, self_arn: &str) -> Result<(), LambdaError> {
        if let Some(r) = self.max_retries
            && r > 2
        {
            return Err(LambdaError::validation(
                &r.to_string(),
                "maximumRetryAttempts",
                "Member must have value less than or equal to 2",
            ));
        }
        if let Some(a) = self.max_age_s
            && !(60..=21_600).contains(&a)
        {
            let c = if a < 60 { "greater than or equal to 60" } else { "less than or equal to 21600" };
            return Err(LambdaError::validation(
                &a.to_string(),
                "maximumEventAgeInSeconds",
                &format!("Member must have value {c}"),
            ));
        }
        for dest in [&self.on_success, &self.on_failure].into_iter().flatten() {
            validate_destination(dest, self_arn)?;
        }
        Ok(())
    }
}

/// A destination must be another function (the only kind Stratus delivers to so far).
pub fn validate_destination(arn: &str, self_arn: &str) -> Result<(), LambdaError> {
    if !arn.starts_with("arn:") {
        return Err(LambdaError::validation(
            arn,
            "destinationConfig.onSuccess.destination",
            r"Member must satisfy regular expression pattern: ^$|arn:(aws[a-zA-Z0-9-]*):([a-zA-Z0-9\-])+:([a-z]{2}((-gov)|(-iso([a-z]?)))?-[a-z]+-\d{1})?:(\d{12})?:(.*)",
        ));
    }
    if !arn.contains(":lambda:") || !arn.contains(":function:") {
        return Err(LambdaError::invalid_parameter(format!(
            "The destination {arn} is not supported by this Stratus yet: only Lambda functions can be destinations."
        )));
    }
    let base = |a: &str| a.splitn(8, ':').take(7).collect::<Vec<_>>().join(":");
    if base(arn) == base(self_arn) {
        return Err(LambdaError::invalid_parameter("You can't specify the function as a destination for itself."));
    }
    Ok(())
}

/// Provisioned concurrency requested for a version or alias.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProvisionedConfig {
    pub qualifier: String,
    pub requested: u32,
    pub last_modified_ms: i64,
}

/// The error for a qualifier that names nothing.
pub fn no_such_qualifier(function_arn: &str, q: &Qualifier) -> LambdaError {
    match q {
        Qualifier::Alias(a) => LambdaError::not_found(format!("Cannot find alias arn: {function_arn}:{a}")),
        other => LambdaError::new(
            ErrorCode::ResourceNotFound,
            format!("Function not found: {function_arn}:{}", other.version().unwrap_or_default()),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qualifiers() {
        assert_eq!(Qualifier::parse(None), Qualifier::Latest);
        assert_eq!(Qualifier::parse(Some("$LATEST")), Qualifier::Latest);
        assert_eq!(Qualifier::parse(Some("12")), Qualifier::Version(12));
        assert_eq!(Qualifier::parse(Some("prod")), Qualifier::Alias("prod".into()));
    }

    #[test]
    fn weighted_pick() {
        let mut routing = BTreeMap::new();
        routing.insert("2".to_string(), 0.25);
        let a = AliasConfig {
            name: "a".into(),
            function_version: "1".into(),
            description: String::new(),
            routing,
            revision_id: String::new(),
        };
        assert_eq!(a.pick(0.1), "2");
        assert_eq!(a.pick(0.3), "1");
    }

    #[test]
    fn alias_and_routing_rules() {
        assert!(validate_alias_name("prod").is_ok());
        assert!(validate_alias_name("123").is_err());
        assert!(validate_alias_name("bad name").is_err());
        let mut r = BTreeMap::new();
        r.insert("1".to_string(), 0.5);
        assert!(validate_routing("1", &r).is_err(), "the primary cannot also be weighted");
        assert!(validate_routing("$LATEST", &r).is_err());
        assert!(validate_routing("2", &r).is_ok());
        r.insert("3".to_string(), 0.1);
        assert!(validate_routing("2", &r).is_err(), "at most one additional version");
    }

    #[test]
    fn event_invoke_config_rules() {
        let me = "arn:aws:lambda:us-east-1:000000000000:function:me";
        let c = EventInvokeConfig { max_retries: Some(3), ..Default::default() };
        assert_eq!(c.validate(me).unwrap_err().code, ErrorCode::Validation);
        let c = EventInvokeConfig { max_age_s: Some(30), ..Default::default() };
        assert!(c.validate(me).is_err());
        let c = EventInvokeConfig { on_failure: Some(format!("{me}:$LATEST")), ..Default::default() };
        assert!(c.validate(me).is_err(), "not itself");
        let c =
            EventInvokeConfig { on_failure: Some("arn:aws:sqs:us-east-1:000000000000:q".into()), ..Default::default() };
        assert_eq!(c.validate(me).unwrap_err().code, ErrorCode::InvalidParameterValue);
        let c = EventInvokeConfig {
            on_success: Some("arn:aws:lambda:us-east-1:000000000000:function:other".into()),
            ..Default::default()
        };
        assert!(c.validate(me).is_ok());
        assert_eq!(EventInvokeConfig::default().retries(), 2);
    }
}
