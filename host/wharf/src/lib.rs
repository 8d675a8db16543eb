//! The wharf host as a library. The `wharf` binary (`main.rs`) is a thin
//! shell over [`cli::main`]; the fuzz targets in `fuzz/` call [`fuzzing`].
//! Nothing else is public: the host is a program, not an API.

mod admin;
mod api;
pub mod cli;
mod clock;
mod cmd_log;
mod cmd_remote;
mod config;
mod control;
mod delivery;
mod dlq;
mod envelope;
mod error;
pub mod fuzzing;
mod grpc;
mod idempotency;
mod metrics;
mod node;
mod part_log;
mod plugin;
mod queue_delivery;
mod record;
mod txn;
mod txn_store;
mod write;
