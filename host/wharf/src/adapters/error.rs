//! The edge mapping of the domain error ([`crate::error::Error`]) to HTTP:
//! a status from its kind, and the JSON body `{"error": {code, message}}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

pub use crate::error::{Error as ApiError, ErrorKind};

/// The HTTP status of each kind of domain error.
pub fn http_status(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::Invalid => StatusCode::BAD_REQUEST,
        ErrorKind::Unprocessable => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorKind::Unauthenticated => StatusCode::UNAUTHORIZED,
        ErrorKind::Forbidden => StatusCode::FORBIDDEN,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        ErrorKind::Gone => StatusCode::GONE,
        ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorKind::Overloaded => StatusCode::TOO_MANY_REQUESTS,
        ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::StorageFull => StatusCode::INSUFFICIENT_STORAGE,
        ErrorKind::TimedOut => StatusCode::REQUEST_TIMEOUT,
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The framework's own rejections (an unknown route, a wrong method, a
/// body over the limit or cut off by its read timeout) as the documented
/// JSON error, like every other error. The message keeps the framework's
/// words; an `Allow` header stays.
pub async fn json_errors(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let allow = resp.headers().get(axum::http::header::ALLOW).cloned();
    let said = axum::body::to_bytes(resp.into_body(), 1024).await.unwrap_or_default();
    let said = String::from_utf8_lossy(&said).trim().to_string();
    let error = match status {
        StatusCode::NOT_FOUND => ApiError::new(ErrorKind::NotFound, "route_not_found", "no such route"),
        StatusCode::METHOD_NOT_ALLOWED => ApiError::new(
            ErrorKind::MethodNotAllowed,
            "method_not_allowed",
            "this route does not take that method",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(ErrorKind::TooLarge, "body_too_large", said),
        s if s.is_client_error() => ApiError::new(ErrorKind::Invalid, "bad_request", said),
        _ => ApiError::internal(said),
    };
    let mut out = error.into_response();
    if let Some(allow) = allow {
        out.headers_mut().insert(axum::http::header::ALLOW, allow);
    }
    out
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = http_status(self.kind);
        let mut resp = (status, Json(self.body())).into_response();
        if matches!(self.kind, ErrorKind::Overloaded | ErrorKind::StorageFull | ErrorKind::Unavailable) {
            resp.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from_static("1"));
        }
        resp
    }
}
