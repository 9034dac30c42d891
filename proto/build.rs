fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/quorum.proto");
    tonic_prost_build::configure()
        // Small first buffers: an agent's session keeps its pair for the agent's lifetime.
        .codec_path("crate::codec::LeanCodec")
        .compile_protos(&["proto/quorum.proto"], &["proto"])?;
    Ok(())
}
