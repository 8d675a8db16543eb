//! Which `wharf:target` version a component implements, found once at load
//! time, and one call surface over every supported version.
//!
//! Detection type-checks the component's exports against each supported
//! world, newest first (the bindings' `TargetPre::new` checks every export's
//! name and signature). 0.4.0 adds the `reconcile` export, 0.3.0
//! `message.record` and the outcome `halt`, 0.2.0 has `describe` and
//! `message.replays`, so an older component fails the newer checks and
//! passes its own. A component that passes none is refused with every
//! reason.

use wasmtime::component::InstancePre;
use wasmtime::{Engine, Store};

use super::sandbox::StoreState;
use super::{v0_1, v0_2, v0_3, v0_4};

/// The WIT package versions this host can load, newest first.
pub const SUPPORTED_WIT: &[&str] = &[
    WitVersion::V0_4.package(),
    WitVersion::V0_3.package(),
    WitVersion::V0_2.package(),
    WitVersion::V0_1.package(),
];

/// A supported `wharf:target` version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WitVersion {
    V0_1,
    V0_2,
    V0_3,
    V0_4,
}

impl WitVersion {
    /// `wharf:target@<version>`.
    pub const fn package(self) -> &'static str {
        match self {
            WitVersion::V0_1 => "wharf:target@0.1.0",
            WitVersion::V0_2 => "wharf:target@0.2.0",
            WitVersion::V0_3 => "wharf:target@0.3.0",
            WitVersion::V0_4 => "wharf:target@0.4.0",
        }
    }

    /// The version has the `reconcile` export (0.4.0 on).
    pub const fn has_reconcile(self) -> bool {
        matches!(self, WitVersion::V0_4)
    }
}

/// A component type-checked against the world it implements.
#[derive(Clone)]
pub enum TargetPre {
    V0_1(v0_1::TargetPre<StoreState>),
    V0_2(v0_2::TargetPre<StoreState>),
    V0_3(v0_3::TargetPre<StoreState>),
    V0_4(v0_4::TargetPre<StoreState>),
}

impl TargetPre {
    /// The newest supported world the component implements, or why it
    /// implements none.
    pub fn detect(pre: InstancePre<StoreState>) -> Result<Self, String> {
        let newest = match v0_4::TargetPre::new(pre.clone()) {
            Ok(p) => return Ok(TargetPre::V0_4(p)),
            Err(e) => e,
        };
        let v3 = match v0_3::TargetPre::new(pre.clone()) {
            Ok(p) => return Ok(TargetPre::V0_3(p)),
            Err(e) => e,
        };
        let v2 = match v0_2::TargetPre::new(pre.clone()) {
            Ok(p) => return Ok(TargetPre::V0_2(p)),
            Err(e) => e,
        };
        match v0_1::TargetPre::new(pre) {
            Ok(p) => Ok(TargetPre::V0_1(p)),
            Err(oldest) => Err(format!(
                "implements no supported wharf:target version ({}: {newest:#}; {}: {v3:#}; {}: {v2:#}; {}: {oldest:#})",
                WitVersion::V0_4.package(),
                WitVersion::V0_3.package(),
                WitVersion::V0_2.package(),
                WitVersion::V0_1.package()
            )),
        }
    }

    pub fn version(&self) -> WitVersion {
        match self {
            TargetPre::V0_1(_) => WitVersion::V0_1,
            TargetPre::V0_2(_) => WitVersion::V0_2,
            TargetPre::V0_3(_) => WitVersion::V0_3,
            TargetPre::V0_4(_) => WitVersion::V0_4,
        }
    }

    pub fn engine(&self) -> &Engine {
        match self {
            TargetPre::V0_1(p) => p.engine(),
            TargetPre::V0_2(p) => p.engine(),
            TargetPre::V0_3(p) => p.engine(),
            TargetPre::V0_4(p) => p.engine(),
        }
    }

    pub async fn instantiate(&self, store: &mut Store<StoreState>) -> wasmtime::Result<Target> {
        Ok(match self {
            TargetPre::V0_1(p) => Target::V0_1(p.instantiate_async(store).await?),
            TargetPre::V0_2(p) => Target::V0_2(p.instantiate_async(store).await?),
            TargetPre::V0_3(p) => Target::V0_3(p.instantiate_async(store).await?),
            TargetPre::V0_4(p) => Target::V0_4(p.instantiate_async(store).await?),
        })
    }
}

