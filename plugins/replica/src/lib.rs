//! Wharf target plugin: ship a partition's log to a replica Wharf in
//! another region (docs/replication.md).
//!
//! Config: `url` (base URL of the replica Wharf), `namespace` (the replica
//! namespace; default: the same name), `token` (optional bearer token),
//! `timeout_ms` (default 10000). The target needs `ordering = "partition"`,
//! so that each message carries its stored record and chained digest, and
//! batches are contiguous runs of the partition.
//!
//! Per partition it asks the replica where it stands (durable end and
//! digest) before sending, after any failure, and whenever it starts; it
//! never assumes. It sends what the replica lacks, in chunks of at most
//! ~2 MiB, in order. What the replica answers decides the outcome:
//! - 2xx: delivered (the replica fsynced it);
//! - no answer, 408, 429, 5xx: retry (transient; the host backs off);
//! - anything else (a checksum or digest mismatch, a gap, a divergence, a
//!   halted replica, a wrong URL or token): `halt` with the replica's error
//!   code first in the reason. Only an operator resumes.

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};
use wharf_sdk::http::{Request, Response};
use wharf_sdk::{Batch, Config, Error, LogRecord, Message, Outcome, Target, log, redact_url};

/// Body size above which a batch is sent in several requests.
const MAX_CHUNK_BYTES: usize = 2 << 20;

#[derive(Debug)]
pub struct Replica {
    base: String,
    namespace: Option<String>,
    token: Option<String>,
    timeout: Duration,
    /// Per partition, where the replica stands (end, digest), as it last
    /// said; absent until a handshake.
    known: HashMap<u32, (u64, String)>,
}

impl Target for Replica {
    fn init(config: Config) -> Result<Self, Error> {
        let base = config.require("url")?.trim().trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            let shown = redact_url(&base);
            return Err(Error::reject(format!("config key `url`: {shown:?} is not an http(s) URL")));
        }
        let namespace = config.get("namespace").map(|n| n.trim().to_string());
        let token = config.get("token").map(|t| t.trim().to_string());
        let timeout_ms: u64 = config.parse_or("timeout_ms", 10_000)?;
        log::info(format!(
            "replica target: shipping to {} (namespace {})",
            redact_url(&base),
            namespace.as_deref().unwrap_or("<same>")
        ));
        Ok(Replica {
            base,
            namespace,
            token,
            timeout: Duration::from_millis(timeout_ms),
            known: HashMap::new(),
        })
    }

    fn deliver_one(&mut self, msg: &Message) -> Result<(), Error> {
        Outcome::into_result(self.deliver(&Batch::new(vec![msg.clone()])).pop())
    }

    fn deliver(&mut self, batch: &Batch) -> Vec<Outcome> {
        let n = batch.messages.len();
        let outcome = match self.ship(&batch.messages) {
            Ok(()) => Outcome::Delivered,
            Err(e) => {
                if let Some(first) = batch.messages.first() {
                    // Ask again next time: never assume where the replica is.
                    self.known.remove(&first.partition);
                }
                Outcome::from(e)
            }
        };
        vec![outcome; n]
    }
}

wharf_sdk::export_target!(Replica);

impl Replica {
    fn ship(&mut self, messages: &[Message]) -> Result<(), Error> {
        let Some(first) = messages.first() else { return Ok(()) };
        let records = records_of(messages)?;
        let path = format!(
            "/v1/namespaces/{}/replication/partitions/{}",
            self.namespace.as_deref().unwrap_or(&first.namespace),
            first.partition
        );
        let (end, digest) = match self.known.get(&first.partition) {
            Some(k) => k.clone(),
            None => self.handshake(&path)?,
        };
        let unsent = unsent(messages, &records, end, &digest);
        for chunk in chunks(&unsent) {
            let body = json!({ "records": chunk.iter().map(|(m, r)| record_json(m, r)).collect::<Vec<_>>() });
            let resp =
                self.send(Request::post(format!("{}{path}/records", self.base)).body(body.to_string()))?;
            let v: Value = serde_json::from_slice(&resp.body)
                .map_err(|e| Error::retry(format!("replica reply: {e}")))?;
            let end = v["end"].as_u64().ok_or_else(|| Error::retry("replica reply has no end"))?;
            let digest = v["digest"].as_str().unwrap_or_default().to_string();
            self.known.insert(first.partition, (end, digest));
        }
        Ok(())
    }

