//! Compiled components cached on disk by content hash.
//!
//! File name: `<sha256 of the .wasm>-<engine compatibility hash>.cwasm`, so a
//! changed plugin or a different wasmtime build never reuses a stale entry.
//! Entries are written to a temp file and renamed into place, so a crash
//! leaves either no entry or a whole one. An entry that fails to load is
//! recompiled and replaced.

use std::hash::{Hash, Hasher};
use std::path::Path;

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Returns the component and its digest (`sha256:<hex>`).
pub fn compile_cached(engine: &Engine, dir: &Path, wasm: &[u8]) -> Result<(Component, String), String> {
    let hex = hex::encode(Sha256::digest(wasm));
    let digest = format!("sha256:{hex}");
    let mut h = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    let path = dir.join(format!("{hex}-{:016x}.cwasm", h.finish()));
    if path.is_file() {
        // SAFETY: the file is one this host wrote with `Component::serialize`
        // under a name bound to the source digest and this engine's
        // configuration, inside the host's own data directory.
        #[allow(unsafe_code)]
        match unsafe { Component::deserialize_file(engine, &path) } {
            Ok(c) => {
                tracing::debug!(%digest, "plugin loaded from compile cache");
                return Ok((c, digest));
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "compile cache entry unusable, recompiling")
            }
        }
    }
    let started = std::time::Instant::now();
    let component = Component::new(engine, wasm).map_err(|e| format!("{e}"))?;
    tracing::info!(%digest, elapsed_ms = started.elapsed().as_millis() as u64, "plugin compiled");
    if let Err(e) = store(&component, dir, &path) {
        tracing::warn!(path = %path.display(), error = %e, "could not write compile cache entry");
    }
    Ok((component, digest))
}

fn store(component: &Component, dir: &Path, path: &Path) -> std::io::Result<()> {
    let bytes = component.serialize().map_err(|e| std::io::Error::other(e.to_string()))?;
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}
