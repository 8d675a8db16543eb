//! Native test helpers (not available on wasm32): build messages and drive
//! a [`Target`] through `init`, `deliver` and `reconcile` exactly as the host would,
//! through the same glue as the wasm export.
//!
//! ```
//! use wharf_sdk::testing::{self, Harness};
//! # use wharf_sdk::{Config, Error, Message, Target};
//! # struct Echo;
//! # impl Target for Echo {
//! #     fn init(_: Config) -> Result<Self, Error> { Ok(Echo) }
//! #     fn deliver_one(&mut self, _: &Message) -> Result<(), Error> { Ok(()) }
//! # }
//! let mut plugin = Harness::<Echo>::init(&[("servers", "127.0.0.1:1")]).unwrap();
//! let outcomes = plugin.deliver(vec![testing::message("hello").with_key("k")]);
//! assert!(outcomes[0].is_delivered());
//! ```

use crate::runner::Runner;
use crate::{Batch, Config, Error, Message, Outcome, Reconciled, Target};

/// A message with this payload: id `"0-<n>"` with a fresh sequence number
/// `n`, namespace `"test"`, first attempt, written now.
pub fn message(payload: impl Into<Vec<u8>>) -> Message {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let sequence = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut msg = Message::new(format!("0-{sequence}"), payload).with_namespace("test");
    msg.sequence = sequence;
    msg.written_at_ms = crate::now_ms();
    msg
}

/// A [`Config`] from string pairs.
pub fn config(entries: &[(&str, &str)]) -> Config {
    Config::new(entries.iter().map(|(k, v)| (*k, *v)))
}

/// Call `T::init` with this config, as the host would.
pub fn init<T: Target>(entries: &[(&str, &str)]) -> Result<T, Error> {
    T::init(config(entries))
}

/// Drives a plugin type through the same glue as the wasm export.
#[derive(Debug)]
pub struct Harness<T> {
    runner: Runner<T>,
}

impl<T: Target> Harness<T> {
    /// A harness whose `init` has not run yet: `deliver` retries everything.
    pub fn uninitialised() -> Self {
        Self { runner: Runner::new() }
    }

    /// Run `init` with this config; the error is the operator-facing reason.
    pub fn init(entries: &[(&str, &str)]) -> Result<Self, String> {
        let mut harness = Self::uninitialised();
        harness.reinit(entries)?;
        Ok(harness)
    }

    /// Run `init` again (the host does this on a fresh instance).
    pub fn reinit(&mut self, entries: &[(&str, &str)]) -> Result<(), String> {
        self.runner.init(config(entries))
    }

    /// Deliver these messages as one batch. Panics if the plugin did not
    /// return exactly one outcome per message.
    pub fn deliver(&mut self, messages: Vec<Message>) -> Vec<Outcome> {
        self.deliver_batch(&Batch::new(messages))
    }

    /// Deliver a batch, as the host would.
    pub fn deliver_batch(&mut self, batch: &Batch) -> Vec<Outcome> {
        let outcomes = self.runner.deliver(batch);
        assert_eq!(outcomes.len(), batch.messages.len(), "exactly one outcome per message");
        outcomes
    }

    /// One `reconcile` pass with this budget, as the host would call it
    /// (before `init` it repairs nothing and reports one error).
    pub fn reconcile(&mut self, budget_ms: u64) -> Reconciled {
        self.runner.reconcile(budget_ms)
    }

    /// The plugin instance, once `init` succeeded.
    pub fn plugin(&mut self) -> Option<&mut T> {
        self.runner.instance()
    }
}
