//! DLQ operations of a target, shared by HTTP, gRPC and the CLI: list a
//! page, delete one entry, purge, replay. Every change is audited.
//!
//! A replay appends the entry's envelope again as a new message (new id,
//! one more replay counted), addressed to that target only when the
//! namespace has several, then deletes the entry. A crash between the two
//! steps leaves the entry in the DLQ as well: at-least-once, never lost.

use crate::engine::namespace::Namespace;
use crate::engine::target::{MoveRefused, MoveRequest, TargetRt};
use crate::error::{Error, ErrorKind};
use crate::services::control::Who;
use crate::services::write;
use crate::storage::dlq::DlqEntry;

/// Entries in a DLQ page unless the request says otherwise.
pub const PAGE_DEFAULT: usize = 100;
/// The largest page of a DLQ listing.
pub const PAGE_MAX: usize = 1000;

/// `invalid_limit`: a page size that is not a number in `1..=PAGE_MAX`
/// (`shown` is what the client sent).
pub fn invalid_limit(shown: impl std::fmt::Display) -> Error {
    Error::bad("invalid_limit", format!("limit is {shown}; a page holds 1..={PAGE_MAX} entries"))
}

/// Checks a listing's page size (`1..=PAGE_MAX`) and cursor: on the
/// embedded log, `after` is a message id (`<partition>-<sequence>`); on
/// Kafka and SQS the ids are the backend's, so any cursor is taken.
pub fn check_page(ns: &Namespace, after: Option<&str>, limit: Option<usize>) -> Result<(), Error> {
    if let Some(l) = limit
        && !(1..=PAGE_MAX).contains(&l)
    {
        return Err(invalid_limit(l));
    }
    if let Some(a) = after
        && ns.cfg.queue.is_none()
        && crate::storage::envelope::parse_message_id(a).is_none()
    {
        return Err(Error::bad(
            "invalid_cursor",
            format!(
                "after is {a:?}; it must be a message id <partition>-<sequence>, e.g. the next_after of a page"
            ),
        ));
    }
    Ok(())
}

/// One page of a target's DLQ (`limit` default [`PAGE_DEFAULT`], clamped to
/// `1..=PAGE_MAX`; [`check_page`] refuses what would be clamped) and the
/// cursor of the next page.
pub fn page(target: &TargetRt, after: Option<&str>, limit: Option<usize>) -> (Vec<DlqEntry>, Option<String>) {
    let limit = limit.unwrap_or(PAGE_DEFAULT).clamp(1, PAGE_MAX);
    let entries = target.dlq.as_ref().map(|d| d.page(after, limit)).unwrap_or_default();
    let next = (entries.len() == limit).then(|| entries.last().map(|e| e.message_id.clone())).flatten();
    (entries, next)
}

