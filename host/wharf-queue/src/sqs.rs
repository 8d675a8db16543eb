//! Amazon SQS backend (standard and FIFO queues).
//!
//! * An append returns once SendMessage (SendMessageBatch) succeeded: SQS
//!   has stored the message.
//! * FIFO queues: MessageGroupId = the key (keyless messages share one group,
//!   `wharf`), MessageDeduplicationId = a per-producer nonce and sequence, so
//!   the SDK's own retries are deduplicated. Standard queues: no order.
//! * The key travels as the message attribute `wharf-key`; payloads that are
//!   not plain XML-safe UTF-8 travel as base64 (`wharf-encoding=base64`).
//! * A receive hides the message for `visibility_timeout_secs`; while it is in
//!   flight the consumer keeps extending that (ChangeMessageVisibility) in the
//!   background. `ack` = DeleteMessage. `nack(delay)` = visibility `delay`
//!   (up to 12 h; beyond that the message is re-sent and the old one deleted).
//! * Delays on append: DelaySeconds (standard queues, up to 900 s). Longer
//!   ones, and any on FIFO queues (which have no per-message delay), carry
//!   `wharf-not-before`; a consumer that receives such a message early hides
//!   it again until it is due instead of delivering it.
//! * Dead letters: the host sends a copy to the DLQ queue (`<queue>-dlq`),
//!   then deletes the original. No redrive policy is set, so the host's
//!   attempt limit decides, not SQS's maxReceiveCount.
//! * A queue that went away (an SQS server restarted without its state, as
//!   moto does, or a queue deleted behind Wharf's back) is created again,
//!   with the same attributes, when a call answers that it does not exist
//!   and `create_queues` is on; the call is then made once more. Its URL is
//!   a function of the account, the region and the name, so the URL held
//!   stays valid. What the old queue held is gone with it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_sqs::operation::receive_message::ReceiveMessageOutput;
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, Message, MessageAttributeValue, MessageSystemAttributeName,
    QueueAttributeName, SendMessageBatchRequestEntry,
};
use aws_smithy_http_client::tls;
use base64::Engine as _;
use sha2::Digest as _;

use crate::util::{nonce, not_before, now_ms};
use crate::{
    Ack, Consumer, Delivery, Durability, Error, Position, Producer, Receipt, Record, Result, SqsConfig,
    headers,
};

/// SQS's longest DelaySeconds.
const MAX_DELAY_SECS: u64 = 900;
/// SQS's longest visibility timeout (12 hours).
const MAX_VISIBILITY_SECS: u64 = 43_200;
/// SQS's largest batch.
const BATCH: usize = 10;
/// Keep a batch's bodies under SQS's 256 KiB request limit (with headroom).
const BATCH_BYTES: usize = 200 * 1024;
/// The FIFO group of keyless messages.
const DEFAULT_GROUP: &str = "wharf";

/// An SQS client for `cfg`: the endpoint override, the region, and
/// credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY /
/// AWS_SESSION_TOKEN (dummy ones when unset and an endpoint is given, for
/// local servers).
pub fn client(cfg: &SqsConfig) -> Result<Client> {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::Ring))
        .build_https();
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let creds = match (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
        (Some(id), Some(secret)) => {
            Credentials::new(id, secret, env("AWS_SESSION_TOKEN"), None, "environment")
        }
        _ if cfg.endpoint.is_some() => Credentials::new("test", "test", None, None, "wharf-local"),
        _ => {
            return Err(Error::Config(
                "sqs: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (other credential sources are not supported yet)".into(),
            ));
        }
    };
    let mut b = aws_sdk_sqs::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(cfg.region.clone()))
        .credentials_provider(creds)
        .http_client(http);
    if let Some(e) = &cfg.endpoint {
        b = b.endpoint_url(e);
    }
    Ok(Client::from_conf(b.build()))
}

