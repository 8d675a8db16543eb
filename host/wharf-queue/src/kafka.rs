//! Kafka backend (librdkafka through `rdkafka`).
//!
//! * Appends use the idempotent producer with `acks=all`; the key picks the
//!   partition (`murmur2_random`, the Java client's partitioner).
//! * A consumer is a member of the consumer group `group`. Offsets are
//!   committed by hand, per partition, only up to the first message that is
//!   still unacked: an ack of offset 7 while 5 is in flight commits nothing
//!   until 5 is acked too. Unacked messages are delivered again to whichever
//!   member owns the partition next.
//! * `nack` re-enqueues a copy (same key, so same partition, `wharf-attempt`
//!   one higher, `wharf-not-before` for the delay) and then acks the original.
//!   A delayed message is held by the consumer that reads it, in memory,
//!   until it is due; its offset is not committed meanwhile, so a crash
//!   delivers it (and what follows it) again.
//! * `dead_letter` appends a copy to `<topic>.dlq` and then acks.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer as _, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use crate::renewing::RenewingProducer;
use crate::util::{not_before, now_ms};
use crate::{
    Ack, Consumer, Delivery, Durability, Error, KafkaConfig, Position, Producer, Receipt, Record, Result,
    headers,
};

/// librdkafka properties Wharf sets for safety; configuration may not change them.
const RESERVED: &[&str] =
    &["acks", "enable.idempotence", "enable.auto.commit", "enable.auto.offset.store", "group.id"];

fn base_config(cfg: &KafkaConfig) -> Result<ClientConfig> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.brokers);
    for (k, v) in &cfg.properties {
        if RESERVED.contains(&k.as_str()) {
            return Err(Error::Config(format!(
                "kafka property {k} is set by wharf and cannot be overridden"
            )));
        }
        c.set(k, v);
    }
    Ok(c)
}

fn producer_config(cfg: &KafkaConfig) -> Result<ClientConfig> {
    let mut c = base_config(cfg)?;
    c.set("enable.idempotence", "true")
        .set("acks", "all")
        .set("message.timeout.ms", cfg.message_timeout_ms.to_string())
        .set("linger.ms", "5");
    if !cfg.properties.contains_key("partitioner") {
        c.set("partitioner", "murmur2_random");
    }
    Ok(c)
}

fn message_id(topic: &str, partition: i32, offset: i64) -> String {
    format!("{topic}/{partition}@{offset}")
}

/// Creates the topic and its dead-letter topic when missing.
pub async fn provision(cfg: &KafkaConfig) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = base_config(cfg)?.create()?;
    let dlq = cfg.dlq_topic();
    // -1: the broker's default replication factor.
    let topics = [
        NewTopic::new(&cfg.topic, cfg.partitions, TopicReplication::Fixed(-1)),
        NewTopic::new(&dlq, cfg.partitions, TopicReplication::Fixed(-1)),
    ];
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for result in admin.create_topics(&topics, &opts).await? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => return Err(Error::CreateTopic { topic, code }),
        }
    }
    Ok(())
}

/// Appends to one topic.
pub struct KafkaProducer {
    producer: RenewingProducer,
    topic: String,
}

impl std::fmt::Debug for KafkaProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaProducer").field("topic", &self.topic).finish_non_exhaustive()
    }
}

impl KafkaProducer {
    /// Opens a producer (creating the topics first when `create_topics`).
    pub async fn open(cfg: &KafkaConfig) -> Result<Self> {
        if cfg.create_topics {
            provision(cfg).await?;
        }
        Ok(Self { producer: RenewingProducer::new(producer_config(cfg)?)?, topic: cfg.topic.clone() })
    }
}

/// Enqueues one record into librdkafka's queue, waiting while it is full.
async fn enqueue(
    producer: &FutureProducer,
    topic: &str,
    key: Option<&str>,
    payload: &[u8],
    headers: OwnedHeaders,
) -> Result<DeliveryFuture> {
    let mut record = FutureRecord::to(topic).payload(payload).headers(headers);
    if let Some(k) = key {
        record = record.key(k);
    }
    loop {
        match producer.send_result(record) {
            Ok(f) => return Ok(f),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                record = r;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err((e, _)) => return Err(e.into()),
        }
    }
}

