//! `wharf`: the sidecar binary and its operator commands (see `cli.rs`).

/// jemalloc instead of glibc malloc: the delivery and batched write paths
/// allocate per message, and malloc/free were 17-19 % of their profiles.
/// Measured in one session (`docs/benchmarks.md`, "Allocator"): jemalloc
/// +10 % delivery, +17 % / +31 % HTTP / gRPC batched writes; mimalloc won
/// the writes too but lost 10-15 % on delivery.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read once at its first allocation. Allocations of
/// 1 MiB and more go to its dedicated arena, which returns them to the OS
/// when freed, as glibc does for large blocks: with the default 8 MiB,
/// start-up's large transient buffers stayed resident and an idle sidecar
/// with 1,000 namespaces held 158 MB instead of 131 MB. `_RJEM_MALLOC_CONF`
/// in the environment still overrides it.
// SAFETY: jemalloc reads this NUL-terminated string and nothing writes it;
// the name is the one tikv-jemalloc-sys's prefixed build looks up.
#[allow(unsafe_code, non_upper_case_globals)]
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static malloc_conf: &[u8; 27] = b"oversize_threshold:1048576\0";

fn main() -> std::process::ExitCode {
    // Data, audit and cache files hold payloads and secrets: 0600 files
    // and 0700 folders, whatever the caller's umask.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    wharf::cli::main()
}
