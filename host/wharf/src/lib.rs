//! The wharf host as a library. The `wharf` binary (`main.rs`) is a thin
//! shell over [`cli::main`]; the fuzz targets in `fuzz/` call [`fuzzing`],
//! the delivery bench [`benching`]. Nothing else is public: the host is a
//! program, not an API.
//!
//! Layers, top to bottom (a module imports only from its own layer or
//! below; see `docs/ARCHITECTURE.md`):
//! `cli` → `adapters` (HTTP, gRPC, admin) → `services` (node, write,
//! transactions, DLQ, lookup, status, control plane) → `engine` (lanes,
//! window, breaker, sources) → `storage`, `plugin`, `config`, `metrics`,
//! `otel` (host spans), `clock`.

mod adapters;
#[doc(hidden)]
pub mod benching;
pub mod cli;
mod clock;
mod config;
mod engine;
mod error;
pub mod fuzzing;
mod metrics;
mod otel;
mod plugin;
mod services;
mod storage;
