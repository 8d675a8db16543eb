//! The delivery engine: one piece of code for every queue kind.
//!
//! - `namespace`: a namespace as the engine runs it (partitions, targets).
//! - `target`: one target's plugin slot, status, DLQ and lanes.
//! - `lane`: the delivery loop of one target × one stream.
//! - `read_ahead`: a log lane's next records, read while its call waits.
//! - `window`: per-key order, retries held in the host, the watermark.
//! - `breaker`: the circuit breaker and AIMD batch size.
//! - `reconcile`: a target's host-scheduled `reconcile` passes (WIT 0.4.0).
//! - `source`: the only part that differs between the embedded log, Kafka
//!   and SQS (see its contract).
//!
//! Layering: the engine imports `storage`, `plugin`, `config`, `metrics`,
//! `clock` and `error`; nothing above it (`services`, `adapters`, `cli`).

pub mod breaker;
pub mod held_instance;
pub mod lane;
pub mod namespace;
pub mod read_ahead;
pub mod reconcile;
pub mod reconcile_status;
pub mod source;
pub mod target;
pub mod window;
#[cfg(test)]
mod window_model;
