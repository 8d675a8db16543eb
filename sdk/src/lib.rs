//! # wharf-sdk: write Wharf delivery targets in Rust
//!
//! A Wharf target plugin is a WebAssembly component (`wasm32-wasip2`) that
//! receives durable messages and says, per message, whether it delivered
//! them. This crate hides the WIT bindings: implement [`Target`] and call
//! [`export_target!`].
//!
//! ```no_run
//! use wharf_sdk::{Config, Error, Message, Target, log};
//!
//! struct LogTarget {
//!     prefix: String,
//! }
//!
//! impl Target for LogTarget {
//!     fn init(config: Config) -> Result<Self, Error> {
//!         Ok(LogTarget { prefix: config.get_or("prefix", "got").to_string() })
//!     }
//!
//!     fn deliver_one(&mut self, msg: &Message) -> Result<(), Error> {
//!         log::info(format!("{} {}: {}", self.prefix, msg.id, msg.payload_lossy()));
//!         Ok(())
//!     }
//! }
//!
//! wharf_sdk::export_target!(LogTarget);
//! ```
//!
//! Natively (`cargo test`) the same code runs without wasm: logging goes to
//! stderr, [`now_ms`] reads the system clock, [`http`] uses a small blocking
//! client, and [`testing`] drives a plugin type directly.
//!
//! Reasons and log lines reach the operator (status, dead-letter entries, the
//! host's log): put a URL in them through [`redact_url`], and never the value
//! of a secret config key ([`is_secret_key`]).

mod config;
mod error;
pub mod http;
pub mod log;
mod redact;
mod runner;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;
mod types;

pub use config::Config;
pub use error::Error;
pub use redact::{is_secret_key, redact_url};
pub use types::{Batch, LogRecord, Message, Outcome, PluginInfo, Reconciled};

/// Wall-clock time in ms since the Unix epoch (the host's clock on wasm32).
pub fn now_ms() -> u64 {
    log::now_ms()
}

/// A delivery target.
///
/// The host creates one instance per plugin instance with [`Target::init`]
/// and then calls [`Target::deliver`] with batches, one at a time. Keep
/// connections in `self` and reuse them across calls.
pub trait Target: Sized + 'static {
    /// Build the target from the namespace's `target.config` table. An error
    /// stops the plugin from loading; its reason is shown to the operator.
    fn init(config: Config) -> Result<Self, Error>;

    /// Deliver one message. `Ok` means the target has it.
    fn deliver_one(&mut self, msg: &Message) -> Result<(), Error>;

    /// Deliver a batch: exactly one outcome per message, in order. The
    /// default calls [`Target::deliver_one`] for each message; override it
    /// to pipeline or batch requests.
    fn deliver(&mut self, batch: &Batch) -> Vec<Outcome> {
        batch.messages.iter().map(|msg| Outcome::from(self.deliver_one(msg))).collect()
    }

    /// What this plugin is, for operators (`wharf plugin check` prints it).
    /// `None`, the default, means the plugin crate's name and version from
    /// its `Cargo.toml`, filled in by [`export_target!`]. The host may call
    /// this without `init`: do not depend on config or the network.
    fn describe() -> Option<PluginInfo> {
        None
    }

    /// Repair what earlier deliveries left half done (seed 000's
    /// reconciler): the host calls it on a fresh schedule per target
    /// (`reconcile_interval_ms`), between `deliver` calls, within
    /// `budget_ms` and the same sandbox and deadline as `deliver`. The
    /// default does nothing.
    fn reconcile(&mut self, budget_ms: u64) -> Reconciled {
        let _ = budget_ms;
        Reconciled::default()
    }
}

/// Export a [`Target`] type as the plugin's WIT `init`, `deliver`,
/// `describe` and `reconcile` (`wharf:target@0.4.0`).
///
/// Call it once, at the top level of the plugin crate. Natively it only
/// checks that the type implements [`Target`].
#[cfg(target_arch = "wasm32")]
#[macro_export]
#[rustfmt::skip]
macro_rules! export_target {
    ($plugin:ty) => {
        const _: () = {
            ::std::thread_local! {
                static __WHARF_RUNNER: ::core::cell::RefCell<$crate::__private::Runner<$plugin>> =
                    const { ::core::cell::RefCell::new($crate::__private::Runner::new()) };
            }

            struct __WharfGuest;

            impl $crate::__private::bindings::Guest for __WharfGuest {
                fn init(
                    config: ::std::vec::Vec<(::std::string::String, ::std::string::String)>,
                ) -> ::core::result::Result<(), ::std::string::String> {
                    __WHARF_RUNNER
                        .with(|runner| $crate::__private::wit_init(&mut runner.borrow_mut(), config))
                }

                fn deliver(
                    batch: $crate::__private::bindings::Batch,
                ) -> ::std::vec::Vec<$crate::__private::bindings::Outcome> {
                    __WHARF_RUNNER
                        .with(|runner| $crate::__private::wit_deliver(&mut runner.borrow_mut(), batch))
                }

                fn describe() -> $crate::__private::bindings::PluginInfo {
                    // Expanded in the plugin crate: its own name and version.
                    $crate::__private::wit_describe::<$plugin>(
                        ::core::env!("CARGO_PKG_NAME"),
                        ::core::env!("CARGO_PKG_VERSION"),
                    )
                }

                fn reconcile(budget_ms: u64) -> $crate::__private::bindings::Reconciled {
                    __WHARF_RUNNER
                        .with(|runner| $crate::__private::wit_reconcile(&mut runner.borrow_mut(), budget_ms))
                }
            }

            $crate::__private::bindings::export!(__WharfGuest with_types_in $crate::__private::bindings);
        };
    };
}