async fn settle(topic: &str, f: DeliveryFuture) -> Result<Ack> {
    match f.await {
        Ok(Ok(d)) => Ok(Ack {
            id: message_id(topic, d.partition, d.offset),
            position: Position::Kafka { topic: topic.to_owned(), partition: d.partition, offset: d.offset },
            durability: Durability::KafkaInSyncReplicas,
        }),
        Ok(Err((e, _))) => Err(e.into()),
        Err(_) => Err(Error::Kafka(KafkaError::Canceled)),
    }
}

fn header_pairs(pairs: &[(&str, String)]) -> OwnedHeaders {
    let mut h = OwnedHeaders::new_with_capacity(pairs.len());
    for (k, v) in pairs {
        h = h.insert(Header { key: k, value: Some(v.as_bytes()) });
    }
    h
}

fn record_headers(record: &Record<'_>) -> OwnedHeaders {
    if record.delay.is_zero() {
        OwnedHeaders::new()
    } else {
        header_pairs(&[(headers::NOT_BEFORE, not_before(record.delay).to_string())])
    }
}

impl Producer for KafkaProducer {
    async fn append_record(&self, record: Record<'_>) -> Result<Ack> {
        let producer = self.producer.get();
        let sent = async {
            let f =
                enqueue(&producer, &self.topic, record.key, record.payload, record_headers(&record)).await?;
            settle(&self.topic, f).await
        };
        renew_on_error(&self.producer, &producer, sent.await)
    }

    async fn append_batch(&self, records: &[Record<'_>]) -> Result<Vec<Ack>> {
        let producer = self.producer.get();
        let sent = async {
            let mut futures = Vec::with_capacity(records.len());
            for r in records {
                futures.push(enqueue(&producer, &self.topic, r.key, r.payload, record_headers(r)).await?);
            }
            let mut acks = Vec::with_capacity(futures.len());
            for f in futures {
                acks.push(settle(&self.topic, f).await?);
            }
            Ok(acks)
        };
        renew_on_error(&self.producer, &producer, sent.await)
    }
}

/// Passes `result` on, renewing the producer first if its error ended it.
fn renew_on_error<T>(
    renewing: &RenewingProducer,
    used: &Arc<FutureProducer>,
    result: Result<T>,
) -> Result<T> {
    if let Err(Error::Kafka(e)) = &result {
        renewing.after_error(used, e);
    }
    result
}

/// In-flight bookkeeping of one assigned partition.
#[derive(Debug, Default)]
struct PartitionState {
    /// Received offsets not yet passed by the commit point: `true` once acked.
    pending: BTreeMap<i64, bool>,
    /// Everything below this is acked (the offset to commit).
    acked_to: Option<i64>,
    /// What was last committed.
    committed: Option<i64>,
}

impl PartitionState {
    /// A message of this partition was received: unacked until [`Self::acked`].
    fn received(&mut self, offset: i64) {
        self.pending.insert(offset, false);
    }

    /// Marks a received offset acked and moves the acked prefix. Returns
    /// `false` for an offset not received (or already passed).
    fn acked(&mut self, offset: i64) -> bool {
        let Some(acked) = self.pending.get_mut(&offset) else { return false };
        *acked = true;
        self.advance();
        true
    }

    fn advance(&mut self) {
        while let Some((&offset, &acked)) = self.pending.first_key_value() {
            if !acked {
                break;
            }
            self.pending.pop_first();
            self.acked_to = Some(offset + 1);
        }
    }

