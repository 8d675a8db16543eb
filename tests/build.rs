//! A gRPC client (and server stubs, for the benchmark's echo server) for
//! `wharf.v1`, generated from the same proto file as the host's server.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../proto");
    let proto = root.join("wharf/v1/wharf.proto");
    println!("cargo:rerun-if-changed={}", proto.display());
    let fds = protox::compile([&proto], [&root])?;
    tonic_prost_build::configure().btree_map(".").generate_default_stubs(true).compile_fds(fds)?;
    Ok(())
}
