fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/quorum.proto");
    // The typed file contents are kept in stored plans (JSON) as they are sent.
    // prost derives Eq itself only for messages without message fields.
    let stored = [
        ("quorum.v1.EtcdConf", "Eq, "),
        ("quorum.v1.EtcdPeer", ""),
        ("quorum.v1.EtcdctlProfile", "Eq, "),
        ("quorum.v1.EtcdEndpoint", ""),
    ];
    let mut config = tonic_prost_build::configure()
        // Small first buffers: an agent's session keeps its pair for the agent's lifetime.
        .codec_path("crate::codec::LeanCodec");
    for (name, eq) in stored {
        config = config.type_attribute(
            name,
            format!("#[derive({eq}serde::Serialize, serde::Deserialize)] #[serde(default)]"),
        );
    }
    config.compile_protos(&["proto/quorum.proto"], &["proto"])?;
    Ok(())
}
