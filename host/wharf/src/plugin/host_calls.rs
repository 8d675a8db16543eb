//! The `host` interface every `wharf:target` version imports (`log`,
//! `now-ms`), implemented once. Each version's bindings forward here with
//! [`forward_host!`], called inside its bindings module.

use super::sandbox::StoreState;

/// Longest log line a plugin may write; the rest is cut.
const MAX_LOG_CHARS: usize = 2048;

impl StoreState {
    /// One line in the host's log, tagged with the namespace. Plugins are
    /// untrusted: the line is capped and kept on one line.
    pub fn plugin_log(&self, level: tracing::Level, message: &str) {
        let mut msg: String = self.secrets.scrub(message).chars().take(MAX_LOG_CHARS).collect();
        msg.retain(|c| c != '\n' && c != '\r');
        let ns = &*self.namespace;
        match level {
            tracing::Level::TRACE => tracing::trace!(namespace = ns, "plugin: {msg}"),
            tracing::Level::DEBUG => tracing::debug!(namespace = ns, "plugin: {msg}"),
            tracing::Level::INFO => tracing::info!(namespace = ns, "plugin: {msg}"),
            tracing::Level::WARN => tracing::warn!(namespace = ns, "plugin: {msg}"),
            tracing::Level::ERROR => tracing::error!(namespace = ns, "plugin: {msg}"),
        }
    }

    /// Wall-clock time in ms since the Unix epoch.
    pub fn plugin_now_ms(&self) -> u64 {
        crate::clock::now_ms()
    }
}

/// Implements a `wharf:target` version's `host` and `types` interfaces for
/// [`StoreState`] by forwarding to the methods above. Expanded inside a
/// version module, where `wharf::target::*` are that version's bindings.
macro_rules! forward_host {
    () => {
        impl wharf::target::host::Host for StoreState {
            fn log(&mut self, level: wharf::target::host::Level, message: String) {
                use wharf::target::host::Level;
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
    };
}
pub(super) use forward_host;
