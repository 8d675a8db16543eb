//! The host-scheduled `reconcile` of a target (`wharf:target@0.4.0`): a
//! repair pass the plugin runs every `reconcile_interval_ms`, beside
//! delivery.
//!
//! - One task per target with an interval, started with its lanes; it stops
//!   on shutdown and when the namespace is removed, and follows the target's
//!   plugin slot like a lane: a replaced plugin's call in flight is dropped
//!   (with its instance) and the next pass uses the new plugin.
//! - Ticks come from a tokio interval on the monotonic clock, the first one
//!   interval after the task starts; a pass that overruns delays the next
//!   tick (never two at once, never a burst to catch up).
//! - The pass runs on the task's own instance of the plugin (instantiated
//!   and `init`ed on demand) with the sandbox, epoch deadline and tokio
//!   deadline of `deliver` (`plugin::Instance::reconcile`). A trap or a
//!   deadline drops the instance and is logged and counted here only: it
//!   never touches delivery, the breaker or the quarantine counters.
//! - A plugin whose WIT predates `reconcile` (before 0.4.0) is never
//!   called: the target's status says `unsupported`, with one warning in the
//!   log when the plugin is taken.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};

use crate::clock::now_ms;
use crate::engine::namespace::Namespace;
use crate::engine::reconcile_status::{ReconcileState, RunResult};
use crate::engine::target::TargetRt;
use crate::metrics;
use crate::plugin::{Instance, Plugin, PluginError, Reconciled};

/// How many of the latest errors the status keeps.
const KEEP_ERRORS: usize = 5;
/// Longest error reason kept or logged.
const ERROR_CHARS: usize = 1000;
/// How many errors one log line names.
const LOG_ERRORS: usize = 3;

/// What ended a wait or a call.
enum Wake {
    Tick,
    PluginChanged,
    Stop,
}

/// The reconcile loop of one target; returns at once when the target has no
/// `reconcile_interval_ms`.
#[tracing::instrument(name = "reconcile", skip_all, fields(namespace = %ns.name, target = %target.name))]
pub async fn run(ns: Arc<Namespace>, target: Arc<TargetRt>, mut shutdown: watch::Receiver<bool>) {
    let Some(every_ms) = target.cfg.target.reconcile_interval_ms else { return };
    let every = Duration::from_millis(every_ms.max(1));
    let budget_ms = target.cfg.target.reconcile_budget_ms();
    let label = metrics::ns_target(&ns.name, &target.name);
    let m = metrics::get();
    let _ = (m.reconcile_repaired.get_or_create(&label), m.reconcile_errors.get_or_create(&label));

    let mut slot = target.slot.subscribe();
    let mut plugin = slot.borrow_and_update().clone();
    let mut instance: Option<Instance> = None;
    let mut ticks = tokio::time::interval_at(Instant::now() + every, every);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut next_at = Instant::now() + every;
    took(&target, plugin.as_ref(), next_at);

    loop {
        let wake = tokio::select! {
            _ = ticks.tick() => Wake::Tick,
            r = slot.changed() => if r.is_ok() { Wake::PluginChanged } else { Wake::Stop },
            r = shutdown.changed() => if r.is_err() || *shutdown.borrow() { Wake::Stop } else { continue },
        };
        if ns.is_removed() {
            break;
        }
        match wake {
            Wake::Stop => break,
            Wake::PluginChanged => {
                plugin = slot.borrow_and_update().clone();
                instance = None;
                took(&target, plugin.as_ref(), next_at);
                continue;
            }
            Wake::Tick => {}
        }
        next_at = Instant::now() + every;
        let Some(p) = plugin.clone() else { continue };
        if !p.has_reconcile() {
            continue;
        }
        if target.quarantined() {
            target.reconcile.with(|s| {
                s.state = ReconcileState::Paused;
                s.reason = Some("the target's plugin is quarantined".into());
            });
            continue;
        }
        target.reconcile.with(|s| (s.state, s.reason) = (ReconcileState::Scheduled, None));
        let started = std::time::Instant::now();
        // Shutdown, removal or a new plugin drop the call (and its instance).
        let outcome = tokio::select! {
            r = pass(&p, &mut instance, budget_ms) => Some(r),
            r = slot.changed() => if r.is_ok() { None } else { break },
            r = shutdown.changed() => if r.is_err() || *shutdown.borrow() { break } else { None },
        };
        let Some(outcome) = outcome else {
            instance = None;
            if slot.has_changed().unwrap_or(false) {
                plugin = slot.borrow_and_update().clone();
                took(&target, plugin.as_ref(), next_at);
            }
            continue;
        };
        // An overrun delays the next tick (`MissedTickBehavior::Delay`).
        next_at = next_at.max(Instant::now());
        record(&target, &label, outcome, started.elapsed(), next_at, &mut instance);
    }
    target.reconcile.with(|s| (s.state, s.next_at) = (ReconcileState::Stopped, None));
    tracing::info!("reconcile stopped");
}

