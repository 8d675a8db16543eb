//! Generates the gRPC service (`wharf.v1`) from `proto/wharf/v1/wharf.proto`
//! with protox, a protobuf compiler in pure Rust: no `protoc` to install.
//! The encoded descriptor set is kept for gRPC server reflection.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let proto = root.join("wharf/v1/wharf.proto");
    println!("cargo:rerun-if-changed={}", proto.display());
    let fds = protox::compile([&proto], [&root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("wharf_descriptor.bin"), prost::Message::encode_to_vec(&fds))?;
    tonic_prost_build::configure().build_client(false).btree_map(".").compile_fds(fds)?;
    Ok(())
}
