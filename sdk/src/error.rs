//! The one error type a plugin returns.

use std::fmt;
use std::time::Duration;

/// Why delivering a message (or initialising a plugin) failed.
///
/// An error is either *transient* ([`Error::retry`]: the host tries the
/// message again later, with backoff) or *permanent* ([`Error::reject`]: the
/// host moves the message to the dead-letter queue). Its reason is what the
/// operator sees, so say what went wrong and with what.
///
/// `std::io::Error` converts into a retry, so `?` on network calls does the
/// right thing: connection refused, reset and timed out are transient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    reason: String,
    kind: Kind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Retry { after: Option<Duration> },
    Reject,
    Halt,
}

impl Error {
    /// A transient failure: the host retries the message later.
    pub fn retry(reason: impl Into<String>) -> Self {
        Self { reason: reason.into(), kind: Kind::Retry { after: None } }
    }

    /// A permanent failure: the host moves the message to the dead-letter
    /// queue. Use it only when trying again cannot help.
    pub fn reject(reason: impl Into<String>) -> Self {
        Self { reason: reason.into(), kind: Kind::Reject }
    }

    /// The target cannot go on without an operator: the host stops this
    /// target on the message's partition until `wharf target resume`.
    pub fn halt(reason: impl Into<String>) -> Self {
        Self { reason: reason.into(), kind: Kind::Halt }
    }

    /// True for a halt.
    pub fn is_halt(&self) -> bool {
        matches!(self.kind, Kind::Halt)
    }

    /// Ask the host to wait at least `after` before the retry (for example
    /// an HTTP `Retry-After`). Has no effect on a reject.
    #[must_use]
    pub fn after(mut self, after: Duration) -> Self {
        if let Kind::Retry { after: slot } = &mut self.kind {
            *slot = Some(after);
        }
        self
    }

    /// Put `context` in front of the reason: `"{context}: {reason}"`.
    #[must_use]
    pub fn context(mut self, context: impl fmt::Display) -> Self {
        self.reason = format!("{context}: {}", self.reason);
        self
    }

    /// The reason shown to the operator.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// True for a transient failure.
    pub fn is_retry(&self) -> bool {
        matches!(self.kind, Kind::Retry { .. })
    }

    /// True for a permanent failure.
    pub fn is_reject(&self) -> bool {
        matches!(self.kind, Kind::Reject)
    }

    /// The wait the target asked for, if this is a retry that set one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self.kind {
            Kind::Retry { after } => after,
            Kind::Reject | Kind::Halt => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for Error {}

/// I/O errors are transient: the message is retried.
impl From<std::io::Error> for Error {
    fn from(err: std::io::Error) -> Self {
        let reason = match err.kind() {
            std::io::ErrorKind::Other => err.to_string(),
            kind => {
                let text = err.to_string();
                let kind_text = kind.to_string();
                if text.contains(&kind_text) { text } else { format!("{kind_text}: {text}") }
            }
        };
        Error::retry(reason)
    }
}