async fn queue_url(client: &Client, name: &str, cfg: &SqsConfig) -> Result<String> {
    if let Ok(out) = client.get_queue_url().queue_name(name).send().await
        && let Some(url) = out.queue_url()
    {
        return Ok(url.to_owned());
    }
    if !cfg.create_queues {
        return Err(Error::Config(format!("sqs queue {name} does not exist")));
    }
    let mut req = client
        .create_queue()
        .queue_name(name)
        .attributes(QueueAttributeName::VisibilityTimeout, cfg.visibility_timeout_secs.to_string());
    if cfg.fifo {
        req = req.attributes(QueueAttributeName::FifoQueue, "true");
    }
    let out = req.send().await.map_err(Error::sqs)?;
    out.queue_url().map(str::to_owned).ok_or_else(|| Error::Sqs(format!("no url for queue {name}")))
}

/// The server answered that the queue does not exist.
fn queue_missing(e: &Error) -> bool {
    matches!(e, Error::Sqs(text) if text.contains("QueueDoesNotExist") || text.contains("NonExistentQueue"))
}

/// Runs `call`; when the server answers that the queue does not exist and
/// `cfg.create_queues` is on, creates the queues again (same attributes)
/// and runs `call` once more.
async fn recreating<T, F>(cfg: &SqsConfig, call: impl Fn() -> F) -> Result<T>
where
    F: Future<Output = Result<T>>,
{
    match call().await {
        Err(e) if cfg.create_queues && queue_missing(&e) => {
            tracing::warn!(queue = %cfg.queue_name(), error = %e, "sqs queue missing; creating it again");
            provision(cfg).await?;
            call().await
        }
        other => other,
    }
}

/// Creates the queue and its dead-letter queue when missing.
pub async fn provision(cfg: &SqsConfig) -> Result<()> {
    let c = client(cfg)?;
    let mut cfg = cfg.clone();
    cfg.create_queues = true;
    queue_url(&c, &cfg.queue_name(), &cfg).await?;
    queue_url(&c, &cfg.dlq_name(), &cfg).await?;
    Ok(())
}

/// Characters SQS accepts in a body: XML 1.0 characters. `\r` is left out
/// too, as XML processing may turn it into `\n`.
fn plain_text(s: &str) -> bool {
    !s.is_empty()
        && s.chars().all(|c| {
            matches!(c, '\u{9}' | '\u{A}' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..='\u{10FFFF}')
        })
}

/// The body for a payload and the `wharf-encoding` it needs, if any.
fn encode(payload: &[u8]) -> (String, Option<&'static str>) {
    if payload.is_empty() {
        // SQS rejects empty bodies.
        return ("-".to_owned(), Some("empty"));
    }
    match std::str::from_utf8(payload) {
        Ok(s) if plain_text(s) => (s.to_owned(), None),
        _ => (base64::engine::general_purpose::STANDARD.encode(payload), Some("base64")),
    }
}

fn decode(body: &str, encoding: Option<&str>) -> Result<Vec<u8>> {
    match encoding {
        None => Ok(body.as_bytes().to_vec()),
        Some("empty") => Ok(Vec::new()),
        Some("base64") => base64::engine::general_purpose::STANDARD
            .decode(body)
            .map_err(|e| Error::Sqs(format!("bad base64 body: {e}"))),
        Some(other) => Err(Error::Sqs(format!("unknown {}: {other}", headers::ENCODING))),
    }
}

/// A valid MessageGroupId for a key: the key itself when SQS accepts it,
/// else a hash of it.
fn group_id(key: Option<&str>) -> String {
    match key {
        None | Some("") => DEFAULT_GROUP.to_owned(),
        Some(k) if k.len() <= 128 && k.bytes().all(|b| b.is_ascii_graphic()) => k.to_owned(),
        Some(k) => format!("h-{}", hex::encode(sha2::Sha256::digest(k.as_bytes()))),
    }
}

fn string_attr(v: impl Into<String>) -> Result<MessageAttributeValue> {
    MessageAttributeValue::builder().data_type("String").string_value(v).build().map_err(Error::sqs)
}

