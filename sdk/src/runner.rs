//! The glue between the WIT exports and a [`Target`]: used by
//! [`export_target!`](crate::export_target) on wasm32 and by
//! [`testing`](crate::testing) natively, so both run the same code.

use crate::{Batch, Config, Outcome, PluginInfo, Reconciled, Target, log};

/// Holds the plugin instance created by `init`.
#[doc(hidden)]
#[derive(Debug)]
pub struct Runner<T> {
    instance: Option<T>,
}

impl<T> Runner<T> {
    pub const fn new() -> Self {
        Self { instance: None }
    }

    /// The instance, once `init` succeeded.
    pub fn instance(&mut self) -> Option<&mut T> {
        self.instance.as_mut()
    }
}

impl<T> Default for Runner<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Target> Runner<T> {
    /// Run `T::init`; on success keep the instance (replacing any earlier
    /// one). The error string is shown to the operator.
    pub fn init(&mut self, config: Config) -> Result<(), String> {
        self.instance = None;
        match T::init(config) {
            Ok(instance) => {
                self.instance = Some(instance);
                Ok(())
            }
            Err(err) => Err(err.reason().to_string()),
        }
    }

    /// Run `T::deliver`, guaranteeing exactly one outcome per message:
    /// before a successful `init` every message is retried, and a plugin
    /// that returns the wrong number of outcomes has the missing ones
    /// retried and the extra ones dropped.
    pub fn deliver(&mut self, batch: &Batch) -> Vec<Outcome> {
        let expected = batch.messages.len();
        let Some(instance) = self.instance.as_mut() else {
            return vec![Outcome::retry("plugin is not initialised (init has not succeeded)"); expected];
        };
        let mut outcomes = instance.deliver(batch);
        if outcomes.len() != expected {
            log::error(format!(
                "plugin bug: deliver returned {} outcomes for {expected} messages; \
                 retrying the ones without an outcome",
                outcomes.len()
            ));
            outcomes.truncate(expected);
            outcomes.resize(expected, Outcome::retry("plugin returned no outcome for this message"));
        }
        outcomes
    }

    /// Run `T::reconcile`. Before a successful `init` nothing is repaired
    /// and the pass reports one error (it never panics).
    pub fn reconcile(&mut self, budget_ms: u64) -> Reconciled {
        match self.instance.as_mut() {
            Some(instance) => instance.reconcile(budget_ms),
            None => Reconciled {
                repaired: 0,
                errors: vec!["plugin is not initialised (init has not succeeded)".to_string()],
            },
        }
    }
}

/// What `describe` answers: the plugin's own [`Target::describe`], or else
/// the crate name and version that [`export_target!`](crate::export_target)
/// passes in.
#[doc(hidden)]
pub fn describe<T: Target>(crate_name: &str, crate_version: &str) -> PluginInfo {
    T::describe().unwrap_or_else(|| PluginInfo::new(crate_name, crate_version))
}
