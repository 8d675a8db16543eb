//! Bindings for `wharf:target@0.3.0`, the current version. Its message,
//! batch and outcome types are the host's own: the delivery engine builds
//! and reads them, and older versions convert to and from them.

use super::sandbox::StoreState;

wasmtime::component::bindgen!({
    path: "../../wit/0.3.0",
    world: "target",
    exports: { default: async },
});

// The world `use`s message, batch, outcome and plugin-info, so bindgen already
// names them at this level.
pub use wharf::target::types::{LogRecord, Retry};

use wharf::target::host::Level;

impl wharf::target::host::Host for StoreState {
    fn log(&mut self, level: Level, message: String) {
        let level = match level {
            Level::Trace => tracing::Level::TRACE,
            Level::Debug => tracing::Level::DEBUG,
            Level::Info => tracing::Level::INFO,
            Level::Warn => tracing::Level::WARN,
            Level::Error => tracing::Level::ERROR,
        };
        self.plugin_log(level, &message);
    }

    fn now_ms(&mut self) -> u64 {
        self.plugin_now_ms()
    }
}

impl wharf::target::types::Host for StoreState {}