fn number_attr(v: u64) -> Result<MessageAttributeValue> {
    MessageAttributeValue::builder()
        .data_type("Number")
        .string_value(v.to_string())
        .build()
        .map_err(Error::sqs)
}

/// Everything one SendMessage (or batch entry) carries.
#[derive(Clone)]
struct Outgoing {
    body: String,
    attributes: HashMap<String, MessageAttributeValue>,
    delay_seconds: Option<i32>,
    group: Option<String>,
    dedup: Option<String>,
}

impl Outgoing {
    fn new(fifo: bool, key: Option<&str>, payload: &[u8], delay: Duration, dedup: String) -> Result<Self> {
        let (body, encoding) = encode(payload);
        let mut attributes = HashMap::new();
        if let Some(k) = key.filter(|k| !k.is_empty()) {
            attributes.insert(headers::KEY.to_owned(), string_attr(k)?);
        }
        if let Some(e) = encoding {
            attributes.insert(headers::ENCODING.to_owned(), string_attr(e)?);
        }
        let mut delay_seconds = None;
        if !delay.is_zero() {
            let secs = delay.as_secs_f64().ceil() as u64;
            if !fifo {
                delay_seconds = Some(secs.min(MAX_DELAY_SECS) as i32);
            }
            if fifo || secs > MAX_DELAY_SECS || delay.subsec_nanos() != 0 {
                attributes.insert(headers::NOT_BEFORE.to_owned(), number_attr(not_before(delay))?);
            }
        }
        Ok(Self {
            body,
            attributes,
            delay_seconds,
            group: fifo.then(|| group_id(key)),
            dedup: fifo.then_some(dedup),
        })
    }
}

async fn send_one(client: &Client, url: &str, o: Outgoing) -> Result<(String, Option<String>)> {
    let out = client
        .send_message()
        .queue_url(url)
        .message_body(o.body)
        .set_message_attributes(Some(o.attributes))
        .set_delay_seconds(o.delay_seconds)
        .set_message_group_id(o.group)
        .set_message_deduplication_id(o.dedup)
        .send()
        .await
        .map_err(Error::sqs)?;
    let id = out.message_id().ok_or_else(|| Error::Sqs("SendMessage returned no MessageId".into()))?;
    Ok((id.to_owned(), out.sequence_number().map(str::to_owned)))
}

fn sqs_ack(message_id: String, sequence_number: Option<String>) -> Ack {
    Ack {
        id: message_id.clone(),
        position: Position::Sqs { message_id, sequence_number },
        durability: Durability::SqsStored,
    }
}

/// Appends to one queue.
#[derive(Debug)]
pub struct SqsProducer {
    client: Client,
    cfg: SqsConfig,
    url: String,
    fifo: bool,
    nonce: String,
    seq: AtomicU64,
}

impl SqsProducer {
    /// Opens a producer (creating the queues first when `create_queues`).
    pub async fn open(cfg: &SqsConfig) -> Result<Self> {
        if cfg.create_queues {
            provision(cfg).await?;
        }
        let client = client(cfg)?;
        let url = queue_url(&client, &cfg.queue_name(), cfg).await?;
        Ok(Self { client, cfg: cfg.clone(), url, fifo: cfg.fifo, nonce: nonce(), seq: AtomicU64::new(0) })
    }

    fn dedup(&self) -> String {
        format!("{}-{}", self.nonce, self.seq.fetch_add(1, Ordering::Relaxed))
    }

    async fn append_once(&self, r: &Record<'_>) -> Result<Ack> {
        let o = Outgoing::new(self.fifo, r.key, r.payload, r.delay, self.dedup())?;
        let (id, seq) = send_one(&self.client, &self.url, o).await?;
        Ok(sqs_ack(id, seq))
    }
}

impl Producer for SqsProducer {
    async fn append_record(&self, r: Record<'_>) -> Result<Ack> {
        recreating(&self.cfg, || self.append_once(&r)).await
    }

