//! Protocol adapters: HTTP (`http`), gRPC (`grpc`), the admin routes
//! (`admin`) and the replication endpoint (`replication`), served within a
//! connection budget (`budget`, `listener`) with a total body
//! read deadline (`body_deadline`), over TLS when configured (`tls`). They
//! parse, authorize, call `services`, and map the domain error to a status
//! at the edge (`error`).

pub mod admin;
pub mod body_deadline;
pub mod budget;
pub mod error;
pub mod grpc;
pub mod http;
pub mod listener;
pub mod path;
pub mod replication;
pub mod tls;
