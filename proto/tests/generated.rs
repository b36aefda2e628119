//! The committed generated code is what `proto/dir.proto` compiles to (rust-libp2p's way: dApps
//! build without a protobuf compiler, and a stale file cannot slip through).
//!
//! `P2PMIX_REGENERATE=1 cargo test -p p2pmix-proto --test generated` writes the new code.
#![allow(missing_docs)]

use std::{fs, path::Path};

#[test]
fn the_committed_code_is_what_the_proto_file_compiles_to() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = std::env::temp_dir().join(format!("p2pmix-proto-gen-{}", std::process::id()));
    fs::create_dir_all(&out).unwrap();
    let descriptors =
        protox::compile([root.join("proto/dir.proto")], [root.join("proto")]).unwrap();
    prost_build::Config::new()
        .out_dir(&out)
        .compile_fds(descriptors)
        .unwrap();
    let fresh = fs::read_to_string(out.join("p2pmix.dir.v1.rs")).unwrap();
    let _ = fs::remove_dir_all(&out);
    let committed_path = root.join("src/generated/p2pmix.dir.v1.rs");
    if std::env::var_os("P2PMIX_REGENERATE").is_some() {
        fs::write(&committed_path, &fresh).unwrap();
        return;
    }
    let committed = fs::read_to_string(&committed_path).unwrap_or_default();
    assert!(
        committed == fresh,
        "src/generated/p2pmix.dir.v1.rs is stale: run \
         `P2PMIX_REGENERATE=1 cargo test -p p2pmix-proto --test generated` and commit it"
    );
}
