//! Compiles `proto/dir.proto` with protox (pure Rust: no system `protoc` on any machine).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/dir.proto");
    let descriptors = protox::compile(["proto/dir.proto"], ["proto"])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
