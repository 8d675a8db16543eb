//! Bindings for `wharf:target@0.4.0`, the current version. Its message,
//! batch and outcome types are the host's own: the delivery engine builds
//! and reads them, and older versions convert to and from them. 0.4.0 adds
//! the `reconcile` export and its `reconciled` record.

use super::sandbox::StoreState;

wasmtime::component::bindgen!({
    path: "../../wit/0.4.0",
    world: "target",
    exports: { default: async },
});

// The world `use`s message, batch, outcome, plugin-info and reconciled, so
// bindgen already names them at this level.
pub use wharf::target::types::{LogRecord, Retry};

super::host_calls::forward_host!();