/// Export a [`Target`] type as the plugin's WIT `init`, `deliver`,
/// `describe` and `reconcile` (`wharf:target@0.4.0`).
///
/// Call it once, at the top level of the plugin crate. Natively it only
/// checks that the type implements [`Target`].
#[cfg(not(target_arch = "wasm32"))]
#[macro_export]
macro_rules! export_target {
    ($plugin:ty) => {
        const _: () = {
            fn __wharf_assert_target<T: $crate::Target>() {}
            let _ = __wharf_assert_target::<$plugin>;
        };
    };
}

/// Not public API: used by [`export_target!`].
#[doc(hidden)]
pub mod __private {
    pub use crate::runner::{Runner, describe};

    #[cfg(target_arch = "wasm32")]
    #[allow(unsafe_code, missing_debug_implementations, clippy::all)]
    pub mod bindings {
        wit_bindgen::generate!({
            path: "../wit/0.4.0",
            world: "target",
            pub_export_macro: true,
            export_macro_name: "export",
            default_bindings_module: "wharf_sdk::__private::bindings",
        });
    }

    #[cfg(target_arch = "wasm32")]
    pub use wasm::{wit_deliver, wit_describe, wit_init, wit_reconcile};

    #[cfg(target_arch = "wasm32")]
    mod wasm {
        use super::bindings::wharf::target::types as wit;
        use crate::runner::{Runner, describe};
        use crate::{Batch, Config, LogRecord, Message, Outcome, Target};

        pub fn wit_init<T: Target>(
            runner: &mut Runner<T>,
            config: Vec<(String, String)>,
        ) -> Result<(), String> {
            runner.init(Config::new(config))
        }

        pub fn wit_deliver<T: Target>(runner: &mut Runner<T>, batch: wit::Batch) -> Vec<wit::Outcome> {
            let batch = Batch {
                messages: batch.messages.into_iter().map(message_from_wit).collect(),
                transaction_id: batch.transaction_id,
            };
            runner.deliver(&batch).into_iter().map(outcome_to_wit).collect()
        }

        pub fn wit_describe<T: Target>(crate_name: &str, crate_version: &str) -> wit::PluginInfo {
            let info = describe::<T>(crate_name, crate_version);
            wit::PluginInfo { name: info.name, version: info.version }
        }

        pub fn wit_reconcile<T: Target>(runner: &mut Runner<T>, budget_ms: u64) -> wit::Reconciled {
            let done = runner.reconcile(budget_ms);
            wit::Reconciled { repaired: done.repaired, errors: done.errors }
        }

        fn message_from_wit(m: wit::Message) -> Message {
            Message {
                id: m.id,
                namespace: m.namespace,
                partition: m.partition,
                sequence: m.sequence,
                key: m.key,
                payload: m.payload,
                headers: m.headers,
                idempotency_key: m.idempotency_key,
                attempt: m.attempt,
                replays: m.replays,
                written_at_ms: m.written_at_ms,
                record: m.record.map(|r| LogRecord {
                    bytes: r.bytes,
                    checksum: r.checksum,
                    digest: r.digest,
                    prev_digest: r.prev_digest,
                }),
            }
        }

        fn outcome_to_wit(o: Outcome) -> wit::Outcome {
            match o {
                Outcome::Delivered => wit::Outcome::Delivered,
                Outcome::Retry { reason, after } => wit::Outcome::Retry(wit::Retry {
                    reason,
                    after_ms: after.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
                }),
                Outcome::Reject { reason } => wit::Outcome::Reject(reason),
                Outcome::Halt { reason } => wit::Outcome::Halt(reason),
            }
        }
    }
}

#[cfg(test)]
mod tests;
