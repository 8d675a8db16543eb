//! The namespace services the adapters call: access (tokens and audit
//! names), the node (namespaces and their tasks), writes, transactions, the DLQ, lookups, status, the
//! control plane, trace context on writes, retained history and rewinds,
//! and the receiving side of replication.

pub mod access;
pub mod control;
pub mod dlq;
pub mod history;
pub mod lookup;
pub mod node;
pub mod replica_snapshot;
pub mod replication;
pub mod status;
pub mod trace;
pub mod txn;
pub mod write;