    fn handshake(&self, path: &str) -> Result<(u64, String), Error> {
        let resp = self.send(Request::get(format!("{}{path}", self.base)))?;
        let v: Value =
            serde_json::from_slice(&resp.body).map_err(|e| Error::retry(format!("handshake reply: {e}")))?;
        if let Some(reason) = v["halt"]["reason"].as_str() {
            return Err(Error::halt(format!("replication_halted: the replica halted: {reason}")));
        }
        let end = v["end"].as_u64().ok_or_else(|| Error::retry("handshake reply has no end"))?;
        Ok((end, v["digest"].as_str().unwrap_or_default().to_string()))
    }

    fn send(&self, req: Request) -> Result<Response, Error> {
        let mut req = req.header("content-type", "application/json").timeout(self.timeout);
        if let Some(t) = &self.token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let resp = req.send()?;
        classify(resp)
    }
}

/// Every message must carry its record (the target's `ordering`).
fn records_of(messages: &[Message]) -> Result<Vec<&LogRecord>, Error> {
    messages
        .iter()
        .map(|m| {
            m.record.as_ref().ok_or_else(|| {
                Error::halt("no_record: the replica target needs ordering = \"partition\" on an embedded-log namespace")
            })
        })
        .collect()
}

/// What the replica lacks: from its end on, when its digest there is ours;
/// otherwise everything, so that the replica itself compares what it holds
/// (and halts on a divergence, or acknowledges byte-identical duplicates).
fn unsent<'a>(
    messages: &'a [Message],
    records: &[&'a LogRecord],
    end: u64,
    digest: &str,
) -> Vec<(&'a Message, &'a LogRecord)> {
    let all: Vec<(&Message, &LogRecord)> = messages.iter().zip(records.iter().copied()).collect();
    let first = messages[0].sequence;
    if end <= first {
        return all;
    }
    let held = (end - first) as usize;
    let ours = match held {
        h if h >= all.len() => None,
        h => Some(all[h].1.prev_digest.as_str()),
    };
    match ours {
        Some(d) if d == digest => all[held..].to_vec(),
        // The replica holds the whole batch: sent anyway when its digest
        // at the end is not ours here, so that it checks.
        None if held == all.len() && all[held - 1].1.digest == digest => Vec::new(),
        _ => all,
    }
}

fn chunks<'a>(records: &'a [(&'a Message, &'a LogRecord)]) -> Vec<&'a [(&'a Message, &'a LogRecord)]> {
    let mut out = Vec::new();
    let (mut start, mut size) = (0, 0);
    for (i, (_, r)) in records.iter().enumerate() {
        let len = r.bytes.len() * 4 / 3 + 128;
        if i > start && size + len > MAX_CHUNK_BYTES {
            out.push(&records[start..i]);
            (start, size) = (i, 0);
        }
        size += len;
    }
    if start < records.len() {
        out.push(&records[start..]);
    }
    out
}

fn record_json(m: &Message, r: &LogRecord) -> Value {
    json!({
        "seq": m.sequence,
        "bytes": base64::engine::general_purpose::STANDARD.encode(&r.bytes),
        "checksum": r.checksum,
        "digest": r.digest,
        "prev_digest": r.prev_digest,
    })
}

/// 2xx passes; transient statuses retry; anything else halts, with the
/// replica's error code first in the reason.
fn classify(resp: Response) -> Result<Response, Error> {
    if resp.is_success() {
        return Ok(resp);
    }
    let v: Value = serde_json::from_slice(&resp.body).unwrap_or(Value::Null);
    let code = v["error"]["code"].as_str().unwrap_or("http_error");
    let message =
        v["error"]["message"].as_str().map(str::to_string).unwrap_or_else(|| resp.text().into_owned());
    let reason = format!("{code}: HTTP {} from the replica: {message}", resp.status);
    match resp.status {
        408 | 429 | 500..=599 => {
            let after = resp.header("retry-after").and_then(|s| s.trim().parse::<u64>().ok());
            let err = Error::retry(reason);
            Err(match after {
                Some(s) => err.after(Duration::from_secs(s)),
                None => err,
            })
        }
        _ => Err(Error::halt(reason)),
    }
}

#[cfg(test)]
mod tests;
