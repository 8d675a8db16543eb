//! `wharf`: the sidecar binary and its operator commands (see `cli.rs`).

fn main() -> std::process::ExitCode {
    // Data, audit and cache files hold payloads and secrets: 0600 files
    // and 0700 folders, whatever the caller's umask.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    wharf::cli::main()
}
