//! One error type for everything relayd answers with, and one exhaustive mapping to status codes
//! and to the three body shapes clients expect: the admin API's `{"error":{"code","message"}}`,
//! Anthropic's `{"type":"error","error":{"type","message"}}` and OpenAI's
//! `{"error":{"message","type","param","code"}}`.
//!
//! Internal failures are logged where they are converted and reach the client only as a short
//! description in user terms.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use shared::error::{AdminError, AdminErrorBody, FieldError};

/// The reason phrase of Anthropic's 529 status line (`HTTP/1.1 529 Overloaded`). Checked at
/// compile time, so building it cannot fail.
const OVERLOADED_REASON: hyper::ext::ReasonPhrase =
    hyper::ext::ReasonPhrase::from_static(b"Overloaded");

/// What went wrong, independent of who is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Malformed or semantically invalid input.
    InvalidRequest,
    /// The prompt does not fit the model's context window (a 400, worded as Anthropic words it:
    /// `prompt is too long: N tokens > M maximum`, which Claude Code acts on).
    ContextLengthExceeded,
    /// Missing or wrong credentials.
    Unauthenticated,
    /// Valid credentials, not allowed to do this.
    Forbidden,
    /// No such route, record or model.
    NotFound,
    /// Route exists, method does not.
    MethodNotAllowed,
    /// Would violate uniqueness (account name).
    Conflict,
    /// Body larger than the configured limit.
    PayloadTooLarge,
    /// Body is not JSON.
    UnsupportedMediaType,
    /// The client did not send its request body in time.
    RequestTimeout,
    /// A relay-key limit was hit.
    RateLimited,
    /// Every account is busy.
    Overloaded,
    /// The upstream failed or refused our credentials.
    BadGateway,
    /// The upstream did not answer in time.
    GatewayTimeout,
    /// The store or another dependency is unavailable.
    Unavailable,
    /// A bug or an unexpected failure inside relayd.
    Internal,
}

impl ErrorKind {
    /// The HTTP status, for every surface. Exhaustive on purpose: a new kind must choose one.
    pub fn status(self) -> StatusCode {
        match self {
            Self::InvalidRequest | Self::ContextLengthExceeded => StatusCode::BAD_REQUEST,
            Self::Unauthenticated => StatusCode::UNAUTHORIZED,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict => StatusCode::CONFLICT,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            // Anthropic's own "overloaded" status; OpenAI clients get 429 instead (see below).
            Self::Overloaded => {
                StatusCode::from_u16(529).unwrap_or(StatusCode::SERVICE_UNAVAILABLE)
            }
            Self::BadGateway => StatusCode::BAD_GATEWAY,
            Self::GatewayTimeout => StatusCode::GATEWAY_TIMEOUT,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The admin API's `code`.
    fn admin_code(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::ContextLengthExceeded => "context_length_exceeded",
            Self::Unauthenticated => "unauthenticated",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::Conflict => "conflict",
            Self::PayloadTooLarge => "payload_too_large",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::RequestTimeout => "request_timeout",
            Self::RateLimited => "rate_limited",
            Self::Overloaded => "overloaded",
            Self::BadGateway => "bad_gateway",
            Self::GatewayTimeout => "gateway_timeout",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
        }
    }

    /// Anthropic's `error.type`.
    fn anthropic_type(self) -> &'static str {
        match self {
            Self::InvalidRequest
            | Self::ContextLengthExceeded
            | Self::MethodNotAllowed
            | Self::UnsupportedMediaType => "invalid_request_error",
            Self::Conflict => "invalid_request_error",
            Self::Unauthenticated => "authentication_error",
            Self::Forbidden => "permission_error",
            Self::NotFound => "not_found_error",
            Self::PayloadTooLarge => "request_too_large",
            Self::RateLimited => "rate_limit_error",
            Self::Overloaded => "overloaded_error",
            Self::BadGateway | Self::Internal | Self::Unavailable => "api_error",
            Self::GatewayTimeout | Self::RequestTimeout => "timeout_error",
        }
    }

    /// OpenAI's `error.type` and `error.code`.
    fn openai_type_code(self) -> (&'static str, &'static str) {
        match self {
            Self::InvalidRequest => ("invalid_request_error", "invalid_request"),
            Self::ContextLengthExceeded => ("invalid_request_error", "context_length_exceeded"),
            Self::Unauthenticated => ("invalid_request_error", "invalid_api_key"),
            Self::Forbidden => ("invalid_request_error", "permission_denied"),
            Self::NotFound => ("invalid_request_error", "model_not_found"),
            Self::MethodNotAllowed => ("invalid_request_error", "method_not_allowed"),
            Self::Conflict => ("invalid_request_error", "conflict"),
            Self::PayloadTooLarge => ("invalid_request_error", "request_too_large"),
            Self::UnsupportedMediaType => ("invalid_request_error", "unsupported_media_type"),
            Self::RequestTimeout => ("invalid_request_error", "request_timeout"),
            Self::RateLimited => ("rate_limit_exceeded", "rate_limit_exceeded"),
            Self::Overloaded => ("rate_limit_exceeded", "overloaded"),
            Self::BadGateway => ("api_error", "bad_gateway"),
            Self::GatewayTimeout => ("api_error", "timeout"),
            Self::Unavailable => ("api_error", "unavailable"),
            Self::Internal => ("api_error", "internal_error"),
        }
    }
}

