//! Writes the tiny test models to a directory (for recording reference
//! outputs with another engine). Usage: write_tiny_models DIR
fn main() -> std::io::Result<()> {
    let dir = std::env::args().nth(1).unwrap_or_else(|| ".".into());
    let write = |name: &str, bytes: Vec<u8>| -> std::io::Result<()> {
        let path = std::path::Path::new(&dir).join(format!("tiny-{name}.gguf"));
        std::fs::write(&path, bytes)?;
        eprintln!("wrote {}", path.display());
        Ok(())
    };
    for arch in ["qwen2", "qwen3"] {
        write(arch, hearth_testutil::tiny_qwen(arch, 42))?;
    }
    for (name, ty) in [
        ("tq1_0", hearth_core::GgmlType::TQ1_0),
        ("tq2_0", hearth_core::GgmlType::TQ2_0),
        ("q8_0", hearth_core::GgmlType::Q8_0),
    ] {
        write(&format!("bitnet-{name}"), hearth_testutil::tiny_bitnet(ty, 42))?;
    }
    for arch in ["llama", "qwen2moe", "qwen3moe"] {
        write(&format!("moe-{arch}"), hearth_testutil::tiny_moe(arch, 42))?;
    }
    for (name, variant) in
        [
            ("lite", hearth_testutil::DeepSeekVariant::Lite),
            ("lite-yarn", hearth_testutil::DeepSeekVariant::LiteYarn),
            ("v3", hearth_testutil::DeepSeekVariant::V3),
        ]
    {
        write(&format!("moe-deepseek2-{name}"), hearth_testutil::tiny_deepseek2(variant, 42))?;
    }
    write("gpt-oss", hearth_testutil::tiny_gpt_oss(42))?;
    for arch in hearth_testutil::TINY_DENSE_ARCHS {
        write(arch, hearth_testutil::tiny_dense(arch, 42))?;
    }
    for ty in hearth_testutil::TINY_LLAMA_TYPES {
        write(&format!("llama-{}", ty.name().to_lowercase()), hearth_testutil::tiny_llama(ty, 42))?;
    }
    Ok(())
}
