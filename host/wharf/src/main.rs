//! `wharf`: the sidecar binary and its operator commands (see `cli.rs`).

fn main() -> std::process::ExitCode {
    wharf::cli::main()
}