    async fn append_batch(&self, records: &[Record<'_>]) -> Result<Vec<Ack>> {
        recreating(&self.cfg, || self.append_batch_once(records)).await
    }
}

impl SqsProducer {
    /// One SendMessageBatch after another; an error refuses the whole batch.
    async fn append_batch_once(&self, records: &[Record<'_>]) -> Result<Vec<Ack>> {
        let mut acks = Vec::with_capacity(records.len());
        let mut i = 0;
        while i < records.len() {
            // One SendMessageBatch: up to 10 entries, under the size limit.
            let mut entries = Vec::new();
            let mut bytes = 0;
            while i < records.len() && entries.len() < BATCH {
                let r = &records[i];
                let o = Outgoing::new(self.fifo, r.key, r.payload, r.delay, self.dedup())?;
                if !entries.is_empty() && bytes + o.body.len() > BATCH_BYTES {
                    break;
                }
                bytes += o.body.len();
                let entry = SendMessageBatchRequestEntry::builder()
                    .id(entries.len().to_string())
                    .message_body(o.body)
                    .set_message_attributes(Some(o.attributes))
                    .set_delay_seconds(o.delay_seconds)
                    .set_message_group_id(o.group)
                    .set_message_deduplication_id(o.dedup)
                    .build()
                    .map_err(Error::sqs)?;
                entries.push(entry);
                i += 1;
            }
            let n = entries.len();
            let out = self
                .client
                .send_message_batch()
                .queue_url(&self.url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(Error::sqs)?;
            if let Some(f) = out.failed().first() {
                return Err(Error::Sqs(format!(
                    "SendMessageBatch: {} of {n} failed, first: {} {}",
                    out.failed().len(),
                    f.code(),
                    f.message().unwrap_or_default()
                )));
            }
            let mut by_id: Vec<Option<Ack>> = vec![None; n];
            for s in out.successful() {
                if let Ok(k) = s.id().parse::<usize>()
                    && k < n
                {
                    by_id[k] =
                        Some(sqs_ack(s.message_id().to_owned(), s.sequence_number().map(str::to_owned)));
                }
            }
            for a in by_id {
                acks.push(a.ok_or_else(|| Error::Sqs("SendMessageBatch result missing an entry".into()))?);
            }
        }
        Ok(acks)
    }
}

type InFlight = Arc<Mutex<HashMap<String, ()>>>;

fn inflight_lock(m: &Mutex<HashMap<String, ()>>) -> std::sync::MutexGuard<'_, HashMap<String, ()>> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A competing consumer of one queue.
#[derive(Debug)]
pub struct SqsConsumer {
    client: Client,
    cfg: SqsConfig,
    url: String,
    dlq_url: String,
    fifo: bool,
    visibility: u32,
    /// Receipt handles of messages received and not yet acked / nacked.
    inflight: InFlight,
    heartbeat: tokio::task::JoinHandle<()>,
}

impl Drop for SqsConsumer {
    fn drop(&mut self) {
        // Without the heartbeat, unacked messages reappear after the
        // visibility timeout.
        self.heartbeat.abort();
    }
}

impl SqsConsumer {
    /// Opens a consumer (creating the queues first when `create_queues`).
    /// Must be called inside a tokio runtime: it starts the task that keeps
    /// in-flight messages hidden.
    pub async fn open(cfg: &SqsConfig) -> Result<Self> {
        if cfg.create_queues {
            provision(cfg).await?;
        }
        let client = client(cfg)?;
        let url = queue_url(&client, &cfg.queue_name(), cfg).await?;
        let dlq_url = queue_url(&client, &cfg.dlq_name(), cfg).await?;
        let inflight: InFlight = Arc::default();
        let visibility = cfg.visibility_timeout_secs.max(1);
        let heartbeat = tokio::spawn(heartbeat(client.clone(), url.clone(), inflight.clone(), visibility));
        Ok(Self { client, cfg: cfg.clone(), url, dlq_url, fifo: cfg.fifo, visibility, inflight, heartbeat })
    }

    fn handle<'d>(&self, d: &'d Delivery) -> Result<&'d str> {
        match &d.receipt {
            Receipt::Sqs { receipt_handle } => Ok(receipt_handle),
            other => Err(Error::ForeignDelivery(format!("{other:?}"))),
        }
    }

