//! Protocol adapters: HTTP (`http`), gRPC (`grpc`) and the admin routes
//! (`admin`). They parse, authorize, call `services`, and map the domain
//! error to a status at the edge (`error`).

pub mod admin;
pub mod error;
pub mod grpc;
pub mod http;
