//! Hooks for `wharf plugin test`, the conformance run of a plugin without a
//! sidecar: how much memory an instance holds, and a call that is
//! interrupted on purpose (to prove a trapped instance is survivable).

use super::{Batch, Instance, Outcome, PluginError, bounded};

impl Instance {
    /// Linear memory this instance holds, in bytes (every memory of the
    /// component; memory never shrinks, so this is also its peak).
    pub fn memory_bytes(&self) -> usize {
        self.store.data().limits.memory_bytes()
    }

    /// Calls `deliver` with a deadline that has already passed: the guest is
    /// interrupted at its first epoch check, exactly like a plugin that ran
    /// past its deadline. The instance is poisoned afterwards; drop it.
    pub async fn deliver_interrupted(&mut self, batch: &Batch) -> Result<Vec<Outcome>, PluginError> {
        self.store.set_epoch_deadline(0);
        let net = self.store.data().net_use.clone();
        bounded(self.call_timeout, &net, self.target.call_deliver(&mut self.store, batch)).await
    }
}
