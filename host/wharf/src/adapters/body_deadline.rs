//! A request body's total read deadline (`server.body_read_timeout_ms`).
//!
//! The deadline is counted once, from the moment the request's head was
//! read (when the router is called), not per frame: a client that trickles
//! one byte at a time cannot hold its connection slot longer than the
//! deadline. When it passes, the body fails with [`BodyDeadline`], the
//! request gets `408 body_timeout` (the documented JSON error), and the
//! connection is closed because its body was not read to the end.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::response::{IntoResponse, Response};
use hyper::body::{Frame, SizeHint};

use crate::adapters::error::{ApiError, ErrorKind};

/// The body was not read in full within the deadline.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the request body was not read within {limit:?} (server.body_read_timeout_ms)")]
pub struct BodyDeadline {
    pub limit: Duration,
}

impl From<BodyDeadline> for ApiError {
    fn from(e: BodyDeadline) -> Self {
        ApiError::new(ErrorKind::TimedOut, "body_timeout", e.to_string())
    }
}

/// A body that fails once its deadline passed, and says so in `expired`.
struct DeadlineBody {
    inner: Body,
    deadline: Pin<Box<tokio::time::Sleep>>,
    limit: Duration,
    expired: Arc<AtomicBool>,
}

impl HttpBody for DeadlineBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        // The deadline first: a frame that arrives after it does not count.
        if self.deadline.as_mut().poll(cx).is_ready() {
            self.expired.store(true, Ordering::Relaxed);
            return Poll::Ready(Some(Err(axum::Error::new(BodyDeadline { limit: self.limit }))));
        }
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Middleware: the request's body must be read within `limit` of now; a
/// handler whose body read hit the deadline is answered `408 body_timeout`,
/// whatever it made of the failed read.
pub async fn enforce(limit: Duration, req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let expired = Arc::new(AtomicBool::new(false));
    let req = req.map(|inner| {
        Body::new(DeadlineBody {
            inner,
            deadline: Box::pin(tokio::time::sleep(limit)),
            limit,
            expired: expired.clone(),
        })
    });
    let resp = next.run(req).await;
    if expired.load(Ordering::Relaxed) {
        tracing::debug!(?limit, "request body cut off at its deadline");
        return ApiError::from(BodyDeadline { limit }).into_response();
    }
    resp
}
