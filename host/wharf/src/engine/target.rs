//! The runtime of one target of a namespace: its plugin slot and status,
//! its DLQ, and one lane per stream (a partition of the embedded log, or the
//! one consumer of a Kafka/SQS queue).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, watch};

use crate::config::{DEFAULT_TARGET, LoadedTarget};
use crate::engine::window::Window;
use crate::error::{Error, ErrorKind};
use crate::plugin::Plugin;
use crate::storage::dlq::Dlq;
use crate::storage::halts::{self, Halt};
use crate::storage::rewind::Rewind;
use crate::storage::traps::Traps;

/// Where a target's plugin is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PluginState {
    Loading,
    Ready,
    Failed,
    /// Too many consecutive traps/deadlines: delivery paused until an
    /// operator registers a plugin (or restarts).
    Quarantined,
    /// Removed by an operator: delivery paused.
    Removed,
}

/// What status shows about a target's plugin.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PluginStatus {
    pub path: String,
    pub digest: Option<String>,
    /// The `wharf:target` version of the loaded plugin.
    pub wit: Option<&'static str>,
    pub state: PluginState,
    pub reason: Option<String>,
}

/// Why an operator's move to the DLQ did not happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MoveRefused {
    /// Delivered or dead-lettered already.
    Finished,
    /// Not in this lane's window (not read yet, or unknown).
    NotInWindow,
    /// The DLQ write failed; the message stays where it was.
    DlqFailed,
}

/// An operator's request to dead-letter a message of the window, handled
/// by the lane between two calls (`wharf dlq move`).
#[derive(Debug)]
pub struct MoveRequest {
    pub message_id: String,
    pub reason: String,
    pub reply: tokio::sync::oneshot::Sender<Result<(), MoveRefused>>,
}

/// One stream of one target: its window, shared with the API for lookups.
#[derive(Debug)]
pub struct Lane {
    /// Partition index on the log; 0 for a queue's consumer.
    pub index: u32,
    pub window: Mutex<Window>,
    /// Woken after each delivery batch (for writes waiting for `visible`).
    pub delivered: Notify,
    /// Operator moves waiting for the lane.
    pub moves: Mutex<Vec<MoveRequest>>,
    /// Wakes a paused or waiting lane (an operator move arrived).
    pub poke: Notify,
    /// The plugin answered `halt`: this target's cursor on this stream
    /// stops until an operator resumes it (persisted at `halt_path`).
    pub halt: Mutex<Option<Halt>>,
    pub halt_path: PathBuf,
    /// The rewind this lane runs, if any (persisted as `p<N>.rewind`).
    pub rewind: Mutex<Option<Rewind>>,
    /// Operator rewinds waiting for the lane.
    pub rewinds: Mutex<Vec<RewindRequest>>,
}

/// Why a lane did not start a rewind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RewindRefused {
    /// The log no longer holds `from`: it starts at `first`.
    NotRetained { first: u64 },
    /// The rewind file could not be written; nothing changed.
    Io(String),
    /// A queue lane: there is no log to read again.
    NotLog,
}

/// An operator's rewind of one lane to `from`, handled by the lane between
/// two calls (`wharf rewind`).
#[derive(Debug)]
pub struct RewindRequest {
    pub from: u64,
    pub reply: tokio::sync::oneshot::Sender<Result<Rewind, RewindRefused>>,
}

impl Lane {
    /// A lane with the halt persisted in `target_dir`, if any. A halt file
    /// that cannot be read keeps the lane halted, saying why.
    pub fn new(index: u32, target_dir: &std::path::Path) -> Self {
        let halt_path = halts::target_path(target_dir, index);
        let halt = halts::load(&halt_path).unwrap_or_else(|e| Some(Halt::new(format!("halt_file: {e}"))));
        Self {
            index,
            window: Mutex::new(Window::default()),
            delivered: Notify::new(),
            moves: Mutex::new(Vec::new()),
            poke: Notify::new(),
            halt: Mutex::new(halt),
            halt_path,
            rewind: Mutex::new(None),
            rewinds: Mutex::new(Vec::new()),
        }
    }

