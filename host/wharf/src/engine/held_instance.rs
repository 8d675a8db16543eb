//! A lane's plugin instance while it holds one.
//!
//! Instances are made on a lane's first call and kept between calls (a
//! plugin's `init` and its connections are reused). One unused for
//! `delivery.instance_idle_ms` is dropped by the lane, so an idle partition
//! holds no instance (issue 18: many namespaces); the next batch makes a
//! new one. `wharf_plugin_instances{namespace,target}` counts the instances
//! held: incremented here when one is taken, decremented on drop, whatever
//! drops it (idle, a failed call, a plugin switch, the lane stopping).

use std::time::{Duration, Instant};

use prometheus_client::metrics::gauge::Gauge;

use crate::plugin::Instance;

pub struct HeldInstance {
    instance: Instance,
    last_used: Instant,
    held: Gauge,
}

impl HeldInstance {
    pub fn new(instance: Instance, held: Gauge) -> Self {
        held.inc();
        Self { instance, last_used: Instant::now(), held }
    }

    /// The instance, for one call now.
    pub fn use_now(&mut self) -> &mut Instance {
        self.last_used = Instant::now();
        &mut self.instance
    }

    pub fn unused_for(&self, idle: Duration) -> bool {
        self.last_used.elapsed() >= idle
    }
}

impl Drop for HeldInstance {
    fn drop(&mut self) {
        self.held.dec();
    }
}
