//! Writes the tiny test models to a directory (for recording reference
//! outputs with another engine). Usage: write_tiny_models DIR
fn main() -> std::io::Result<()> {
    let dir = std::env::args().nth(1).unwrap_or_else(|| ".".into());
    for arch in ["qwen2", "qwen3"] {
        let path = std::path::Path::new(&dir).join(format!("tiny-{arch}.gguf"));
        std::fs::write(&path, hearth_testutil::tiny_qwen(arch, 42))?;
        eprintln!("wrote {}", path.display());
    }
    for (name, ty) in [
        ("tq1_0", hearth_core::GgmlType::TQ1_0),
        ("tq2_0", hearth_core::GgmlType::TQ2_0),
        ("q8_0", hearth_core::GgmlType::Q8_0),
    ] {
        let path = std::path::Path::new(&dir).join(format!("tiny-bitnet-{name}.gguf"));
        std::fs::write(&path, hearth_testutil::tiny_bitnet(ty, 42))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