    /// The offset to commit now, if it moved past the last commit: never
    /// past the first offset received and not acked.
    fn to_commit(&self) -> Option<i64> {
        match (self.acked_to, self.committed) {
            (Some(a), Some(c)) if a <= c => None,
            (a, _) => a,
        }
    }
}

#[derive(Debug, Default)]
struct State {
    partitions: HashMap<i32, PartitionState>,
    /// Delayed messages read but not yet due, oldest due first after sort.
    held: Vec<(u64, Delivery)>,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

/// Consumer context: keeps the bookkeeping in step with rebalances.
struct GroupContext {
    topic: String,
    state: Arc<Mutex<State>>,
}

impl ClientContext for GroupContext {}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, base: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => {
                // Commit the acked prefix of the partitions we lose, then
                // forget them: their unacked messages go to the next owner.
                let mut commit = TopicPartitionList::new();
                {
                    let mut st = lock(&self.state);
                    for elem in tpl.elements_for_topic(&self.topic) {
                        if let Some(p) = st.partitions.remove(&elem.partition())
                            && let Some(to) = p.to_commit()
                        {
                            let _ = commit.add_partition_offset(
                                &self.topic,
                                elem.partition(),
                                Offset::Offset(to),
                            );
                        }
                        st.held.retain(|(_, d)| !matches!(&d.receipt, Receipt::Kafka { partition, .. } if *partition == elem.partition()));
                    }
                }
                if commit.count() > 0
                    && let Err(e) = base.commit(&commit, CommitMode::Sync)
                {
                    tracing::warn!(error = %e, "kafka commit on revoke failed; acked messages may be delivered again");
                }
            }
            Rebalance::Assign(tpl) => {
                let mut st = lock(&self.state);
                for elem in tpl.elements_for_topic(&self.topic) {
                    st.partitions.insert(elem.partition(), PartitionState::default());
                }
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "kafka rebalance error"),
        }
    }
}

/// A member of a consumer group reading one topic.
pub struct KafkaConsumer {
    consumer: Arc<StreamConsumer<GroupContext>>,
    /// For nack re-enqueues and the dead-letter topic.
    producer: RenewingProducer,
    topic: String,
    dlq_topic: String,
    state: Arc<Mutex<State>>,
    commit_lock: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for KafkaConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaConsumer").field("topic", &self.topic).finish_non_exhaustive()
    }
}

