//! Wharf target plugin: forward each message into a namespace of another
//! Wharf, through its HTTP API (docs/api.md).
//!
//! Config (`[namespaces.<ns>.target] config = { ... }`):
//! - `url` (required): base URL of the downstream Wharf, e.g.
//!   `http://10.0.0.7:7070`.
//! - `namespace` (default: the source message's namespace): the downstream
//!   namespace.
//! - `token` (optional): bearer token for the downstream Wharf (a secret: it
//!   lives in the config file).
//! - `timeout_ms` (default `5000`): per-request timeout.
//!
//! Messages go in `POST /v1/namespaces/{ns}/messages/batch` requests (at
//! most 1000 messages and about 2 MiB each) with their key, headers and
//! payload, and the idempotency key `<source namespace>/<message id>`: a
//! redelivery is answered `duplicate` by the downstream Wharf and lands
//! once in its log (within its idempotency window).
//!
//! A transaction (a batch with a transaction id) becomes one downstream
//! transaction: begin (with the key), one chunk per message, commit. The
//! downstream transaction id is remembered until the commit is answered, so
//! a retry re-sends the same chunks and commit, which the downstream Wharf
//! answers as duplicates.
//!
//! Errors: no response, 408, 429 and 5xx are retried (honouring
//! `Retry-After` in seconds); other statuses, and per-message validation
//! errors, are rejected with the downstream error code in the reason. 401,
//! 403 and 409 `read_only_replica` are rejected with what to fix.

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Map, Value, json};
use wharf_sdk::http::{Request, Response, Url};
use wharf_sdk::{Batch, Config, Error, Message, Outcome, Target, log, redact_url};

/// The downstream batch limit (docs/api.md, "Write a batch").
const MAX_BATCH_MESSAGES: usize = 1000;

/// Body size above which a batch is split; the downstream refuses bodies
/// over ~3 MiB, and one message (1 MiB of payload) is ~1.4 MiB as JSON.
const MAX_BATCH_BYTES: usize = 2 * 1024 * 1024;

/// Downstream transactions remembered for retries; past this the oldest
/// are forgotten (their retry starts a new downstream transaction).
const MAX_OPEN_TRANSACTIONS: usize = 1024;

/// How much of an error response body goes into a reason.
const EXCERPT_LEN: usize = 200;

#[derive(Debug)]
pub struct Forward {
    /// Base URL without a trailing `/`.
    base: String,
    namespace: Option<String>,
    token: Option<String>,
    timeout: Duration,
    /// Upstream transaction id → downstream transaction id, until committed.
    transactions: HashMap<String, String>,
}

impl Target for Forward {
    fn init(config: Config) -> Result<Self, Error> {
        let base = config.require("url")?.trim().trim_end_matches('/').to_string();
        let url = Url::parse(&base).map_err(|e| Error::reject(format!("config key `url`: {e}")))?;
        if url.path_and_query != "/" {
            return Err(Error::reject(format!(
                "config key `url`: {:?} has a path; give the downstream Wharf's base URL (e.g. http://127.0.0.1:7070)",
                redact_url(&base)
            )));
        }
        let namespace = match config.get("namespace").map(str::trim) {
            None => None,
            Some(ns) if valid_namespace(ns) => Some(ns.to_string()),
            Some(ns) => {
                return Err(Error::reject(format!(
                    "config key `namespace`: {ns:?} is not a namespace name (1-64 characters of a-z, 0-9, '-' and '_')"
                )));
            }
        };
        let token = match config.get("token") {
            None => None,
            Some(_) => {
                let token = config.require("token")?.trim();
                if token.bytes().any(|b| b.is_ascii_control() || b == b' ') {
                    return Err(Error::reject("config key `token`: has a space or a control character"));
                }
                Some(token.to_string())
            }
        };
        let timeout_ms: u64 = config.parse_or("timeout_ms", 5000)?;
        if timeout_ms == 0 {
            return Err(Error::reject("config key `timeout_ms` must be greater than 0"));
        }
        log::info(format!(
            "wharf target: forwarding to {} namespace {} ({}, timeout {timeout_ms} ms)",
            redact_url(&base),
            namespace.as_deref().unwrap_or("<same as source>"),
            if token.is_some() { "with a token" } else { "no token" },
        ));
        Ok(Forward {
            base,
            namespace,
            token,
            timeout: Duration::from_millis(timeout_ms),
            transactions: HashMap::new(),
        })
    }

