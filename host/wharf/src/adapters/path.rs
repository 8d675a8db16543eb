//! Path parameters the routes share: a namespace in service, a partition
//! number. Each a typed error when it is not one.

use std::sync::Arc;

use crate::error::{Error as ApiError, ErrorKind};
use crate::services::node::{Namespace, Node};

pub(crate) fn namespace(node: &Node, name: &str) -> Result<Arc<Namespace>, ApiError> {
    node.namespace(name).ok_or_else(|| {
        ApiError::new(ErrorKind::NotFound, "namespace_not_found", format!("no namespace named {name:?}"))
    })
}

pub(crate) fn partition(text: &str) -> Result<u32, ApiError> {
    text.parse()
        .map_err(|_| ApiError::bad("invalid_partition", format!("{text:?} is not a partition number")))
}
