//! One HTTP exchange with Wharf, and the retry loop around it
//! (decisions in `retry.rs`).

use std::time::Duration;

use ureq::RequestBuilder;
use ureq::http::header::{AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};

use crate::Client;
use crate::error::{self, Error};
use crate::retry::{self, Failure, Replay};

/// The largest reply body read (a DLQ page of 1000 entries of 1 MiB
/// payloads is about 1.4 GB).
const MAX_REPLY_BYTES: u64 = 2 << 30;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Method {
    Get,
    Post,
    Put,
    Delete,
}

/// One call: a path under the base URL (query included), an optional JSON
/// body, how long Wharf may hold the reply (a visible wait) and whether it
/// is safe to repeat.
#[derive(Debug)]
pub(crate) struct Call {
    pub method: Method,
    pub path: String,
    pub body: Option<String>,
    pub holds_reply: Duration,
    pub replay: Replay,
}

impl Call {
    pub(crate) fn new(method: Method, path: String) -> Self {
        Self { method, path, body: None, holds_reply: Duration::ZERO, replay: Replay::Safe }
    }

    pub(crate) fn json(mut self, body: &impl serde::Serialize) -> Result<Self, Error> {
        let text = serde_json::to_string(body).map_err(|e| Error::Decode(format!("request body: {e}")))?;
        self.body = Some(text);
        Ok(self)
    }

    pub(crate) fn holding(mut self, d: Duration) -> Self {
        self.holds_reply = d;
        self
    }

    pub(crate) fn only_unsent(mut self) -> Self {
        self.replay = Replay::OnlyUnsent;
        self
    }
}

/// `s` as one URL path segment or query value (unreserved bytes kept,
/// everything else percent-encoded): Kafka message ids hold `/` and `@`.
pub(crate) fn segment(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Whether the request certainly never reached the server.
fn unsent(e: &ureq::Error) -> bool {
    use ureq::Timeout;
    match e {
        ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => true,
        ureq::Error::Timeout(t) => matches!(t, Timeout::Resolve | Timeout::Connect),
        ureq::Error::Io(io) => io.kind() == std::io::ErrorKind::ConnectionRefused,
        _ => false,
    }
}

/// How a transport error counts for retrying.
fn transport_failure(e: &ureq::Error) -> Failure {
    match e {
        ureq::Error::BadUri(_) | ureq::Error::Http(_) | ureq::Error::InvalidProxyUrl => Failure::Permanent,
        e => Failure::Transport { sent: !unsent(e) },
    }
}

impl Client {
    /// The call's timeout and the bearer token.
    fn prepare<B>(&self, builder: RequestBuilder<B>, timeout: Option<Duration>) -> RequestBuilder<B> {
        let builder = builder.config().timeout_global(timeout).build();
        match &self.token {
            Some(t) => builder.header(AUTHORIZATION, format!("Bearer {t}")),
            None => builder,
        }
    }

    /// Sends `call` once: the reply body on a 2xx, else the error and how
    /// it counts for retrying.
    pub(crate) fn attempt(&self, call: &Call) -> Result<Vec<u8>, (Error, Failure)> {
        let url = format!("{}{}", self.base, call.path);
        let timeout = Some(self.timeout.saturating_add(call.holds_reply));
        let body = call.body.as_deref().unwrap_or("");
        let sent = match call.method {
            Method::Get => self.prepare(self.agent.get(&url), timeout).call(),
            Method::Delete => self.prepare(self.agent.delete(&url), timeout).call(),
            Method::Post => self
                .prepare(self.agent.post(&url), timeout)
                .header(CONTENT_TYPE, "application/json")
                .send(body),
            Method::Put => self
                .prepare(self.agent.put(&url), timeout)
                .header(CONTENT_TYPE, "application/json")
                .send(body),
        };
        let mut reply = sent.map_err(|e| {
            let failure = transport_failure(&e);
            (Error::Transport(e), failure)
        })?;
        let status = reply.status().as_u16();
        let retry_after =
            reply.headers().get(RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(retry::parse_retry_after);
        let bytes = reply
            .body_mut()
            .with_config()
            .limit(MAX_REPLY_BYTES)
            .read_to_vec()
            .map_err(|e| (Error::Transport(e), Failure::Transport { sent: true }))?;
        if (200..300).contains(&status) {
            Ok(bytes)
        } else {
            Err((error::from_reply(status, &bytes), Failure::Status { status, retry_after }))
        }
    }

    /// How long to wait before the next attempt, or `None` to give up.
    pub(crate) fn next_wait(&self, attempt: u32, failure: Failure, replay: Replay) -> Option<Duration> {
        retry::next_wait(&self.retry, attempt, failure, replay, rand::random::<f64>())
    }

    /// Sends `call`, retrying as the policy allows; the reply body.
    pub(crate) fn send(&self, call: &Call) -> Result<Vec<u8>, Error> {
        let mut attempt = 1;
        loop {
            match self.attempt(call) {
                Ok(body) => return Ok(body),
                Err((error, failure)) => match self.next_wait(attempt, failure, call.replay) {
                    Some(wait) => std::thread::sleep(wait),
                    None => return Err(error),
                },
            }
            attempt += 1;
        }
    }

    /// Sends `call` and decodes its JSON reply.
    pub(crate) fn send_json<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        call: &Call,
    ) -> Result<T, Error> {
        error::decode(what, &self.send(call)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_encoded_as_one_path_segment() {
        assert_eq!(segment("2-17"), "2-17");
        assert_eq!(segment("orders/3@42"), "orders%2F3%4042");
        assert_eq!(segment("a b?&"), "a%20b%3F%26");
    }

    #[test]
    fn a_refused_connection_was_never_sent_and_a_bad_url_is_not_retried() {
        let refused = ureq::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert_eq!(transport_failure(&refused), Failure::Transport { sent: false });
        let reset = ureq::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert_eq!(transport_failure(&reset), Failure::Transport { sent: true });
        assert_eq!(transport_failure(&ureq::Error::BadUri("x".into())), Failure::Permanent);
    }
}
