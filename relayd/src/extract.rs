//! Request-body extraction with errors in the caller's own shape: a body that is too large (413),
//! not declared as JSON (415), not sent in time (408, `server.body_read_timeout_secs`, enforced by
//! [`crate::connection`]), malformed JSON, or JSON of the wrong shape (400 naming the field).

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;

use crate::error::{AdminApiError, ApiError, ErrorKind};

/// Reads the whole body as bytes, checking the content type and the size limit.
pub async fn read_body<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| {
            let mime = mime.trim();
            mime.eq_ignore_ascii_case("application/json")
                || (mime.starts_with("application/") && mime.ends_with("+json"))
        });
    if !is_json {
        return Err(ApiError::new(
            ErrorKind::UnsupportedMediaType,
            "expected a JSON body with `Content-Type: application/json`",
        ));
    }
    Bytes::from_request(req, state).await.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                ErrorKind::PayloadTooLarge,
                "request body is larger than the configured limit (max_body_bytes)",
            )
        } else if crate::connection::is_body_read_timeout(&rejection) {
            ApiError::new(
                ErrorKind::RequestTimeout,
                "the request body did not arrive in time (server.body_read_timeout_secs)",
            )
        } else {
            ApiError::invalid(format!("cannot read request body: {rejection}"))
        }
    })
}

/// Parses JSON into `T`, naming the field at fault.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = if inner.is_syntax() || inner.is_eof() {
            format!("malformed JSON: {inner}")
        } else if path == "." {
            format!("invalid body: {inner}")
        } else {
            format!("invalid field `{path}`: {inner}")
        };
        let mut error = ApiError::invalid(message);
        error.param = (path != ".").then_some(path);
        error
    })
}

/// JSON body extractor for the admin API.
#[derive(Debug)]
pub struct AdminJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for AdminJson<T> {
    type Rejection = AdminApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = read_body(req, state).await?;
        Ok(Self(parse_json(&bytes)?))
    }
}
