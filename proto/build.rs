fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/quorum.proto");
    tonic_prost_build::configure().compile_protos(&["proto/quorum.proto"], &["proto"])?;
    Ok(())
}