    fn deliver_one(&mut self, msg: &Message) -> Result<(), Error> {
        self.write_batch(std::slice::from_ref(msg)).pop().unwrap_or_else(|| Err(Error::retry("no outcome")))
    }

    fn deliver(&mut self, batch: &Batch) -> Vec<Outcome> {
        let Some(txn) = batch.transaction_id.as_deref() else {
            return self.write_batch(&batch.messages).into_iter().map(Outcome::from).collect();
        };
        let outcome = Outcome::from(self.forward_transaction(txn, &batch.messages));
        vec![outcome; batch.messages.len()]
    }
}

wharf_sdk::export_target!(Forward);

impl Forward {
    /// The downstream namespace for a message.
    fn namespace_for<'a>(&'a self, msg: &'a Message) -> &'a str {
        self.namespace.as_deref().unwrap_or(&msg.namespace)
    }

    fn request(&self, method: &str, path: &str, body: &Value) -> Request {
        let mut req = Request::new(method, format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .timeout(self.timeout);
        if let Some(token) = &self.token {
            req = req.header("authorization", format!("Bearer {token}"));
        }
        req.body(body.to_string())
    }

    fn send(&self, method: &str, path: &str, body: &Value) -> Result<Response, Error> {
        self.request(method, path, body)
            .send()
            .map_err(|e| Error::from(e).context(format!("{method} {}{path}", redact_url(&self.base))))
    }

    /// Writes messages through the batch API: one result per message.
    fn write_batch(&self, messages: &[Message]) -> Vec<Result<(), Error>> {
        let mut outcomes = Vec::with_capacity(messages.len());
        for group in split(messages, self.namespace.as_deref()) {
            outcomes.extend(self.write_group(group));
        }
        outcomes
    }

    /// One batch request; every message has the same downstream namespace.
    fn write_group(&self, group: &[Message]) -> Vec<Result<(), Error>> {
        let Some(first) = group.first() else { return Vec::new() };
        let ns = self.namespace_for(first);
        let body = json!({ "messages": group.iter().map(message_json).collect::<Vec<_>>() });
        let response = match self.send("POST", &format!("/v1/namespaces/{ns}/messages/batch"), &body) {
            Ok(r) => r,
            Err(e) => return vec![Err(e); group.len()],
        };
        if !response.is_success() {
            return vec![Err(self.failure(&response, ns)); group.len()];
        }
        match batch_results(&response.body, group.len()) {
            Ok(results) => results.iter().map(result_outcome).collect(),
            Err(e) => vec![Err(e); group.len()],
        }
    }

    /// Forwards a transaction as one downstream transaction.
    fn forward_transaction(&mut self, txn: &str, chunks: &[Message]) -> Result<(), Error> {
        let Some(first) = chunks.first() else { return Ok(()) };
        let ns = self.namespace_for(first).to_string();
        let down = match self.transactions.get(txn) {
            Some(id) => id.clone(),
            None => {
                let id = self.begin(&ns, first.key.as_deref())?;
                if self.transactions.len() >= MAX_OPEN_TRANSACTIONS {
                    self.transactions.clear();
                }
                self.transactions.insert(txn.to_string(), id.clone());
                id
            }
        };
        let result = self.chunks_and_commit(&ns, &down, chunks);
        match &result {
            Err(TxnError::Other(e)) if e.is_retry() => {}
            // Committed, rejected, or gone downstream: a retry begins anew.
            _ => {
                self.transactions.remove(txn);
            }
        }
        result.map_err(|e| match e {
            TxnError::Gone(reason) => Error::retry(format!(
                "downstream transaction {down} is gone ({reason}); the next attempt begins a new one"
            )),
            TxnError::Other(e) => e.context(format!("transaction {txn} (downstream {down})")),
        })
    }

    fn begin(&self, ns: &str, key: Option<&str>) -> Result<String, Error> {
        let body = match key {
            Some(k) => json!({ "key": k }),
            None => json!({}),
        };
        let response = self.send("POST", &format!("/v1/namespaces/{ns}/transactions"), &body)?;
        if !response.is_success() {
            return Err(self.failure(&response, ns).context("beginning a downstream transaction"));
        }
        serde_json::from_slice::<Value>(&response.body)
            .ok()
            .and_then(|v| v["transaction_id"].as_str().map(str::to_string))
            .ok_or_else(|| {
                Error::retry(format!("begin: no transaction_id in the reply{}", excerpt(&response.body)))
            })
    }

    fn chunks_and_commit(&self, ns: &str, down: &str, chunks: &[Message]) -> Result<(), TxnError> {
        let path = format!("/v1/namespaces/{ns}/transactions/{down}");
        for (seq, msg) in chunks.iter().enumerate() {
            let mut body = json!({ "payload": b64(&msg.payload) });
            if !msg.headers.is_empty() {
                body["headers"] = headers_json(msg);
            }
            let response = self.send("PUT", &format!("{path}/chunks/{seq}"), &body)?;
            match (response.status, error_code(&response.body).as_deref()) {
                (200..=299, _) => {}
                // An earlier attempt committed it: the commit answers as before.
                (409, Some("transaction_committed")) | (404, Some("transaction_not_found")) => break,
                (410, Some(code)) => return Err(TxnError::Gone(code.to_string())),
                _ => return Err(self.failure(&response, ns).context(format!("chunk {seq}")).into()),
            }
        }
        let response = self.send("POST", &format!("{path}/commit"), &json!({ "chunks": chunks.len() }))?;
        match (response.status, error_code(&response.body).as_deref()) {
            (200..=299, _) => Ok(()),
            (404 | 410, Some(code @ ("transaction_not_found" | "transaction_expired"))) => {
                Err(TxnError::Gone(code.to_string()))
            }
            _ => Err(self.failure(&response, ns).context("commit").into()),
        }
    }

    /// What a non-2xx response means.
    fn failure(&self, response: &Response, ns: &str) -> Error {
        let status = response.status;
        let (code, message) = error_parts(&response.body);
        let what = match &code {
            Some(c) => format!("downstream HTTP {status} {c}: {message}"),
            None => format!("downstream HTTP {status}{}", excerpt(&response.body)),
        };
        match (status, code.as_deref()) {
            (401, _) => Error::reject(format!(
                "{what}; set config key `token` to a token of downstream namespace `{ns}` or an admin token"
            )),
            (403, _) => Error::reject(format!(
                "{what}; config key `token` is not valid for downstream namespace `{ns}`: use one of its `tokens` or an admin token"
            )),
            (409, Some("read_only_replica")) => Error::reject(format!(
                "{what}; downstream namespace `{ns}` is a read-only replica: point config key `url` at its primary Wharf or `namespace` at a writable namespace"
            )),
            (404, Some("namespace_not_found")) => Error::reject(format!(
                "{what}; add namespace `{ns}` to the downstream Wharf or set config key `namespace`"
            )),
            (408 | 429 | 500..=599, _) => {
                let err = Error::retry(what);
                match response.header("retry-after").and_then(retry_after) {
                    Some(after) => err.after(after),
                    None => err,
                }
            }
            _ => Error::reject(what),
        }
    }
}

/// A failed transaction step.
#[derive(Debug)]
enum TxnError {
    /// The downstream transaction expired or was forgotten uncommitted.
    Gone(String),
    Other(Error),
}

impl From<Error> for TxnError {
    fn from(e: Error) -> Self {
        TxnError::Other(e)
    }
}

/// Splits messages into runs with the same downstream namespace (`fixed`,
/// else the message's own), each within the batch limits.
pub fn split<'a>(messages: &'a [Message], fixed: Option<&str>) -> Vec<&'a [Message]> {
    let same_ns = |a: &Message, b: &Message| fixed.is_some() || a.namespace == b.namespace;
    let mut groups = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, msg) in messages.iter().enumerate() {
        let size = approx_json_len(msg);
        let full = i - start >= MAX_BATCH_MESSAGES || bytes + size > MAX_BATCH_BYTES;
        if i > start && (full || !same_ns(&messages[start], msg)) {
            groups.push(&messages[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += size;
    }
    if start < messages.len() {
        groups.push(&messages[start..]);
    }
    groups
}

/// An upper bound of a message's size in the batch body.
fn approx_json_len(msg: &Message) -> usize {
    let headers: usize = msg.headers.iter().map(|(k, v)| 2 * (k.len() + v.len()) + 8).sum();
    msg.payload.len().div_ceil(3) * 4
        + 2 * (msg.key.as_ref().map_or(0, String::len) + msg.namespace.len() + msg.id.len())
        + headers
        + 128
}

/// The downstream idempotency key: `<source namespace>/<message id>`.
pub fn idempotency_key(msg: &Message) -> String {
    format!("{}/{}", msg.namespace, msg.id)
}

/// A message of the batch body.
pub fn message_json(msg: &Message) -> Value {
    let mut m = json!({ "payload": b64(&msg.payload), "idempotency_key": idempotency_key(msg) });
    if let Some(key) = &msg.key {
        m["key"] = Value::from(key.as_str());
    }
    if !msg.headers.is_empty() {
        m["headers"] = headers_json(msg);
    }
    m
}

fn headers_json(msg: &Message) -> Value {
    let map: Map<String, Value> =
        msg.headers.iter().map(|(k, v)| (k.clone(), Value::from(v.as_str()))).collect();
    Value::Object(map)
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The `results` of a batch reply, checked to be one per message.
fn batch_results(body: &[u8], expected: usize) -> Result<Vec<Value>, Error> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| Error::retry(format!("downstream batch reply is not JSON: {e}{}", excerpt(body))))?;
    match value.get("results").and_then(Value::as_array) {
        Some(results) if results.len() == expected => Ok(results.clone()),
        _ => Err(Error::retry(format!(
            "downstream batch reply does not have {expected} results{}",
            excerpt(body)
        ))),
    }
}

/// One entry of a batch reply: an ack (new or `duplicate`) or an error.
pub fn result_outcome(result: &Value) -> Result<(), Error> {
    if result.get("message_id").is_some() {
        return Ok(());
    }
    let code = result["error"]["code"].as_str().unwrap_or("unknown");
    let message = result["error"]["message"].as_str().unwrap_or("");
    let what = format!("downstream {code}: {message}");
    if transient_code(code) { Err(Error::retry(what)) } else { Err(Error::reject(what)) }
}

/// Error codes that go away by themselves (docs/api.md, "Error codes").
fn transient_code(code: &str) -> bool {
    matches!(
        code,
        "backlog_full"
            | "partition_halted"
            | "too_many_open_files"
            | "disk_full"
            | "queue_unavailable"
            | "lane_unavailable"
            | "internal"
            | "transaction_store_failed"
            | "too_many_transactions"
    )
}

/// `(code, message)` of a Wharf error body.
fn error_parts(body: &[u8]) -> (Option<String>, String) {
    let Ok(v) = serde_json::from_slice::<Value>(body) else { return (None, String::new()) };
    let code = v["error"]["code"].as_str().map(str::to_string);
    let message = v["error"]["message"].as_str().unwrap_or_default();
    (code, message.chars().take(EXCERPT_LEN).collect())
}

fn error_code(body: &[u8]) -> Option<String> {
    error_parts(body).0
}

/// `Retry-After` in seconds (what Wharf sends).
fn retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// `": <first bytes of body>"`, on one line, or `""` for an empty body.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(EXCERPT_LEN)]);
    let one_line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.is_empty() { String::new() } else { format!(": {one_line}") }
}

/// 1-64 characters of a-z, 0-9, '-' and '_' (the host's rule).
fn valid_namespace(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests;