fn write_failed(e: impl std::fmt::Display) -> Error {
    Error::new(ErrorKind::Internal, "dlq_write_failed", e.to_string())
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, Error> {
    tokio::task::spawn_blocking(f).await.map_err(|e| Error::internal(e.to_string()))
}

/// Deletes one DLQ entry durably; `message_not_found` if there is none.
pub async fn delete_one(ns: &Namespace, target: &TargetRt, id: &str, who: &Who<'_>) -> Result<(), Error> {
    let r = delete_inner(target, id).await;
    who.record("dlq.delete", &format!("{}/{}/{id}", ns.name, target.name), r, |_| serde_json::json!({}))
}

async fn delete_inner(target: &TargetRt, id: &str) -> Result<(), Error> {
    let dlq = target.dlq()?.clone();
    let key = id.to_string();
    let deleted = blocking(move || dlq.delete(&key)).await?.map_err(write_failed)?;
    match deleted {
        true => Ok(()),
        false => Err(Error::new(ErrorKind::NotFound, "message_not_found", format!("no dlq entry {id:?}"))),
    }
}

/// Deletes every entry of a target's DLQ; returns how many.
pub async fn purge(ns: &Namespace, target: &TargetRt, who: &Who<'_>) -> Result<usize, Error> {
    let dlq = target.dlq()?.clone();
    let r = blocking(move || dlq.purge()).await.and_then(|r| r.map_err(write_failed));
    if let Ok(purged) = &r {
        tracing::warn!(namespace = %ns.name, target = %target.name, purged, "dlq purged");
    }
    who.record(
        "dlq.purge",
        &format!("{}/{}", ns.name, target.name),
        r,
        |n| serde_json::json!({ "purged": n }),
    )
}

/// What a DLQ replay did: (old id, new id), (id, why not), unknown ids.
#[derive(Debug, Default)]
pub struct Replay {
    pub replayed: Vec<(String, String)>,
    pub skipped: Vec<(String, String)>,
    pub not_found: Vec<String>,
}

/// Puts DLQ entries (all when `ids` is `None`) back as new messages for
/// this target, then deletes the entries.
pub async fn replay(
    ns: &Namespace,
    target: &TargetRt,
    ids: Option<Vec<String>>,
    rate_per_sec: Option<f64>,
    who: &Who<'_>,
) -> Result<Replay, Error> {
    let r = replay_inner(ns, target, ids, rate_per_sec).await;
    who.record("dlq.replay", &format!("{}/{}", ns.name, target.name), r, |r| {
        serde_json::json!({"replayed": r.replayed.len(), "skipped": r.skipped.len(), "not_found": r.not_found.len()})
    })
}

/// Slowest replay rate: one message per 100 s.
const MIN_RATE: f64 = 0.01;
/// Fastest replay rate asked for (unpaced replays have no limit).
const MAX_RATE: f64 = 1_000_000.0;

async fn replay_inner(
    ns: &Namespace,
    target: &TargetRt,
    ids: Option<Vec<String>>,
    rate_per_sec: Option<f64>,
) -> Result<Replay, Error> {
    if !ns.writes {
        return Err(Error::new(
            ErrorKind::Conflict,
            "role_consumer",
            "a DLQ replay appends to the log, which the --role processor process owns; replay with the pair stopped and one `wharf serve --role all`",
        ));
    }
    if rate_per_sec.is_some_and(|r| !(MIN_RATE..=MAX_RATE).contains(&r)) {
        return Err(Error::bad(
            "invalid_rate",
            format!("rate_per_sec must be between {MIN_RATE} and {MAX_RATE} messages per second"),
        ));
    }
    let dlq = target.dlq()?.clone();
    let ids = ids.unwrap_or_else(|| dlq.ids());
    let pause = rate_per_sec.map(|r| std::time::Duration::from_secs_f64(1.0 / r));
    let max = ns.cfg.dlq.max_replays;
    let mut out = Replay::default();
    for id in ids {
        let Some(entry) = dlq.get(&id) else {
            out.not_found.push(id);
            continue;
        };
        if entry.envelope.replays >= max {
            let reason =
                format!("already replayed {} times (dlq.max_replays = {max})", entry.envelope.replays);
            out.skipped.push((id, reason));
            continue;
        }
        let mut env = entry.envelope.clone();
        env.replays += 1;
        env.deliver_at_ms = None;
        env.only_target = (ns.targets.len() > 1).then(|| target.name.clone());
        let ack = write::append_envelope(ns, env).await?;
        let (dlq, old) = (dlq.clone(), id.clone());
        blocking(move || dlq.delete(&old)).await?.map_err(write_failed)?;
        tracing::info!(namespace = %ns.name, target = %target.name, message_id = %id, new_message_id = %ack.message_id, "dlq entry replayed");
        out.replayed.push((id, ack.message_id));
        if let Some(p) = pause {
            tokio::time::sleep(p).await;
        }
    }
    Ok(out)
}

/// Moves a message that is pending or retrying in a target's delivery
/// window to its DLQ (the operator's escape hatch for a stuck message). The
/// lane does it between two calls; audited.
pub async fn move_to_dlq(
    ns: &Namespace,
    target: &TargetRt,
    message_id: &str,
    reason: &str,
    who: &Who<'_>,
) -> Result<(), Error> {
    let r = move_inner(ns, target, message_id, reason).await;
    who.record(
        "dlq.move",
        &format!("{}/{}/{message_id}", ns.name, target.name),
        r,
        |_| serde_json::json!({ "reason": reason }),
    )
}

async fn move_inner(ns: &Namespace, target: &TargetRt, message_id: &str, reason: &str) -> Result<(), Error> {
    target.dlq()?;
    if reason.trim().is_empty() {
        return Err(Error::bad("reason_required", "say why the message is moved (reason)"));
    }
    let not_found = || {
        Error::new(
            ErrorKind::NotFound,
            "message_not_found",
            format!("no message {message_id:?} in a delivery window of target {}", target.name),
        )
    };
    let lane = match ns.cfg.queue {
        Some(_) => target.lane(0),
        None => crate::storage::envelope::parse_message_id(message_id).and_then(|(p, _)| target.lane(p)),
    }
    .ok_or_else(not_found)?;
    let (reply, answer) = tokio::sync::oneshot::channel();
    lane.request_move(MoveRequest { message_id: message_id.to_string(), reason: reason.to_string(), reply });
    let answered = tokio::time::timeout(std::time::Duration::from_secs(30), answer).await;
    match answered {
        Ok(Ok(Ok(()))) => {
            tracing::warn!(namespace = %ns.name, target = %target.name, %message_id, %reason, "message moved to the dlq by an operator");
            Ok(())
        }
        Ok(Ok(Err(MoveRefused::Finished))) => Err(Error::new(
            ErrorKind::Conflict,
            "message_finished",
            format!("message {message_id:?} is already delivered or dead-lettered at target {}", target.name),
        )),
        Ok(Ok(Err(MoveRefused::NotInWindow))) => Err(not_found()),
        Ok(Ok(Err(MoveRefused::DlqFailed))) => {
            Err(write_failed("the DLQ write failed; the message stays in the window"))
        }
        Ok(Err(_)) | Err(_) => Err(Error::new(
            ErrorKind::Unavailable,
            "lane_unavailable",
            "the delivery lane did not answer (stopped, or halted); try again",
        )),
    }
}
