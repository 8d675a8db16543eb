//! What `wharf plugin check` learns about a component: its exports and
//! imports, the `wharf:target` version it implements, and what it says it is
//! (`describe`, from 0.2.0). `describe` runs on a fresh instance, without
//! `init`, in the same sandbox as delivery with no network at all.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::{NetPolicy, Plugin, PluginError, PluginSettings, Runtime, bounded, set_deadline};

/// The sandbox of a checked plugin: the defaults of `[namespaces.*.target]`
/// (64 MiB, 10 s per call), no network, no config.
const CHECK_MEMORY_LIMIT_BYTES: usize = 64 << 20;
const CHECK_CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// What a plugin says it is.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PluginInfo {
    pub name: String,
    pub version: String,
}

/// What `wharf plugin check` prints about a component.
#[derive(Debug, serde::Serialize)]
pub struct Inspection {
    pub digest: String,
    /// The `wharf:target` version the component implements, if any.
    pub wit: Option<&'static str>,
    /// What the plugin says it is; `None` if its version predates
    /// `describe` (0.1.0) or it implements no supported version.
    pub describe: Option<PluginInfo>,
    pub problem: Option<String>,
    pub exports: Vec<String>,
    pub imports: Vec<String>,
}

impl Runtime {
    /// Compiles a component and reports its exports, imports, whether it
    /// implements a supported `wharf:target` version, and its `describe`.
    pub async fn inspect(&self, path: &Path) -> Result<Inspection, PluginError> {
        let label = path.display().to_string();
        let bytes =
            std::fs::read(path).map_err(|source| PluginError::Read { path: label.clone(), source })?;
        let (component, digest) = self
            .cache
            .compile(&self.engine, &bytes)
            .map_err(|reason| PluginError::Invalid { path: label.clone(), reason })?;
        let ty = component.component_type();
        let mut report = Inspection {
            digest: digest.clone(),
            wit: None,
            describe: None,
            problem: None,
            imports: ty.imports(&self.engine).map(|(name, _)| name.to_string()).collect(),
            exports: ty.exports(&self.engine).map(|(name, _)| name.to_string()).collect(),
        };
        match self.type_check(&component) {
            Err(problem) => report.problem = Some(problem),
            Ok(pre) => {
                report.wit = Some(pre.version().package());
                let settings = PluginSettings {
                    namespace: "plugin-check".into(),
                    net: NetPolicy::default(),
                    memory_limit_bytes: CHECK_MEMORY_LIMIT_BYTES,
                    call_timeout: CHECK_CALL_TIMEOUT,
                    config: Vec::new(),
                };
                let plugin = Plugin { pre, digest, settings: Arc::new(settings), secrets: Arc::default() };
                match plugin.describe().await {
                    Ok(info) => report.describe = info,
                    Err(e) => report.problem = Some(format!("describe failed: {e}")),
                }
            }
        }
        Ok(report)
    }
}

impl Plugin {
    /// What the plugin says it is, from a fresh instance without `init`;
    /// `None` for a version without `describe`.
    pub async fn describe(&self) -> Result<Option<PluginInfo>, PluginError> {
        let (mut store, target) = self.instantiate_uninit().await?;
        let deadline = self.settings.call_timeout;
        set_deadline(&mut store, deadline);
        let net = store.data().net_use.clone();
        let info = bounded(deadline, &net, target.call_describe(&mut store)).await?;
        Ok(info.map(|i| PluginInfo { name: i.name, version: i.version }))
    }
}