impl KafkaConsumer {
    /// Joins the group `cfg.group` and subscribes to `cfg.topic` (creating
    /// the topics first when `create_topics`). The group join completes
    /// during the first calls to `receive`.
    pub async fn open(cfg: &KafkaConfig) -> Result<Self> {
        if cfg.create_topics {
            provision(cfg).await?;
        }
        let state = Arc::new(Mutex::new(State::default()));
        let mut c = base_config(cfg)?;
        c.set("group.id", &cfg.group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            .set("session.timeout.ms", cfg.session_timeout_ms.to_string());
        let ctx = GroupContext { topic: cfg.topic.clone(), state: state.clone() };
        let consumer: StreamConsumer<GroupContext> = c.create_with_context(ctx)?;
        consumer.subscribe(&[&cfg.topic])?;
        Ok(Self {
            consumer: Arc::new(consumer),
            producer: RenewingProducer::new(producer_config(cfg)?)?,
            topic: cfg.topic.clone(),
            dlq_topic: cfg.dlq_topic(),
            state,
            commit_lock: tokio::sync::Mutex::new(()),
        })
    }

    /// The partitions of the topic currently assigned to this member.
    pub fn assigned_partitions(&self) -> Result<Vec<i32>> {
        let tpl = self.consumer.assignment()?;
        let mut v: Vec<i32> = tpl.elements_for_topic(&self.topic).iter().map(|e| e.partition()).collect();
        v.sort_unstable();
        Ok(v)
    }

    fn to_delivery(&self, m: &rdkafka::message::BorrowedMessage<'_>) -> (Delivery, u64) {
        let mut attempt = 1u32;
        let mut origin = None;
        let mut due = 0u64;
        if let Some(h) = m.headers() {
            for hdr in h.iter() {
                let Some(v) = hdr.value.and_then(|v| std::str::from_utf8(v).ok()) else { continue };
                match hdr.key {
                    headers::ATTEMPT => attempt = v.parse().unwrap_or(1),
                    headers::ORIGIN => origin = Some(v.to_owned()),
                    headers::NOT_BEFORE => due = v.parse().unwrap_or(0),
                    _ => {}
                }
            }
        }
        let d = Delivery {
            id: origin.unwrap_or_else(|| message_id(m.topic(), m.partition(), m.offset())),
            key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
            payload: m.payload().unwrap_or_default().to_vec(),
            attempt,
            receipt: Receipt::Kafka {
                topic: m.topic().to_owned(),
                partition: m.partition(),
                offset: m.offset(),
            },
        };
        (d, due)
    }

    fn take_due(&self, out: &mut Vec<Delivery>, max: usize) -> Option<Instant> {
        let mut st = lock(&self.state);
        let now = now_ms();
        st.held.sort_by_key(|(due, _)| *due);
        while out.len() < max && st.held.first().is_some_and(|(due, _)| *due <= now) {
            out.push(st.held.remove(0).1);
        }
        st.held.first().map(|(due, _)| Instant::now() + Duration::from_millis(due.saturating_sub(now)))
    }

    fn receipt(&self, d: &Delivery) -> Result<(i32, i64)> {
        match &d.receipt {
            Receipt::Kafka { topic, partition, offset } if *topic == self.topic => Ok((*partition, *offset)),
            other => Err(Error::ForeignDelivery(format!("{other:?}"))),
        }
    }

    /// Commits every partition whose acked prefix moved past the last commit.
    async fn commit_acked(&self) -> Result<()> {
        let _guard = self.commit_lock.lock().await;
        let mut tpl = TopicPartitionList::new();
        let mut targets = Vec::new();
        {
            let st = lock(&self.state);
            for (&p, ps) in &st.partitions {
                if let Some(to) = ps.to_commit() {
                    tpl.add_partition_offset(&self.topic, p, Offset::Offset(to))?;
                    targets.push((p, to));
                }
            }
        }
        if targets.is_empty() {
            return Ok(());
        }
        let consumer = self.consumer.clone();
        let result = tokio::task::spawn_blocking(move || consumer.commit(&tpl, CommitMode::Sync))
            .await
            .map_err(|e| Error::Task(e.to_string()))?;
        match result {
            Ok(()) => {
                let mut st = lock(&self.state);
                for (p, to) in targets {
                    if let Some(ps) = st.partitions.get_mut(&p) {
                        ps.committed = Some(ps.committed.map_or(to, |c| c.max(to)));
                    }
                }
                Ok(())
            }
            // The messages stay acked here; the next ack or close retries.
            // If the partition moved, its next owner delivers them again.
            Err(e) => Err(e.into()),
        }
    }

    async fn copy_to(&self, topic: &str, d: &Delivery, extra: &[(&str, String)]) -> Result<Ack> {
        let mut pairs: Vec<(&str, String)> = vec![(headers::ORIGIN, d.id.clone())];
        pairs.extend(extra.iter().cloned());
        let producer = self.producer.get();
        let sent = async {
            let f = enqueue(&producer, topic, d.key.as_deref(), &d.payload, header_pairs(&pairs)).await?;
            settle(topic, f).await
        };
        renew_on_error(&self.producer, &producer, sent.await)
    }
}

impl Consumer for KafkaConsumer {
    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>> {
        let deadline = Instant::now() + wait;
        let mut out = Vec::new();
        if max == 0 {
            return Ok(out);
        }
        loop {
            let next_due = self.take_due(&mut out, max);
            if out.len() >= max {
                break;
            }
            let now = Instant::now();
            // Once something is in hand, take only what is already fetched.
            let until = if out.is_empty() {
                next_due.map_or(deadline, |d| d.min(deadline))
            } else {
                now + Duration::from_millis(5)
            };
            let msg = tokio::time::timeout(until.saturating_duration_since(now), self.consumer.recv()).await;
            match msg {
                Ok(Ok(m)) => {
                    if m.topic() != self.topic {
                        continue;
                    }
                    let (d, due) = self.to_delivery(&m);
                    drop(m);
                    let mut st = lock(&self.state);
                    if let Receipt::Kafka { partition, offset, .. } = &d.receipt {
                        st.partitions.entry(*partition).or_default().received(*offset);
                    }
                    if due > now_ms() {
                        st.held.push((due, d));
                    } else {
                        out.push(d);
                    }
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "kafka receive error");
                    if Instant::now() >= deadline {
                        if out.is_empty() {
                            return Err(e.into());
                        }
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(_elapsed) => {
                    if !out.is_empty() || Instant::now() >= deadline {
                        // Held messages may have come due meanwhile.
                        self.take_due(&mut out, max);
                        break;
                    }
                }
            }
        }
        Ok(out)
    }

    async fn ack(&self, d: &Delivery) -> Result<()> {
        let (p, offset) = self.receipt(d)?;
        let moved = {
            let mut st = lock(&self.state);
            match st.partitions.get_mut(&p) {
                Some(ps) => ps.acked(offset) && ps.to_commit().is_some(),
                None => {
                    // Revoked since it was received: the next owner delivers it again.
                    tracing::debug!(partition = p, offset, "ack for a partition no longer assigned");
                    false
                }
            }
        };
        if moved {
            self.commit_acked().await?;
        }
        Ok(())
    }

    async fn nack(&self, d: &Delivery, delay: Duration) -> Result<()> {
        let (_p, _o) = self.receipt(d)?;
        let mut extra = vec![(headers::ATTEMPT, (d.attempt.saturating_add(1)).to_string())];
        if !delay.is_zero() {
            extra.push((headers::NOT_BEFORE, not_before(delay).to_string()));
        }
        let topic = self.topic.clone();
        self.copy_to(&topic, d, &extra).await?;
        self.ack(d).await
    }

    async fn dead_letter(&self, d: &Delivery, reason: &str) -> Result<()> {
        let (_p, _o) = self.receipt(d)?;
        let extra = [(headers::ATTEMPT, d.attempt.to_string()), (headers::DLQ_REASON, reason.to_owned())];
        let dlq = self.dlq_topic.clone();
        self.copy_to(&dlq, d, &extra).await?;
        self.ack(d).await
    }

    async fn extend(&self, d: &Delivery, _by: Duration) -> Result<()> {
        self.receipt(d).map(|_| ())
    }

    async fn close(&self) -> Result<()> {
        let committed = self.commit_acked().await;
        lock(&self.state).held.clear();
        self.consumer.unsubscribe();
        committed
    }
}

#[cfg(test)]
mod tests {
    use super::PartitionState;