/// Which protocol the caller speaks, and so which error body it gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// `/admin/v1/...`.
    Admin,
    /// Anthropic Messages API routes.
    Anthropic,
    /// OpenAI Chat Completions routes.
    OpenAi,
}

impl Surface {
    /// The surface of a request, for errors raised before a handler runs (auth). `/v1/models`
    /// is shared by both protocols; the Anthropic headers tell them apart (as for its answer).
    pub fn for_request(path: &str, headers: &axum::http::HeaderMap) -> Self {
        if path.ends_with("/v1/models") && !path.starts_with("/openai/") {
            if headers.contains_key("anthropic-version") || headers.contains_key("x-api-key") {
                Self::Anthropic
            } else {
                Self::OpenAi
            }
        } else {
            Self::for_path(path)
        }
    }

    /// The surface a path belongs to, for errors raised before a handler runs (404, 405, auth).
    pub fn for_path(path: &str) -> Self {
        if path.starts_with("/admin") {
            Self::Admin
        } else if path.starts_with("/openai/") || path.ends_with("/chat/completions") {
            Self::OpenAi
        } else {
            Self::Anthropic
        }
    }
}

/// An error on its way to a client.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// What went wrong.
    pub kind: ErrorKind,
    /// Message shown to the client: user terms, no internals, no secrets.
    pub message: String,
    /// Field-level details (admin surface only).
    pub details: Vec<FieldError>,
    /// Seconds to send in `retry-after`.
    pub retry_after: Option<u64>,
    /// The offending parameter (OpenAI's `param`).
    pub param: Option<String>,
}

impl ApiError {
    /// An error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            details: Vec::new(),
            retry_after: None,
            param: None,
        }
    }

    /// 400 with a message.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidRequest, message)
    }

    /// 400 listing field errors; the message summarises them.
    pub fn fields(details: Vec<FieldError>) -> Self {
        let message = match details.as_slice() {
            [one] => one.to_string(),
            many => format!(
                "{} problems: {}",
                many.len(),
                many.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        };
        Self {
            details,
            ..Self::invalid(message)
        }
    }

    /// 404 with a message.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }

    /// 401 with a message.
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unauthenticated, message)
    }

    /// 500: logs `detail` (which may be technical) and tells the client only `what` failed.
    pub fn internal(what: &str, detail: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "{what}");
        Self::new(ErrorKind::Internal, format!("internal error: {what}"))
    }

    /// Adds a `retry-after`.
    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    /// The status this error is answered with on `surface`.
    pub fn status_for(&self, surface: Surface) -> StatusCode {
        // OpenAI clients know 429, not Anthropic's 529.
        match (surface, self.kind) {
            (Surface::OpenAi, ErrorKind::Overloaded) => StatusCode::TOO_MANY_REQUESTS,
            (_, kind) => kind.status(),
        }
    }

    /// Renders the error for `surface`.
    pub fn into_response_for(self, surface: Surface) -> Response {
        let status = self.status_for(surface);
        let body = match surface {
            Surface::Admin => serde_json::to_value(AdminErrorBody {
                error: AdminError {
                    code: self.kind.admin_code().to_owned(),
                    message: self.message,
                    details: self.details,
                },
            })
            .unwrap_or_default(),
            Surface::Anthropic => json!({
                "type": "error",
                "error": {"type": self.kind.anthropic_type(), "message": self.message},
            }),
            Surface::OpenAi => {
                let (ty, code) = self.kind.openai_type_code();
                json!({"error": {"message": self.message, "type": ty, "param": self.param, "code": code}})
            }
        };
        let mut response = (status, axum::Json(body)).into_response();
        if status.as_u16() == 529 {
            // `http` knows no phrase for Anthropic's 529 and hyper would print `529 <none>`;
            // hyper writes the phrase found in the response's extensions instead.
            response.extensions_mut().insert(OVERLOADED_REASON);
        }
        if let Some(secs) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        response
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind.status(), self.message)
    }
}

/// An [`ApiError`] rendered in the admin API's shape; the return type of admin handlers.
#[derive(Debug)]
pub struct AdminApiError(pub ApiError);

impl<E: Into<ApiError>> From<E> for AdminApiError {
    fn from(e: E) -> Self {
        Self(e.into())
    }
}

impl IntoResponse for AdminApiError {
    fn into_response(self) -> Response {
        self.0.into_response_for(Surface::Admin)
    }
}
