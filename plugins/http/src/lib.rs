//! Wharf target plugin: POST each message to a webhook URL.
//!
//! Config (`[namespaces.<ns>.target] config = { ... }`):
//! - `url` (required): `http://` or `https://` URL to POST to. Reasons and
//!   log lines show it without its query values (`redact_url`).
//! - `timeout_ms` (default `5000`): per-request timeout.
//!
//! The body is the payload. Headers: `x-wharf-key` (if the message has a
//! key), `x-wharf-message-id`, `idempotency-key` (the client's, or the
//! message id), `x-wharf-attempt`, `x-wharf-replays` (dead-letter replays,
//! usually 0), `x-wharf-namespace`, `x-wharf-transaction-id` (when the batch
//! is a multi-chunk transaction; its chunks are POSTed in order and the first
//! failure stops the rest), then the message's own headers (`content-type`
//! defaults to `application/octet-stream`).
//!
//! Responses: 2xx is delivered; 408, 425, 429, 5xx and failures to get a
//! response are retried (honouring `Retry-After`, in seconds or as an
//! HTTP date); any other status is rejected with the status and the start
//! of the body.

use std::time::{Duration, UNIX_EPOCH};

use wharf_sdk::http::{Request, Response, Url};
use wharf_sdk::{Batch, Config, Error, Message, Outcome, Target, log, redact_url};

/// How much of an error response body goes into the reason.
const EXCERPT_LEN: usize = 200;

/// Headers this plugin sets itself; a message header with one of these
/// names is ignored.
const OWN_HEADERS: &[&str] = &[
    "x-wharf-key",
    "x-wharf-message-id",
    "idempotency-key",
    "x-wharf-attempt",
    "x-wharf-replays",
    "x-wharf-namespace",
    "x-wharf-transaction-id",
];

/// Hop-by-hop or framing headers that a message may not set (wasi:http
/// forbids several of them).
const FORBIDDEN_HEADERS: &[&str] = &[
    "host",
    "connection",
    "content-length",
    "transfer-encoding",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "expect",
    "http2-settings",
];

#[derive(Debug)]
pub struct Http {
    url: String,
    timeout: Duration,
}

impl Target for Http {
    fn init(config: Config) -> Result<Self, Error> {
        let url = config.require("url")?.trim().to_string();
        Url::parse(&url).map_err(|e| Error::reject(format!("config key `url`: {e}")))?;
        let timeout_ms: u64 = config.parse_or("timeout_ms", 5000)?;
        if timeout_ms == 0 {
            return Err(Error::reject("config key `timeout_ms` must be greater than 0"));
        }
        log::info(format!("http target: POST {} (timeout {timeout_ms} ms)", redact_url(&url)));
        Ok(Http { url, timeout: Duration::from_millis(timeout_ms) })
    }

    fn deliver_one(&mut self, msg: &Message) -> Result<(), Error> {
        self.post(msg, None)
    }

    fn deliver(&mut self, batch: &Batch) -> Vec<Outcome> {
        let Some(txn) = batch.transaction_id.as_deref() else {
            return batch.messages.iter().map(|m| Outcome::from(self.post(m, None))).collect();
        };
        // One transaction: once a chunk fails the whole batch is retried or
        // rejected anyway, so the later chunks are not sent.
        let mut failed = false;
        batch
            .messages
            .iter()
            .map(|m| {
                if failed {
                    return Outcome::retry("an earlier chunk of the transaction failed");
                }
                let outcome = Outcome::from(self.post(m, Some(txn)));
                failed = !outcome.is_delivered();
                outcome
            })
            .collect()
    }
}

wharf_sdk::export_target!(Http);

impl Http {
    fn post(&self, msg: &Message, transaction: Option<&str>) -> Result<(), Error> {
        let request = self.request(msg, transaction)?;
        let response =
            request.send().map_err(|e| Error::from(e).context(format!("POST {}", redact_url(&self.url))))?;
        outcome(&response, wharf_sdk::now_ms())
    }

    fn request(&self, msg: &Message, transaction: Option<&str>) -> Result<Request, Error> {
        let mut req = Request::post(&self.url).timeout(self.timeout);
        if let Some(t) = transaction {
            req = req.header("x-wharf-transaction-id", checked_value("x-wharf-transaction-id", t)?);
        }
        if let Some(key) = &msg.key {
            req = req.header("x-wharf-key", checked_value("x-wharf-key", key)?);
        }
        req = req
            .header("x-wharf-message-id", checked_value("x-wharf-message-id", &msg.id)?)
            .header("idempotency-key", checked_value("idempotency-key", msg.dedup_key())?)
            .header("x-wharf-attempt", msg.attempt.to_string())
            .header("x-wharf-replays", msg.replays.to_string())
            .header("x-wharf-namespace", checked_value("x-wharf-namespace", &msg.namespace)?);
        let mut has_content_type = false;
        for (name, value) in &msg.headers {
            let lower = name.to_ascii_lowercase();
            if OWN_HEADERS.contains(&lower.as_str()) || FORBIDDEN_HEADERS.contains(&lower.as_str()) {
                log::debug(format!(
                    "message {}: header {name:?} is set by the plugin or not allowed; skipped",
                    msg.id
                ));
                continue;
            }
            if lower.is_empty() || !lower.bytes().all(is_token_byte) {
                return Err(Error::reject(format!(
                    "message header name {name:?} is not a valid HTTP header name"
                )));
            }
            has_content_type |= lower == "content-type";
            req = req.header(lower, checked_value(name, value)?);
        }
        if !has_content_type {
            req = req.header("content-type", "application/octet-stream");
        }
        Ok(req.body(msg.payload.clone()))
    }
}

/// What a response means for the message.
pub fn outcome(response: &Response, now_ms: u64) -> Result<(), Error> {
    let status = response.status;
    match status {
        200..=299 => Ok(()),
        408 | 425 | 429 | 500..=599 => {
            let err = Error::retry(format!("HTTP {status}{}", excerpt(&response.body)));
            Err(match response.header("retry-after").and_then(|v| retry_after(v, now_ms)) {
                Some(after) => err.after(after),
                None => err,
            })
        }
        _ => Err(Error::reject(format!("HTTP {status}{}", excerpt(&response.body)))),
    }
}

/// `Retry-After` as a wait: delta-seconds or an HTTP date.
pub fn retry_after(value: &str, now_ms: u64) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    let when_ms = u64::try_from(when.duration_since(UNIX_EPOCH).ok()?.as_millis()).ok()?;
    Some(Duration::from_millis(when_ms.saturating_sub(now_ms)))
}

/// `": <first bytes of body>"`, on one line, or `""` for an empty body.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(EXCERPT_LEN)]);
    let one_line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.is_empty() {
        String::new()
    } else if body.len() > EXCERPT_LEN {
        format!(": {one_line}…")
    } else {
        format!(": {one_line}")
    }
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A header value must not contain CR, LF or other control characters.
fn checked_value<'a>(name: &str, value: &'a str) -> Result<&'a str, Error> {
    if value.bytes().any(|b| (b < b' ' && b != b'\t') || b == 0x7f) {
        return Err(Error::reject(format!("header {name:?} has a control character in its value")));
    }
    Ok(value)
}

#[cfg(test)]
mod tests;
