//! Compiled components cached on disk by content hash, and trusted only
//! with a valid keyed MAC.
//!
//! File name: `<sha256 of the .wasm>-<engine compatibility hash>.cwasm`, so a
//! changed plugin or a different wasmtime build never reuses a stale entry.
//!
//! File content: a 32-byte HMAC-SHA256 tag, then the serialized component.
//! The tag covers the source digest, the engine hash and the serialized
//! bytes, under a key kept in `<cache dir>/cache.key` (made at first use,
//! mode 0600; sidecars sharing a cache share the key). A `.cwasm` is native
//! code loaded without further checks, so an entry copied over another's
//! name, edited, or written without the key is not loaded: it is recompiled
//! from the source, and the log says so. The tag is checked on the bytes
//! that are then loaded (read once), so the file cannot change in between.
//!
//! Entries are written to a temp file and renamed into place, so a crash
//! leaves either no entry or a whole one; a failed write (a full disk)
//! removes its temp file, and the plugin runs uncached. Entries of a plugin the host
//! rejected are removed ([`CompileCache::forget`]).
//!
//! Loaded components are also kept in memory by the same name, so the many
//! namespaces that run one plugin share one compiled copy (its code and
//! its memory image): reading, checking and mapping a `.cwasm` happens once
//! per plugin and process, not once per namespace. At most
//! [`MAX_LOADED`] are kept; past that the memory map starts afresh (a
//! component still in use lives on in its namespaces).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

const TAG_LEN: usize = 32;

/// How many distinct components the in-memory map holds at most.
pub const MAX_LOADED: usize = 64;

/// The cache directory and its key.
#[derive(Clone)]
pub struct CompileCache {
    dir: PathBuf,
    key: [u8; 32],
    /// `<sha256>-<engine hash>` -> the component, shared by every plugin
    /// built from those bytes.
    loaded: Arc<Mutex<HashMap<String, Component>>>,
}

impl std::fmt::Debug for CompileCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompileCache").field("dir", &self.dir).finish_non_exhaustive()
    }
}

impl CompileCache {
    /// Opens (or creates, mode 0700) the cache directory and its key.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let key = crate::storage::keyfile::load_or_create(&dir.join("cache.key"))?;
        Ok(Self { dir: dir.to_path_buf(), key, loaded: Arc::default() })
    }

    /// Returns the component and its digest (`sha256:<hex>`).
    pub fn compile(&self, engine: &Engine, wasm: &[u8]) -> Result<(Component, String), String> {
        let hex = hex::encode(Sha256::digest(wasm));
        let digest = format!("sha256:{hex}");
        let engine_hash = engine_hash(engine);
        let name = format!("{hex}-{engine_hash}");
        if let Some(c) = self.loaded().get(&name) {
            return Ok((c.clone(), digest));
        }
        let path = self.dir.join(format!("{name}.cwasm"));
        if let Some(c) = self.load(engine, &path, &hex, &engine_hash) {
            tracing::debug!(%digest, "plugin loaded from compile cache");
            self.keep(name, &c);
            return Ok((c, digest));
        }
        let started = std::time::Instant::now();
        let component = Component::new(engine, wasm).map_err(|e| format!("{e}"))?;
        tracing::info!(%digest, elapsed_ms = started.elapsed().as_millis() as u64, "plugin compiled");
        if let Err(e) = self.store(&component, &path, &hex, &engine_hash) {
            // Only a cache: the plugin runs, and is compiled again next time.
            let temporary = wharf_log::temporary(&e).map(|t| format!("{t:?}"));
            tracing::warn!(path = %path.display(), error = %e, ?temporary, "could not write compile cache entry");
        }
        self.keep(name, &component);
        Ok((component, digest))
    }

    fn loaded(&self) -> std::sync::MutexGuard<'_, HashMap<String, Component>> {
        self.loaded.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Shares `component` with later plugins built from the same bytes.
    fn keep(&self, name: String, component: &Component) {
        let mut loaded = self.loaded();
        if loaded.len() >= MAX_LOADED {
            loaded.clear();
        }
        loaded.insert(name, component.clone());
    }

    /// Removes every cached entry of the component with this source.
    pub fn forget(&self, wasm: &[u8]) {
        let prefix = format!("{}-", hex::encode(Sha256::digest(wasm)));
        self.loaded().retain(|name, _| !name.starts_with(&prefix));
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return };
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                match std::fs::remove_file(entry.path()) {
                    Ok(()) => {
                        tracing::info!(path = %entry.path().display(), "compile cache entry of a rejected plugin removed")
                    }
                    Err(e) => {
                        tracing::warn!(path = %entry.path().display(), error = %e, "could not remove a compile cache entry")
                    }
                }
            }
        }
    }

    /// The entry at `path` if it exists and its tag is valid.
    fn load(&self, engine: &Engine, path: &Path, hex: &str, engine_hash: &str) -> Option<Component> {
        let bytes = std::fs::read(path).ok()?;
        let valid = bytes.len() > TAG_LEN && {
            let (tag, body) = bytes.split_at(TAG_LEN);
            self.mac(hex, engine_hash, body).verify_slice(tag).is_ok()
        };
        if !valid {
            tracing::warn!(path = %path.display(), "compile cache entry failed its integrity check (not written by this host's key); recompiling");
            return None;
        }
        // SAFETY: the bytes carry a valid MAC under this cache's secret key
        // over the source digest, the engine hash and the bytes themselves,
        // so they are what `Component::serialize` produced in `store`.
        #[allow(unsafe_code)]
        match unsafe { Component::deserialize(engine, &bytes[TAG_LEN..]) } {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "compile cache entry unusable, recompiling");
                None
            }
        }
    }

    fn store(&self, component: &Component, path: &Path, hex: &str, engine_hash: &str) -> std::io::Result<()> {
        let body = component.serialize().map_err(|e| std::io::Error::other(e.to_string()))?;
        let tag = self.mac(hex, engine_hash, &body).finalize().into_bytes();
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let written =
            std::fs::write(&tmp, [tag.as_slice(), &body].concat()).and_then(|()| std::fs::rename(&tmp, path));
        if written.is_err() {
            // A full disk leaves no partial temp file behind.
            let _ = std::fs::remove_file(&tmp);
        }
        written
    }

    fn mac(&self, hex: &str, engine_hash: &str, body: &[u8]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("any key length");
        mac.update(hex.as_bytes());
        mac.update(b"\0");
        mac.update(engine_hash.as_bytes());
        mac.update(b"\0");
        mac.update(body);
        mac
    }
}

/// The engine's compatibility hash, as 16 hex digits.
fn engine_hash(engine: &Engine) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    format!("{:016x}", h.finish())
}
