//! [`Client`]: the typed calls, one per API route.

use std::time::Duration;

use serde::Serialize;

use crate::dlq::{DlqPage, ReplayReport};
use crate::error::{ApiError, Error};
use crate::http::{Call, Method, segment};
use crate::message::{BatchReply, Message, Wait, WriteAck, WriteMany, WriteOne, new_idempotency_key};
use crate::retry::{Failure, RetryPolicy, retryable_code};
use crate::status::{Lookup, Status};
use crate::txn::{Txn, TxnInfo};

/// The timeout of one attempt, unless a visible wait adds to it.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// A blocking client of one Wharf server. Cheap to clone (the connection
/// pool is shared); usable from several threads.
#[derive(Clone)]
pub struct Client {
    pub(crate) agent: ureq::Agent,
    /// The base URL, without a trailing `/`.
    pub(crate) base: String,
    pub(crate) token: Option<String>,
    pub(crate) timeout: Duration,
    pub(crate) retry: RetryPolicy,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("Client")
            .field("base", &self.base)
            .field("token", &self.token.as_ref().map(|_| "…"))
            .field("timeout", &self.timeout)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Serialize)]
struct Begin<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ttl_ms: Option<u64>,
}

#[derive(Debug, Serialize)]
struct Replay {
    #[serde(skip_serializing_if = "Option::is_none")]
    ids: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rate_per_sec: Option<f64>,
}

