//! The `host` interface every `wharf:target` version imports (`log`,
//! `now-ms`), implemented once. Each version's bindings forward here.

use super::sandbox::StoreState;

/// Longest log line a plugin may write; the rest is cut.
const MAX_LOG_CHARS: usize = 2048;

impl StoreState {
    /// One line in the host's log, tagged with the namespace. Plugins are
    /// untrusted: the line is capped and kept on one line.
    pub fn plugin_log(&self, level: tracing::Level, message: &str) {
        let mut msg: String = message.chars().take(MAX_LOG_CHARS).collect();
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
