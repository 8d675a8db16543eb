//! The one domain error of the host's services: a kind (what went wrong,
//! in the domain's words), a stable machine-readable code, and a message a
//! person can act on. No protocol types here: the adapters map the kind to
//! an HTTP status (`adapters::error`) and to a gRPC code
//! (`adapters::grpc::to_status`).

/// What kind of failure, independent of the protocol that reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request is malformed or breaks a rule; nothing changed.
    Invalid,
    /// The request is well-formed but its content cannot be processed
    /// (e.g. a plugin that does not validate).
    Unprocessable,
    /// No credentials, or wrong ones.
    Unauthenticated,
    /// Credentials that do not reach this namespace.
    Forbidden,
    NotFound,
    /// The route exists, not with this method.
    MethodNotAllowed,
    /// It existed, and expired.
    Gone,
    /// The request contradicts the current state.
    Conflict,
    /// Larger than a limit allows.
    TooLarge,
    /// Admission control: try again later.
    Overloaded,
    /// Temporarily unable (halted partition, queue down, wrong role, no
    /// file descriptor left).
    Unavailable,
    /// The disk is full (or under the configured reserve): temporary, no
    /// damage; retry once space returns.
    StorageFull,
    /// The client did not finish its request in time (its body's deadline).
    TimedOut,
    Internal,
}

#[derive(Debug, Clone)]
pub struct Error {
    pub kind: ErrorKind,
    pub code: &'static str,
    pub message: String,
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for Error {}

impl Error {
    pub fn new(kind: ErrorKind, code: &'static str, message: impl Into<String>) -> Self {
        Self { kind, code, message: message.into() }
    }

    pub fn bad(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Invalid, code, message)
    }

    /// A write to a process that only delivers.
    pub fn role_consumer() -> Self {
        Self::new(
            ErrorKind::Unavailable,
            "role_consumer",
            "this process runs with --role consumer and takes no writes",
        )
    }

    /// A temporary condition of the log (full disk, no descriptor left),
    /// or `None` for any other log error.
    pub fn from_temporary(e: &wharf_log::LogError, what: &str) -> Option<Self> {
        Some(Self::temporary(e.temporary()?, what, e))
    }

    /// A temporary condition of any file Wharf writes: `507 disk_full` or
    /// `503 too_many_open_files`, the same codes as the log's.
    pub fn temporary(t: wharf_log::Temporary, what: &str, e: &dyn std::fmt::Display) -> Self {
        match t {
            wharf_log::Temporary::DiskFull => Self::new(
                ErrorKind::StorageFull,
                "disk_full",
                format!("{what}: the disk is full ({e}); nothing was written, retry once space is freed"),
            ),
            wharf_log::Temporary::TooManyOpenFiles => Self::new(
                ErrorKind::Unavailable,
                "too_many_open_files",
                format!("{what}: no file descriptor left ({e}); nothing was written, retry shortly"),
            ),
        }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, "internal", message)
    }

    pub fn body(&self) -> serde_json::Value {
        serde_json::json!(ErrorBody::of(self.clone()))
    }
}

/// The body every error has: `{"error": {"code", "message"}}`, typed (a
/// batch reply serializes one per failed message without a `Value`).
#[derive(Debug, serde::Serialize)]
pub struct ErrorBody {
    error: ErrorFields,
}

#[derive(Debug, serde::Serialize)]
struct ErrorFields {
    code: &'static str,
    message: String,
}

impl ErrorBody {
    pub fn of(e: Error) -> Self {
        Self { error: ErrorFields { code: e.code, message: e.message } }
    }
}