/// A live instance of one version's world.
pub enum Target {
    V0_1(v0_1::Target),
    V0_2(v0_2::Target),
    V0_3(v0_3::Target),
    V0_4(v0_4::Target),
}

impl Target {
    pub async fn call_init(
        &self,
        store: &mut Store<StoreState>,
        config: &[(String, String)],
    ) -> wasmtime::Result<Result<(), String>> {
        match self {
            Target::V0_1(t) => t.call_init(store, config).await,
            Target::V0_2(t) => t.call_init(store, config).await,
            Target::V0_3(t) => t.call_init(store, config).await,
            Target::V0_4(t) => t.call_init(store, config).await,
        }
    }

    pub async fn call_deliver(
        &self,
        store: &mut Store<StoreState>,
        batch: &v0_4::Batch,
    ) -> wasmtime::Result<Vec<v0_4::Outcome>> {
        match self {
            Target::V0_1(t) => {
                let out = t.call_deliver(store, &v0_1::batch_to_v0_1(batch)).await?;
                Ok(out.into_iter().map(v0_1::outcome_from_v0_1).collect())
            }
            Target::V0_2(t) => {
                let out = t.call_deliver(store, &v0_2::batch_to_v0_2(batch)).await?;
                Ok(out.into_iter().map(v0_2::outcome_from_v0_2).collect())
            }
            Target::V0_3(t) => {
                let out = t.call_deliver(store, &v0_3::batch_to_v0_3(batch)).await?;
                Ok(out.into_iter().map(v0_3::outcome_from_v0_3).collect())
            }
            Target::V0_4(t) => t.call_deliver(store, batch).await,
        }
    }

    /// `None` for a version without `describe` (0.1.0).
    pub async fn call_describe(
        &self,
        store: &mut Store<StoreState>,
    ) -> wasmtime::Result<Option<v0_4::PluginInfo>> {
        match self {
            Target::V0_1(_) => Ok(None),
            Target::V0_2(t) => t.call_describe(store).await.map(|i| Some(v0_2::info_from_v0_2(i))),
            Target::V0_3(t) => t.call_describe(store).await.map(|i| Some(v0_3::info_from_v0_3(i))),
            Target::V0_4(t) => t.call_describe(store).await.map(Some),
        }
    }

    /// `None` for a version without `reconcile` (before 0.4.0): nothing is
    /// called.
    pub async fn call_reconcile(
        &self,
        store: &mut Store<StoreState>,
        budget_ms: u64,
    ) -> wasmtime::Result<Option<v0_4::Reconciled>> {
        match self {
            Target::V0_1(_) | Target::V0_2(_) | Target::V0_3(_) => Ok(None),
            Target::V0_4(t) => t.call_reconcile(store, budget_ms).await.map(Some),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::{NetPolicy, PluginError, PluginSettings, Runtime};

    /// The smallest valid component: the preamble, no imports, no exports.
    const EMPTY_COMPONENT: &[u8] = b"\0asm\x0d\x00\x01\x00";

    #[test]
    fn a_component_implementing_no_supported_version_is_refused_with_both_reasons() {
        let cache = tempfile::tempdir().expect("tempdir");
        let runtime = Runtime::new(cache.path()).expect("runtime");
        let settings = PluginSettings {
            namespace: "ns".into(),
            net: NetPolicy::default(),
            memory_limit_bytes: 1 << 20,
            call_timeout: Duration::from_secs(1),
            config: Vec::new(),
        };
        match runtime.load_bytes(EMPTY_COMPONENT, "empty.wasm", settings) {
            Err(PluginError::Invalid { path, reason }) => {
                assert_eq!(path, "empty.wasm");
                assert!(reason.contains("no supported wharf:target version"), "{reason}");
                assert!(reason.contains("wharf:target@0.4.0: no export `"), "{reason}");
                assert!(reason.contains("wharf:target@0.3.0: no export `"), "{reason}");
                assert!(reason.contains("wharf:target@0.2.0: no export `"), "{reason}");
                assert!(reason.contains("wharf:target@0.1.0: no export `"), "{reason}");
            }
            other => panic!("expected PluginError::Invalid, got {other:?}"),
        }
    }
}