    pub fn halted(&self) -> Option<Halt> {
        self.halt.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Persists and sets a halt. If the file cannot be written the halt
    /// holds in memory (until a restart) and the error is returned.
    pub fn set_halt(&self, halt: Halt) -> Result<(), halts::HaltError> {
        let stored = halts::store(&self.halt_path, &halt);
        *self.halt.lock().unwrap_or_else(|p| p.into_inner()) = Some(halt);
        stored
    }

    /// An operator's resume: removes the halt (file first) and wakes the
    /// lane. Returns the halt that stood, if any.
    pub fn resume(&self) -> Result<Option<Halt>, halts::HaltError> {
        halts::clear(&self.halt_path)?;
        let was = self.halt.lock().unwrap_or_else(|p| p.into_inner()).take();
        self.poke.notify_one();
        Ok(was)
    }

    /// The operator moves queued since the last call.
    pub fn take_moves(&self) -> Vec<MoveRequest> {
        std::mem::take(&mut *self.moves.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn request_move(&self, req: MoveRequest) {
        self.moves.lock().unwrap_or_else(|p| p.into_inner()).push(req);
        self.poke.notify_one();
    }

    pub fn rewind(&self) -> Option<Rewind> {
        *self.rewind.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn set_rewind(&self, rewind: Option<Rewind>) {
        *self.rewind.lock().unwrap_or_else(|p| p.into_inner()) = rewind;
    }

    pub fn take_rewinds(&self) -> Vec<RewindRequest> {
        std::mem::take(&mut *self.rewinds.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn request_rewind(&self, req: RewindRequest) {
        self.rewinds.lock().unwrap_or_else(|p| p.into_inner()).push(req);
        self.poke.notify_one();
    }

    /// Runs `f` on the window (a poisoned lock is taken over: the window is
    /// plain data, consistent after every method).
    pub fn with<R>(&self, f: impl FnOnce(&mut Window) -> R) -> R {
        let mut guard = self.window.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }
}

#[derive(Debug)]
pub struct TargetRt {
    pub name: String,
    pub cfg: LoadedTarget,
    /// `<data_dir>/<ns>` for `default`, `<data_dir>/<ns>/targets/<name>`
    /// otherwise: its plugin registry, DLQ and cursors live here.
    pub dir: PathBuf,
    pub plugin: Mutex<PluginStatus>,
    /// The plugin the lanes use; `None` pauses delivery.
    pub slot: watch::Sender<Option<Plugin>>,
    /// The DLQ, in a process that delivers.
    pub dlq: Option<Arc<Dlq>>,
    /// How often messages trapped the plugin alone (poison detection).
    pub traps: Arc<Traps>,
    pub lanes: Vec<Arc<Lane>>,
    /// The `reconcile` schedule, for status (`engine::reconcile`).
    pub reconcile: crate::engine::reconcile_status::Schedule,
}

impl TargetRt {
    pub fn new(cfg: LoadedTarget, dir: PathBuf, dlq: Option<Arc<Dlq>>, traps: Traps, lanes: u32) -> Self {
        let plugin = Mutex::new(PluginStatus {
            path: cfg.target.plugin.display().to_string(),
            digest: None,
            wit: None,
            state: PluginState::Loading,
            reason: None,
        });
        let lanes = (0..lanes).map(|i| Arc::new(Lane::new(i, &dir))).collect();
        Self {
            name: cfg.name.clone(),
            cfg,
            dir,
            plugin,
            slot: watch::channel(None).0,
            dlq,
            traps: Arc::new(traps),
            lanes,
            reconcile: Default::default(),
        }
    }

    /// The DLQ, or why this process has none.
    pub fn dlq(&self) -> Result<&Arc<Dlq>, Error> {
        self.dlq.as_ref().ok_or_else(|| {
            Error::new(
                ErrorKind::Conflict,
                "role_processor",
                "this process runs with --role processor; the DLQ and delivery state live in the --role consumer process",
            )
        })
    }

    pub fn lane(&self, index: u32) -> Option<&Arc<Lane>> {
        self.lanes.get(index as usize)
    }

    pub fn plugin_status(&self) -> PluginStatus {
        self.plugin.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn set_plugin_status(&self, f: impl FnOnce(&mut PluginStatus)) {
        f(&mut self.plugin.lock().unwrap_or_else(|p| p.into_inner()));
    }

    pub fn quarantined(&self) -> bool {
        self.plugin_status().state == PluginState::Quarantined
    }
}

/// Where a target keeps its files (the `default` target where a namespace
/// with one target always kept them).
pub fn target_dir(ns_dir: &std::path::Path, name: &str) -> PathBuf {
    match name {
        DEFAULT_TARGET => ns_dir.to_path_buf(),
        _ => ns_dir.join("targets").join(name),
    }
}
