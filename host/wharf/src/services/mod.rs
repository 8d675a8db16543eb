//! The namespace services the adapters call: the node (namespaces and
//! their tasks), writes, transactions, the DLQ, lookups, status, and the
//! control plane.

pub mod control;
pub mod dlq;
pub mod lookup;
pub mod node;
pub mod status;
pub mod txn;
pub mod write;