#[derive(Debug, serde::Deserialize)]
struct Purged {
    purged: u64,
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Client {
    /// A client of the server at `base_url` (`http://127.0.0.1:7070`), with
    /// no token, the default [`RetryPolicy`] and a 30 s timeout per attempt.
    pub fn new(base_url: impl Into<String>) -> Self {
        let agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        let base = base_url.into().trim_end_matches('/').to_string();
        Self { agent, base, token: None, timeout: DEFAULT_TIMEOUT, retry: RetryPolicy::default() }
    }

    /// Sends `Authorization: Bearer <token>` on every call.
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The timeout of one attempt (a visible wait's timeout is added).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub(crate) fn ns_path(ns: &str, rest: &str) -> String {
        format!("/v1/namespaces/{}{rest}", segment(ns))
    }

    /// Writes one message; answers once it is in the log.
    pub fn write(&self, ns: &str, message: Message) -> Result<WriteAck, Error> {
        self.write_with(ns, message, Wait::Durable)
    }

    /// Writes one message and waits up to `timeout` (at most 60 s) for every
    /// target to confirm it. A timeout is not an error: the ack says
    /// `visible: false` (the message is durable all the same).
    pub fn write_visible(&self, ns: &str, message: Message, timeout: Duration) -> Result<WriteAck, Error> {
        self.write_with(ns, message, Wait::Visible(timeout))
    }

    /// Writes one message, waiting for `wait`.
    pub fn write_with(&self, ns: &str, message: Message, wait: Wait) -> Result<WriteAck, Error> {
        let key = message.idempotency_key.clone().unwrap_or_else(new_idempotency_key);
        let body = WriteOne { message: message.wire(&key), wait: wait.wire() };
        let call =
            Call::new(Method::Post, Self::ns_path(ns, "/messages")).json(&body)?.holding(wait.holds_reply());
        self.send_json("write", &call)
    }

    /// Writes a batch (1–1000 messages). Each message is acknowledged or
    /// refused on its own, in request order. Messages refused for a
    /// temporary reason are sent again (alone, with the same idempotency
    /// keys) as the retry policy allows; a refusal of the whole batch
    /// (`backlog_full`, `batch_too_large`…) is an `Err`.
    pub fn write_batch(
        &self,
        ns: &str,
        messages: Vec<Message>,
        wait: Wait,
    ) -> Result<Vec<Result<WriteAck, ApiError>>, Error> {
        let keyed: Vec<(String, Message)> = messages
            .into_iter()
            .map(|m| (m.idempotency_key.clone().unwrap_or_else(new_idempotency_key), m))
            .collect();
        let mut results: Vec<Option<Result<WriteAck, ApiError>>> = keyed.iter().map(|_| None).collect();
        let mut pending: Vec<usize> = (0..keyed.len()).collect();
        let mut attempt = 1;
        loop {
            let body = WriteMany {
                messages: pending.iter().map(|&i| keyed[i].1.wire(&keyed[i].0)).collect(),
                wait: wait.wire(),
            };
            let call = Call::new(Method::Post, Self::ns_path(ns, "/messages/batch"))
                .json(&body)?
                .holding(wait.holds_reply());
            let (failure, error) = match self.attempt(&call) {
                Ok(bytes) => {
                    let reply: BatchReply = crate::error::decode("batch", &bytes)?;
                    if reply.results.len() != pending.len() {
                        return Err(Error::Decode(format!(
                            "batch: {} results for {} messages",
                            reply.results.len(),
                            pending.len()
                        )));
                    }
                    let mut again = Vec::new();
                    for (&i, r) in pending.iter().zip(reply.results) {
                        let r = r.into_result();
                        if matches!(&r, Err(e) if retryable_code(&e.code)) {
                            again.push(i);
                        }
                        results[i] = Some(r);
                    }
                    if again.is_empty() {
                        break;
                    }
                    pending = again;
                    (Failure::Messages, None)
                }
                Err((error, failure)) => (failure, Some(error)),
            };
            match (self.next_wait(attempt, failure, call.replay), error) {
                (Some(wait), _) => std::thread::sleep(wait),
                (None, Some(error)) => return Err(error),
                // Out of attempts: the temporary refusals are the results.
                (None, None) => break,
            }
            attempt += 1;
        }
        Ok(results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    Err(ApiError { code: "internal".into(), message: "no result for this message".into() })
                })
            })
            .collect())
    }

    /// Begins a transaction, with an optional ordering key for its marker.
    pub fn begin(&self, ns: &str, key: Option<&str>) -> Result<Txn, Error> {
        self.begin_call(ns, Begin { key, ttl_ms: None })
    }

    /// Like [`Client::begin`], expiring after `ttl` (at most
    /// `transactions.ttl_ms`) when not committed.
    pub fn begin_with_ttl(&self, ns: &str, key: Option<&str>, ttl: Duration) -> Result<Txn, Error> {
        self.begin_call(ns, Begin { key, ttl_ms: Some(millis(ttl)) })
    }

    fn begin_call(&self, ns: &str, body: Begin<'_>) -> Result<Txn, Error> {
        // A second begin would open a second transaction: never repeated
        // once it may have reached the server.
        let call = Call::new(Method::Post, Self::ns_path(ns, "/transactions")).json(&body)?.only_unsent();
        let info: TxnInfo = self.send_json("begin", &call)?;
        Ok(Txn::new(self.clone(), ns, info))
    }

    /// A transaction begun earlier (by this or another client), by id.
    pub fn transaction(&self, ns: &str, id: &str) -> Result<Txn, Error> {
        let info = Txn::fetch(self, ns, id)?;
        Ok(Txn::new(self.clone(), ns, info))
    }

    /// Where a message is, at each target (`GET .../messages/{id}`).
    pub fn message(&self, ns: &str, id: &str) -> Result<Lookup, Error> {
        let call = Call::new(Method::Get, Self::ns_path(ns, &format!("/messages/{}", segment(id))));
        self.send_json("lookup", &call)
    }

    /// `GET /v1/status` (needs an admin token when auth is on).
    pub fn status(&self) -> Result<Status, Error> {
        let raw: serde_json::Value =
            self.send_json("status", &Call::new(Method::Get, "/v1/status".into()))?;
        Status::from_json(raw)
    }

    fn dlq_path(ns: &str, rest: &str, target: Option<&str>, query: &[(&str, String)]) -> String {
        let pairs: Vec<String> = target
            .map(|t| ("target", t.to_string()))
            .into_iter()
            .chain(query.iter().map(|(k, v)| (*k, v.clone())))
            .map(|(k, v)| format!("{k}={}", segment(&v)))
            .collect();
        let q = if pairs.is_empty() { String::new() } else { format!("?{}", pairs.join("&")) };
        Self::ns_path(ns, &format!("/dlq{rest}{q}"))
    }

    /// The first page (100 entries) of a target's DLQ; `target` may be
    /// `None` when the namespace has one target.
    pub fn dlq_list(&self, ns: &str, target: Option<&str>) -> Result<DlqPage, Error> {
        self.dlq_page(ns, target, None, None)
    }

    /// A page of a target's DLQ: the entries after message id `after`, at
    /// most `limit` (1–1000, default 100). Follow [`DlqPage::next_after`].
    pub fn dlq_page(
        &self,
        ns: &str,
        target: Option<&str>,
        after: Option<&str>,
        limit: Option<u32>,
    ) -> Result<DlqPage, Error> {
        let mut query = Vec::new();
        if let Some(a) = after {
            query.push(("after", a.to_string()));
        }
        if let Some(l) = limit {
            query.push(("limit", l.to_string()));
        }
        let call = Call::new(Method::Get, Self::dlq_path(ns, "", target, &query));
        self.send_json("dlq list", &call)
    }

    /// Replays DLQ entries: `ids`, or every entry when `None`, at most
    /// `rate_per_sec` a second when given.
    pub fn dlq_replay(
        &self,
        ns: &str,
        target: Option<&str>,
        ids: Option<Vec<String>>,
        rate_per_sec: Option<f64>,
    ) -> Result<ReplayReport, Error> {
        let call = Call::new(Method::Post, Self::dlq_path(ns, "/replay", target, &[]))
            .json(&Replay { ids, rate_per_sec })?
            .only_unsent();
        self.send_json("dlq replay", &call)
    }

    /// Deletes one DLQ entry.
    pub fn dlq_delete(&self, ns: &str, target: Option<&str>, id: &str) -> Result<(), Error> {
        let call = Call::new(Method::Delete, Self::dlq_path(ns, &format!("/{}", segment(id)), target, &[]));
        self.send(&call).map(drop)
    }

    /// Deletes every entry of a target's DLQ; how many there were.
    pub fn dlq_purge(&self, ns: &str, target: Option<&str>) -> Result<u64, Error> {
        let call = Call::new(Method::Delete, Self::dlq_path(ns, "", target, &[]));
        self.send_json::<Purged>("dlq purge", &call).map(|p| p.purged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_encode_their_segments_and_the_dlq_query() {
        assert_eq!(Client::ns_path("orders", "/messages"), "/v1/namespaces/orders/messages");
        assert_eq!(Client::dlq_path("orders", "", None, &[]), "/v1/namespaces/orders/dlq");
        assert_eq!(
            Client::dlq_path(
                "orders",
                "/replay",
                Some("a b"),
                &[("after", "0-9".into()), ("limit", "5".into())]
            ),
            "/v1/namespaces/orders/dlq/replay?target=a%20b&after=0-9&limit=5"
        );
    }

    #[test]
    fn the_base_url_loses_its_trailing_slash_and_debug_hides_the_token() {
        let c = Client::new("http://127.0.0.1:7070/").with_token("s3cret");
        assert_eq!(c.base, "http://127.0.0.1:7070");
        assert!(!format!("{c:?}").contains("s3cret"));
    }

    #[test]
    fn a_server_that_is_not_there_is_a_transport_error_after_the_retries() {
        // A port nothing listens on: bind one, then free it.
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port());
        let Ok(port) = port else { return };
        let retry = RetryPolicy { max_attempts: 3, max_wait: Duration::from_millis(10) };
        let c = Client::new(format!("http://127.0.0.1:{port}")).with_retry(retry);
        assert!(matches!(c.write("orders", Message::new("x")), Err(Error::Transport(_))));
        assert!(matches!(c.status(), Err(Error::Transport(_))));
    }
}