    async fn set_visibility(&self, handle: &str, secs: u64) -> Result<()> {
        self.client
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(handle)
            .visibility_timeout(secs.min(MAX_VISIBILITY_SECS) as i32)
            .send()
            .await
            .map_err(Error::sqs)?;
        Ok(())
    }

    async fn delete(&self, handle: &str) -> Result<()> {
        inflight_lock(&self.inflight).remove(handle);
        self.client
            .delete_message()
            .queue_url(&self.url)
            .receipt_handle(handle)
            .send()
            .await
            .map_err(Error::sqs)?;
        Ok(())
    }

    /// Sends a copy of `d` to `url` (the same queue or the DLQ).
    async fn copy_to(
        &self,
        url: &str,
        d: &Delivery,
        attempt: u32,
        delay: Duration,
        reason: Option<&str>,
    ) -> Result<()> {
        let mut o =
            Outgoing::new(self.fifo, d.key.as_deref(), &d.payload, delay, format!("{}-{attempt}", d.id))?;
        o.attributes.insert(headers::ORIGIN.to_owned(), string_attr(d.id.clone())?);
        o.attributes.insert(headers::ATTEMPT.to_owned(), number_attr(u64::from(attempt))?);
        if let Some(r) = reason.filter(|r| !r.is_empty()) {
            o.attributes.insert(headers::DLQ_REASON.to_owned(), string_attr(r)?);
        }
        recreating(&self.cfg, || send_one(&self.client, url, o.clone())).await.map(|_| ())
    }

