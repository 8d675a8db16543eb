//! `wharf log …`: operator tools for the write-ahead log.
//!
//! Thin glue: argument parsing here, all logic (output formats, exit codes,
//! progress lines) lives in `wharf_log::cli`, where it is tested.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Subcommand, Debug)]
pub enum LogCmd {
    /// Check every segment under a data dir
    Verify {
        data_dir: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Print the records of one partition directory
    Dump {
        partition_dir: PathBuf,
        #[arg(long)]
        from: Option<u64>,
        #[arg(long)]
        limit: Option<u64>,
        #[arg(long)]
        json: bool,
    },
    /// Move an unreadable region aside so the partition can resume (explicit, logged)
    Salvage {
        partition_dir: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: LogCmd) -> anyhow::Result<ExitCode> {
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut err = stderr.lock();
    let code = match cmd {
        LogCmd::Verify { data_dir, json } => wharf_log::cli::verify_cmd(&data_dir, json, &mut out, &mut err),
        LogCmd::Dump { partition_dir, from, limit, json } => {
            wharf_log::cli::dump_cmd(&partition_dir, from, limit, json, &mut out, &mut err)
        }
        LogCmd::Salvage { partition_dir, json } => {
            wharf_log::cli::salvage_cmd(&partition_dir, json, &mut out, &mut err)
        }
    };
    out.flush()?;
    Ok(ExitCode::from(code?))
}