    fn received(offsets: impl IntoIterator<Item = i64>) -> PartitionState {
        let mut ps = PartitionState::default();
        offsets.into_iter().for_each(|o| ps.received(o));
        ps
    }

    #[test]
    fn an_ack_past_an_unacked_offset_commits_nothing() {
        let mut ps = received(5..8);
        assert!(ps.acked(7));
        assert!(ps.acked(6));
        assert_eq!(ps.to_commit(), None, "5 is unacked: nothing may be committed");
        assert!(ps.acked(5));
        assert_eq!(ps.to_commit(), Some(8), "5, 6 and 7 acked: commit up to 8");
    }

    #[test]
    fn the_commit_point_stops_at_the_first_unacked_offset() {
        let mut ps = received([3, 4, 9, 10]);
        assert!(ps.acked(3));
        assert!(ps.acked(10));
        assert_eq!(ps.to_commit(), Some(4), "4 is the first unacked offset");
        ps.committed = Some(4);
        assert_eq!(ps.to_commit(), None, "already committed");
        assert!(ps.acked(4));
        assert_eq!(ps.to_commit(), Some(5), "just past the acked prefix: 9 is unacked");
        assert!(!ps.acked(42), "an offset never received is not acked");
        assert!(ps.acked(9));
        assert_eq!(ps.to_commit(), Some(11), "9 and 10 acked");
    }

    #[test]
    fn a_commit_never_goes_back() {
        let mut ps = received(0..3);
        ps.committed = Some(10);
        assert!(ps.acked(0) && ps.acked(1) && ps.acked(2));
        assert_eq!(ps.to_commit(), None, "a commit below the last one is not made");
    }

    /// Every order of acks of 0..6, with one offset never acked: the commit
    /// point is never past it, and reaches it.
    #[test]
    fn no_ack_order_commits_past_an_unfinished_offset() {
        let offsets: Vec<i64> = (0..6).collect();
        for stuck in offsets.clone() {
            for rotation in 0..offsets.len() {
                for reverse in [false, true] {
                    let mut order: Vec<i64> = offsets.iter().copied().filter(|o| *o != stuck).collect();
                    let n = order.len();
                    order.rotate_left(rotation % n);
                    if reverse {
                        order.reverse();
                    }
                    let mut ps = received(offsets.clone());
                    for o in order {
                        assert!(ps.acked(o));
                        if let Some(c) = ps.to_commit() {
                            assert!(c <= stuck, "committed {c} past the unacked {stuck}");
                        }
                    }
                    assert_eq!(ps.to_commit(), (stuck > 0).then_some(stuck), "stuck at {stuck}");
                }
            }
        }
    }
}