    /// Turns a received message into a delivery, or hides it again when it
    /// carries a `wharf-not-before` still in the future.
    async fn accept(&self, m: &Message) -> Result<Option<Delivery>> {
        let handle = m.receipt_handle().ok_or_else(|| Error::Sqs("message without receipt handle".into()))?;
        let attrs = m.message_attributes();
        let attr = |k: &str| attrs.and_then(|a| a.get(k)).and_then(|v| v.string_value());
        if let Some(due) = attr(headers::NOT_BEFORE).and_then(|v| v.parse::<u64>().ok()) {
            let now = now_ms();
            if due > now {
                let secs = (due - now).div_ceil(1000);
                self.set_visibility(handle, secs).await?;
                return Ok(None);
            }
        }
        let body = m.body().unwrap_or_default();
        let payload = decode(body, attr(headers::ENCODING))?;
        let receives: u32 = m
            .attributes()
            .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        let base: u32 = attr(headers::ATTEMPT).and_then(|v| v.parse().ok()).unwrap_or(1);
        let id = attr(headers::ORIGIN)
            .map(str::to_owned)
            .or_else(|| m.message_id().map(str::to_owned))
            .unwrap_or_default();
        inflight_lock(&self.inflight).insert(handle.to_owned(), ());
        Ok(Some(Delivery {
            id,
            key: attr(headers::KEY).map(str::to_owned),
            payload,
            attempt: base.saturating_add(receives.saturating_sub(1)).max(1),
            receipt: Receipt::Sqs { receipt_handle: handle.to_owned() },
        }))
    }
}

/// Keeps every in-flight message hidden: every third of the visibility
/// timeout, sets it back to the full timeout.
async fn heartbeat(client: Client, url: String, inflight: InFlight, visibility: u32) {
    let period = Duration::from_millis(u64::from(visibility) * 1000 / 3).max(Duration::from_millis(500));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let handles: Vec<String> = inflight_lock(&inflight).keys().cloned().collect();
        for chunk in handles.chunks(BATCH) {
            let entries: Vec<_> = chunk
                .iter()
                .enumerate()
                .filter_map(|(i, h)| {
                    ChangeMessageVisibilityBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(h)
                        .visibility_timeout(visibility as i32)
                        .build()
                        .ok()
                })
                .collect();
            match client
                .change_message_visibility_batch()
                .queue_url(&url)
                .set_entries(Some(entries))
                .send()
                .await
            {
                Ok(out) => {
                    for f in out.failed() {
                        // Gone (acked meanwhile) or expired: stop extending it.
                        if let Some(h) = f.id().parse::<usize>().ok().and_then(|i| chunk.get(i)) {
                            tracing::debug!(code = f.code(), "sqs visibility extension failed");
                            inflight_lock(&inflight).remove(h);
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %Error::sqs(e), "sqs visibility heartbeat failed"),
            }
        }
    }
}

impl SqsConsumer {
    /// One ReceiveMessage of up to `n` messages.
    async fn receive_once(&self, n: usize, wait_secs: i32) -> Result<ReceiveMessageOutput> {
        self.client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(n as i32)
            .wait_time_seconds(wait_secs)
            .visibility_timeout(self.visibility as i32)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .message_attribute_names("All")
            .send()
            .await
            .map_err(Error::sqs)
    }
}

impl Consumer for SqsConsumer {
    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>> {
        let mut out = Vec::new();
        let deadline = tokio::time::Instant::now() + wait;
        while out.len() < max {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            // Long-poll only while nothing is in hand.
            let wait_secs = if out.is_empty() { left.as_secs().min(20) as i32 } else { 0 };
            let n = (max - out.len()).min(BATCH);
            let resp = recreating(&self.cfg, || self.receive_once(n, wait_secs)).await?;
            let got = resp.messages().len();
            for m in resp.messages() {
                if let Some(d) = self.accept(m).await? {
                    out.push(d);
                }
            }
            if got == 0 && (!out.is_empty() || tokio::time::Instant::now() >= deadline) {
                break;
            }
            if got == 0 && wait_secs == 0 {
                // Less than a second left: SQS long-polls in whole seconds.
                tokio::time::sleep(left.min(Duration::from_millis(200))).await;
            }
        }
        Ok(out)
    }

    async fn ack(&self, d: &Delivery) -> Result<()> {
        let h = self.handle(d)?;
        self.delete(h).await
    }

    async fn nack(&self, d: &Delivery, delay: Duration) -> Result<()> {
        let h = self.handle(d)?;
        inflight_lock(&self.inflight).remove(h);
        let secs = delay.as_secs_f64().ceil() as u64;
        if secs < MAX_VISIBILITY_SECS && self.set_visibility(h, secs).await.is_ok() {
            return Ok(());
        }
        // Too long for a visibility timeout (or the 12 h budget is spent):
        // re-send with wharf-not-before, then delete.
        let url = self.url.clone();
        self.copy_to(&url, d, d.attempt.saturating_add(1), delay, None).await?;
        self.delete(h).await
    }

    async fn dead_letter(&self, d: &Delivery, reason: &str) -> Result<()> {
        let h = self.handle(d)?;
        let url = self.dlq_url.clone();
        self.copy_to(&url, d, d.attempt, Duration::ZERO, Some(reason)).await?;
        self.delete(h).await
    }

    async fn extend(&self, d: &Delivery, by: Duration) -> Result<()> {
        let h = self.handle(d)?;
        self.set_visibility(h, by.as_secs_f64().ceil() as u64).await
    }

    async fn close(&self) -> Result<()> {
        self.heartbeat.abort();
        let handles: Vec<String> = inflight_lock(&self.inflight).drain().map(|(h, _)| h).collect();
        for chunk in handles.chunks(BATCH) {
            let entries: Vec<_> = chunk
                .iter()
                .enumerate()
                .filter_map(|(i, h)| {
                    ChangeMessageVisibilityBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(h)
                        .visibility_timeout(0)
                        .build()
                        .ok()
                })
                .collect();
            self.client
                .change_message_visibility_batch()
                .queue_url(&self.url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(Error::sqs)?;
        }
        Ok(())
    }
}
