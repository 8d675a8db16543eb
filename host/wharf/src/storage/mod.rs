//! What the host keeps on disk besides the partition logs themselves: the
//! envelope of a message, the DLQ, the idempotency window, the chunk store
//! of transactions, and a partition's log as this process holds it.

pub mod cursor;
pub mod dlq;
pub mod envelope;
pub mod idempotency;
pub mod part_log;
pub mod record;
pub mod traps;
pub mod txn_store;
