//! The errors the platform reports to callers, by Lambda error code.
//!
//! Every part of Stratus that can refuse a request returns a [`LambdaError`]: a code from
//! Lambda's own list and a message. Only the `api` crate turns it into HTTP (status, the
//! `x-amzn-ErrorType` header and the body with the exact member casing of each shape).

use std::fmt;

/// A Lambda error code, as it appears in `x-amzn-ErrorType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    ResourceNotFound,
    ResourceConflict,
    InvalidParameterValue,
    Validation,
    RequestEntityTooLarge,
    InvalidRequestContent,
    TooManyRequests,
    Service,
    PreconditionFailed,
    UnsupportedMediaType,
    ResourceNotReady,
    InvalidRuntime,
    ProvisionedConcurrencyConfigNotFound,
    /// No SigV4 signature at all.
    MissingAuthenticationToken,
    /// An access key the server does not know (or one revoked).
    UnrecognizedClient,
    /// A signature that does not match, or is outside the clock-skew window.
    InvalidSignature,
    /// Authenticated, but not allowed (no resource policy grants it).
    AccessDenied,
    /// EventBridge Scheduler's conflict (a schedule or group that already exists).
    Conflict,
}

impl ErrorCode {
    /// The exception name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ResourceNotFound => "ResourceNotFoundException",
            Self::ResourceConflict => "ResourceConflictException",
            Self::InvalidParameterValue => "InvalidParameterValueException",
            Self::Validation => "ValidationException",
            Self::RequestEntityTooLarge => "RequestEntityTooLargeException",
            Self::InvalidRequestContent => "InvalidRequestContentException",
            Self::TooManyRequests => "TooManyRequestsException",
            Self::Service => "ServiceException",
            Self::PreconditionFailed => "PreconditionFailedException",
            Self::UnsupportedMediaType => "UnsupportedMediaTypeException",
            Self::ResourceNotReady => "ResourceNotReadyException",
            Self::InvalidRuntime => "InvalidRuntimeException",
            Self::ProvisionedConcurrencyConfigNotFound => "ProvisionedConcurrencyConfigNotFoundException",
            Self::MissingAuthenticationToken => "MissingAuthenticationTokenException",
            Self::UnrecognizedClient => "UnrecognizedClientException",
            Self::InvalidSignature => "InvalidSignatureException",
            Self::AccessDenied => "AccessDeniedException",
            Self::Conflict => "ConflictException",
        }
    }

    /// Reads [`ErrorCode::as_str`] back.
    pub fn parse(s: &str) -> Option<Self> {
        use ErrorCode::*;
        [
            ResourceNotFound,
            ResourceConflict,
            InvalidParameterValue,
            Validation,
            RequestEntityTooLarge,
            InvalidRequestContent,
            TooManyRequests,
            Service,
            PreconditionFailed,
            UnsupportedMediaType,
            ResourceNotReady,
            InvalidRuntime,
            ProvisionedConcurrencyConfigNotFound,
            MissingAuthenticationToken,
            UnrecognizedClient,
            InvalidSignature,
            AccessDenied,
            Conflict,
        ]
        .into_iter()
        .find(|c| c.as_str() == s)
    }
}

/// Why a caller was throttled (`Reason` of `TooManyRequestsException`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThrottleReason {
    ConcurrentInvocationLimitExceeded,
    FunctionInvocationRateLimitExceeded,
    ReservedFunctionConcurrentInvocationLimitExceeded,
}

impl ThrottleReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ConcurrentInvocationLimitExceeded => "ConcurrentInvocationLimitExceeded",
            Self::FunctionInvocationRateLimitExceeded => "FunctionInvocationRateLimitExceeded",
            Self::ReservedFunctionConcurrentInvocationLimitExceeded => {
                "ReservedFunctionConcurrentInvocationLimitExceeded"
            }
        }
    }

    /// Reads [`ThrottleReason::as_str`] back.
    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::ConcurrentInvocationLimitExceeded,
            Self::FunctionInvocationRateLimitExceeded,
            Self::ReservedFunctionConcurrentInvocationLimitExceeded,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }
}

/// An error reported to a caller of a Lambda API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LambdaError {
    pub code: ErrorCode,
    pub message: String,
    /// Set only for `TooManyRequestsException`.
    pub reason: Option<ThrottleReason>,
}

impl LambdaError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), reason: None }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ResourceNotFound, message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ResourceConflict, message)
    }

    pub fn invalid_parameter(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidParameterValue, message)
    }

    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::RequestEntityTooLarge, message)
    }

    pub fn invalid_content(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidRequestContent, message)
    }

    pub fn service(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Service, message)
    }

    pub fn throttled(reason: ThrottleReason) -> Self {
        Self { code: ErrorCode::TooManyRequests, message: "Rate Exceeded.".into(), reason: Some(reason) }
    }

    /// A framework validation error in AWS's exact wording.
    pub fn validation(value: &str, field: &str, constraint: &str) -> Self {
        Self::new(ErrorCode::Validation, validation_message(value, field, constraint))
    }
}

/// `1 validation error detected: Value '<v>' at '<field>' failed to satisfy constraint: <c>`.
pub fn validation_message(value: &str, field: &str, constraint: &str) -> String {
    format!("1 validation error detected: Value '{value}' at '{field}' failed to satisfy constraint: {constraint}")
}

impl fmt::Display for LambdaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

impl std::error::Error for LambdaError {}