/// One pass on the task's instance, instantiated (and `init`ed) first if
/// there is none.
async fn pass(
    plugin: &Plugin,
    instance: &mut Option<Instance>,
    budget_ms: u64,
) -> Result<Reconciled, PluginError> {
    let i = match instance.take() {
        Some(i) => instance.insert(i),
        None => instance.insert(plugin.instantiate().await?),
    };
    // `None` only for a version without reconcile, which is never called.
    Ok(i.reconcile(budget_ms).await?.unwrap_or(Reconciled { repaired: 0, errors: Vec::new() }))
}

/// A plugin was taken from the slot: what the schedule does with it.
fn took(target: &TargetRt, plugin: Option<&Plugin>, next_at: Instant) {
    let (state, reason) = match plugin {
        None => (ReconcileState::Waiting, Some("no plugin".to_string())),
        Some(p) if !p.has_reconcile() => {
            let reason = format!(
                "the plugin implements {}, which has no reconcile (wharf:target@0.4.0 on); reconcile_interval_ms is ignored",
                p.wit()
            );
            tracing::warn!(digest = %p.digest, "{reason}");
            (ReconcileState::Unsupported, Some(reason))
        }
        Some(_) => (ReconcileState::Scheduled, None),
    };
    target.reconcile.with(|s| {
        (s.state, s.reason, s.next_at) = (state, reason, Some(next_at));
    });
}

/// Metrics, one log line and the status of a finished pass.
fn record(
    target: &TargetRt,
    label: &metrics::NsTarget,
    outcome: Result<Reconciled, PluginError>,
    took: Duration,
    next_at: Instant,
    instance: &mut Option<Instance>,
) {
    let m = metrics::get();
    let took_ms = took.as_millis() as u64;
    let (result, done, failure) = match outcome {
        Ok(done) if done.errors.is_empty() => (RunResult::Ok, done, None),
        Ok(done) => (RunResult::Errors, done, None),
        Err(e) => {
            let result = match &e {
                PluginError::Trap(_) => RunResult::Trap,
                PluginError::Deadline(_) | PluginError::TargetStalled(_) => RunResult::Deadline,
                _ => RunResult::Init,
            };
            // A failed call poisons the instance; a failed init left none.
            *instance = None;
            tracing::warn!(result = result.as_str(), took_ms, error = %e, "reconcile failed; delivery is not affected");
            (
                result,
                Reconciled { repaired: 0, errors: Vec::new() },
                Some(format!("{}: {e}", result.as_str())),
            )
        }
    };
    let count = done.errors.len() as u64;
    let errors: Vec<String> = done.errors.iter().chain(&failure).map(|e| clip(e)).collect();
    let runs = metrics::ns_target_result(&label.namespace, &label.target, result.as_str());
    m.reconcile_runs.get_or_create(&runs).inc();
    if failure.is_none() {
        m.reconcile_repaired.get_or_create(label).inc_by(done.repaired);
        m.reconcile_errors.get_or_create(label).inc_by(count);
        let shown = errors.iter().take(LOG_ERRORS).cloned().collect::<Vec<_>>().join("; ");
        if done.repaired > 0 || count > 0 {
            tracing::info!(repaired = done.repaired, errors = count, took_ms, first_errors = %shown, "reconcile pass");
        } else {
            tracing::debug!(repaired = 0, errors = 0, took_ms, "reconcile pass");
        }
    }
    target.reconcile.with(|s| {
        s.runs += 1;
        s.last_run_ms = Some(now_ms());
        s.last_result = Some(result);
        s.repaired = done.repaired;
        s.repaired_total = s.repaired_total.saturating_add(done.repaired);
        s.errors_total = s.errors_total.saturating_add(count);
        s.errors.extend(errors);
        let over = s.errors.len().saturating_sub(KEEP_ERRORS);
        s.errors.drain(..over);
        s.next_at = Some(next_at);
    });
}

fn clip(reason: &str) -> String {
    let mut s: String = reason.chars().take(ERROR_CHARS).collect();
    s.retain(|c| c != '\n' && c != '\r');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_reason_is_clipped_to_one_line() {
        let long = format!("a\nb{}", "x".repeat(1000));
        let c = clip(&long);
        assert!(!c.contains('\n'));
        assert_eq!(c.chars().count(), ERROR_CHARS - 1);
    }

    #[test]
    fn results_have_stable_label_values() {
        let all = [RunResult::Ok, RunResult::Errors, RunResult::Trap, RunResult::Deadline, RunResult::Init];
        let names: Vec<_> = all.iter().map(|r| r.as_str()).collect();
        assert_eq!(names, ["ok", "errors", "trap", "deadline", "init"]);
        for r in all {
            assert_eq!(serde_json::to_value(r).expect("json"), serde_json::json!(r.as_str()));
        }
    }
}
