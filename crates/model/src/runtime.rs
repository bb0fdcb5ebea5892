//! Lambda's runtime identifiers: which exist, which are retired.
//!
//! Whether *this host* can run one is the `runtimes` crate's business; this module only knows
//! the names Lambda accepts.

use crate::error::LambdaError;

/// Runtime identifiers Lambda accepts for new functions.
pub const SUPPORTED: &[&str] = &[
    "nodejs24.x",
    "nodejs22.x",
    "nodejs20.x",
    "nodejs18.x",
    "python3.14",
    "python3.13",
    "python3.12",
    "python3.11",
    "python3.10",
    "python3.9",
    "java25",
    "java21",
    "java17",
    "java11",
    "java8.al2",
    "dotnet10",
    "dotnet8",
    "ruby3.4",
    "ruby3.3",
    "ruby3.2",
    "provided.al2023",
    "provided.al2",
];

/// Identifiers Lambda knows but no longer accepts for creating or updating functions.
pub const RETIRED: &[&str] = &[
    "nodejs",
    "nodejs4.3",
    "nodejs4.3-edge",
    "nodejs6.10",
    "nodejs8.10",
    "nodejs10.x",
    "nodejs12.x",
    "nodejs14.x",
    "nodejs16.x",
    "python2.7",
    "python3.6",
    "python3.7",
    "python3.8",
    "java8",
    "dotnetcore1.0",
    "dotnetcore2.0",
    "dotnetcore2.1",
    "dotnetcore3.1",
    "dotnet6",
    "dotnet7",
    "ruby2.5",
    "ruby2.7",
    "ruby3.2.x",
    "go1.x",
    "provided",
];

/// The language family of a runtime identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Python,
    Node,
    Java,
    Ruby,
    Dotnet,
    /// OS-only runtimes: the package brings its own `bootstrap`.
    Provided,
}

pub fn family(id: &str) -> Option<Family> {
    if id.starts_with("python") {
        Some(Family::Python)
    } else if id.starts_with("nodejs") {
        Some(Family::Node)
    } else if id.starts_with("java") {
        Some(Family::Java)
    } else if id.starts_with("ruby") {
        Some(Family::Ruby)
    } else if id.starts_with("dotnet") {
        Some(Family::Dotnet)
    } else if id.starts_with("provided") {
        Some(Family::Provided)
    } else {
        None
    }
}

/// Checks that `id` names a runtime Lambda accepts today.
pub fn validate_identifier(id: &str) -> Result<(), LambdaError> {
    if SUPPORTED.contains(&id) {
        return Ok(());
    }
    if RETIRED.contains(&id) {
        return Err(LambdaError::invalid_parameter(format!(
            "The runtime parameter of {id} is no longer supported for creating or updating AWS Lambda functions. We recommend you use a supported runtime while creating or updating functions."
        )));
    }
    // Lambda reports this one as InvalidParameterValueException, without the
    // "1 validation error detected" prefix and with the value unquoted.
    Err(LambdaError::invalid_parameter(format!(
        "Value {id} at 'runtime' failed to satisfy constraint: Member must satisfy enum value set: [{}] or be a valid ARN",
        SUPPORTED.join(", ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    #[test]
    fn known_retired_and_unknown_runtimes() {
        assert!(validate_identifier("python3.11").is_ok());
        assert!(validate_identifier("provided.al2023").is_ok());
        assert_eq!(validate_identifier("python2.7").unwrap_err().code, ErrorCode::InvalidParameterValue);
        let err = validate_identifier("cobol85").unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidParameterValue);
        assert!(err.message.starts_with("Value cobol85 at 'runtime' failed to satisfy constraint"));
        assert_eq!(family("nodejs20.x"), Some(Family::Node));
    }
}
