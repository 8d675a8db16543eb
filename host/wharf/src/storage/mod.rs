//! What the host keeps on disk besides the partition logs themselves: the
//! envelope of a message, the DLQ, the idempotency window, the chunk store
//! of transactions, a partition's log as this process holds it, and what
//! replication keeps (the chained digest, halts, the staged batch, a staged
//! snapshot), and
//! secret keys (`keyfile`).

pub mod atomic;
pub mod chain;
pub mod cursor;
pub mod dlq;
pub mod envelope;
pub mod fixed;
pub mod free_space;
pub mod halts;
pub mod idempotency;
pub mod keyfile;
pub mod part_log;
pub mod record;
pub mod replica_stage;
pub mod rewind;
pub mod snapshot_stage;
pub mod traps;
pub mod txn_store;
pub mod write_clock;

/// Fault injection for crash tests: when the environment variable
/// `WHARF_FAULT_ABORT` names this point, the process aborts here (as a
/// SIGKILL would leave it). Unset in production; the tests in
/// `tests/tests/replication.rs` and `tests/tests/client_api.rs` set it.
pub fn fault_point(name: &str) {
    if std::env::var("WHARF_FAULT_ABORT").is_ok_and(|v| v == name) {
        tracing::error!(point = name, "WHARF_FAULT_ABORT: aborting here");
        std::process::abort();
    }
}
