//! What status shows of a target's reconcile schedule (the state the
//! `engine::reconcile` task keeps): a leaf, so that the target's runtime can
//! hold it without importing the task.

use std::sync::Mutex;

use tokio::time::Instant;

/// Where a target's reconcile schedule is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReconcileState {
    /// Not started yet, or no plugin (none registered, removed, or the
    /// namespace is going away).
    #[default]
    Waiting,
    /// Passes run every interval.
    Scheduled,
    /// The plugin's WIT has no `reconcile` (before 0.4.0): never called.
    Unsupported,
    /// The target's plugin is quarantined: no passes until a new one.
    Paused,
    /// Shut down.
    Stopped,
}

/// How a pass ended (the `result` label of `wharf_reconcile_runs_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunResult {
    /// Nothing it could not repair.
    Ok,
    /// It reported errors (what it could not repair).
    Errors,
    /// The plugin trapped; the instance was dropped.
    Trap,
    /// The call ran past `call_timeout_ms`; the instance was dropped.
    Deadline,
    /// No instance: `init` (or instantiating) failed.
    Init,
}

impl RunResult {
    pub fn as_str(self) -> &'static str {
        match self {
            RunResult::Ok => "ok",
            RunResult::Errors => "errors",
            RunResult::Trap => "trap",
            RunResult::Deadline => "deadline",
            RunResult::Init => "init",
        }
    }
}

/// What status shows about a target's reconcile schedule.
#[derive(Debug, Clone, Default)]
pub(crate) struct Status {
    pub(crate) state: ReconcileState,
    pub(crate) reason: Option<String>,
    pub(crate) runs: u64,
    /// Wall time the last pass ended.
    pub(crate) last_run_ms: Option<u64>,
    pub(crate) last_result: Option<RunResult>,
    /// Repaired by the last pass, and by every pass since start.
    pub(crate) repaired: u64,
    pub(crate) repaired_total: u64,
    /// The latest errors (the last pass's, and before them older ones), newest last.
    pub(crate) errors: Vec<String>,
    pub(crate) errors_total: u64,
    pub(crate) next_at: Option<Instant>,
}

/// A target's reconcile schedule as status shows it; lives in the target's
/// runtime, updated by `engine::reconcile::run`.
#[derive(Debug, Default)]
pub struct Schedule {
    status: Mutex<Status>,
}

impl Schedule {
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut Status) -> R) -> R {
        f(&mut self.status.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The `reconcile` object of the target's status; `None` when the
    /// target has no `reconcile_interval_ms`.
    pub fn json(&self, cfg: &crate::config::Target) -> Option<serde_json::Value> {
        let interval_ms = cfg.reconcile_interval_ms?;
        let s = self.with(|s| s.clone());
        let next_in_ms = match s.state {
            ReconcileState::Scheduled => {
                s.next_at.map(|at| at.saturating_duration_since(Instant::now()).as_millis() as u64)
            }
            _ => None,
        };
        Some(serde_json::json!({
            "interval_ms": interval_ms,
            "budget_ms": cfg.reconcile_budget_ms(),
            "state": s.state,
            "reason": s.reason,
            "runs": s.runs,
            "last_run_ms": s.last_run_ms,
            "last_result": s.last_result,
            "repaired": s.repaired,
            "repaired_total": s.repaired_total,
            "errors": s.errors,
            "errors_total": s.errors_total,
            "next_in_ms": next_in_ms,
        }))
    }
}
