//! The one place where errors become HTTP: status, `x-amzn-ErrorType`, and the body with the
//! exact member casing of each exception shape (docs/lambda-contract.md §2.1).

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use model::{ErrorCode, LambdaError};
use store::StoreError;

/// An error on its way to the caller.
#[derive(Debug)]
pub struct ApiError(pub LambdaError);

impl From<LambdaError> for ApiError {
    fn from(e: LambdaError) -> Self {
        Self(e)
    }
}

impl ApiError {
    /// Maps a store failure that is not the caller's fault.
    pub fn internal(context: &str, e: StoreError) -> Self {
        tracing::error!(error = %e, source = ?std::error::Error::source(&e), "{context}");
        Self(LambdaError::service(format!("{context}: an internal error occurred")))
    }
}

fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::ResourceNotFound | ErrorCode::ProvisionedConcurrencyConfigNotFound => StatusCode::NOT_FOUND,
        ErrorCode::ResourceConflict | ErrorCode::Conflict => StatusCode::CONFLICT,
        ErrorCode::InvalidParameterValue
        | ErrorCode::Validation
        | ErrorCode::InvalidRequestContent
        | ErrorCode::InvalidRuntime => StatusCode::BAD_REQUEST,
        ErrorCode::RequestEntityTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::Service => StatusCode::INTERNAL_SERVER_ERROR,
        ErrorCode::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
        ErrorCode::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ErrorCode::ResourceNotReady => StatusCode::BAD_GATEWAY,
        ErrorCode::MissingAuthenticationToken
        | ErrorCode::UnrecognizedClient
        | ErrorCode::InvalidSignature
        | ErrorCode::AccessDenied => StatusCode::FORBIDDEN,
    }
}

/// The body of an error, in the member casing of its shape.
pub fn error_body(e: &LambdaError) -> serde_json::Value {
    use serde_json::json;
    match e.code {
        // Shapes whose message member is `Message`.
        ErrorCode::ResourceNotFound | ErrorCode::Service | ErrorCode::InvalidRuntime => {
            json!({ "Type": "User", "Message": e.message })
        }
        ErrorCode::TooManyRequests => {
            let mut v = json!({ "Type": "User", "message": e.message });
            if let Some(r) = e.reason {
                v["Reason"] = json!(r.as_str());
            }
            v
        }
        // Framework validation and authentication errors carry no `Type`.
        ErrorCode::Validation
        | ErrorCode::MissingAuthenticationToken
        | ErrorCode::UnrecognizedClient
        | ErrorCode::InvalidSignature => json!({ "message": e.message }),
        ErrorCode::AccessDenied | ErrorCode::Conflict => json!({ "Message": e.message }),
        _ => json!({ "Type": "User", "message": e.message }),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let e = self.0;
        let status = status_of(e.code);
        let mut resp = (status, [("content-type", "application/json")], error_body(&e).to_string()).into_response();
        if let Ok(v) = HeaderValue::from_str(e.code.as_str()) {
            resp.headers_mut().insert("x-amzn-errortype", v);
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::ThrottleReason;

    #[test]
    fn bodies_follow_each_shapes_casing() {
        let nf = error_body(&LambdaError::not_found("gone"));
        assert_eq!(nf, serde_json::json!({"Type": "User", "Message": "gone"}));
        let ip = error_body(&LambdaError::invalid_parameter("bad"));
        assert_eq!(ip, serde_json::json!({"Type": "User", "message": "bad"}));
        let t = error_body(&LambdaError::throttled(ThrottleReason::ConcurrentInvocationLimitExceeded));
        assert_eq!(t["Reason"], "ConcurrentInvocationLimitExceeded");
        assert_eq!(t["message"], "Rate Exceeded.");
    }

    #[test]
    fn statuses_and_error_type_header() {
        let r = ApiError(LambdaError::too_large("x")).into_response();
        assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(r.headers()["x-amzn-errortype"], "RequestEntityTooLargeException");
        assert_eq!(ApiError(LambdaError::service("x")).into_response().status(), 500);
    }
}
