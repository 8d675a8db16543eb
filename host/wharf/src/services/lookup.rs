//! "Where is my message?" (`GET /v1/namespaces/{ns}/messages/{id}`, gRPC
//! `GetMessage`): its state for each target, and one state for all.
//!
//! On the log a message is found by its id (`<partition>-<seq>`). On a
//! Kafka/SQS queue the id is the backend's: a message is known while it is
//! in this process's window, after it finished lately, or in a DLQ;
//! otherwise its state is `unknown` (still in the queue, taken by another
//! consumer, or finished long ago).

use crate::clock::now_ms;
use crate::engine::namespace::Namespace;
use crate::engine::target::TargetRt;
use crate::engine::window::{MessageState, Tracked};
use crate::error::{Error, ErrorKind};
use crate::storage::envelope::parse_message_id;

/// A message's state at one target (the window's report, or what the DLQ
/// and the lane's progress say once it left the window).
pub type AtTarget = Tracked;

/// A message's state at every target, in target order.
#[derive(Debug, Clone)]
pub struct Report {
    pub message_id: String,
    pub targets: Vec<(String, AtTarget)>,
}

impl Report {
    /// The state of the least advanced target: delivered only when every
    /// target delivered; dead-lettered when any did and none is pending.
    pub fn overall(&self) -> AtTarget {
        let rank = |s: MessageState| match s {
            MessageState::InFlight => 0,
            MessageState::Retrying => 1,
            MessageState::Delayed => 2,
            MessageState::Pending => 3,
            MessageState::Unknown => 4,
            MessageState::DeadLettered => 5,
            MessageState::Delivered => 6,
        };
        self.targets.iter().map(|(_, a)| a.clone()).min_by_key(|a| rank(a.state)).unwrap_or(AtTarget {
            state: MessageState::Unknown,
            attempts: 0,
            next_attempt_at_ms: None,
            last_error: None,
        })
    }

    pub fn to_json(&self) -> serde_json::Value {
        let overall = self.overall();
        let targets: serde_json::Map<String, serde_json::Value> =
            self.targets.iter().map(|(n, a)| (n.clone(), serde_json::json!(a))).collect();
        serde_json::json!({
            "message_id": self.message_id,
            "state": overall.state,
            "attempts": overall.attempts,
            "next_attempt_at_ms": overall.next_attempt_at_ms,
            "last_error": overall.last_error,
            "targets": targets,
        })
    }
}

fn not_found(id: &str) -> Error {
    Error::new(ErrorKind::NotFound, "message_not_found", format!("no message {id:?}"))
}

/// Where the message is, at each target.
pub fn locate(ns: &Namespace, id: &str) -> Result<Report, Error> {
    let mut targets = Vec::new();
    match ns.cfg.queue {
        None => {
            let (partition, seq) = parse_message_id(id).ok_or_else(|| not_found(id))?;
            let part = ns.partitions.get(partition as usize).ok_or_else(|| not_found(id))?;
            if let Some(h) = part.replica_halt() {
                return Err(Error::new(
                    ErrorKind::Conflict,
                    "replication_halted",
                    format!(
                        "partition {partition} of {} is a replica whose replication halted ({}); it serves no reads until an operator acts",
                        ns.name, h.reason
                    ),
                ));
            }
            let log = part.log.as_ref().ok_or_else(|| not_found(id))?;
            if seq >= log.next_seq() {
                return Err(not_found(id));
            }
            for t in &ns.targets {
                targets.push((t.name.clone(), on_log(t, id, partition, seq)?));
            }
        }
        Some(_) => {
            for t in &ns.targets {
                targets.push((t.name.clone(), on_queue(t, id)?));
            }
        }
    }
    Ok(Report { message_id: id.to_string(), targets })
}

fn dead_lettered(target: &TargetRt, id: &str) -> Result<Option<AtTarget>, Error> {
    Ok(target.dlq()?.get(id).map(|entry| AtTarget {
        state: MessageState::DeadLettered,
        attempts: entry.failures.len() as u32,
        next_attempt_at_ms: None,
        last_error: entry.failures.last().map(|f| f.reason.clone()),
    }))
}

fn plain(state: MessageState) -> AtTarget {
    AtTarget { state, attempts: 0, next_attempt_at_ms: None, last_error: None }
}

fn on_log(target: &TargetRt, id: &str, partition: u32, seq: u64) -> Result<AtTarget, Error> {
    if let Some(d) = dead_lettered(target, id)? {
        return Ok(d);
    }
    let Some(lane) = target.lane(partition) else { return Ok(plain(MessageState::Pending)) };
    Ok(lane.with(|w| match w.state_of(seq, now_ms()) {
        Some(t) => t,
        None if w.has_read(seq) => plain(MessageState::Delivered),
        None => plain(MessageState::Pending),
    }))
}

fn on_queue(target: &TargetRt, id: &str) -> Result<AtTarget, Error> {
    if let Some(d) = dead_lettered(target, id)? {
        return Ok(d);
    }
    let Some(lane) = target.lane(0) else { return Ok(plain(MessageState::Unknown)) };
    Ok(lane.with(|w| match w.seq_of(id).and_then(|seq| w.state_of(seq, now_ms())) {
        Some(t) => t,
        None if w.finished_lately(id) => plain(MessageState::Delivered),
        None => plain(MessageState::Unknown),
    }))
}
