//! The client's errors. Wharf's error body is
//! `{"error": {"code": "...", "message": "..."}}`; a reply without it (a
//! request over the body limit, a proxy's page) gets the code
//! `http_<status>` and the start of its text as the message.

use serde::Deserialize;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Wharf answered with an error status (after any retries).
    #[error("{status} {code}: {message}")]
    Api { status: u16, code: String, message: String },
    /// No reply: the connection failed, timed out or broke.
    #[error("transport: {0}")]
    Transport(#[source] ureq::Error),
    /// A reply that is not the JSON this call expects.
    #[error("cannot decode the reply: {0}")]
    Decode(String),
}

impl Error {
    /// The API's error code (`backlog_full`, `namespace_not_found`…), for
    /// an [`Error::Api`].
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The HTTP status, for an [`Error::Api`].
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// One message's refusal inside a batch reply (the batch itself succeeded).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    pub code: String,
    pub message: String,
}

/// The body `{"error": {...}}`.
#[derive(Debug, Deserialize)]
struct ErrorBody {
    error: ApiError,
}

/// The error of a reply with status `status` and body `body`.
pub(crate) fn from_reply(status: u16, body: &[u8]) -> Error {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(b) => Error::Api { status, code: b.error.code, message: b.error.message },
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            let message: String = text.chars().take(200).collect();
            Error::Api { status, code: format!("http_{status}"), message }
        }
    }
}

/// Decodes a successful reply's JSON; `what` names the call.
pub(crate) fn decode<T: serde::de::DeserializeOwned>(what: &str, body: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(body).map_err(|e| Error::Decode(format!("{what}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_body_gives_its_code_and_message() {
        let e = from_reply(429, br#"{"error":{"code":"backlog_full","message":"5 undelivered"}}"#);
        assert_eq!((e.status(), e.code()), (Some(429), Some("backlog_full")));
        assert_eq!(e.to_string(), "429 backlog_full: 5 undelivered");
    }

    #[test]
    fn a_reply_without_the_error_body_is_named_by_its_status() {
        let e = from_reply(413, b"");
        assert_eq!(e.code(), Some("http_413"));
        let e = from_reply(502, b"<html>bad gateway</html>");
        assert!(
            matches!(&e, Error::Api { code, message, .. } if code == "http_502" && message.contains("bad gateway"))
        );
    }
}
