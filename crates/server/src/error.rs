//! Errors in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`
//! with the matching HTTP status.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use hearth_engine::batching::AddError;
use hearth_engine::EngineError;
use serde_json::json;

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// OpenAI error type (`invalid_request_error`, …).
    pub kind: &'static str,
    /// Machine-readable code, when there is one.
    pub code: Option<&'static str>,
    /// The request field at fault, when there is one.
    pub param: Option<String>,
    /// What went wrong, for humans.
    pub message: String,
    /// Seconds to wait before retrying (429).
    pub retry_after: Option<u32>,
}

impl ApiError {
    /// 400 for a bad field.
    pub fn invalid(param: &str, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            kind: "invalid_request_error",
            code: None,
            param: Some(param.to_owned()),
            message: message.into(),
            retry_after: None,
        }
    }

    /// 400 for a body that is not the JSON expected.
    pub fn bad_json(message: impl Into<String>) -> Self {
        Self { param: None, ..Self::invalid("", message) }
    }

    /// 400 `context_length_exceeded` for a prompt that cannot fit.
    pub fn context_length(param: &str, message: impl Into<String>) -> Self {
        Self { code: Some("context_length_exceeded"), ..Self::invalid(param, message) }
    }

    /// 413 for a body over the size cap.
    #[must_use]
    pub fn body_too_large(max: usize) -> Self {
        Self {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            code: Some("request_too_large"),
            ..Self::bad_json(format!("request body is larger than {max} bytes"))
        }
    }

    /// 408 for a body that did not arrive in time.
    #[must_use]
    pub fn body_timeout(limit: std::time::Duration) -> Self {
        Self {
            status: StatusCode::REQUEST_TIMEOUT,
            code: Some("request_timeout"),
            ..Self::bad_json(format!("request body did not arrive within {} s", limit.as_secs()))
        }
    }

    /// 401 for a missing or wrong API key.
    #[must_use]
    pub fn unauthorized() -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            kind: "invalid_request_error",
            code: Some("invalid_api_key"),
            param: None,
            message: "missing or invalid API key (send `Authorization: Bearer KEY`)".into(),
            retry_after: None,
        }
    }

    /// 404 for an unknown model name.
    #[must_use]
    pub fn unknown_model(name: &str, served: &str) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            kind: "invalid_request_error",
            code: Some("model_not_found"),
            param: Some("model".into()),
            message: format!("model {name:?} is not served here (this server serves {served:?})"),
            retry_after: None,
        }
    }

    /// 500 for a failure inside the engine.
    pub fn internal(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            kind: "server_error",
            code: None,
            param: None,
            message: message.into(),
            retry_after: None,
        }
    }

    /// The JSON body.
    #[must_use]
    pub fn body(&self) -> serde_json::Value {
        json!({"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}})
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        let message = e.to_string();
        match e {
            EngineError::Rejected(AddError::QueueFull { .. }) => Self {
                status: StatusCode::TOO_MANY_REQUESTS,
                kind: "rate_limit_error",
                code: Some("queue_full"),
                param: None,
                message,
                retry_after: Some(1),
            },
            EngineError::Rejected(AddError::PromptTooLong { .. } | AddError::ExceedsKvPool { .. }) => {
                Self::context_length("messages", message)
            }
            EngineError::InvalidParam(p) => Self::invalid(p.field, p.message),
            EngineError::Invalid(_) | EngineError::Rejected(_) | EngineError::Text(_) => Self::bad_json(message),
            EngineError::Stopped => Self {
                status: StatusCode::SERVICE_UNAVAILABLE,
                kind: "server_error",
                code: Some("engine_stopped"),
                param: None,
                message,
                retry_after: None,
            },
            _ => Self::internal(message),
        }
    }
}

impl From<hearth_engine::registry::RegistryError> for ApiError {
    fn from(e: hearth_engine::registry::RegistryError) -> Self {
        use hearth_engine::registry::RegistryError as R;
        let message = e.to_string();
        let unavailable = |code, retry_after| Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            kind: "server_error",
            code: Some(code),
            param: None,
            message: message.clone(),
            retry_after,
        };
        match e {
            R::Busy { retry_after, .. } => {
                unavailable("model_busy", Some(u32::try_from(retry_after.as_secs()).unwrap_or(5).max(1)))
            }
            R::TooBig { .. } => unavailable("model_too_large", None),
            R::Load { .. } => Self { code: Some("model_load_failed"), ..Self::internal(message.clone()) },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut res = (self.status, Json(self.body())).into_response();
        if let Some(secs) = self.retry_after {
            res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        res
    }
}

/// How a protocol other than OpenAI's writes an error body.
pub trait ErrorShape {
    /// The body for `e` (its status and `Retry-After` stay as they are).
    fn body(e: &ApiError) -> serde_json::Value;
}

/// An [`ApiError`] answered in protocol `P`'s shape: what the Ollama and
/// Anthropic handlers return, so every refusal keeps its status and reason
/// and only the body's form differs.
pub struct ShapedError<P: ErrorShape>(pub ApiError, std::marker::PhantomData<P>);

impl<P: ErrorShape> From<ApiError> for ShapedError<P> {
    fn from(e: ApiError) -> Self {
        Self(e, std::marker::PhantomData)
    }
}

impl<P: ErrorShape> IntoResponse for ShapedError<P> {
    fn into_response(self) -> Response {
        let mut res = (self.0.status, Json(P::body(&self.0))).into_response();
        if let Some(secs) = self.0.retry_after {
            res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        res
    }
}
