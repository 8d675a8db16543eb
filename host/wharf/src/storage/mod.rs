//! What the host keeps on disk besides the partition logs themselves: the
//! envelope of a message, the DLQ, the idempotency window, the chunk store
//! of transactions, a partition's log as this process holds it, and what
//! replication keeps (the chained digest, halts, the staged batch), and
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
pub mod traps;
pub mod txn_store;
pub mod write_clock;
