//! The plugin runtime, exactly as the host runs it, for the delivery bench
//! (`tests/benches/delivery.rs`): its "Wasm calls alone" row times
//! `Instance::deliver` on the same batches as the native rows, without the
//! engine's log reads, window and watermark, so the cost of the Wasm call
//! itself is measured apart from the host's work between calls.
//! Not an API: nothing else may use it.

pub use crate::plugin::{Batch, Instance, Message, NetPolicy, Outcome, Plugin, PluginSettings, Runtime};
