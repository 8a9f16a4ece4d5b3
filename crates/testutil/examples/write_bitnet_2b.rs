//! Writes the random BitNet-b1.58-2B-shaped models used for speed figures
//! into the model cache (`$HEARTH_MODELS`, else `~/.cache/hearth/models`),
//! one file per weight type: `bitnet-2b-<type>.gguf`. Existing files are kept.
//!
//! Usage: `cargo run --release -p hearth-testutil --example write_bitnet_2b [TYPE...]`
//! with TYPE among `tq1_0 tq2_0 i2_s q4_0` (default: all four).
use hearth_core::GgmlType;

fn main() -> std::io::Result<()> {
    let dir = std::env::var_os("HEARTH_MODELS").map_or_else(
        || {
            let base = std::env::var_os("XDG_CACHE_HOME").map_or_else(
                || std::path::PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache"),
                std::path::PathBuf::from,
            );
            base.join("hearth/models")
        },
        std::path::PathBuf::from,
    );
    std::fs::create_dir_all(&dir)?;
    let mut wanted: Vec<String> = std::env::args().skip(1).collect();
    if wanted.is_empty() {
        wanted = ["tq1_0", "tq2_0", "i2_s", "q4_0"].map(String::from).to_vec();
    }
    for name in wanted {
        let ty = match name.as_str() {
            "tq1_0" => GgmlType::TQ1_0,
            "tq2_0" => GgmlType::TQ2_0,
            "i2_s" => GgmlType::I2_S,
            "q4_0" => GgmlType::Q4_0,
            other => return Err(std::io::Error::other(format!("unknown type {other} (tq1_0, tq2_0, i2_s, q4_0)"))),
        };
        let path = dir.join(format!("bitnet-2b-{name}.gguf"));
        if path.exists() {
            eprintln!("{} exists", path.display());
            continue;
        }
        let t0 = std::time::Instant::now();
        let bytes = hearth_testutil::bitnet_2b(ty, 2560);
        let tmp = path.with_extension("part");
        std::fs::write(&tmp, &bytes)?;
        std::fs::rename(&tmp, &path)?;
        eprintln!("wrote {} ({:.0} MB, {:.1} s)", path.display(), bytes.len() as f64 / 1e6, t0.elapsed().as_secs_f64());
    }
    Ok(())
}
