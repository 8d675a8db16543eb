//! `wharf log …`: operator tools for the write-ahead log.
//!
//! Thin glue: argument parsing and the checks that make a mistyped path an
//! error here; the logic (output formats, exit codes, progress lines, shown
//! only once an operation has run for a second) lives in `wharf_log::cli`,
//! where it is tested.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::output::CliError;

#[derive(clap::Subcommand, Debug)]
pub enum LogCmd {
    /// Check every segment of every partition under a data dir (exit 1 on problems).
    Verify {
        /// The data dir (`server.data_dir`), or any directory under it.
        data_dir: PathBuf,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print the records of one partition directory.
    Dump {
        /// A partition directory, e.g. `<data_dir>/<namespace>/p0`.
        partition_dir: PathBuf,
        /// Start at this sequence number.
        #[arg(long)]
        from: Option<u64>,
        /// Print at most this many records.
        #[arg(long)]
        limit: Option<u64>,
        /// Print one JSON object per record (JSON lines).
        #[arg(long)]
        json: bool,
    },
    /// Move an unreadable region aside so the partition can resume (explicit,
    /// logged; the sidecar must be stopped).
    Salvage {
        /// A partition directory, e.g. `<data_dir>/<namespace>/p0`.
        partition_dir: PathBuf,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
}

impl LogCmd {
    pub fn json(&self) -> bool {
        match self {
            LogCmd::Verify { json, .. } | LogCmd::Dump { json, .. } | LogCmd::Salvage { json, .. } => *json,
        }
    }
}

/// The partition directories under `dir`; an error naming `dir` when there
/// are none, or when `dir` does not exist.
fn partitions_under(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    if !dir.is_dir() {
        return Err(CliError::new("not_found", format!("{} is not a directory", dir.display())).into());
    }
    let parts = wharf_log::find_partitions(&wharf_log::FsStorage, dir)?;
    if parts.is_empty() {
        return Err(CliError::new("no_partition", format!("no log partition under {}", dir.display()))
            .hint(
                "a partition directory holds segment files (<sequence>.seg); the data dir is server.data_dir \
                 in wharf.toml, partitions are <data_dir>/<namespace>/p<N>",
            )
            .into());
    }
    Ok(parts)
}

/// `dir` must be one partition directory (not the data dir above it).
fn check_partition(dir: &Path) -> anyhow::Result<()> {
    let parts = partitions_under(dir)?;
    if parts.iter().any(|p| p == dir) {
        return Ok(());
    }
    let some: Vec<String> = parts.iter().take(3).map(|p| p.display().to_string()).collect();
    let more = if parts.len() > 3 { ", …" } else { "" };
    Err(CliError::new("not_a_partition", format!("{} is not a partition directory", dir.display()))
        .hint(format!("it holds {} partition(s): {}{more}", parts.len(), some.join(", ")))
        .into())
}

pub fn run(cmd: LogCmd) -> anyhow::Result<ExitCode> {
    match &cmd {
        LogCmd::Verify { data_dir, .. } => drop(partitions_under(data_dir)?),
        LogCmd::Dump { partition_dir, .. } => check_partition(partition_dir)?,
        LogCmd::Salvage { .. } => {}
    }
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut err = stderr.lock();
    let code = match cmd {
        LogCmd::Verify { data_dir, json } => {
            wharf_log::cli::verify_cmd(&data_dir, json, &mut out, &mut err).map_err(anyhow::Error::from)
        }
        LogCmd::Dump { partition_dir, from, limit, json } => {
            wharf_log::cli::dump_cmd(&partition_dir, from, limit, json, &mut out, &mut err)
                .map_err(anyhow::Error::from)
        }
        LogCmd::Salvage { partition_dir, json } => {
            wharf_log::cli::salvage_cmd(&partition_dir, json, &mut out, &mut err).map_err(|e| match e {
                wharf_log::LogError::Locked { dir } | wharf_log::LogError::FollowerLocked { dir } => {
                    CliError::new(
                        "locked",
                        format!("partition {} is locked: a running wharf holds its lock", dir.display()),
                    )
                    .hint("salvage runs offline: stop the wharf serving this data dir first, then run salvage again")
                    .into()
                }
                other => anyhow::Error::from(other),
            })
        }
    };
    let code = match code {
        Ok(c) => c,
        Err(e) => {
            // What was printed before the failure still goes out.
            let _ = out.flush();
            return Err(e);
        }
    };
    out.flush()?;
    Ok(ExitCode::from(code))
}
